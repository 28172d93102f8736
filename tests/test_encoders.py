"""Encoders: shapes, sizes, gradients, invariances and input errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmmixlab.encoders import ENCODER_NAMES, PointBERTConfig, count_parameters, create_point_encoder

# Small Point-BERT overrides so CPU tests stay fast; the architecture is the same.
SMALL = {"pointbert": {"num_groups": 16, "group_size": 16, "depth": 1},
         "pointbert-tiny": {"num_groups": 16, "group_size": 16},
         "pointnet": {},
         "sparseconv": {"layers": (1, 1, 1, 1), "planes": (8, 8, 16, 16), "stem_kernel": 3,
                        "embedding_channels": 16, "head_hidden": 16, "voxel_size": 0.1},
         "sparseconv-tiny": {},
         "openshape-pointbert": {"num_patches": 16, "patch_points": 16, "depth": 1,
                                 "width": 64, "heads": 1, "dim_head": 32, "mlp_dim": 64},
         "openshape-pointbert-tiny": {"num_patches": 16, "patch_points": 16}}


def _clouds(b, n, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(b, n, 3, generator=g) * 2 - 1
    rgb = torch.rand(b, n, 3, generator=g)
    return torch.cat([xyz, rgb], -1)[..., :c]


@pytest.mark.parametrize("name", ENCODER_NAMES)
@pytest.mark.parametrize("c", [3, 6])
def test_output_shape_and_gradients(name, c):
    torch.manual_seed(0)
    enc = create_point_encoder(name, out_dim=24, in_channels=c, **SMALL[name])
    out = enc(_clouds(2, 1024, c))
    assert out.shape == (2, 24) and torch.isfinite(out).all()
    out.square().sum().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, f"no gradient reaches {missing}"


def test_pointbert_paper_size():
    enc = create_point_encoder("pointbert", out_dim=1280)
    assert 28e6 <= count_parameters(enc) <= 36e6
    cfg = enc.config
    assert (cfg.num_groups, cfg.group_size, cfg.radius, cfg.trans_dim, cfg.depth,
            cfg.num_heads) == (384, 64, 0.2, 512, 12, 8)


def test_tiny_preset():
    cfg = create_point_encoder("pointbert-tiny", out_dim=8).config
    assert (cfg.num_groups, cfg.group_size, cfg.trans_dim, cfg.depth, cfg.num_heads) == \
        (64, 32, 128, 2, 4)


def test_deterministic_given_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        enc = create_point_encoder("pointbert-tiny", out_dim=16, **SMALL["pointbert-tiny"])
        outs.append(enc.eval()(_clouds(2, 300, 6)))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("grouping", ["ball", "knn"])
def test_pointbert_batch_equals_single(grouping):
    torch.manual_seed(0)
    enc = create_point_encoder("pointbert-tiny", out_dim=16, grouping=grouping,
                               **SMALL["pointbert-tiny"]).eval()
    x = _clouds(3, 400, 6, seed=1)
    with torch.no_grad():
        batch = enc(x)
        single = torch.cat([enc(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])  # the clouds are really encoded separately


def test_pointnet_permutation_invariant():
    torch.manual_seed(0)
    enc = create_point_encoder("pointnet", out_dim=16).eval()
    x = _clouds(2, 500, 6)
    perm = torch.randperm(500)
    with torch.no_grad():
        assert torch.equal(enc(x), enc(x[:, perm]))  # max-pool: exact


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_batch_of_one_trains(name):
    enc = create_point_encoder(name, out_dim=8, **SMALL[name]).train()
    if getattr(enc, "mixes_batch", False):  # BatchNorm over one cloud: a clear error instead
        with pytest.raises(ValueError, match="at least 2 clouds"):
            enc(_clouds(1, 256, 6))
        if not hasattr(enc.config, "norm"):  # OpenShape's Point-BERT: BatchNorm, as released
            return
        enc = create_point_encoder(name, out_dim=8, **SMALL[name], norm="layer").train()
    enc(_clouds(1, 256, 6)).sum().backward()


def test_works_after_to_device():
    enc = create_point_encoder("pointbert-tiny", out_dim=8, **SMALL["pointbert-tiny"])
    enc = enc.to(torch.device("cpu"), torch.float64)
    assert enc(_clouds(2, 128, 6).double()).dtype == torch.float64


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_input_errors(name):
    enc = create_point_encoder(name, out_dim=8, in_channels=6, **SMALL[name])
    with pytest.raises(ValueError, match="channels"):
        enc(_clouds(2, 128, 3))
    bad = _clouds(2, 128, 6)
    bad[0, 5, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        enc(bad)
    with pytest.raises(ValueError, match="empty"):
        enc(torch.zeros(2, 0, 6))


def test_too_few_points():
    enc = create_point_encoder("pointbert-tiny", out_dim=8)  # 64 groups
    with pytest.raises(ValueError, match="at least 64 points.*got 63"):
        enc(_clouds(1, 63, 6))
    knn_enc = create_point_encoder("pointbert-tiny", out_dim=8, num_groups=8, grouping="knn")
    with pytest.raises(ValueError, match="at least 32 points"):
        knn_enc(_clouds(1, 20, 6))


def test_factory_errors():
    with pytest.raises(ValueError, match="pointnet"):
        create_point_encoder("pointtransformer", out_dim=8)
    with pytest.raises(ValueError, match="num_groups"):  # lists the valid options
        create_point_encoder("pointbert", out_dim=8, num_group=10)
    with pytest.raises(ValueError, match="in_channels"):
        create_point_encoder("pointnet", out_dim=8, in_channels=4)
    with pytest.raises(ValueError, match="grouping"):
        create_point_encoder("pointbert-tiny", out_dim=8, grouping="radius")
    with pytest.raises(ValueError, match="divisible"):
        PointBERTConfig(trans_dim=100, num_heads=8)


def test_value_scan_skipped_only_when_the_caller_checked():
    from mmmixlab.checks import values_checked

    enc = create_point_encoder("pointnet", out_dim=8).eval()
    bad = _clouds(2, 128, 6)
    bad[1, 3, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        enc(bad)
    with values_checked():  # the trainer scanned the batch on the CPU already
        enc(bad)
        with pytest.raises(ValueError, match="channels"):  # shapes are always checked
            enc(_clouds(2, 128, 3))
    with pytest.raises(ValueError, match="NaN or inf"):  # and the scan is back outside
        enc(bad)


def test_pointbert_tokenizer_equals_the_concatenated_mini_pointnet():
    """The tokenizer applies its second layer to concat(pooled, point feature) without building
    the concatenation: same tokens and gradients as the written-out Point-BERT mini-PointNet."""
    from mmmixlab.encoders.pointbert import PatchTokenizer

    torch.manual_seed(0)
    tok = PatchTokenizer(6, (16, 32, 24, 40), 48).double()
    x = torch.randn(3, 5, 7, 6, dtype=torch.float64)

    def written_out(patches):  # plain torch ops only, no hand-written backward
        b, g, k, c = patches.shape
        lin = tok.first[0]
        f = tok.first[1:](F.linear(patches.reshape(b * g * k, c), lin.weight, lin.bias))
        f = f.view(b * g, k, -1)
        pooled = f.max(dim=1, keepdim=True).values.expand(-1, k, -1)
        h = tok.second(torch.cat([pooled, f], dim=-1))
        return tok.project(h.max(dim=1).values).view(b, g, -1)

    got, ref = tok(x), written_out(x)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    g_got = torch.autograd.grad(got.square().sum(), list(tok.parameters()))
    g_ref = torch.autograd.grad(ref.square().sum(), list(tok.parameters()))
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # and the gradient reaching the patches (a cloud's own gradient, e.g. for saliency)
    xg = x.clone().requires_grad_(True)
    torch.testing.assert_close(torch.autograd.grad(tok(xg).square().sum(), xg)[0],
                               torch.autograd.grad(written_out(xg).square().sum(), xg)[0],
                               rtol=1e-10, atol=1e-12)


def test_pool_broadcast_linear_backward_passes_gradcheck():
    """The tokenizer's hand-written backward (pooled half scatter-added at the arg-max) against
    finite differences, for the per-point features, the weight and the bias."""
    from mmmixlab.encoders.pointbert import _PoolBroadcastLinear

    torch.manual_seed(1)
    f = torch.randn(4, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 10, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_PoolBroadcastLinear.apply, (f, w, b))
    torch.testing.assert_close(_PoolBroadcastLinear.apply(f, w, b),
                               _PoolBroadcastLinear.plain(f, w, b), rtol=0, atol=0)


def test_narrow_input_linear_is_a_drop_in_linear():
    """Same parameters, state dict and forward as nn.Linear; its transposed weight-gradient
    product gives nn.Linear's gradients (to rounding) and passes gradcheck; under no_grad and
    autocast it is nn.Linear's own path."""
    from mmmixlab.encoders.common import NarrowInputLinear

    torch.manual_seed(2)
    narrow, plain = NarrowInputLinear(6, 16).double(), nn.Linear(6, 16).double()
    plain.load_state_dict(narrow.state_dict())
    assert list(narrow.state_dict()) == list(plain.state_dict())
    x = torch.randn(5, 40, 6, dtype=torch.float64, requires_grad=True)
    y = narrow(x)
    assert y.grad_fn is not None and "NarrowInputLinear" in type(y.grad_fn).__name__
    torch.testing.assert_close(y, plain(x), rtol=0, atol=0)
    got = torch.autograd.grad(narrow(x).square().sum(), [x, narrow.weight, narrow.bias])
    ref = torch.autograd.grad(plain(x).square().sum(), [x, plain.weight, plain.bias])
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(narrow, (x[:2, :7],))
    with torch.no_grad():
        assert narrow(x).grad_fn is None
    narrow32 = NarrowInputLinear(6, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "NarrowInputLinear" not in type(narrow32(x.float()).grad_fn).__name__


def _pool_cases(p: int, dtype: torch.dtype, special: float) -> torch.Tensor:
    """(p, 32, 24) patches where a pool's rules bite: exact ties (as ball-query padding makes),
    a signed-zero tie, ``special`` (inf or NaN) in one column, a column of -inf."""
    torch.manual_seed(3)
    x = torch.randn(p, 32, 24).to(dtype)
    x[:, 7] = x[:, 2]
    x[0, :, 0] = 0.0
    x[0, 5, 0] = -0.0
    x[1, 3, 1] = special
    x[2, :, 2] = float("-inf")
    return x


def test_max_pool_without_autograd_gives_the_same_bits():
    """``max_pool`` takes ``amax`` when nothing records a gradient: the same values, bit for bit
    (ties from duplicated rows, signed zeros, infinities), and ``max`` with its lowest-index
    tie rule when autograd records: the gradient of a tie goes to its first row only."""
    from mmmixlab.encoders.common import max_pool

    x = _pool_cases(64, torch.float32, float("inf"))
    ref = x.max(dim=1, keepdim=True).values
    with torch.no_grad():
        got = max_pool(x, dim=1, keepdim=True)
    assert torch.equal(got.view(torch.int32), ref.view(torch.int32))
    assert torch.equal(max_pool(x, dim=1).view(torch.int32), ref.squeeze(1).view(torch.int32))

    t = torch.tensor([[[1.0], [3.0], [3.0], [2.0]]], requires_grad=True)
    max_pool(t, dim=1).sum().backward()
    assert t.grad.view(-1).tolist() == [0.0, 1.0, 0.0, 0.0]  # amax would give 0.5 and 0.5


def test_max_pool_without_autograd_bf16_gives_the_same_bits():
    """A CPU bf16 (P, k, C) without autograd (autocast's frozen targets) pools through the
    compiled scan: torch.max's values bit for bit, NaN, ties and signed zeros included."""
    from mmmixlab.encoders.common import max_pool

    x = _pool_cases(40, torch.bfloat16, float("nan"))
    ref = x.max(dim=1, keepdim=True).values
    with torch.no_grad():
        got = max_pool(x, dim=1, keepdim=True)
        assert torch.equal(got.view(torch.int16), ref.view(torch.int16))
        assert max_pool(x, dim=1).shape == (40, 24)
        assert torch.equal(max_pool(x, dim=2).view(torch.int16),  # other dims: amax
                           x.amax(dim=2).view(torch.int16))


def test_pointbert_tokenizer_under_cpu_autocast_runs_the_compiled_norms(monkeypatch):
    """Under CPU bf16 autocast the tokenizer takes the compiled norm (both layers), the fused
    pooled layer and the last layer's pooled backward, and computes what torch's autocast ops
    compute: the same tokens (bf16
    rounding apart), the gradient reaching the patches and every other parameter's within
    1%. The norms' own weight and bias gradients are not compared here: torch's bf16 norm
    backward is off by 5-30% against float64 at these sizes, so they are held against float64
    in ``tests/test_ops.py``. (Against a float64 run both bf16 paths differ by far more than
    rounding: a rounding can move a patch's maximum to another point.)"""
    import copy

    from mmmixlab import ops as ops_module
    from mmmixlab.encoders import pointbert as pb

    torch.manual_seed(6)
    tok = pb.PatchTokenizer(6, (16, 32, 32, 32), 48)
    with torch.no_grad():
        for p in tok.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = torch.randn(4, 16, 24, 6)
    weights = torch.linspace(-1, 1, 4 * 16 * 48).view(4, 16, 48)

    def run():
        module, inp = copy.deepcopy(tok), x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(inp)
        (out.double() * weights).sum().backward()
        return out.detach(), inp.grad, {n: p.grad for n, p in module.named_parameters()}

    calls = []
    real = ops_module.layer_norm_relu_forward
    monkeypatch.setattr(ops_module, "layer_norm_relu_forward",
                        lambda *a, **k: calls.append(k.get("add") is not None) or real(*a, **k))
    real_lm = ops_module.linear_max_rows_backward
    monkeypatch.setattr(ops_module, "linear_max_rows_backward",
                        lambda *a: calls.append("pooled last layer") or real_lm(*a))
    fused = run()
    # the first norm alone, the second with its add; the last layer's pooled backward
    assert sorted(calls, key=str) == [False, True, "pooled last layer"]
    monkeypatch.setattr(ops_module, "layer_norm_relu_fused_supported", lambda t: False)
    plain = run()

    def rel(a, b):
        return float((a.double() - b.double()).abs().max() / b.double().abs().max())

    assert fused[0].dtype == plain[0].dtype == torch.bfloat16
    assert rel(fused[0], plain[0]) < 1e-2 and rel(fused[1], plain[1]) < 1e-2
    for name, g in plain[2].items():
        if name not in ("first.1.weight", "first.1.bias", "second.1.weight", "second.1.bias"):
            assert rel(fused[2][name], g) < 1e-2, name


@pytest.mark.parametrize("name", ["pointbert-tiny", "pointnet"])
def test_encoder_features_without_autograd_equal_training_forward(name):
    """The no-grad forward (frozen targets, evaluation) pools with ``amax``, the recording
    forward with ``max``: the features are the same bits, on clouds with duplicate points."""
    torch.manual_seed(4)
    enc = create_point_encoder(name, out_dim=24, in_channels=6, **SMALL[name]).eval()
    x = _clouds(3, 512, 6, seed=5)
    x[:, 256:] = x[:, :256]               # every point twice: tied patch rows everywhere
    recorded = enc(x)
    assert recorded.requires_grad
    with torch.no_grad():
        plain = enc(x)
    assert torch.equal(plain.view(torch.int32), recorded.detach().view(torch.int32))


def test_max_pool_under_autograd_gives_torch_max_gradients():
    """The recording path (the compiled pool over dim 1) has torch.max's values and gradients
    bit for bit on tied rows, and is twice differentiable like it (gradcheck, float64)."""
    from mmmixlab.encoders.common import max_pool

    torch.manual_seed(6)
    x = torch.randn(50, 16, 12)
    x[:, 11] = x[:, 3]
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(50, 1, 12)
    va, vb = max_pool(a, dim=1, keepdim=True), b.max(dim=1, keepdim=True).values
    assert "MaxOverRows" in type(max_pool(a, dim=1).grad_fn).__name__
    assert torch.equal(va.detach().view(torch.int32), vb.detach().view(torch.int32))
    va.backward(g)
    vb.backward(g)
    assert torch.equal(a.grad.view(torch.int32), b.grad.view(torch.int32))
    xd = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: max_pool(t, dim=1), (xd,))
    assert torch.autograd.gradgradcheck(lambda t: max_pool(t, dim=1).square(), (xd,))


