"""Point-cloud ops against independent answers: open3d's FPS, brute-force numpy, cKDTree."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from mmmixlab import ops
from mmmixlab.ops import (
    ball_query,
    ball_query_reference,
    farthest_point_sample,
    farthest_point_sample_reference,
    group,
    index_points,
    knn,
)

FPS_IMPLS = [pytest.param(farthest_point_sample, id="dispatch"),
             pytest.param(farthest_point_sample_reference, id="torch-reference")]


def _o3d_fps_points(x: np.ndarray, m: int, start: int) -> np.ndarray:
    # CI sets MMMIXLAB_REQUIRE_OPEN3D=1: there a missing reference is a failure, not a skip.
    if os.environ.get("MMMIXLAB_REQUIRE_OPEN3D") == "1":
        import open3d as o3d
    else:
        o3d = pytest.importorskip("open3d")
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(x.astype(np.float64)))
    return np.asarray(pc.farthest_point_down_sample(m, start).points)


def test_numba_path_is_taken_on_cpu():
    # Without numba the "dispatch" cases below would only re-test the reference.
    assert ops.HAVE_NUMBA


@pytest.mark.parametrize("fps", FPS_IMPLS)
@pytest.mark.parametrize("n,m,start,seed", [(1000, 256, 0, 0), (1000, 256, 731, 1),
                                            (2000, 512, 0, 2), (2000, 512, 1999, 3),
                                            (300, 300, 5, 4)])
def test_fps_matches_open3d(fps, n, m, start, seed):
    x = np.random.default_rng(seed).standard_normal((n, 3)).astype(np.float32)
    idx = fps(torch.from_numpy(x)[None], m, start)[0].numpy()
    assert idx.shape == (m,) and idx[0] == start
    assert len(np.unique(idx)) == m
    # open3d returns the picked points in index order, so compare against the sorted picks.
    np.testing.assert_array_equal(_o3d_fps_points(x, m, start),
                                  x.astype(np.float64)[np.sort(idx)])


@pytest.mark.parametrize("fps", FPS_IMPLS)
def test_fps_pick_order_matches_open3d_prefixes(fps):
    # open3d does not expose the order; the m-th pick is what m samples add over m-1 samples.
    x = np.random.default_rng(5).uniform(-1, 1, (120, 3))
    idx = fps(torch.from_numpy(x)[None], 25, 7)[0].numpy()
    prev = set()
    for m in range(1, 26):
        cur = {tuple(p) for p in _o3d_fps_points(x, m, 7)}
        (new,) = cur - prev
        assert new == tuple(x[idx[m - 1]])
        prev = cur


def test_fps_numba_and_reference_agree_batched_with_tensor_start():
    x = torch.rand(5, 700, 3, dtype=torch.float64) * 2 - 1
    start = torch.tensor([0, 5, 699, 123, 42])
    a = farthest_point_sample(x, 96, start)
    b = farthest_point_sample_reference(x, 96, start)
    assert a.dtype == torch.int64 and a.shape == (5, 96)
    assert torch.equal(a, b)
    for i in range(5):  # batched == one cloud at a time
        assert torch.equal(a[i], farthest_point_sample(x[i:i + 1], 96, int(start[i]))[0])


@pytest.mark.parametrize("fps", FPS_IMPLS)
def test_fps_hand_cases(fps):
    line = torch.tensor([[[0.3, 0, 0], [0.0, 0, 0], [1.0, 0, 0], [0.6, 0, 0], [0.5, 0, 0]]])
    # from 0.3: the far end (1.0); then 0.0 and 0.6 tie at distance 0.3 and the lower index
    # (0.0) wins; then 0.6, farther from {0.3, 1.0, 0.0} than 0.5 is
    assert fps(line, 4, 0)[0].tolist() == [0, 2, 1, 3]
    # ties go to the lowest index: from 0, points 1 and 2 are equally far
    sym = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [-1.0, 0, 0]]])
    assert fps(sym, 2, 0)[0].tolist() == [0, 1]
    # fewer distinct points than samples: open3d repeats its last pick
    dup = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0], [1.0, 0, 0]]])
    assert fps(dup, 4, 0)[0].tolist() == [0, 1, 1, 1]
    assert fps(line, 1, 3)[0].tolist() == [3]


@pytest.mark.parametrize("fps", FPS_IMPLS)
def test_fps_validation(fps):
    x = torch.rand(2, 10, 3)
    bad = x.clone()
    bad[1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fps(bad, 4)
    with pytest.raises(ValueError, match="shape"):
        fps(torch.rand(10, 3), 4)
    with pytest.raises(ValueError, match="channels"):
        fps(torch.rand(2, 10, 6), 4)
    with pytest.raises(ValueError, match=r"N=10.*got 11"):
        fps(x, 11)
    with pytest.raises(ValueError, match="num_samples"):
        fps(x, 0)
    with pytest.raises(ValueError, match="start_index"):
        fps(x, 4, 10)
    with pytest.raises(ValueError, match="start_index"):
        fps(x, 4, torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="start_index"):
        fps(x, 4, torch.tensor([0, 1, 2]))


def _brute_knn(q, p, k):
    d = ((q[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(len(p)), d.shape), d), axis=-1)[:, :k]
    return np.take_along_axis(d, order, -1), order


def test_knn_matches_kdtree():
    rng = np.random.default_rng(0)
    p = rng.uniform(-1, 1, (3, 500, 3))
    q = rng.uniform(-1, 1, (3, 40, 3))
    d, idx = knn(torch.from_numpy(q), torch.from_numpy(p), 16)
    assert d.shape == idx.shape == (3, 40, 16) and idx.dtype == torch.int64
    for b in range(3):
        dd, ii = cKDTree(p[b]).query(q[b], k=16)
        np.testing.assert_array_equal(idx[b].numpy(), ii)
        np.testing.assert_allclose(d[b].numpy(), dd ** 2, rtol=1e-12, atol=1e-14)


def test_knn_ties_and_chunking(monkeypatch):
    # integer grid: many exactly equal distances; tie rule is (distance, index)
    rng = np.random.default_rng(1)
    p = rng.integers(0, 4, (2, 60, 3)).astype(np.float32)
    q = rng.integers(0, 4, (2, 9, 3)).astype(np.float32)
    monkeypatch.setattr(ops, "_CHUNK_ELEMENTS", 2 * 60 * 2)  # force several query chunks
    d, idx = knn(torch.from_numpy(q), torch.from_numpy(p), 7)
    for b in range(2):
        bd, bi = _brute_knn(q[b], p[b], 7)
        np.testing.assert_array_equal(idx[b].numpy(), bi)
        np.testing.assert_array_equal(d[b].numpy(), bd)
    with pytest.raises(ValueError, match="k=61"):
        knn(torch.from_numpy(q), torch.from_numpy(p), 61)


def _brute_ball(q, p, r, k):
    out = np.empty((len(q), k), np.int64)
    for i, c in enumerate(q):
        d = ((p - c) ** 2).sum(-1)
        found = [j for j in range(len(p)) if d[j] < r * r][:k]
        if not found:
            found = [int(np.argmin(d))]
        out[i] = found + [found[0]] * (k - len(found))
    return out


@pytest.mark.parametrize("k", [8, 40])
def test_ball_query_matches_brute_force(k):
    rng = np.random.default_rng(2)
    p = rng.uniform(-1, 1, (2, 300, 3)).astype(np.float32)
    # queries: some cloud points (never empty), some far away (no neighbour -> nearest point)
    q = np.concatenate([p[:, :20], rng.uniform(-3, 3, (2, 10, 3)).astype(np.float32)], 1)
    q[:, -1] = 5.0
    idx = ball_query(torch.from_numpy(q), torch.from_numpy(p), 0.3, k)
    assert idx.shape == (2, 30, k)
    for b in range(2):
        d = ((q[b][:, None] - p[b][None]) ** 2).sum(-1)
        np.testing.assert_array_equal(idx[b].numpy(), _brute_ball(q[b], p[b], 0.3, k))
    # the padding and no-neighbour rules were exercised, not just the full case
    counts = (d < 0.09).sum(-1)
    assert (counts == 0).any() and ((counts > 0) & (counts < k)).any()


def test_ball_query_k_larger_than_n():
    p = torch.tensor([[[0.0, 0, 0], [0.1, 0, 0], [2.0, 0, 0]]])
    q = torch.tensor([[[0.0, 0, 0], [3.0, 0, 0]]])
    assert ball_query(q, p, 0.5, 5)[0].tolist() == [[0, 1, 0, 0, 0], [2, 2, 2, 2, 2]]


def _ball_cases():
    """Clouds where the rules bite: duplicates, points exactly on the radius, far queries,
    k above N, a single-point cloud."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 400, 3, generator=g) * 2 - 1
    x[:, 100:150] = x[:, :1]                       # 51 copies of point 0: ties everywhere
    q = torch.cat([x[:, :30], torch.rand(3, 6, 3, generator=g) * 6 - 3], 1)
    q[:, -1] = 9.0                                  # no neighbour: the nearest point
    on = torch.zeros(1, 4, 3)
    on[0, 1:, 0] = torch.tensor([0.25, 0.5, 0.75])  # exact binary fractions: d2 == r2 exactly
    yield "random+duplicates", q, x, 0.3, 16
    yield "random, k > N", q[:, :5], x[:, :12], 0.9, 20
    yield "on the radius", on[:, :1], on, 0.5, 4
    yield "one point", q[:1, :3], x[:1, :1], 0.1, 3
    yield "float64", q.double(), x.double(), 0.3, 16
    yield "float32 queries, float64 points", q, x.double(), 0.3, 16


