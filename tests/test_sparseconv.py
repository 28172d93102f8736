"""SparseConv: the sparse convolution against dense Conv3d, voxelization, the MinkResNet encoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmmixlab.encoders import create_point_encoder
from mmmixlab.encoders.sparse import (
    SparseConv3d,
    SparseTensor,
    downsample_coords,
    global_pool,
    kernel_offsets,
    voxelize,
)


def random_sparse(seed, batch=2, extent=6, occupancy=0.3, channels=3, stride=1):
    """Random occupied voxels (multiples of ``stride``, negative coordinates included)."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.rand((batch, extent, extent, extent), generator=g) < occupancy
    b, x, y, z = grid.nonzero(as_tuple=True)
    coords = torch.stack([b, (x - extent // 2) * stride, (y - 2) * stride, (z - 1) * stride],
                         dim=1)
    feats = torch.randn((coords.shape[0], channels), generator=g, dtype=torch.float64)
    return SparseTensor(coords, feats, stride, batch)


def dense_reference(x: SparseTensor, conv: SparseConv3d, out: SparseTensor, grad_out=None):
    """Run ``conv`` as torch.nn.Conv3d on the zero-filled grid; read it at ``out``'s voxels.

    Returns (output rows, input-feature grad, weight grad) for the upstream grad ``grad_out``.
    """
    s, t, k = x.stride, conv.stride, conv.kernel_size
    cell = s * t  # output coordinates are multiples of s*t: align the grid origin to them
    lo = torch.div(x.coords[:, 1:].min(0).values, cell, rounding_mode="floor") * cell - 2 * cell
    g = (x.coords[:, 1:] - lo) // s
    size = int(g.max()) + 4 * t + k
    feats = x.feats.detach().clone().requires_grad_(True)
    dense = torch.zeros((x.batch_size, size, size, size, feats.shape[1]), dtype=feats.dtype)
    dense = dense.index_put((x.coords[:, 0], g[:, 0], g[:, 1], g[:, 2]), feats)
    dense = dense.permute(0, 4, 1, 2, 3)  # (B, C, X, Y, Z)
    weight = conv.weight.detach().clone().requires_grad_(True)
    pad = k // 2 if k % 2 else 0
    y = F.conv3d(dense, weight.permute(0, 4, 1, 2, 3), stride=t, padding=pad)
    j = (out.coords[:, 1:] - lo) // cell
    rows = y.permute(0, 2, 3, 4, 1)[out.coords[:, 0], j[:, 0], j[:, 1], j[:, 2]]
    if grad_out is None:
        return rows, None, None
    rows.backward(grad_out)
    return rows.detach(), feats.grad, weight.grad


@pytest.mark.parametrize("kernel,stride,in_stride", [(3, 1, 1), (5, 1, 1), (1, 1, 1),
                                                     (2, 2, 1), (3, 2, 1), (3, 1, 2),
                                                     (2, 2, 4), (3, 2, 2), (3, 3, 1),
                                                     (4, 4, 1)])
def test_sparse_conv_equals_dense_conv3d_values_and_gradients(kernel, stride, in_stride):
    torch.manual_seed(kernel * 10 + stride)
    x = random_sparse(seed=kernel + 7 * stride + in_stride, stride=in_stride)
    conv = SparseConv3d(3, 4, kernel, stride).double()
    feats = x.feats.clone().requires_grad_(True)
    out = conv(x.with_feats(feats))
    assert out.stride == in_stride * stride
    if stride == 1:
        assert torch.equal(out.coords, x.coords)  # submanifold: the occupied set is kept
    else:  # strided: input voxels floored to the coarser grid, each once
        floored = x.coords.clone()
        floored[:, 1:] = torch.div(floored[:, 1:], out.stride, rounding_mode="floor") * out.stride
        assert sorted(map(tuple, out.coords.tolist())) == sorted(set(map(tuple,
                                                                          floored.tolist())))
    grad_out = torch.randn_like(out.feats)
    out.feats.backward(grad_out)
    ref, ref_gx, ref_gw = dense_reference(x, conv, out, grad_out)
    torch.testing.assert_close(out.feats, ref)
    torch.testing.assert_close(feats.grad, ref_gx)
    torch.testing.assert_close(conv.weight.grad, ref_gw)


def test_sparse_conv_passes_gradcheck():
    x = random_sparse(seed=3, batch=2, extent=4, occupancy=0.4, channels=2)
    conv = SparseConv3d(2, 3, 3, 2).double()
    feats = x.feats.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f, w: SparseConv3d.forward(
        _with_weight(conv, w), x.with_feats(f)).feats, (feats, conv.weight.detach().clone()
                                                         .requires_grad_(True)))


def _with_weight(conv, w):
    clone = SparseConv3d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride)
    del clone.weight
    clone.weight = w
    return clone