def test_compiled_pools_train_the_same_bits_as_torch_max(monkeypatch):
    """A Point-BERT training pass through the compiled pools gives torch.max's features and
    parameter gradients bit for bit (clouds with duplicate points: tied patch rows)."""
    from mmmixlab import ops
    from mmmixlab.encoders import common, pointbert

    x = _clouds(3, 512, 6, seed=8)
    x[:, 300:] = x[:, :212]

    def features_and_grads():
        torch.manual_seed(9)
        enc = create_point_encoder("pointbert-tiny", out_dim=24, in_channels=6,
                                   **SMALL["pointbert-tiny"])
        out = enc(x)
        out.square().sum().backward()
        return [out.detach()] + [p.grad for p in enc.parameters()]

    compiled = features_and_grads()
    monkeypatch.setattr(ops, "max_over_rows", ops.max_over_rows_reference)
    monkeypatch.setattr(pointbert, "max_pool", lambda t, dim, keepdim=False:
                        t.max(dim=dim, keepdim=keepdim).values)
    plain = features_and_grads()
    assert all(torch.equal(a.view(torch.int32), b.view(torch.int32))
               for a, b in zip(compiled, plain))


def test_attention_runs_in_float32_under_cpu_autocast():
    """``attention`` is SDPA as called, except under CPU autocast: there the attention itself
    runs in float32 on the widened inputs (torch's bf16 CPU flash-attention backward is ~6x
    slower), and gradients reach the bf16 inputs."""
    from mmmixlab.encoders.common import attention

    q, k, v = torch.randn(3, 2, 4, 9, 8).unbind(0)
    assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    qb, kb, vb = (t.to(torch.bfloat16).requires_grad_() for t in (q, k, v))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(qb, kb, vb)
        assert F.scaled_dot_product_attention(qb, kb, vb).dtype == torch.bfloat16
    assert out.dtype == torch.float32
    ref = F.scaled_dot_product_attention(qb.float(), kb.float(), vb.float())
    assert torch.equal(out, ref)
    out.sum().backward()
    assert qb.grad.dtype == torch.bfloat16 and qb.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["pointbert-tiny", "openshape-pointbert-tiny"])