@pytest.mark.parametrize("inclusive", [False, True])
def test_compiled_ball_query_equals_the_torch_reference(inclusive):
    """The CPU kernel (early exit, per-query scan) and the vectorised torch reference agree
    index for index, and the strict / inclusive radius test tells the boundary apart."""
    for name, q, x, r, k in _ball_cases():
        got = ball_query(q, x, r, k, inclusive=inclusive)
        ref = ball_query_reference(q, x, r, k, inclusive=inclusive)
        assert got.dtype == ref.dtype == torch.int64 and got.shape == ref.shape, name
        assert torch.equal(got, ref), name
    _, q, x, r, k = list(_ball_cases())[2]
    on = ball_query(q, x, r, k, inclusive=inclusive)[0, 0].tolist()
    assert on == ([0, 1, 2, 0] if inclusive else [0, 1, 0, 0])  # 0.5 is on the radius


def test_compiled_ball_query_splits_large_batches_the_same(monkeypatch):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 2000, 3, generator=g)
    q = x[:, :64]
    monkeypatch.setattr(ops, "_FPS_PARALLEL_MIN_WORK", 1)  # force the helper threads
    if not ops._fps_helpers():
        pytest.skip("one core: no helper threads")
    assert torch.equal(ball_query(q, x, 0.1, 24), ball_query_reference(q, x, 0.1, 24))


