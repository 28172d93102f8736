"""Point-cloud primitives: farthest point sampling, k-nearest neighbours, ball query, grouping.

Why these live here, in plain PyTorch: the peer code bases rely on CUDA-only extensions
(pointnet2 ops) for the same four operations, and those fail to build for many users. Every
function below runs on any device; farthest point sampling, the one step that is inherently
sequential, gets a numba kernel on CPU because a Python loop over samples is too slow there.

Farthest point sampling follows open3d's legacy
``PointCloud.farthest_point_down_sample(num_samples, start_index)`` (open3d 0.20) exactly:

* the first pick is ``start_index``; each next pick is the point whose squared distance to the
  picked set is largest, distances kept in float64 as ``(dx*dx + dy*dy) + dz*dz``;
* ties go to the lowest index (open3d scans points in order and replaces only on ``>``);
* when every remaining distance is 0 (fewer distinct points than ``num_samples``), open3d keeps
  its previous pick, so the last picked index repeats; we do the same.

open3d itself returns the picked *points* in index order (its ``SelectByIndex`` walks a mask),
not the pick order; we return the indices in pick order, so ``sorted(unique(ours))`` is what
open3d selects.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .checks import check_points

try:  # numba is a declared dependency, but keep the library importable without it.
    from numba import njit, prange
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only on installs without numba
    HAVE_NUMBA = False

__all__ = [
    "HAVE_NUMBA",
    "ball_query",
    "farthest_point_sample",
    "farthest_point_sample_reference",
    "group",
    "index_points",
    "knn",
]

# Upper bound on the elements of one (B, chunk, N) distance block in knn / ball_query: keeps the
# peak at a few hundred MB for B=200, N=10k instead of materialising (B, M, N) at once.
_CHUNK_ELEMENTS = 1 << 24
# FPS distance updates (B * N * M) below which one thread beats waking the pool (~1 ms of work)
_FPS_PARALLEL_MIN_WORK = 1 << 20
# Pruned FPS (cells of _FPS_CELL points skipped when the new pick cannot reach them): used from
# this many picks and points on, where it measured faster than the plain loop
_FPS_PRUNE_MIN_PICKS = 256
_FPS_PRUNE_MIN_POINTS = 1024
_FPS_CELL = 64


# ----------------------------------------------------------------------------- validation

def _check_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def _check_fps_args(xyz: torch.Tensor, num_samples, start_index) -> tuple[int, torch.Tensor]:
    """Validate FPS inputs; returns (num_samples, start indices as a (B,) long CPU tensor)."""
    check_points(xyz, "xyz", channels=(3,))
    b, n, _ = xyz.shape
    m = _check_int(num_samples, "num_samples")
    if not 1 <= m <= n:
        raise ValueError(f"num_samples must be in [1, N={n}] for clouds of {n} points, got {m}")
    if isinstance(start_index, torch.Tensor):
        if start_index.is_floating_point() or start_index.is_complex():
            raise TypeError(f"start_index must be an integer tensor, got {start_index.dtype}")
        start = start_index.detach().to("cpu", torch.int64).reshape(-1)
        if start.numel() == 1:
            start = start.expand(b).clone()
        if start.shape != (b,):
            raise ValueError(f"start_index must be an int or a ({b},) tensor, "
                             f"got shape {tuple(start_index.shape)}")
    else:
        start = torch.full((b,), _check_int(start_index, "start_index"), dtype=torch.int64)
    if start.numel() and (int(start.min()) < 0 or int(start.max()) >= n):
        raise ValueError(f"start_index must be in [0, {n - 1}] for clouds of {n} points, "
                         f"got values in [{int(start.min())}, {int(start.max())}]")
    return m, start


def _check_pair(query: torch.Tensor, points: torch.Tensor, k) -> int:
    check_points(query, "query", channels=(3,))
    check_points(points, "points", channels=(3,))
    if query.shape[0] != points.shape[0]:
        raise ValueError(f"query and points must share the batch size, got {query.shape[0]} "
                         f"and {points.shape[0]}")
    if query.device != points.device:
        raise ValueError(f"query is on {query.device} but points on {points.device}")
    k = _check_int(k, "k")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return k


# ----------------------------------------------------------------------------- FPS

def farthest_point_sample_reference(xyz: torch.Tensor, num_samples: int,
                                    start_index: int | torch.Tensor = 0) -> torch.Tensor:
    """Farthest point sampling as a batched PyTorch loop; returns (B, num_samples) long indices.

    ``num_samples`` dependent steps, each vectorised over the batch and all points, in float64.
    It is the reference the numba kernel is tested against and the path used on GPU, where one
    step is a handful of kernel launches. See the module docstring for the exact semantics.
    """
    m, start = _check_fps_args(xyz, num_samples, start_index)
    work = torch.device("cpu") if xyz.device.type == "mps" else xyz.device  # MPS: no float64
    x = xyz.detach().to(work, torch.float64)
    b, n, _ = x.shape
    px, py, pz = (x[..., i].contiguous() for i in range(3))  # (B, N) planes, contiguous
    rows = torch.arange(b, device=x.device)
    far = start.to(x.device)
    out = torch.empty((b, m), dtype=torch.int64, device=x.device)
    dist = torch.full((b, n), float("inf"), dtype=torch.float64, device=x.device)
    d, t = torch.empty_like(dist), torch.empty_like(dist)  # reused buffers: no allocations
    for i in range(m):
        out[:, i] = far
        # (dx*dx + dy*dy) + dz*dz as separate ops (no fused multiply-add): open3d's rounding.
        torch.sub(px, px[rows, far].unsqueeze(1), out=d).square_()
        d.add_(torch.sub(py, py[rows, far].unsqueeze(1), out=t).square_())
        d.add_(torch.sub(pz, pz[rows, far].unsqueeze(1), out=t).square_())
        torch.minimum(dist, d, out=dist)
        nxt = dist.argmax(dim=1)  # first maximum -> lowest index on ties
        best = dist.gather(1, nxt.unsqueeze(1)).squeeze(1)
        far = torch.where(best > 0, nxt, far)  # open3d keeps its pick when all distances are 0
    return out.to(xyz.device)


if HAVE_NUMBA:
    @njit(cache=True, inline="always")
    def _fps_one(px, py, pz, far, m, out_row):  # pragma: no cover - compiled
        """FPS of one cloud (coordinate planes px, py, pz) from ``far`` into ``out_row``."""
        n = px.shape[0]
        dist = np.full(n, np.inf)
        for i in range(m):
            out_row[i] = far
            sx, sy, sz = px[far], py[far], pz[far]
            # Two passes: the branch-free distance update vectorises, the argmax cannot;
            # fused (as open3d does) the whole loop runs scalar, ~15% slower here.
            for j in range(n):
                dx = px[j] - sx
                dy = py[j] - sy
                dz = pz[j] - sz
                d = dx * dx + dy * dy + dz * dz
                dist[j] = min(dist[j], d)
            best = 0.0
            nxt = far  # all distances 0: keep the previous pick, as open3d does
            for j in range(n):
                if dist[j] > best:  # strict: the lowest index wins ties
                    best = dist[j]
                    nxt = j
            far = nxt

    @njit(cache=True)
    def _fps_one_pruned(px, py, pz, far, m, out_row, cell):  # pragma: no cover - compiled
        """The same picks as :func:`_fps_one`, skipping whole cells of points that the new
        pick cannot bring closer.

        Points are sorted along a Morton curve and cut into cells of ``cell`` points, each with
        its bounding box and the largest current distance in it (with the lowest original index
        holding it). A new pick s lowers some distance in a cell only if s is nearer to a point
        of the cell than that point's current distance; the squared distance from s to the
        cell's box, computed with the same operations in the same order, is a floating-point
        lower bound of every point's distance to s (rounding is monotonic), so a cell whose
        bound is >= its largest distance keeps every distance and is skipped: the result is
        identical, ties included, and late picks touch only the cells near them.
        """
        n = px.shape[0]
        lo_x, hi_x = px.min(), px.max()
        lo_y, hi_y = py.min(), py.max()
        lo_z, hi_z = pz.min(), pz.max()
        span = max(hi_x - lo_x, hi_y - lo_y, hi_z - lo_z)
        scale = 1023.0 / span if span > 0 else 0.0
        code = np.empty(n, dtype=np.int64)
        for j in range(n):  # 10-bit Morton code per point
            ix = int((px[j] - lo_x) * scale)
            iy = int((py[j] - lo_y) * scale)
            iz = int((pz[j] - lo_z) * scale)
            c = 0
            for bit in range(10):
                c |= (((ix >> bit) & 1) << (3 * bit)) | (((iy >> bit) & 1) << (3 * bit + 1)) \
                    | (((iz >> bit) & 1) << (3 * bit + 2))
            code[j] = c
        order = np.argsort(code, kind="mergesort")
        xs, ys, zs = px[order], py[order], pz[order]
        ncell = (n + cell - 1) // cell
        bx0 = np.empty(ncell)
        bx1 = np.empty(ncell)
        by0 = np.empty(ncell)
        by1 = np.empty(ncell)
        bz0 = np.empty(ncell)
        bz1 = np.empty(ncell)
        for c in range(ncell):
            a, b = c * cell, min(n, (c + 1) * cell)
            bx0[c], bx1[c] = xs[a:b].min(), xs[a:b].max()
            by0[c], by1[c] = ys[a:b].min(), ys[a:b].max()
            bz0[c], bz1[c] = zs[a:b].min(), zs[a:b].max()
        dist = np.full(n, np.inf)
        cmax = np.full(ncell, np.inf)
        carg = np.zeros(ncell, dtype=np.int64)  # original index of cmax's lowest holder
        for i in range(m):
            out_row[i] = far
            sx, sy, sz = px[far], py[far], pz[far]
            for c in range(ncell):
                gx = max(bx0[c] - sx, sx - bx1[c], 0.0)
                gy = max(by0[c] - sy, sy - by1[c], 0.0)
                gz = max(bz0[c] - sz, sz - bz1[c], 0.0)
                if gx * gx + gy * gy + gz * gz >= cmax[c]:
                    continue  # no distance in this cell can drop
                a, b = c * cell, min(n, (c + 1) * cell)
                best = -1.0
                arg = 0
                for j in range(a, b):
                    dx = xs[j] - sx
                    dy = ys[j] - sy
                    dz = zs[j] - sz
                    d = min(dist[j], dx * dx + dy * dy + dz * dz)
                    dist[j] = d
                    if d > best or (d == best and order[j] < arg):
                        best = d
                        arg = order[j]
                cmax[c] = best
                carg[c] = arg
            best = 0.0
            nxt = far  # all distances 0: keep the previous pick, as open3d does
            for c in range(ncell):
                if cmax[c] > best or (cmax[c] == best and best > 0.0 and carg[c] < nxt):
                    best = cmax[c]
                    nxt = carg[c]
            far = nxt

    @njit(cache=True)
    def _fps_kernel_pruned(xyz, start, m, cell):  # pragma: no cover - compiled
        """Every cloud through the pruned loop (the tests compare it with the plain one)."""
        b = xyz.shape[0]
        out = np.empty((b, m), dtype=np.int64)
        for bi in range(b):
            _fps_one_pruned(xyz[bi, 0], xyz[bi, 1], xyz[bi, 2], start[bi], m, out[bi], cell)
        return out

    @njit(cache=True)
    def _fps_cloud(px, py, pz, far, m, out_row):  # pragma: no cover - compiled
        """One cloud: pruned when enough picks amortize sorting it into cells (measured on
        this machine: 1.2-1.5x at 256 picks, 2-4x at 1,000-2,000 picks from 2k-10k points),
        plain otherwise."""
        if m >= _FPS_PRUNE_MIN_PICKS and px.shape[0] >= _FPS_PRUNE_MIN_POINTS:
            _fps_one_pruned(px, py, pz, far, m, out_row, _FPS_CELL)
        else:
            _fps_one(px, py, pz, far, m, out_row)

    @njit(parallel=True, cache=True)
    def _fps_kernel(xyz, start, m):  # pragma: no cover - compiled, checked via the tests
        """xyz: (B, 3, N) float64, coordinate planes contiguous; start: (B,) int64."""
        b = xyz.shape[0]
        out = np.empty((b, m), dtype=np.int64)
        for bi in prange(b):  # clouds are independent; the picks within one are not
            _fps_cloud(xyz[bi, 0], xyz[bi, 1], xyz[bi, 2], start[bi], m, out[bi])
        return out

    @njit(cache=True)
    def _fps_kernel_serial(xyz, start, m):  # pragma: no cover - compiled
        """The same, in the calling thread: a single cloud gains nothing from the thread pool,
        whose wake-up costs more than a small FPS (measured: 8 ms for B=1, 1000 -> 256 on a
        busy 2-core machine, against 0.3 ms of work)."""
        b = xyz.shape[0]
        out = np.empty((b, m), dtype=np.int64)
        for bi in range(b):
            _fps_cloud(xyz[bi, 0], xyz[bi, 1], xyz[bi, 2], start[bi], m, out[bi])
        return out


def farthest_point_sample(xyz: torch.Tensor, num_samples: int,
                          start_index: int | torch.Tensor = 0) -> torch.Tensor:
    """Farthest point sampling; returns (B, num_samples) long indices on ``xyz.device``.

    Args:
        xyz: (B, N, 3) float tensor on any device; gradients are ignored (indices carry none).
        num_samples: how many points to pick, 1 <= num_samples <= N.
        start_index: the first pick, an int or a (B,) integer tensor.

    On CPU with numba installed this runs a compiled kernel (parallel over the batch); on CUDA,
    or without numba, it runs :func:`farthest_point_sample_reference`. MPS has no float64, so
    there the sampling runs on a CPU copy (numba when available). All paths give the same
    indices as open3d's legacy FPS (see the module docstring).
    """
    device = xyz.device if isinstance(xyz, torch.Tensor) else None
    if not (HAVE_NUMBA and device is not None and device.type in ("cpu", "mps")):
        return farthest_point_sample_reference(xyz, num_samples, start_index)
    m, start = _check_fps_args(xyz, num_samples, start_index)
    x = np.ascontiguousarray(xyz.detach().to("cpu", torch.float64).transpose(1, 2).numpy())
    with warnings.catch_warnings():
        # numba probes TBB on its first parallel launch and warns when the installed TBB is too
        # old; it then falls back to OpenMP/workqueue, so the warning is noise for our users.
        warnings.filterwarnings("ignore", message=".*TBB threading layer.*")
        b, _, n = x.shape
        # the thread pool only pays off with more than one cloud and enough work to share
        kernel = _fps_kernel if b > 1 and b * n * m >= _FPS_PARALLEL_MIN_WORK \
            else _fps_kernel_serial
        idx = torch.from_numpy(kernel(x, start.numpy(), m))
    return idx.to(device)


# ----------------------------------------------------------------------------- neighbours

def _sq_dist_chunks(query: torch.Tensor, points: torch.Tensor):
    """Yield (slice, (B, chunk, N) squared distances), chunked over the queries.

    Distances are computed from coordinate differences, not ``|a|^2 + |b|^2 - 2ab`` as
    ``torch.cdist`` does for large inputs: that form loses precision for close points (a point's
    distance to itself is not 0), which would break the radius test and the tie rules.
    """
    dtype = torch.promote_types(query.dtype, torch.float32)  # half precision is too coarse
    q = query.to(dtype)
    p = points.to(dtype)
    b, mq, _ = q.shape
    n = p.shape[1]
    step = max(1, _CHUNK_ELEMENTS // max(1, b * n))
    pc = [p[:, None, :, i] for i in range(3)]  # (B, 1, N) each
    for s in range(0, mq, step):
        qs = q[:, s:s + step]
        d = (pc[0] - qs[:, :, None, 0]).square_()
        d += (pc[1] - qs[:, :, None, 1]).square_()
        d += (pc[2] - qs[:, :, None, 2]).square_()
        yield slice(s, s + step), d


def _first_true(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the first k True entries along the last dim, in order; N where there are fewer.

    A running count of the Trues is non-decreasing, so the j-th True sits where the count first
    reaches j: one cumsum plus a binary search, cheaper than sorting or ``topk`` over N.
    """
    count = mask.cumsum(-1, dtype=torch.int32)
    want = torch.arange(1, k + 1, dtype=torch.int32, device=mask.device)
    return torch.searchsorted(count, want.expand(*mask.shape[:-1], k).contiguous())