def test_transformer_encoders_attend_through_the_shared_helper(name, monkeypatch):
    """Every transformer block calls ``common.packed_attention`` (the compiled attention where
    it fits), and with it switched off, ``common.attention`` (so CPU autocast keeps attention
    in float32); a block calling SDPA directly would not be counted."""
    import mmmixlab.encoders.openshape_pointbert as osp
    import mmmixlab.encoders.pointbert as pb
    from mmmixlab.encoders import common, set_fused_attention

    packed, plain = [], []
    real_packed, real_plain = common.packed_attention, common.attention
    module = pb if name == "pointbert-tiny" else osp
    monkeypatch.setattr(module, "packed_attention",
                        lambda qkv, *a: packed.append(qkv.shape) or real_packed(qkv, *a))
    monkeypatch.setattr(common, "attention",
                        lambda q, k, v: plain.append(q.shape) or real_plain(q, k, v))
    enc = create_point_encoder(name, 16)
    depth = len(enc.blocks) if name == "pointbert-tiny" else len(enc.ppat.transformer.layers)
    assert set_fused_attention(enc, False) == depth >= 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = enc(torch.rand(2, 1024, 6) * 2 - 1)
    assert len(packed) == len(plain) == depth and torch.isfinite(feats.float()).all()


# --- patches cut once and passed in (train.share_patches) ------------------------------------
_PATCHED = [("pointbert-tiny", {"grouping": "ball"}), ("pointbert-tiny", {"grouping": "knn"}),
            ("openshape-pointbert-tiny", {})]