def test_index_points_and_group():
    pts = torch.arange(2 * 5 * 6, dtype=torch.float32).view(2, 5, 6)
    idx = torch.tensor([[[0, 4], [1, 1], [2, 3]], [[4, 4], [0, 1], [3, 2]]])
    g = index_points(pts, idx)
    assert g.shape == (2, 3, 2, 6)
    assert torch.equal(g[1, 2, 0], pts[1, 3])
    centers = torch.randn(2, 3, 3)
    rel = group(pts, centers, idx)
    assert rel.shape == (2, 3, 2, 6)
    assert torch.allclose(rel[..., :3], g[..., :3] - centers[:, :, None])
    assert torch.equal(rel[..., 3:], g[..., 3:])  # rgb untouched
    assert group(pts[..., :3], centers, idx).shape == (2, 3, 2, 3)
    # gradients flow through the gather
    x = torch.randn(1, 5, 3, requires_grad=True)
    index_points(x, torch.tensor([[1, 1, 3]])).sum().backward()
    assert x.grad[0, :, 0].tolist() == [0, 2, 0, 1, 0]


@pytest.mark.parametrize("kind", ["normal", "grid", "rounded", "duplicates"])
def test_pruned_fps_equals_the_plain_loop_ties_included(kind):
    """The cell-pruned loop (used for many picks) picks exactly what the plain loop picks, on
    clouds full of equal distances and repeated points, for any cell size."""
    from mmmixlab.ops import _fps_kernel_pruned, _fps_kernel_serial
    rng = np.random.default_rng(11)
    for n, m in ((7, 7), (300, 64), (2500, 700)):
        if kind == "normal":
            x = rng.normal(size=(2, n, 3))
        elif kind == "grid":
            x = rng.integers(0, 4, size=(2, n, 3)).astype(np.float64)
        elif kind == "rounded":
            x = np.round(rng.uniform(-1, 1, size=(2, n, 3)), 1)
        else:
            x = np.repeat(rng.normal(size=(2, n // 5 + 1, 3)), 5, axis=1)[:, :n]
        xt = np.ascontiguousarray(x.transpose(0, 2, 1))
        start = rng.integers(0, n, size=2)
        plain = _fps_kernel_serial(xt, start, m) if m < 256 else None
        for cell in (1, 16, 64):
            pruned = _fps_kernel_pruned(xt, start, m, cell)
            ref = farthest_point_sample_reference(torch.from_numpy(x), m,
                                                  torch.from_numpy(start)).numpy()
            np.testing.assert_array_equal(pruned, ref)
            if plain is not None:
                np.testing.assert_array_equal(pruned, plain)


def test_fps_with_many_picks_matches_open3d():
    """Sizes that take the pruned path through the public function."""
    x = np.random.default_rng(3).standard_normal((4000, 3)).astype(np.float32)
    idx = farthest_point_sample(torch.from_numpy(x)[None], 1024, 17)[0].numpy()
    np.testing.assert_array_equal(_o3d_fps_points(x, 1024, 17),
                                  x.astype(np.float64)[np.sort(idx)])


# ----------------------------------------------------------------------------- FPS fast paths

def _naive_fps(x: np.ndarray, m: int, start: int) -> list:
    """open3d's legacy loop, transcribed: float64, (dx*dx + dy*dy) + dz*dz, strict '>'."""
    x = x.astype(np.float64)
    dist = np.full(len(x), np.inf)
    far, out = start, []
    for _ in range(m):
        out.append(far)
        s = x[far]
        best = 0.0
        for j in range(len(x)):
            d = x[j] - s
            dist[j] = min(dist[j], (d[0] * d[0] + d[1] * d[1]) + d[2] * d[2])
            if dist[j] > best:
                best, far = dist[j], j
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,m", [(1, 1), (2, 1), (2, 2), (3, 3), (5, 4), (64, 1), (64, 63),
                                 (64, 64), (200, 64), (512, 64), (513, 512), (1000, 256)])
def test_fps_single_cloud_sizes_match_open3d_and_naive(n, m, dtype):
    rng = np.random.default_rng(n * 7 + m)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    start = int(rng.integers(n))
    idx = farthest_point_sample(torch.from_numpy(x).to(dtype)[None], m, start)
    assert idx.dtype == torch.int64 and idx.shape == (1, m) and idx.device.type == "cpu"
    xd = torch.from_numpy(x).to(dtype).double().numpy()
    if n <= 200:
        assert idx[0].tolist() == _naive_fps(xd, m, start)
    assert torch.equal(idx, farthest_point_sample_reference(torch.from_numpy(xd)[None], m, start))
    np.testing.assert_array_equal(_o3d_fps_points(xd, m, start), xd[np.sort(idx[0].numpy())])


@pytest.mark.parametrize("kind", ["grid", "duplicates", "all_same", "two_points", "line"])
@pytest.mark.parametrize("n,m", [(8, 8), (50, 50), (300, 64), (600, 600)])
def test_fps_ties_and_duplicates_match_open3d(kind, n, m):
    """Clouds full of equal distances and repeated points; M up to N, past the distinct
    points (open3d then repeats its last pick)."""
    rng = np.random.default_rng(n + m)
    if kind == "grid":
        x = rng.integers(0, 3, (n, 3)).astype(np.float64)
    elif kind == "duplicates":
        x = np.repeat(rng.normal(size=(n // 4 + 1, 3)), 4, axis=0)[:n]
    elif kind == "all_same":
        x = np.full((n, 3), 0.25)
    elif kind == "two_points":
        x = np.where(rng.random((n, 1)) < 0.5, 1.0, -1.0) * np.ones((1, 3))
    else:
        x = np.zeros((n, 3))
        x[:, 0] = np.arange(n) % 7  # equally spaced, repeated
    start = int(rng.integers(n))
    idx = farthest_point_sample(torch.from_numpy(x)[None], m, start)[0]
    if n <= 50:
        assert idx.tolist() == _naive_fps(x, m, start)
    assert torch.equal(idx, farthest_point_sample_reference(torch.from_numpy(x)[None], m,
                                                            start)[0])
    picked = np.unique(idx.numpy())
    if m < n:
        np.testing.assert_array_equal(_o3d_fps_points(x, m, start), x[picked])
    else:  # open3d returns the whole cloud when asked for all of it, without sampling
        np.testing.assert_array_equal(_o3d_fps_points(x, m, start), x)


def test_fps_nearly_equal_distances_lower_index_is_not_the_max():
    """Distances equal in all but their last bits: the kernels pack a distance's high bits
    with the point index to find the pick in one pass; here the lower index holds the smaller
    distance of the pair that packing cannot tell apart, so the exact check must overrule."""
    eps = 2.0 ** -52
    # from point 0: point 1 at distance 1, point 2 at (1 + eps)^2 = 1 + 2 eps (last bits)
    x = np.array([[0.0, 0, 0], [1.0, 0, 0], [1.0 + eps, 0, 0], [0.5, 0, 0]])
    assert _naive_fps(x, 3, 0)[:2] == [0, 2]
    for fps in (farthest_point_sample, farthest_point_sample_reference):
        assert fps(torch.from_numpy(x)[None], 3, 0)[0].tolist() == _naive_fps(x, 3, 0)
    from mmmixlab.ops import _fps_kernel_pruned
    xt = np.ascontiguousarray(x.T[None])
    for cell in (1, 2, 4):
        assert _fps_kernel_pruned(xt, np.array([0]), 3, cell)[0].tolist() == _naive_fps(x, 3, 0)
    np.testing.assert_array_equal(_o3d_fps_points(x, 3, 0), x[[0, 2, 3]])


def test_fps_input_forms_take_the_same_picks():
    """Layouts, dtypes, gradients and argument types accepted before the fast path still are,
    with the same picks."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 300, 3, generator=g, dtype=torch.float64)
    start = torch.tensor([0, 17, 299])
    ref = farthest_point_sample_reference(x, 40, start)
    assert torch.equal(farthest_point_sample(x, 40, start), ref)
    planes = x.transpose(1, 2).contiguous()  # (B, 3, N): its transpose is not contiguous
    assert torch.equal(farthest_point_sample(planes.transpose(1, 2), 40, start), ref)
    assert torch.equal(farthest_point_sample(x[:, ::1].requires_grad_(), 40, start), ref)
    assert torch.equal(farthest_point_sample(x, np.int64(40), start.to(torch.int32)), ref)
    assert torch.equal(farthest_point_sample(x, 40, start[:, None]), ref)  # (B, 1) reshapes
    one = farthest_point_sample_reference(x, 40, 17)
    for s in (17, np.int64(17), torch.tensor(17), torch.tensor([17])):
        assert torch.equal(farthest_point_sample(x, 40, s), one)
    for dt in (torch.float16, torch.bfloat16):  # not numpy-viewable: the checked path
        xh = x.to(dt)
        assert torch.equal(farthest_point_sample(xh, 40, start),
                           farthest_point_sample_reference(xh, 40, start))


def test_fps_fast_path_errors():
    x = torch.rand(1, 10, 3)
    with pytest.raises(ValueError, match="NaN or inf"):
        farthest_point_sample(torch.tensor([[[0.0, 0, 0], [float("inf"), 0, 0]]]), 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        farthest_point_sample(torch.tensor([[[0.0, float("nan"), 0]]], dtype=torch.float64), 1)
    with pytest.raises(TypeError, match="num_samples"):
        farthest_point_sample(x, True)
    with pytest.raises(TypeError, match="num_samples"):
        farthest_point_sample(x, 4.0)
    with pytest.raises(TypeError, match="start_index"):
        farthest_point_sample(x, 4, 1.0)
    with pytest.raises(TypeError, match="start_index"):
        farthest_point_sample(x, 4, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="start_index"):
        farthest_point_sample(x, 4, torch.tensor([10]))
    with pytest.raises(ValueError, match="start_index"):
        farthest_point_sample(torch.rand(3, 10, 3), 4, torch.tensor([0, 1, 10]))
    with pytest.raises(ValueError, match="empty"):
        farthest_point_sample(torch.rand(0, 10, 3), 4)


def test_fps_shared_batch_path(monkeypatch):
    """Batches shared with helper threads: the same picks as one thread, errors still raised,
    and a chunk a helper never finishes is redone by the caller."""
    monkeypatch.setattr(ops, "_FPS_PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(ops, "_FPS_CHUNK_WORK", 1)  # one cloud per chunk
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.normal(size=(9, 400, 3)).astype(np.float32))
    start = torch.from_numpy(rng.integers(0, 400, 9))
    ref = farthest_point_sample_reference(x, 50, start)
    for _ in range(3):
        assert torch.equal(farthest_point_sample(x, 50, start), ref)
    assert torch.equal(farthest_point_sample(x, 50, 5), farthest_point_sample_reference(x, 50, 5))
    bad = x.clone()
    bad[7, 3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf values \(clouds \[7\]\)"):
        farthest_point_sample(bad, 50, start)
    pts = x.numpy()
    shared = ops._SharedBatch(pts, start.numpy(), 0, 50, [(0, 4), (4, 9)])
    shared.next = 1  # chunk 0 "claimed by a helper" that never reports back
    shared.work(timed=True)
    out, status = shared.finish()
    assert status == 0 and torch.equal(torch.from_numpy(out), ref)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork-only (DataLoader workers on Linux)")
def test_fps_in_a_forked_child_after_the_parent_started_its_helper_threads():
    x = torch.rand(64, 2048, 3, generator=torch.Generator().manual_seed(0))
    parent = farthest_point_sample(x, 512)  # big enough to share the batch with helpers
    pid = os.fork()
    if pid == 0:  # the parent's helper threads do not exist here
        ok = torch.equal(farthest_point_sample(x, 512), parent)
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _bits(t):
    return t.view({torch.float64: torch.int64, torch.bfloat16: torch.int16}.get(t.dtype,
                                                                              torch.int32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_max_over_rows_equals_torch_max(dtype):
    """The compiled max-pool: torch.max(x, dim=1)'s values bit for bit and its indices, on
    ties (duplicated rows, whole columns equal), signed zeros, infinities and NaN (the first
    NaN wins), for contiguous and strided inputs; bf16 (a CPU autocast step) through its
    float32 widening."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(300, 33, 20, generator=g, dtype=dtype)
    x[:, 9] = x[:, 4]
    x[0, :, 0] = 1.5                       # every row tied
    x[1, :, 1] = 0.0
    x[1, 3, 1] = -0.0
    x[2, 5, 2] = float("inf")
    x[3, :, 3] = float("-inf")
    x[4, 6, 4], x[4, 11, 4] = float("nan"), float("nan")
    x[5, 0, 5] = float("nan")
    for inp in (x, x.transpose(0, 2)[:7].transpose(0, 2), x[:, :1]):
        values, indices = ops.max_over_rows(inp)
        ref_v, ref_i = ops.max_over_rows_reference(inp)
        assert values.dtype == dtype and indices.dtype == torch.int64
        assert torch.equal(_bits(values), _bits(ref_v)) and torch.equal(indices, ref_i)
    assert ops.max_over_rows(x)[1][4, 4] == 6 and ops.max_over_rows(x)[1][0, 0] == 0


def test_max_over_rows_input_errors_and_fallback():
    with pytest.raises(ValueError, match=r"\(P, k, C\)"):
        ops.max_over_rows(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="k >= 1"):
        ops.max_over_rows(torch.zeros(4, 0, 3))
    v, i = ops.max_over_rows(torch.zeros(0, 4, 3))
    assert v.shape == (0, 3) and i.shape == (0, 3)
    x = torch.randn(8, 5, 3, dtype=torch.float16)  # torch's own kernel
    assert torch.equal(ops.max_over_rows(x)[0], x.max(dim=1).values)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_scatter_rows_equals_torch_scatter(dtype):
    """The max-pool's gradient: zeros with each column's value at its row, the same bits as
    torch's scatter (negative zeros, infinities and NaN payloads moved as they are)."""
    g = torch.Generator().manual_seed(3)
    values = torch.randn(50, 7, generator=g).to(dtype)
    values[0, 0], values[1, 1], values[2, 2] = -0.0, float("inf"), float("nan")
    indices = torch.randint(0, 5, (50, 7), generator=g)
    got = ops.scatter_rows(values, indices, 5)
    ref = ops.scatter_rows_reference(values, indices, 5)
    assert got.dtype == dtype and got.shape == (50, 5, 7)
    torch.testing.assert_close(got, ref, rtol=0, atol=0, equal_nan=True)
    # bit for bit: torch's scatter of the integer views moves bits exactly (its bf16 scatter
    # returns another NaN payload; ours keeps the value's)
    bits = ops.scatter_rows_reference(_bits(values), indices, 5)
    assert torch.equal(_bits(got), bits)
    strided = values.t().contiguous().t()  # not contiguous: copied first
    assert torch.equal(_bits(ops.scatter_rows(strided, indices, 5)), bits)
    with pytest.raises(ValueError, match=r"\(P, C\)"):
        ops.scatter_rows(values, indices[:, :3], 5)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\)"):
        ops.scatter_rows(values, indices, 4)  # an index 4 would write past each patch


# ------------------------------------------------------------------ compiled bf16 layer norm

def _ulp_bf16(t: torch.Tensor) -> torch.Tensor:
    """One bf16 rounding step at each value of ``t`` (float32)."""
    e = torch.frexp(t.float().abs().clamp_min(1e-30))[1]
    return torch.ldexp(torch.ones_like(t, dtype=torch.float32), e - 8)


def _within_one_step(y: torch.Tensor, ref: torch.Tensor, atol: float = 1e-5) -> bool:
    """|y - ref| within one bf16 step of the larger of the two (plus ``atol``: a value that
    cancels to about 0 can land on either side of the ReLU's kink)."""
    big = torch.maximum(y.float().abs(), ref.float().abs())
    return bool(((y.float() - ref.float()).abs() <= _ulp_bf16(big) + atol).all())


def _ln_case(p, k, c, seed, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(p, k, c, generator=g) * 2 + offset).bfloat16()
    add = torch.randn(p, c, generator=g).bfloat16()
    w = torch.randn(c, generator=g) * 0.5 + 1
    b = torch.randn(c, generator=g) * 0.3
    return x, add, w, b


@pytest.mark.skipif(not ops.HAVE_NUMBA, reason="the compiled layer norm needs numba")
@pytest.mark.parametrize("p,k,c", [(70, 32, 32), (33, 24, 16), (9, 40, 7), (600, 1, 130)])
@pytest.mark.parametrize("with_add", [False, True])
def test_layer_norm_relu_forward_matches_torch(p, k, c, with_add):
    """The compiled norm + ReLU (with the broadcast add) against torch's bf16 ops: outputs
    within one bf16 rounding step and almost all equal; statistics against float64; groups of
    k rows that do not divide the 256-row blocks, widths that are no multiple of 16."""
    x, add, w, b = _ln_case(p, k, c, seed=p + k + c, offset=3.0)
    a = add if with_add else None
    y, mean, rstd = ops.layer_norm_relu_forward(x, w, b, 1e-5, add=a)
    ref = ops.layer_norm_relu_reference(x, w, b, 1e-5, add=a)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    assert _within_one_step(y, ref)
    assert (y != ref).float().mean() < 2e-3
    s = (x + add.unsqueeze(1) if with_add else x).double().reshape(-1, c)
    torch.testing.assert_close(mean.double(), s.mean(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rstd.double(), (s.var(-1, unbiased=False) + 1e-5).rsqrt(),
                               rtol=1e-5, atol=0)
    # without the ReLU: the norm itself (negative outputs kept)
    y2, _, _ = ops.layer_norm_relu_forward(x, w, b, 1e-5, relu=False, add=a)
    ref2 = ops.layer_norm_relu_reference(x, w, b, 1e-5, relu=False, add=a)
    assert _within_one_step(y2, ref2)
    assert bool((y2 < 0).any()) and not bool((y < 0).any())


@pytest.mark.skipif(not ops.HAVE_NUMBA, reason="the compiled layer norm needs numba")
@pytest.mark.parametrize("with_add", [False, True])
def test_layer_norm_relu_backward_matches_float64(with_add):
    """Gradients against autograd of the same function in float64 (from the same bf16
    inputs): dx and d(add) within bf16 rounding, the weight's and bias's to 1e-5."""
    p, k, c = 150, 24, 32
    x, add, w, b = _ln_case(p, k, c, seed=11)
    a = add if with_add else None
    _, mean, rstd = ops.layer_norm_relu_forward(x, w, b, 1e-5, add=a)
    grad = torch.randn(p, k, c, generator=torch.Generator().manual_seed(2)).bfloat16()
    dx, dw, db, dadd = ops.layer_norm_relu_backward(grad, x, w, b, mean, rstd, add=a)

    x64 = x.double().requires_grad_(True)
    add64 = add.double().requires_grad_(True)
    w64, b64 = w.double().requires_grad_(True), b.double().requires_grad_(True)
    # the bf16 sum is what the norm sees (rounded as the forward rounds it)
    s = (x + add.unsqueeze(1)).double() if with_add else x64
    if with_add:  # the sum's gradient reaches x and add unchanged: d(add) = sum over k
        s = s + (x64 - x64.detach()) + (add64 - add64.detach()).unsqueeze(1)
    out = F.relu(F.layer_norm(s, (c,), w64, b64, 1e-5))
    out.backward(grad.double())
    assert dx.dtype == torch.bfloat16 and dw.dtype == db.dtype == torch.float32
    assert bool(((dx.double() - x64.grad).abs() <= 2 * _ulp_bf16(x64.grad) + 1e-6).all())
    torch.testing.assert_close(dw.double(), w64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(db.double(), b64.grad, rtol=1e-5, atol=1e-5)
    if with_add:
        ref = dx.float().sum(1)  # the sum of the bf16 dx, as torch's bf16 sum of it
        assert dadd.dtype == torch.bfloat16 and dadd.shape == (p, c)
        assert bool(((dadd.float() - ref).abs() <= _ulp_bf16(ref) + 1e-6).all())
        torch.testing.assert_close(dadd.double(), add64.grad, rtol=3e-2, atol=3e-2)
    else:
        assert dadd is None


@pytest.mark.skipif(not ops.HAVE_NUMBA, reason="the compiled layer norm needs numba")
def test_layer_norm_relu_nan_threads_and_errors():
    x, add, w, b = _ln_case(700, 32, 32, seed=5)  # 22,400 rows: split over threads if >1
    x[3, 4, 5] = float("nan")
    x[9, 0, 0] = float("inf")
    ref = ops.layer_norm_relu_reference(x, w, b, 1e-5)
    y, mean, rstd = ops.layer_norm_relu_forward(x, w, b, 1e-5)
    assert torch.equal(torch.isnan(y), torch.isnan(ref))  # NaN rows stay NaN through the ReLU
    assert bool(torch.isnan(y[3, 4]).all()) and not bool(torch.isnan(y[3, 5]).any())
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.layer_norm_relu_forward(x, w, b, 1e-5, add=add)
        g = torch.randn_like(x, dtype=torch.float32).bfloat16()
        one_b = ops.layer_norm_relu_backward(g, x, w, b, one[1], one[2], add=add)
        torch.set_num_threads(2)
        two = ops.layer_norm_relu_forward(x, w, b, 1e-5, add=add)
        two_b = ops.layer_norm_relu_backward(g, x, w, b, two[1], two[2], add=add)
    finally:
        torch.set_num_threads(before)
    for u, v in zip(one + one_b, two + two_b):  # the same bits on one thread or two
        assert torch.equal(_bits(u), _bits(v))
    with pytest.raises(ValueError, match="CPU bfloat16"):
        ops.layer_norm_relu_forward(x.float(), w, b, 1e-5)
    with pytest.raises(ValueError, match=r"weight and bias must have shape \(32,\)"):
        ops.layer_norm_relu_forward(x, w[:5], b, 1e-5)
    with pytest.raises(ValueError, match=r"add \(P, C\)"):
        ops.layer_norm_relu_forward(x, w, b, 1e-5, add=add[:3])
    with pytest.raises(ValueError, match="grad must have x's shape"):
        ops.layer_norm_relu_backward(g[:2], x, w, b, mean, rstd)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_scatter_add_rows_equals_torch(dtype):
    """The pooled gradient added in place at the max's rows: torch's scatter_add_ bit for bit
    (bf16 through the compiled loop: the sum in float32, rounded once)."""
    g = torch.Generator().manual_seed(9)
    out = torch.randn(60, 8, 5, generator=g).to(dtype)
    values = (torch.randn(60, 5, generator=g) * 100).to(dtype)
    values[0, 0], values[1, 1] = float("inf"), -0.0
    indices = torch.randint(0, 8, (60, 5), generator=g)
    got = ops.scatter_add_rows_(out.clone(), indices, values)
    ref = ops.scatter_add_rows_reference(out.clone(), indices, values)
    assert torch.equal(_bits(got), _bits(ref))
    assert not torch.equal(got, out)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 8\)"):
        ops.scatter_add_rows_(out.clone(), indices + 1, values)
    with pytest.raises(ValueError, match=r"\(P, k, C\)"):
        ops.scatter_add_rows_(out.clone(), indices[:, :2], values)


@pytest.mark.parametrize("p,k,c,o", [(150, 32, 32, 32), (70, 24, 7, 5)])
def test_linear_max_rows_backward_matches_autograd(p, k, c, o):
    """The tokenizer's last layer pooled over each patch, backward without the (P, k, O)
    tensor: the gradient reaching x is autograd's (the dense bf16 products) bit for bit, the
    weight's within bf16 rounding of it and closer to float64; ties (duplicated rows) send
    each value's gradient to its first row only."""
    g = torch.Generator().manual_seed(p + c)
    x = torch.randn(p, k, c, generator=g).bfloat16()
    x[:, 5] = x[:, 2]                                # tied rows, as ball-query padding makes
    w = torch.randn(o, c, generator=g) * 0.3
    _, indices = ops.max_over_rows(F.linear(x, w.bfloat16()))
    grad = torch.randn(p, o, generator=g).bfloat16()
    dx, dw = ops.linear_max_rows_backward(grad, x, w, indices)
    xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        F.linear(xr, wr).max(dim=1).values.backward(grad)
    assert dx.dtype == torch.bfloat16 and dw.dtype == torch.float32
    assert torch.equal(dx.view(torch.int16), xr.grad.view(torch.int16))
    assert not bool((dx[:, 5] != 0).any())          # a tie's gradient goes to its first row
    ref_dx, _ = ops.linear_max_rows_backward_reference(grad, x, w, indices)
    assert torch.equal(ref_dx.view(torch.int16), dx.view(torch.int16))
    exact = (ops.scatter_rows_reference(grad.double(), indices, k).reshape(-1, o).t()
             @ x.double().reshape(-1, c))
    assert (dw.double() - exact).abs().max() <= 1e-5 * exact.abs().max()
    assert (wr.grad.double() - exact).abs().max() <= 1e-2 * exact.abs().max()  # bf16-rounded


def test_linear_max_rows_backward_threads_and_errors():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1100, 32, 16, generator=g).bfloat16()   # 35,200 rows: split if 2 threads
    w = torch.randn(8, 16, generator=g)
    _, indices = ops.max_over_rows(F.linear(x, w.bfloat16()))
    grad = torch.randn(1100, 8, generator=g).bfloat16()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.linear_max_rows_backward(grad, x, w, indices)
        torch.set_num_threads(2)
        two = ops.linear_max_rows_backward(grad, x, w, indices)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(_bits(one[0]), _bits(two[0])) and torch.equal(one[1], two[1])
    # float32: the reference (autograd's products)
    dx32, _ = ops.linear_max_rows_backward(grad.float(), x.float(), w, indices)
    assert dx32.dtype == torch.float32
    with pytest.raises(ValueError, match=r"\(P, k >= 1, C\) and weight \(O, C\)"):
        ops.linear_max_rows_backward(grad, x, w[:, :3], indices)
    with pytest.raises(ValueError, match=r"grad and indices must be \(1100, 8\)"):
        ops.linear_max_rows_backward(grad[:5], x, w, indices)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 32\)"):
        ops.linear_max_rows_backward(grad, x, w, indices + 32)


# ----------------------------------------------------------------------------- argsort_rows

def _sort_keys(kind: str, b: int, n: int, g: torch.Generator) -> torch.Tensor:
    if kind == "rand":           # what subsample and PointCutMix-R draw: ties at 2^-24 steps
        return torch.rand(b, n, generator=g)
    if kind == "few-values":     # heavy ties: torch's unstable order matters
        return torch.randint(0, 4, (b, n), generator=g).float()
    if kind == "signed-zeros":   # -0.0 ties with 0.0 (and the keys stay non-negative)
        k = torch.randint(0, 2, (b, n), generator=g).float() * 0.5
        negative_zero = (k == 0) & (torch.rand(b, n, generator=g) < 0.5)
        return torch.where(negative_zero, -0.0, k)
    if kind == "distances":      # PointCutMix-K's squared distances, repeated points included
        x = torch.randn(b, n // 2 + 1, 3, generator=g).repeat(1, 2, 1)[:, :n]
        return (x - x[:, :1]).pow(2).sum(-1)
    if kind == "negative":       # torch's path
        return torch.randn(b, n, generator=g)
    if kind == "nan-inf":        # torch's path: NaN sorts last there
        k = torch.rand(b, n, generator=g)
        k[:, ::3] = float("nan")
        k[:, 1::5] = float("inf")
        return k
    if kind == "float64":
        return torch.rand(b, n, generator=g, dtype=torch.float64)
    raise AssertionError(kind)


@pytest.mark.parametrize("stable", [True, False])
@pytest.mark.parametrize("kind", ["rand", "few-values", "signed-zeros", "distances", "negative",
                                  "nan-inf", "float64"])
@pytest.mark.parametrize("b,n", [(1, 1), (3, 2), (32, 1024), (7, 2048), (2, 5000)])
def test_argsort_rows_is_torch_argsort_bit_for_bit(kind, stable, b, n):
    g = torch.Generator().manual_seed(b * 10_000 + n)
    keys = _sort_keys(kind, b, n, g)
    got = ops.argsort_rows(keys, stable=stable)
    assert got.dtype == torch.int64 and got.shape == keys.shape
    assert torch.equal(got, torch.argsort(keys, dim=1, stable=stable))


def test_argsort_rows_ties_take_torchs_order_and_rows_stay_independent():
    # Rows with ties are re-sorted by torch on their own: the result must not depend on which
    # other rows share the call (each row alone gives its row of the batch's result).
    g = torch.Generator().manual_seed(0)
    keys = torch.cat([torch.rand(6, 300, generator=g),
                      torch.randint(0, 3, (6, 300), generator=g).float()])[torch.randperm(12)]
    whole = ops.argsort_rows(keys)
    assert not torch.equal(whole, ops.argsort_rows(keys, stable=True))  # ties do differ
    for i in range(len(keys)):
        assert torch.equal(ops.argsort_rows(keys[i:i + 1])[0], whole[i])
