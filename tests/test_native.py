"""The compiled tokenizer (``mmmixlab.native``, ``_FusedTokenizer``) against torch's ops.

The reference is the same ``PatchTokenizer`` run by torch's ops in float64 (``fused = False``):
the compiled kernel computes in float32, so its tokens and gradients agree with it to float32
rounding. Skipped where no C++ compiler is found (the tokenizer then runs torch's ops, which
the other tests cover); ``make install`` brings one.
"""

from __future__ import annotations

import copy

import pytest
import torch

from mmmixlab import native
from mmmixlab.encoders import create_point_encoder, set_fused_tokenizer
from mmmixlab.encoders import pointbert as pb
from tests.helpers.threads import at_thread_counts

pytestmark = pytest.mark.skipif(native.compiled() is None,
                                reason=f"no compiled tokenizer here: {native.native_error()}")


def _tokenizer(cin=6, seed=0):
    torch.manual_seed(seed)
    tok = pb.PatchTokenizer(cin, (16, 32, 32, 32), 32)
    with torch.no_grad():  # away from init's zeros and ones, so every term is exercised
        for p in tok.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return tok


def _reference(tok):
    ref = copy.deepcopy(tok).double()
    ref.fused = False
    return ref


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("cin,k", [(6, 32), (3, 32), (6, 20), (6, 64), (6, 1)])
def test_fused_tokenizer_matches_torch_ops_forward_and_gradients(cin, k):
    tok = _tokenizer(cin)
    x = torch.randn(3, 10, k, cin) * 0.4
    assert tok.fused_fits(x)
    calls = []
    real = pb._FusedTokenizer.apply
    pb._FusedTokenizer.apply = lambda *a: calls.append(1) or real(*a)
    try:
        out = tok(x)
    finally:
        pb._FusedTokenizer.apply = real
    assert calls, "the compiled tokenizer did not run"
    ref = _reference(tok)
    expect = ref(x.double())
    assert out.dtype == torch.float32 and out.shape == expect.shape == (3, 10, 32)
    values = expect.detach()
    assert float((out.detach().double() - values).abs().max()) < 1e-5 * float(values.abs().max())
    weights = torch.randn(3, 10, 32, dtype=torch.float64)
    grads = torch.autograd.grad((out.double() * weights).sum(), list(tok.parameters()))
    expect_grads = torch.autograd.grad((expect * weights).sum(), list(ref.parameters()))
    for (name, _), g, e in zip(tok.named_parameters(), grads, expect_grads):
        assert g.dtype == torch.float32 and g.shape == e.shape, name
        assert _rel(g, e) < 1e-5, name


def test_fused_tokenizer_runs_in_float32_under_bf16_autocast():
    """Under CPU autocast the kernel still computes in float32 (closer to float64 than torch's
    bf16 ops), and its output enters the next layer as float32."""
    tok = _tokenizer()
    x = torch.randn(2, 8, 32, 6) * 0.4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = tok(x)
    expect = _reference(tok)(x.double())
    unfused = copy.deepcopy(tok)
    unfused.fused = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = unfused(x)
    assert fused.dtype == torch.float32
    assert _rel(fused, expect) < 1e-6 < _rel(bf16, expect)


def test_fused_tokenizer_gradients_do_not_depend_on_thread_count():
    tok = _tokenizer()
    x = torch.randn(4, 64, 32, 6) * 0.4   # 256 patches: several chunks of the kernel's 64
    weights = torch.randn(4, 64, 32)

    def grads():
        g = torch.autograd.grad((tok(x) * weights).sum(), list(tok.parameters()))
        return [t.view(torch.int32) for t in g]

    for a, b in zip(*at_thread_counts(grads)):
        assert torch.equal(a, b)


def test_fused_tokenizer_propagates_nan():
    """A NaN weight makes NaN tokens (torch.max's rule in the pools), so a diverged run's loss
    is non-finite and the trainer stops, as with torch's ops."""
    tok = _tokenizer()
    with torch.no_grad():
        tok.second[3].weight[5, 7] = float("nan")
    out = tok(torch.randn(1, 4, 32, 6))
    assert torch.isnan(out[..., 5]).all() and torch.isfinite(out[..., 6]).all()


@pytest.mark.parametrize("layer", ["first", "second"])
def test_fused_tokenizer_keeps_nan_through_relu_as_torch_does(layer):
    """A NaN weight ahead of a ReLU: torch's relu keeps NaN, and so does the kernel's, so the
    tokens are NaN exactly where torch's ops make them NaN."""
    tok = _tokenizer()
    with torch.no_grad():
        getattr(tok, layer)[0].weight[3, 1] = float("nan")
    x = torch.randn(1, 4, 32, 6)
    expect = _reference(tok)(x.double())
    fused = tok(x)
    assert torch.isnan(expect).any()
    assert torch.equal(torch.isnan(fused), torch.isnan(expect))