@pytest.mark.parametrize("name,overrides", _PATCHED)
def test_given_patch_index_gives_the_features_of_patches_cut_inside(name, overrides):
    """``forward(points, patches=patch_index(points))`` is ``forward(points)`` bit for bit,
    forward and backward; and a batch's index is its rows' indices stacked (``PatchIndex.cat``):
    the row independence the trainer's sharing relies on (A's unmixed clouds are B's last rows)."""
    from mmmixlab.encoders.common import PatchIndex
    torch.manual_seed(0)
    enc = create_point_encoder(name, out_dim=16, **overrides, **SMALL.get(name, {}))
    x = _clouds(6, 300, 6, seed=2)
    x[1] = x[0]  # a duplicated cloud, and a cloud of repeated points
    x[2, 150:] = x[2, :150]
    own = enc(x)
    own.square().sum().backward()
    grads = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    index = enc.patch_index(x)
    given = enc(x, patches=index)
    given.square().sum().backward()
    assert torch.equal(own, given)
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, enc.parameters()))
    parts = PatchIndex.cat([enc.patch_index(x[:4]), enc.patch_index(x[4:])])
    assert torch.equal(parts.centers, index.centers)
    assert torch.equal(parts.neighbors, index.neighbors)
    chunks = index.split(4)
    assert [c.centers.shape[0] for c in chunks] == [4, 2]
    assert torch.equal(chunks[1].neighbors, index.rows(slice(4, 6)).neighbors)
    # another cut gives other features: the index is really used
    shifted = PatchIndex(index.centers.roll(1, dims=0), index.neighbors.roll(1, dims=0))
    assert not torch.equal(enc(x, patches=shifted), given)