def knn(query: torch.Tensor, points: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest points of each query: ``(sq_dists (B, M, k), idx (B, M, k))``.

    Sorted by ascending squared distance; equal distances are ordered by point index, and when
    several points tie for the k-th place the lowest indices are kept, so the answer does not
    depend on the backend's ``topk``. A query that is also a cloud point finds itself first
    (distance exactly 0). Requires k <= N.
    """
    k = _check_pair(query, points, k)
    n = points.shape[1]
    if k > n:
        raise ValueError(f"k={k} exceeds the number of points N={n}")
    dists, idxs = [], []
    for _, d in _sq_dist_chunks(query, points):
        kth = d.topk(k, dim=-1, largest=False, sorted=False).values.amax(-1, keepdim=True)
        below, equal = d < kth, d == kth
        need = k - below.sum(-1, keepdim=True)  # how many of the tied points still fit
        keep = below | (equal & (equal.cumsum(-1) <= need))  # exactly k per row
        idx = _first_true(keep, k)  # the k kept indices, in index order
        dd, order = d.gather(-1, idx).sort(dim=-1, stable=True)  # stable: ties stay by index
        dists.append(dd)
        idxs.append(idx.gather(-1, order))
    return torch.cat(dists, 1), torch.cat(idxs, 1)


def ball_query(query: torch.Tensor, points: torch.Tensor, radius: float, k: int) -> torch.Tensor:
    """Up to k neighbours within ``radius`` of each query, pointnet2 style; (B, M, k) indices.

    Semantics (those of the pointnet2 CUDA op, so Point-BERT/PointNet++ groupings carry over):

    * take the first k point indices, in index order, with squared distance < radius**2
      (strict, as pointnet2 compares ``d2 < radius2``), not the k closest ones;
    * fewer than k found: the remaining slots repeat the first found index;
    * none found (a query that is not a cloud point, farther than ``radius`` from all of them):
      every slot holds the nearest point (pointnet2 would leave index 0, an arbitrary point).

    k may exceed N; slots beyond the points found are padded by the same rule.
    """
    k = _check_pair(query, points, k)
    r = float(radius)
    if not (r > 0 and np.isfinite(r)):
        raise ValueError(f"radius must be a positive finite number, got {radius!r}")
    n = points.shape[1]
    kk = min(k, n)
    out = []
    for _, d in _sq_dist_chunks(query, points):
        first = _first_true(d < r * r, kk)  # found, in index order; n marks an empty slot
        head = first[..., :1]
        head = torch.where(head < n, head, d.argmin(dim=-1, keepdim=True))
        idx = torch.where(first < n, first, head)
        if kk < k:
            idx = torch.cat([idx, head.expand(*head.shape[:-1], k - kk)], dim=-1)
        out.append(idx)
    return torch.cat(out, 1)


# ----------------------------------------------------------------------------- gathering

def index_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather per-cloud rows: points (B, N, C), idx (B, ...) long -> (B, ..., C).

    Differentiable with respect to ``points``.
    """
    if points.dim() != 3:
        raise ValueError(f"points must have shape (B, N, C), got {tuple(points.shape)}")
    if idx.dim() < 1 or idx.shape[0] != points.shape[0]:
        raise ValueError(f"idx must have shape (B, ...) with B={points.shape[0]}, "
                         f"got {tuple(idx.shape)}")
    b, _, c = points.shape
    flat = idx.reshape(b, -1, 1).to(device=points.device, dtype=torch.int64)
    return points.gather(1, flat.expand(-1, -1, c)).reshape(*idx.shape, c)


def group(points: torch.Tensor, centers_xyz: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Neighbourhoods (B, M, k, C) with xyz made relative to their centre.

    points (B, N, C) with xyz in the first 3 channels; centers_xyz (B, M, 3); idx (B, M, k).
    Only the first 3 channels are shifted, extra channels (rgb) pass through unchanged: the
    tokenizer should see local shape, not where the patch sits (that is the positional embedding).
    """
    if idx.dim() != 3 or centers_xyz.shape[:2] != idx.shape[:2] or centers_xyz.shape[-1] != 3:
        raise ValueError(f"expected centers_xyz (B, M, 3) and idx (B, M, k), got "
                         f"{tuple(centers_xyz.shape)} and {tuple(idx.shape)}")
    g = index_points(points, idx)
    rel = g[..., :3] - centers_xyz.unsqueeze(2)
    return torch.cat([rel, g[..., 3:]], dim=-1) if g.shape[-1] > 3 else rel