def test_fused_tokenizer_falls_back_where_it_does_not_fit():
    """Other widths, patches that want a gradient, switched off: torch's ops, no error."""
    tok = _tokenizer()
    x = torch.randn(1, 4, 32, 6)
    assert tok.fused_fits(x)
    assert not tok.fused_fits(x.clone().requires_grad_(True))
    assert not tok.fused_fits(x.double())
    assert not tok.fused_fits(torch.randn(1, 4, 65, 6))
    wide = pb.PatchTokenizer(6, (16, 32, 24, 40), 48)
    assert not wide.fused_fits(x)
    other_eps = copy.deepcopy(tok)
    other_eps.second[1].eps = 1e-6   # the kernel takes one eps for both norms
    assert not other_eps.fused_fits(x)
    tok.fused = False
    assert not tok.fused_fits(x)


@pytest.mark.parametrize("bad,match", [
    (torch.randn(4, 32, 5), "3 or 6 input channels"),
    (torch.randn(4, 65, 6), "1 to 64 points"),
    (torch.randn(4, 32, 6).double(), "float32"),
])
def test_compiled_module_rejects_bad_patches(bad, match):
    tok = _tokenizer()
    with pytest.raises(RuntimeError, match=match):
        native.compiled().tokenizer_forward(bad, tok._fused_params(), 1e-5)


def test_compiled_backward_rejects_choices_that_are_not_the_forward_s():
    """The backward reads the forward's max-pool rows: a wrong dtype, shape or a row past the
    patch is refused before it is read."""
    tok = _tokenizer()
    x = torch.randn(5, 8, 6)
    params = tok._fused_params()
    tokens, choice = native.compiled().tokenizer_forward(x, params, 1e-5)
    assert choice.dtype == torch.uint8 and choice.shape == (5, 64) and int(choice.max()) < 8
    grad = torch.randn(5, 32)
    backward = native.compiled().tokenizer_backward
    assert len(backward(x, grad, choice, params, 1e-5)) == len(params)
    with pytest.raises(RuntimeError, match="choices must be"):
        backward(x, grad, choice.int(), params, 1e-5)
    with pytest.raises(RuntimeError, match="choices must be"):
        backward(x, grad, choice[:4], params, 1e-5)
    bad = choice.clone()
    bad[2, 40] = 8
    with pytest.raises(RuntimeError, match="past the patch's 8 points"):
        backward(x, grad, bad, params, 1e-5)


def test_compiled_module_rejects_wrong_parameter_shapes():
    params = _tokenizer()._fused_params()
    params[4] = torch.randn(32, 17)
    with pytest.raises(RuntimeError, match="parameter 4 has shape"):
        native.compiled().tokenizer_forward(torch.randn(2, 8, 6), params, 1e-5)


def test_encoder_features_and_gradients_with_and_without_the_compiled_tokenizer():
    """pointbert-tiny end to end: the same features and gradients to float32 rounding, and
    set_fused_tokenizer (train.fused_tokenizer) switches the path."""
    torch.manual_seed(3)
    enc = create_point_encoder("pointbert-tiny", out_dim=24, in_channels=6)
    off = copy.deepcopy(enc)
    assert set_fused_tokenizer(off, False) == 1 and not off.tokenizer.fused
    x = torch.randn(3, 1024, 6)
    a, b = enc(x), off(x)
    assert _rel(a, b) < 1e-4
    ga = torch.autograd.grad(a.sum(), list(enc.parameters()))
    gb = torch.autograd.grad(b.sum(), list(off.parameters()))
    for (name, _), u, v in zip(enc.named_parameters(), ga, gb):
        assert _rel(u, v) < 1e-3, name


@pytest.mark.parametrize("on", [True, False])
def test_trainer_applies_train_fused_tokenizer(on, monkeypatch):
    """train.fused_tokenizer reaches both encoders of a one-stage run, and a step runs the
    compiled tokenizer exactly when it is on."""
    from mmmixlab.train import Trainer
    from tests.helpers.toy import toy_batches, toy_cfg

    cfg = toy_cfg("one-stage", **{"train.encoder": "pointbert-tiny",
                                  "train.fused_tokenizer": on, "data.num_points": 64})
    calls = []
    real = pb._FusedTokenizer.apply
    monkeypatch.setattr(pb._FusedTokenizer, "apply",
                        staticmethod(lambda *a: calls.append(1) or real(*a)))
    trainer = Trainer(cfg, toy_batches(n=16), embed_dim=16, progress=False)
    assert [e.tokenizer.fused for e in trainer.encoders.values()] == [on, on]
    trainer.fit()
    assert bool(calls) == on
