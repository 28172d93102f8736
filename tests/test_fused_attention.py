"""The compiled attention (``mmmixlab/native/attention.cpp`` through
``encoders.common.packed_attention``) against torch's ``scaled_dot_product_attention``.

The reference is the same ``packed_attention`` with ``fused=False`` (torch's kernel) in float64:
the compiled kernel computes in float32, so outputs and gradients agree with it to float32
rounding. Skipped where no C++ compiler is found (torch's kernel then runs, which the other
tests cover); ``make install`` brings one.
"""

from __future__ import annotations

import copy

import pytest
import torch

from mmmixlab import native
from mmmixlab.encoders import common, create_point_encoder, set_fused_attention
from tests.helpers.threads import at_thread_counts

pytestmark = pytest.mark.skipif(native.compiled() is None,
                                reason=f"no compiled kernels here: {native.native_error()}")


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def _count_calls(monkeypatch) -> list:
    calls = []
    real = common._FusedAttention.apply
    monkeypatch.setattr(common._FusedAttention, "apply",
                        staticmethod(lambda *a: calls.append(1) or real(*a)))
    return calls


@pytest.mark.parametrize("t,heads,d", [(65, 4, 32), (17, 2, 64), (1, 4, 16), (128, 2, 32),
                                       (33, 3, 32), (16, 1, 64)])
def test_fused_attention_matches_torch_forward_and_gradient(t, heads, d, monkeypatch):
    torch.manual_seed(t + heads + d)
    qkv = (torch.randn(3, t, 3 * heads * d) * 1.5).requires_grad_(True)
    calls = _count_calls(monkeypatch)
    out = common.packed_attention(qkv, heads)
    assert calls, "the compiled attention did not run"
    ref_in = qkv.detach().double().requires_grad_(True)
    expect = common.packed_attention(ref_in, heads, fused=False)
    assert out.dtype == torch.float32 and out.shape == expect.shape == (3, t, heads * d)
    assert float((out.detach().double() - expect.detach()).abs().max()) < (
        1e-5 * float(expect.detach().abs().max()))
    g = torch.randn(3, t, heads * d, dtype=torch.float64)
    (out.double() * g).sum().backward()
    (expect * g).sum().backward()
    assert qkv.grad.dtype == torch.float32
    assert _rel(qkv.grad, ref_in.grad) < 1e-5