def test_kernel_offsets_follow_minkowski_engine():
    assert kernel_offsets(3).tolist()[0] == [-1, -1, -1]
    assert kernel_offsets(3).tolist()[13] == [0, 0, 0]
    assert kernel_offsets(2).tolist() == [[a, b, c] for a in (0, 1) for b in (0, 1)
                                          for c in (0, 1)]
    assert kernel_offsets(5).shape == (125, 3)


def test_voxelize_keeps_one_mean_feature_per_occupied_voxel():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand((2, 300, 6), generator=g) * 2 - 1
    pts[1, :50] = pts[1, 50:100]  # duplicates share voxels
    size = 0.3
    sp = voxelize(pts, size)
    naive = {}
    for b in range(2):
        for p in pts[b]:
            key = (b, *[int(torch.floor(v / size)) for v in p[:3].double()])
            naive.setdefault(key, []).append(p)
    assert sp.coords.shape[0] == len(naive)
    got = {tuple(c): f for c, f in zip(sp.coords.tolist(), sp.feats)}
    assert set(got) == set(naive)
    for key, members in naive.items():
        torch.testing.assert_close(got[key], torch.stack(members).mean(0))
    assert sp.stride == 1 and sp.batch_size == 2
    # floor, not truncation: -0.01 belongs to voxel -1
    neg = voxelize(torch.tensor([[[-0.01, 0.0, 0.0], [0.5, 0.5, 0.5]]]), 0.1)
    assert [-1, 0, 0] in neg.coords[:, 1:].tolist()


def test_downsample_and_global_pool():
    x = random_sparse(seed=1, channels=2)
    d = downsample_coords(x.coords, 4)
    assert (d[:, 1:] % 4 == 0).all() and len(set(map(tuple, d.tolist()))) == d.shape[0]
    mx, mean = global_pool(x, "max"), global_pool(x, "mean")
    for b in range(x.batch_size):
        rows = x.feats[x.coords[:, 0] == b]
        torch.testing.assert_close(mx[b], rows.max(0).values)
        torch.testing.assert_close(mean[b], rows.mean(0))