def test_a_random_fps_start_is_never_shared():
    enc = create_point_encoder("openshape-pointbert-tiny", out_dim=16, fps_start="random")
    assert enc.patch_key is None
    first = create_point_encoder("openshape-pointbert-tiny", out_dim=16)
    pb = create_point_encoder("pointbert-tiny", out_dim=16)
    # keys tell cuts apart: OpenShape's ball query includes the radius, this project's not
    assert first.patch_key is not None and first.patch_key != pb.patch_key
    assert pb.patch_key != create_point_encoder("pointbert-tiny", out_dim=16,
                                                group_size=16).patch_key


@pytest.mark.parametrize("name", ["pointbert-tiny", "openshape-pointbert-tiny"])
def test_bad_patch_index_is_refused(name):
    from mmmixlab.checks import values_checked
    from mmmixlab.encoders.common import PatchIndex
    enc = create_point_encoder(name, out_dim=16, **SMALL.get(name, {}))
    x = _clouds(3, 200, 6)
    good = enc.patch_index(x)
    with pytest.raises(TypeError, match="PatchIndex"):
        enc(x, patches=(good.centers, good.neighbors, None))
    with pytest.raises(ValueError, match=r"patches.centers must have shape \(3, "):
        enc(x, patches=good.rows(slice(0, 2))._replace(neighbors=good.neighbors))
    with pytest.raises(ValueError, match=r"patches.neighbors must have shape"):
        enc(x, patches=PatchIndex(good.centers, good.neighbors[..., :-1]))
    with pytest.raises(ValueError, match="int64"):
        enc(x, patches=PatchIndex(good.centers.int(), good.neighbors))
    bad = good.neighbors.clone()
    bad[1, 0, 0] = 200
    with pytest.raises(ValueError, match=r"outside \[0, 200\)"):
        enc(x, patches=PatchIndex(good.centers, bad))
    with pytest.raises(ValueError, match=r"outside \[0, 200\)"):
        enc(x, patches=PatchIndex(good.centers - 1, good.neighbors))
    with values_checked():  # the trainer's own indices: the range scan is skipped, shapes not
        with pytest.raises(ValueError, match="patches.centers must have shape"):
            enc(x[:2], patches=good)
