"""FPS paths (plain loop, bucket tree, threaded batches) against the torch reference, on clouds
built to break tie rules and pruning bounds; and against torch-quickfps where it is installed.

No timings here: speed is measured side by side in ``python -m benchmarks.fps --refs``.
"""

import numpy as np
import pytest
import torch

from mmmixlab import ops
from mmmixlab.ops import farthest_point_sample, farthest_point_sample_reference


def _cloud(kind: str, n: int, rng) -> np.ndarray:
    if kind == "random":
        return rng.normal(size=(n, 3))
    if kind == "duplicates":  # every point 4 times, shuffled
        return rng.permutation(np.repeat(rng.normal(size=(n // 4 + 1, 3)), 4, axis=0)[:n])
    if kind == "grid":  # small integer grid: equal distances everywhere
        return rng.integers(0, 4, size=(n, 3)).astype(np.float64)
    if kind == "identical":
        return np.full((n, 3), 0.375)
    if kind == "collinear":
        x = np.zeros((n, 3))
        x[:, 0] = rng.permutation(n) % 11
        return x @ np.array([[0.6, 0.8, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    if kind == "planar":
        x = rng.uniform(-1, 1, size=(n, 3))
        x[:, 2] = 0.5
        return np.round(x, 1)
    if kind == "clustered":  # two tight blobs far apart plus a few outliers
        x = rng.normal(scale=1e-3, size=(n, 3))
        x[: n // 2] += 10.0
        k = min(3, n)
        x[:k] = np.array([[1e3, 0, 0], [-1e3, 0, 0], [0, 0, 1e3]])[:k]
        return x
    raise ValueError(kind)


KINDS = ["random", "duplicates", "grid", "identical", "collinear", "planar", "clustered"]


def _planes(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 1))


def _ref(x: np.ndarray, m: int, start) -> np.ndarray:
    return farthest_point_sample_reference(torch.from_numpy(x), m,
                                           torch.as_tensor(start)).numpy()


def _wrong_ties_fps(x: np.ndarray, m: int, start: int) -> list:
    """A deliberately wrong FPS: ties go to the highest index."""
    dist = np.full(len(x), np.inf)
    far, out = start, []
    for _ in range(m):
        out.append(far)
        d = x - x[far]
        dist = np.minimum(dist, (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) + d[:, 2] * d[:, 2])
        if dist.max() > 0:
            far = len(x) - 1 - int(np.argmax(dist[::-1]))
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,m", [(1, 1), (2, 2), (3, 2), (9, 9), (64, 64), (300, 100),
                                 (1500, 700)])
def test_every_path_equals_the_reference(kind, n, m):
    """The plain loop, the bucket tree at several leaf sizes (1 point, a few, the default, the
    whole cloud in one leaf) and the public function pick what the reference picks, from
    several start indices, M == N included."""
    from mmmixlab.ops import _fps_kernel_pruned, _fps_kernel_serial
    rng = np.random.default_rng(n * 31 + m + len(kind))
    x = np.stack([_cloud(kind, n, rng) for _ in range(3)])
    start = np.array([0, n - 1, int(rng.integers(n))], dtype=np.int64)
    ref = _ref(x, m, start)
    assert (ref[:, 0] == start).all()
    xt = _planes(x)
    np.testing.assert_array_equal(_fps_kernel_serial(xt, start, m), ref)
    for leaf in (1, 3, ops._FPS_CELL, ops._FPS_CELL_LARGE, n):
        np.testing.assert_array_equal(_fps_kernel_pruned(xt, start, m, leaf), ref)
    np.testing.assert_array_equal(farthest_point_sample(torch.from_numpy(x), m,
                                                        torch.from_numpy(start)).numpy(), ref)
    np.testing.assert_array_equal(
        farthest_point_sample(torch.from_numpy(x).float(), m, torch.from_numpy(start)).numpy(),
        _ref(x.astype(np.float32).astype(np.float64), m, start))


@pytest.mark.parametrize("kind", ["random", "duplicates", "grid", "planar"])
def test_public_bucket_and_threaded_paths_equal_the_reference(kind):
    """Sizes where the public function takes the bucket tree, in the calling thread (B=1) and
    shared with helper threads (B=8)."""
    b, n, m = 8, 4096, 512
    assert m >= ops._FPS_PRUNE_MIN_PICKS and m * m * n >= ops._FPS_PRUNE_MIN_M2N
    assert b * n * m >= ops._FPS_PARALLEL_MIN_WORK
    rng = np.random.default_rng(len(kind))
    x = torch.from_numpy(np.stack([_cloud(kind, n, rng) for _ in range(b)])).float()
    start = torch.from_numpy(rng.integers(0, n, size=b))
    ref = farthest_point_sample_reference(x, m, start)
    assert torch.equal(farthest_point_sample(x, m, start), ref)
    assert torch.equal(farthest_point_sample(x[:1], m, int(start[0])), ref[:1])


def test_the_tie_clouds_catch_a_wrong_tie_break():
    """The clouds above can fail a wrong implementation: a highest-index tie break differs from
    the reference on each of the tie-heavy kinds."""
    rng = np.random.default_rng(0)
    for kind in ("duplicates", "grid", "collinear", "planar"):
        x = _cloud(kind, 300, rng)
        assert _wrong_ties_fps(x, 100, 5) != _ref(x[None], 100, 5)[0].tolist(), kind


def test_bucket_tree_equals_the_plain_loop_on_nearly_equal_distances():
    """Distances that differ in their last bits only, across leaves: the packed key cannot
    separate them, the exact check must."""
    from mmmixlab.ops import _fps_kernel_pruned
    eps = 2.0 ** -52
    base = np.array([[0.0, 0, 0], [1.0, 0, 0], [1.0 + eps, 0, 0], [0.5, 0, 0]])
    x = np.concatenate([base, base + [0, 5, 0], base + [0, 0, 5]])[None]
    ref = _ref(x, 12, 0)
    for leaf in (1, 2, 4, 12):
        np.testing.assert_array_equal(_fps_kernel_pruned(_planes(x), np.array([0]), 12, leaf),
                                      ref)


# ----------------------------------------------------------------------------- torch-quickfps

@pytest.mark.parametrize("n,m", [(2000, 300), (4000, 512), (3000, 1000), (10000, 1024)])
def test_picks_equal_torch_quickfps(n, m):
    """torch-quickfps (bucket FPS) picks what we pick on random clouds (these seeds). It is
    not an exactness reference beyond that: it computes distances in float32, so a float32
    near-tie can reorder two picks (benchmarks/fps.py --refs checks each difference is one),
    and on exact ties (integer grids) it does not always take the lowest index."""
    qf = pytest.importorskip("torch_quickfps")
    rng = np.random.default_rng(n + m)
    x = torch.from_numpy(rng.normal(size=(3, n, 3)).astype(np.float32))
    for start in (0, n // 2):
        ours = farthest_point_sample(x, m, start)
        assert torch.equal(ours, farthest_point_sample_reference(x, m, start))
        assert torch.equal(qf.sample_idx(x, m, start_idx=start).long(), ours)