def test_fused_attention_under_bf16_autocast_is_the_float32_function_on_bf16_inputs():
    """Under CPU autocast the projection hands over bf16 qkv: the kernel reads it exactly and
    computes in float32 (as torch's path here does), so the output is bit for bit the float32
    kernel's on the same values, and the bf16 gradient is the float32 gradient rounded as
    torch rounds it (to nearest even)."""
    torch.manual_seed(0)
    qkv_bf16 = torch.randn(4, 65, 384).bfloat16().requires_grad_(True)
    qkv_f32 = qkv_bf16.detach().float().requires_grad_(True)
    g = torch.randn(4, 65, 128)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf16 = common.packed_attention(qkv_bf16, 4)
    out_f32 = common.packed_attention(qkv_f32, 4)
    assert out_bf16.dtype == torch.float32
    assert torch.equal(out_bf16, out_f32)
    (out_bf16 * g).sum().backward()
    (out_f32 * g).sum().backward()
    assert qkv_bf16.grad.dtype == torch.bfloat16
    assert torch.equal(qkv_bf16.grad.view(torch.int16), qkv_f32.grad.bfloat16().view(torch.int16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch_path = common.packed_attention(qkv_bf16, 4, fused=False)
    assert torch_path.dtype == torch.float32 and _rel(out_bf16, torch_path) < 1e-6


def test_fused_attention_does_not_depend_on_thread_count():
    torch.manual_seed(1)
    qkv = torch.randn(8, 65, 384).requires_grad_(True)
    g = torch.randn(8, 65, 128)

    def run():
        qkv.grad = None
        out = common.packed_attention(qkv, 4)
        (out * g).sum().backward()
        return out.detach().view(torch.int32), qkv.grad.view(torch.int32)

    (out1, grad1), (out3, grad3) = at_thread_counts(run)
    assert torch.equal(out1, out3) and torch.equal(grad1, grad3)


@pytest.mark.parametrize("where", ["q", "k", "v"])
def test_fused_attention_propagates_nan_as_torch_does(where):
    """NaN in one token's q, k or v: NaN in exactly the outputs torch's kernel makes NaN (a
    query's row; every row of that head for a key or value), so a diverged run stops."""
    torch.manual_seed(2)
    qkv = torch.randn(2, 20, 3, 2, 32)
    qkv[1, 5, "qkv".index(where), 1, 3] = float("nan")
    qkv = qkv.view(2, 20, -1)
    fused = common.packed_attention(qkv, 2)
    expect = common.packed_attention(qkv, 2, fused=False)
    assert torch.isnan(expect).any()
    assert torch.equal(torch.isnan(fused), torch.isnan(expect))


def test_fused_attention_falls_back_where_it_does_not_fit(monkeypatch):
    """Longer sequences, other head widths, float64, bf16 outside autocast, a strided view,
    switched off: torch's kernel, the same function, no error."""
    calls = _count_calls(monkeypatch)
    cases = [(torch.randn(2, 129, 3 * 2 * 32), 2), (torch.randn(2, 10, 3 * 2 * 24), 2),
             (torch.randn(2, 10, 3 * 64, dtype=torch.float64), 2),
             (torch.randn(2, 10, 3 * 64).bfloat16(), 2),
             (torch.randn(2, 20, 3 * 64)[:, ::2], 2)]
    for qkv, heads in cases:
        out, expect = common.packed_attention(qkv, heads), common.packed_attention(
            qkv, heads, fused=False)
        assert out.dtype == expect.dtype and torch.equal(out, expect)
    assert not calls
    qkv = torch.randn(2, 10, 3 * 64)
    common.packed_attention(qkv, 2, fused=False)
    assert not calls
    common.packed_attention(qkv, 2)
    assert calls


def test_packed_attention_rejects_a_width_that_is_not_three_times_the_heads():
    with pytest.raises(ValueError, match="not 3 x 4 heads"):
        common.packed_attention(torch.randn(2, 5, 100), 4)


@pytest.mark.parametrize("bad,match", [
    (torch.randn(2, 10, 3, 2, 48), "head width 16, 32 or 64"),
    (torch.randn(2, 129, 3, 2, 32), "1 to 128 tokens"),
    (torch.randn(2, 10, 3, 2, 32).double(), "float32 or bfloat16"),
    (torch.randn(2, 10, 3, 3, 32), "heads=2"),
    (torch.randn(2, 10, 3, 2, 64)[..., ::2], "contiguous"),
])
def test_compiled_attention_rejects_bad_qkv(bad, match):
    with pytest.raises(RuntimeError, match=match):
        native.compiled().attention_forward(bad, 2)


def test_compiled_attention_backward_rejects_a_wrong_gradient():
    qkv = torch.randn(2, 10, 3, 2, 32)
    _, lse = native.compiled().attention_forward(qkv, 2)
    with pytest.raises(RuntimeError, match="output gradient"):
        native.compiled().attention_backward(qkv, lse, torch.randn(2, 10, 32), 2)
    with pytest.raises(RuntimeError, match="lse"):
        native.compiled().attention_backward(qkv, lse[:1], torch.randn(2, 10, 64), 2)


@pytest.mark.parametrize("name", ["pointbert-tiny", "openshape-pointbert-tiny"])
def test_encoders_with_and_without_the_compiled_attention(name, monkeypatch):
    """Both tiny transformers end to end: the same features and gradients to float32 rounding,
    the compiled attention running in every block, and set_fused_attention switching it."""
    torch.manual_seed(4)
    enc = create_point_encoder(name, out_dim=24, in_channels=6)
    off = copy.deepcopy(enc)
    assert set_fused_attention(off, False) == 2
    x = torch.randn(3, 1024, 6)
    calls = _count_calls(monkeypatch)
    a = enc(x)
    assert len(calls) == 2
    b = off(x)
    assert len(calls) == 2
    assert _rel(a, b) < 1e-4
    ga = torch.autograd.grad(a.sum(), list(enc.parameters()))
    gb = torch.autograd.grad(b.sum(), list(off.parameters()))
    scale = float(torch.cat([v.flatten() for v in gb]).norm())
    for (param, _), u, v in zip(enc.named_parameters(), ga, gb):
        # a bias ahead of a batch norm has a gradient of 0 up to rounding: judged on the whole
        assert float((u - v).norm()) <= 1e-3 * float(v.norm()) + 1e-6 * scale, param


@pytest.mark.parametrize("on", [True, False])
def test_trainer_applies_train_fused_attention(on, monkeypatch):
    """train.fused_attention reaches both encoders of a one-stage run, and a step runs the
    compiled attention exactly when it is on."""
    from mmmixlab.train import Trainer
    from tests.helpers.toy import toy_batches, toy_cfg

    cfg = toy_cfg("one-stage", **{"train.encoder": "pointbert-tiny",
                                  "train.fused_attention": on, "data.num_points": 64})
    calls = _count_calls(monkeypatch)
    trainer = Trainer(cfg, toy_batches(n=16), embed_dim=16, progress=False)
    assert [b.fused_attention for e in trainer.encoders.values() for b in e.blocks] == [on] * 4
    trainer.fit()
    assert bool(calls) == on