def unit_clouds(seed, b=3, n=400, channels=6):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand((b, n, channels), generator=g)
    xyz = torch.randn((b, n, 3), generator=g)
    pts[..., :3] = xyz / xyz.norm(dim=-1, keepdim=True) * torch.rand((b, n, 1), generator=g)
    return pts


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_encoder_is_invariant_to_point_order_and_duplicates(norm):
    torch.manual_seed(0)
    enc = create_point_encoder("sparseconv-tiny", 32, 6, norm=norm).eval()
    pts = unit_clouds(1)
    with torch.no_grad():
        ref = enc(pts)
        perm = enc(pts[:, torch.randperm(pts.shape[1])])
        doubled = enc(torch.cat([pts, pts.flip(1)], dim=1))
    assert ref.shape == (3, 32) and torch.isfinite(ref).all()
    torch.testing.assert_close(perm, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(doubled, ref, rtol=1e-5, atol=1e-5)


def test_batch_elements_do_not_leak_into_each_other():
    torch.manual_seed(0)
    pts = unit_clouds(2, b=4)
    # per-voxel LayerNorm: independent even in training mode (dropout off in the tiny preset)
    enc = create_point_encoder("sparseconv-tiny", 16, 6).train()
    together = enc(pts)
    alone = torch.cat([enc(pts[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    changed = pts.clone()
    changed[0, :, :3] *= 0.5
    out = enc(changed)
    torch.testing.assert_close(out[1:], together[1:], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[0], together[0])
    # OpenShape's BatchNorm: independent in eval mode (running statistics)
    bn = create_point_encoder("sparseconv-tiny", 16, 6, norm="batch").eval()
    with torch.no_grad():
        torch.testing.assert_close(bn(pts), torch.cat([bn(pts[i:i + 1]) for i in range(4)]),
                                   rtol=1e-5, atol=1e-5)
    assert bn.mixes_batch and not enc.mixes_batch


def test_encoder_trains_xyz_only_and_full_size_count():
    torch.manual_seed(0)
    enc = create_point_encoder("sparseconv-tiny", 8, 3)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    pts = unit_clouds(3, b=4, channels=3)
    target = torch.randn(4, 8)
    losses = []
    for _ in range(5):
        loss = F.mse_loss(enc(pts), target)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all()
                   for p in enc.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    from mmmixlab.encoders import count_parameters
    full = create_point_encoder("sparseconv", 1280, 6)
    assert count_parameters(full) == 41_327_104  # OpenShape's MinkResNet34: 41.3M
    assert full.config.voxel_size == 0.02 and full.config.layers == (3, 4, 6, 3)


@pytest.mark.parametrize("make,match", [
    (lambda: torch.zeros(2, 0, 6), "empty|at least"),
    (lambda: torch.full((2, 50, 6), 0.001), "single voxel"),
    (lambda: unit_clouds(0, b=2).index_put_((torch.tensor([1]), torch.tensor([3]),
                                             torch.tensor([0])), torch.tensor(float("nan"))),
     "NaN|finite"),
])
def test_encoder_rejects_bad_clouds(make, match):
    enc = create_point_encoder("sparseconv-tiny", 8, 6)
    with pytest.raises(ValueError, match=match):
        enc(make())


def test_bad_voxel_size_and_options_name_the_argument():
    for bad in (0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="voxel_size"):
            create_point_encoder("sparseconv-tiny", 8, 6, voxel_size=bad)
        with pytest.raises(ValueError, match="voxel_size"):
            voxelize(unit_clouds(0), bad)
    with pytest.raises(ValueError, match="norm"):
        create_point_encoder("sparseconv", 8, 6, norm="group")
    with pytest.raises(ValueError, match="planes"):
        create_point_encoder("sparseconv", 8, 6, planes=(8, 8), layers=(1,))
    with pytest.raises(ValueError, match="unknown SparseConvConfig"):
        create_point_encoder("sparseconv", 8, 6, voxelsize=0.1)


def test_trainer_refuses_gradient_caching_with_batch_norm_and_trains_a_step_without():
    from mmmixlab.train import Trainer
    from tests.helpers.toy import toy_batches, toy_cfg
    small = {"layers": (1, 1, 1, 1), "planes": (8, 8, 8, 8), "stem_kernel": 3,
             "embedding_channels": 16, "head_hidden": 16, "voxel_size": 0.1}
    cfg = toy_cfg("mm-mixing", **{"train.encoder": "sparseconv", "train.grad_cache_chunk": 4,
                                  "train.encoder_overrides": small})
    with pytest.raises(ValueError, match="grad_cache_chunk=4.*norm='batch'"):
        Trainer(cfg, toy_batches(), embed_dim=16, progress=False)
    # per-voxel LayerNorm: gradient caching gives the full batch's gradients
    results = []
    for chunk in (0, 3):
        cfg = toy_cfg("mm-mixing", **{"train.encoder": "sparseconv-tiny",
                                      "train.grad_cache_chunk": chunk, "train.batch_size": 12})
        tr = Trainer(cfg, toy_batches(batch_size=12), embed_dim=16, progress=False)
        batch = tr.batches.make_batch(torch.arange(12), torch.Generator().manual_seed(0))
        loss, _ = tr._forward_backward(next(p for p in tr.phases if p.name == "stage1"), batch)
        results.append((loss.item(), {n: p.grad.clone() for n, p in
                                      tr.encoders["A"].named_parameters()}))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for name, g in results[0][1].items():
        torch.testing.assert_close(g, results[1][1][name], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_cli_trains_and_evaluates_mm_mixing_with_sparseconv_tiny(tmp_path):
    import json

    from mmmixlab.cli import main
    from tests.test_pipeline import SMALL
    run = tmp_path / "run"
    assert main(["train", "--variant", "mm-mixing", "--encoder", "sparseconv-tiny", "--out",
                 str(run), "--seed", "0", "--cache", str(tmp_path / "cache")] + SMALL) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config"]["train"]["encoder"] == "sparseconv-tiny"
    assert 0.0 <= metrics["zero_shot"]["test"]["top1"] <= 1.0
    assert [h["phase"] for h in metrics["history"]] == ["stage1", "stage2"]
    # the saved run evaluates again from its checkpoint (weights-only load, same encoder)
    assert main(["eval", "--run", str(run)]) == 0


@pytest.mark.slow
def test_notebook_path_trains_and_shows_a_stage2_step_with_sparseconv_tiny(tmp_path):
    # what the series does with BACKBONE = "sparseconv-tiny" (smoke sizes)
    from mmmixlab import workbench
    cfg = workbench.notebook_config(backbone="sparseconv-tiny", cache=str(tmp_path), smoke=True,
                                    device="cpu")
    world = workbench.get_world(cfg, progress=False)
    run = workbench.get_run(cfg, "mm-mixing", progress=False)
    assert run.metrics["config"]["train"]["encoder"] == "sparseconv-tiny"
    assert set(run.encoders) == {"A", "B"}
    step = workbench.one_step(run, world, phase="stage2")
    assert torch.isfinite(torch.as_tensor(step["loss"])).all()  # notebook 04's step cell
    feats = workbench.run_point_features(run, world)
    assert all(torch.isfinite(f).all() for f in feats.values())


def test_kernel_map_built_in_chunks_gives_the_same_convolution(monkeypatch):
    import mmmixlab.encoders.sparse as sparse
    x = random_sparse(seed=11)
    conv = SparseConv3d(3, 4, 5, 1).double()
    whole = conv(x.with_feats(x.feats)).feats
    monkeypatch.setattr(sparse, "_QUERY_CHUNK", 50)  # a few offsets per chunk, centre inside one
    chunked = conv(SparseTensor(x.coords, x.feats, 1, x.batch_size)).feats
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(whole, dense_reference(x, conv, conv(x))[0])
