"""Point-cloud primitives: farthest point sampling, k-nearest neighbours, ball query, grouping;
and the Point-BERT tokenizer's compiled CPU kernels (the max-pool and its gradients, the bf16
layer norm + ReLU, the pooled last layer's bf16 backward), each next to its torch reference.

Why these live here, in plain PyTorch: the peer code bases rely on CUDA-only extensions
(pointnet2 ops) for the same four operations, and those fail to build for many users. Every
function below runs on any device; farthest point sampling, the one step that is inherently
sequential, gets a numba kernel on CPU because a Python loop over samples is too slow there:
one vectorised pass per pick (~0.3 ns per point and pick here, open3d ~1.1 ns) behind a wrapper
that runs no torch op on the common call (~4 us fixed cost per call); from a few hundred picks
on (see ``_FPS_PRUNE_MIN_M2N``) a bucket tree instead, which updates only the parts of the
cloud a new pick can reach (the QuickFPS idea), with the same picks bit for bit.

Farthest point sampling follows open3d's legacy
``PointCloud.farthest_point_down_sample(num_samples, start_index)`` (open3d 0.20) exactly:

* the first pick is ``start_index``; each next pick is the point whose squared distance to the
  picked set is largest, distances kept in float64 as ``(dx*dx + dy*dy) + dz*dz``;
* ties go to the lowest index (open3d scans points in order and replaces only on ``>``);
* when every remaining distance is 0 (fewer distinct points than ``num_samples``), open3d keeps
  its previous pick, so the last picked index repeats; we do the same. (Exception on open3d's
  side: asked for ``num_samples == N`` it returns the whole cloud without sampling, so for a
  cloud with repeated points at M == N the selections differ; we keep sampling.)

open3d itself returns the picked *points* in index order (its ``SelectByIndex`` walks a mask),
not the pick order; we return the indices in pick order, so ``sorted(unique(ours))`` is what
open3d selects.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from .checks import check_points

try:  # numba is a declared dependency, but keep the library importable without it.
    from numba import njit, prange
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only on installs without numba
    HAVE_NUMBA = False

__all__ = [
    "HAVE_NUMBA",
    "argsort_rows",
    "argsort_rows_reference",
    "ball_query",
    "ball_query_reference",
    "farthest_point_sample",
    "farthest_point_sample_reference",
    "group",
    "index_points",
    "knn",
    "layer_norm_relu_backward",
    "layer_norm_relu_forward",
    "layer_norm_relu_fused_supported",
    "layer_norm_relu_reference",
    "linear_max_rows_backward",
    "linear_max_rows_backward_reference",
    "max_over_rows",
    "max_over_rows_reference",
    "scatter_add_rows_",
    "scatter_add_rows_reference",
    "scatter_rows",
    "scatter_rows_reference",
]

# Upper bound on the elements of one (B, chunk, N) distance block in knn / ball_query: keeps the
# peak at a few hundred MB for B=200, N=10k instead of materialising (B, M, N) at once.
_CHUNK_ELEMENTS = 1 << 24
# FPS distance updates (B * N * M) from which a batch is shared with helper threads (~1.3 ms on
# one thread; 1 << 24 before issue 23, but at 8 x 2,048 -> 256 the shared batch took 0.69x the
# serial time: the caller works through the chunks too, so a late helper costs little), and the
# work per chunk of clouds a thread claims
_FPS_PARALLEL_MIN_WORK = 1 << 22
_FPS_CHUNK_WORK = 1 << 21
# Pruned (bucket) FPS, a tree over the cloud with leaves of up to _FPS_CELL points whose updates
# are skipped when the new pick cannot reach them: used from _FPS_PRUNE_MIN_PICKS picks and
# M * M * N >= _FPS_PRUNE_MIN_M2N on, where it measured faster than the vectorised plain loop
# (single clouds uniform in the ball, pruned / plain time: 1.03 at 50k -> 128, 1.03 at 20k ->
# 192, 0.94 at 10k -> 256, 0.99 at 4,096 -> 384, 0.96 at 2,048 -> 512; building the tree costs
# ~20-30 ns per point, ~70-100 plain updates, and the pruning pays off as M grows)
_FPS_PRUNE_MIN_PICKS = 128
_FPS_PRUNE_MIN_M2N = 600_000_000
_FPS_CELL = 32
_FPS_CELL_LARGE = 64          # leaves from _FPS_CELL_LARGE_N points on (0.93x the time of 32
_FPS_CELL_LARGE_N = 1 << 15   # at 50k -> 256 ... 4,096; even at 20k)
# argsort_rows: the longest rows whose unstable sort goes through numpy (beyond, ties among
# random float32 keys are common enough that handing their rows to torch costs more than it
# saves; benchmarks/sorting.py)
_ARGSORT_UNSTABLE_MAX_N = 4096


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
    def _index_mask(n):  # pragma: no cover - compiled
        """All-ones in the low bits that can hold a point index < n (at least one bit)."""
        k = 1
        while (1 << k) < n:
            k += 1
        return (1 << k) - 1

    @njit(cache=True)
    def _fps_one(px, py, pz, far, m, out_row):  # pragma: no cover - compiled
        """FPS of one cloud (coordinate planes px, py, pz) from ``far`` into ``out_row``.

        One pass per pick, branch-free so LLVM vectorises it: the distance update, the running
        maximum of the distances' bit patterns (non-negative doubles order like their int64
        bits) and the running maximum of a key that packs a distance's high bits with
        ``low - j`` in its low bits. The largest key names the lowest index among the points
        whose distances share the maximum's high bits; it is the pick when its distance is
        exactly the maximum (always, unless two distances agree to ~1e-11 relative and the
        later one is larger), otherwise a scan finds the first exact maximum. Same picks as
        open3d's fused compare-and-replace loop, ties included, at a third of its time.
        """
        n = px.shape[0]
        low = _index_mask(n)
        high = ~low
        dist = np.full(n, np.inf)
        bits = dist.view(np.int64)
        for i in range(m):
            out_row[i] = far
            sx, sy, sz = px[far], py[far], pz[far]
            best = 0
            key = 0
            for j in range(n):
                dx = px[j] - sx
                dy = py[j] - sy
                dz = pz[j] - sz
                d = min(dist[j], dx * dx + dy * dy + dz * dz)
                dist[j] = d
                v = np.float64(d).view(np.int64)
                best = max(best, v)
                key = max(key, (v & high) | (low - j))
            if best > 0:  # all distances 0: keep the previous pick, as open3d does
                far = low - (key & low)
                if bits[far] != best:
                    for j in range(n):
                        if bits[j] == best:  # the first maximum: lowest index wins ties
                            far = j
                            break

    @njit(cache=True, inline="always")
    def _spread3(v):  # pragma: no cover - compiled
        """The low 10 bits of v moved to every third bit (a Morton code's one axis)."""
        v = (v | (v << 16)) & 0x030000FF
        v = (v | (v << 8)) & 0x0300F00F
        v = (v | (v << 4)) & 0x030C30C3
        return (v | (v << 2)) & 0x09249249

    @njit(cache=True)
    def _fps_one_pruned(px, py, pz, far, m, out_row, leaf):  # pragma: no cover - compiled
        """The same picks as :func:`_fps_one`, updating only the tree nodes that the new pick
        can bring closer (bucket FPS, as QuickFPS does with a kd-tree).

        The tree: points sorted by a 15-bit Morton code (a counting sort over at most 2^15
        cells; points in one cell need no order), then split recursively at the code bits, x,
        y, z in turn, i.e. at the middle of a cell range along one axis (a binary radix tree,
        a kd-tree of spatial halves; empty halves are not stored), down to leaves of at most
        ``leaf`` points or one cell. Each node keeps its points' bounding box, the largest
        current distance below it (as int64 bits) and the largest packed key (see
        :func:`_fps_one`; the index part is the original index). A new pick s lowers a
        distance below a node only if s is nearer to that point than its current distance;
        the squared distance from s to the node's box, computed with the same operations in
        the same order, is a floating-point lower bound of every such point's distance to s
        (rounding is monotonic), so a node whose bound is >= its largest distance is skipped
        with its whole subtree: the result is identical, ties included. The visited inner
        nodes then take their children's maxima again, and the root names the pick.
        """
        n = px.shape[0]
        leaf = max(leaf, 1)
        res, nbits = 1, 0  # cells per axis, bits of a code
        while res < 32 and res * res * res < 4 * n:
            res *= 2
            nbits += 3
        lo_x, hi_x = px.min(), px.max()
        lo_y, hi_y = py.min(), py.max()
        lo_z, hi_z = pz.min(), pz.max()
        span = max(hi_x - lo_x, hi_y - lo_y, hi_z - lo_z)
        scale = res / span if span > 0 else 0.0
        code = np.empty(n, dtype=np.int64)
        count = np.zeros(res * res * res + 1, dtype=np.int64)
        for j in range(n):
            ix = min(int((px[j] - lo_x) * scale), res - 1)
            iy = min(int((py[j] - lo_y) * scale), res - 1)
            iz = min(int((pz[j] - lo_z) * scale), res - 1)
            c = _spread3(ix) | (_spread3(iy) << 1) | (_spread3(iz) << 2)
            code[j] = c
            count[c + 1] += 1
        for c in range(1, count.shape[0]):
            count[c] += count[c - 1]
        ids = np.empty(n, dtype=np.int64)
        scode = np.empty(n, dtype=np.int64)
        for j in range(n):  # stable: ties keep index order (not needed, but deterministic)
            c = code[j]
            ids[count[c]] = j
            scode[count[c]] = c
            count[c] += 1
        xs = np.empty(n)
        ys = np.empty(n)
        zs = np.empty(n)
        for j in range(n):
            k = ids[j]
            xs[j] = px[k]
            ys[j] = py[k]
            zs[j] = pz[k]
        # the tree, twice: count the nodes, then store them (children after their parent)
        st_a = np.empty(nbits + 4, dtype=np.int64)
        st_b = np.empty(nbits + 4, dtype=np.int64)
        st_bit = np.empty(nbits + 4, dtype=np.int64)
        st_t = np.empty(nbits + 4, dtype=np.int64)
        nnode = 1
        lo = np.empty(0, dtype=np.int64)
        hi = np.empty(0, dtype=np.int64)
        child = np.empty(0, dtype=np.int64)
        for store in range(2):
            if store:
                lo = np.empty(nnode, dtype=np.int64)
                hi = np.empty(nnode, dtype=np.int64)
                child = np.full(nnode, -1, dtype=np.int64)  # first child; -1: a leaf
                lo[0], hi[0] = 0, n
            nnode = 1
            top = 1
            st_a[0], st_b[0], st_bit[0], st_t[0] = 0, n, nbits - 1, 0
            while top:
                top -= 1
                a, b, bit, t = st_a[top], st_b[top], st_bit[top], st_t[top]
                if b - a <= leaf:
                    continue
                s = a
                while bit >= 0:  # the first position with this bit set (codes are sorted)
                    u, v = a, b
                    while u < v:
                        w = (u + v) // 2
                        if (scode[w] >> bit) & 1:
                            v = w
                        else:
                            u = w + 1
                    s = u
                    if a < s < b:
                        break
                    bit -= 1  # one half is empty: split at the next bit instead
                if bit < 0:
                    continue  # one cell: a leaf, however many points
                c = nnode
                nnode += 2
                if store:
                    child[t] = c
                    lo[c], hi[c], lo[c + 1], hi[c + 1] = a, s, s, b
                st_a[top], st_b[top], st_bit[top], st_t[top] = a, s, bit - 1, c
                st_a[top + 1], st_b[top + 1], st_bit[top + 1], st_t[top + 1] = s, b, bit - 1, c + 1
                top += 2
        box = np.empty((nnode, 6))  # x0, x1, y0, y1, z0, z1 per node: one cache line
        for t in range(nnode - 1, -1, -1):  # children before parents
            c = child[t]
            if c < 0:  # a leaf: the box of its points
                a, b = lo[t], hi[t]
                x0, x1, y0, y1, z0, z1 = xs[a], xs[a], ys[a], ys[a], zs[a], zs[a]
                for j in range(a + 1, b):
                    x0 = min(x0, xs[j])
                    x1 = max(x1, xs[j])
                    y0 = min(y0, ys[j])
                    y1 = max(y1, ys[j])
                    z0 = min(z0, zs[j])
                    z1 = max(z1, zs[j])
                box[t, 0], box[t, 1], box[t, 2], box[t, 3], box[t, 4], box[t, 5] = \
                    x0, x1, y0, y1, z0, z1
            else:  # the union of its children's
                for k in range(0, 6, 2):
                    box[t, k] = min(box[c, k], box[c + 1, k])
                    box[t, k + 1] = max(box[c, k + 1], box[c + 1, k + 1])
        where = np.empty(n, dtype=np.int64)  # original index -> tree position
        for j in range(n):
            where[ids[j]] = j
        low = _index_mask(n)
        high = ~low
        dist = np.full(n, np.inf)
        bits = dist.view(np.int64)
        # per node: the largest distance's bits below it and the largest packed key
        nmax = np.full(nnode, np.float64(np.inf).view(np.int64))
        nkey = np.zeros(nnode, dtype=np.int64)
        stack = st_t
        seen = np.empty(nnode, dtype=np.int64)  # inner nodes visited, pre-order
        for i in range(m):
            out_row[i] = far
            sx, sy, sz = px[far], py[far], pz[far]
            top = 1
            stack[0] = 0  # the root: every distance is still inf at the first pick, and
            nseen = 0     # later a pick is always a point of the cloud, within its box
            while top:    # nodes on the stack have passed their check
                top -= 1
                t = stack[top]
                c = child[t]
                if c < 0:
                    best = 0
                    key = 0
                    for j in range(lo[t], hi[t]):
                        dx = xs[j] - sx
                        dy = ys[j] - sy
                        dz = zs[j] - sz
                        d = min(dist[j], dx * dx + dy * dy + dz * dz)
                        dist[j] = d
                        v = np.float64(d).view(np.int64)
                        best = max(best, v)
                        key = max(key, (v & high) | (low - ids[j]))
                    nmax[t] = best
                    nkey[t] = key
                    continue
                seen[nseen] = t
                nseen += 1
                for u in range(c, c + 2):
                    gx = max(box[u, 0] - sx, sx - box[u, 1], 0.0)
                    gy = max(box[u, 2] - sy, sy - box[u, 3], 0.0)
                    gz = max(box[u, 4] - sz, sz - box[u, 5], 0.0)
                    bound = np.float64(gx * gx + gy * gy + gz * gz).view(np.int64)
                    if bound < nmax[u]:  # else no distance below u can drop: skip it
                        stack[top] = u
                        top += 1
            for k in range(nseen - 1, -1, -1):  # children before parents
                t = seen[k]
                c = child[t]
                nmax[t] = max(nmax[c], nmax[c + 1])
                nkey[t] = max(nkey[c], nkey[c + 1])
            best = nmax[0]
            if best > 0:  # all distances 0: keep the previous pick, as open3d does
                far = low - (nkey[0] & low)
                if bits[where[far]] != best:
                    far = n
                    for j in range(n):
                        if bits[j] == best and ids[j] < far:
                            far = ids[j]

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
        """One cloud: pruned when enough picks amortize building its tree, plain otherwise
        (thresholds measured on this machine, see the constants)."""
        if m >= _FPS_PRUNE_MIN_PICKS and m * m * px.shape[0] >= _FPS_PRUNE_MIN_M2N:
            leaf = _FPS_CELL_LARGE if px.shape[0] >= _FPS_CELL_LARGE_N else _FPS_CELL
            _fps_one_pruned(px, py, pz, far, m, out_row, leaf)
        else:
            _fps_one(px, py, pz, far, m, out_row)

    @njit(cache=True)
    def _fps_points_cloud(pts, far, m, out_row):  # pragma: no cover - compiled
        """One (N, 3) cloud of any float dtype and layout: checks, float64 planes, FPS.

        Returns 0, or 1 when a coordinate is NaN/inf, 2 when ``far`` is out of range (nothing
        is sampled then; the caller reruns the full checks, which raise the right error).
        """
        n = pts.shape[0]
        if far < 0 or far >= n:
            return 2
        px = np.empty(n)
        py = np.empty(n)
        pz = np.empty(n)
        for j in range(n):
            px[j] = pts[j, 0]
            py[j] = pts[j, 1]
            pz[j] = pts[j, 2]
        exp = 0x7FF0000000000000  # all exponent bits set: inf or NaN
        bx, by, bz = px.view(np.int64), py.view(np.int64), pz.view(np.int64)
        bad = 0
        for j in range(n):
            bad |= (((bx[j] & exp) == exp) | ((by[j] & exp) == exp) | ((bz[j] & exp) == exp))
        if bad:
            return 1
        _fps_cloud(px, py, pz, far, m, out_row)
        return 0

    @njit(cache=True)
    def _fps_points_serial(pts, starts, start, m):  # pragma: no cover - compiled
        """pts: (B, N, 3) float32/float64; start index ``starts[b]``, or ``start`` for every
        cloud when ``starts`` is empty. Returns ((B, m) int64 picks, status as above).

        In the calling thread: a single cloud or a small batch gains nothing from the thread
        pool, whose wake-up can cost more than the whole FPS on a busy machine.
        """
        b = pts.shape[0]
        out = np.empty((b, m), dtype=np.int64)
        for bi in range(b):
            status = _fps_points_cloud(pts[bi], starts[bi] if starts.shape[0] else start, m,
                                       out[bi])
            if status:
                return out, status
        return out, 0

    @njit(nogil=True, cache=True)
    def _fps_points_rows(pts, starts, start, m, out):  # pragma: no cover - compiled
        """:func:`_fps_points_serial` into a given ``out``, without the GIL: the body of one
        chunk of clouds in the thread-shared path. Returns the status."""
        for bi in range(pts.shape[0]):
            status = _fps_points_cloud(pts[bi], starts[bi] if starts.shape[0] else start, m,
                                       out[bi])
            if status:
                return status
        return 0

    @njit(parallel=True, cache=True)
    def _fps_kernel(xyz, start, m):  # pragma: no cover - compiled, checked via the tests
        """xyz: (B, 3, N) float64, coordinate planes contiguous; start: (B,) int64."""
        b = xyz.shape[0]
        out = np.empty((b, m), dtype=np.int64)
        for bi in prange(b):
            _fps_cloud(xyz[bi, 0], xyz[bi, 1], xyz[bi, 2], start[bi], m, out[bi])
        return out

    @njit(cache=True)
    def _fps_kernel_serial(xyz, start, m):  # pragma: no cover - compiled
        """:func:`_fps_kernel` in the calling thread."""
        b = xyz.shape[0]
        out = np.empty((b, m), dtype=np.int64)
        for bi in range(b):
            _fps_cloud(xyz[bi, 0], xyz[bi, 1], xyz[bi, 2], start[bi], m, out[bi])
        return out


_NO_STARTS = np.empty(0, dtype=np.int64)
_FAST_DTYPES = (torch.float32, torch.float64)


class _SharedBatch:
    """One batch of FPS shared between the calling thread and helper threads.

    Why not numba's ``prange``: its pool splits the batch evenly up front and the call returns
    when the slowest thread is done, so on a machine busy with other work one descheduled
    worker stalls the whole call (measured here under load: 20-36 ms for 2 clouds that take
    0.02 ms). Here the caller works through the batch too, claiming chunks of clouds one at a
    time, so a helper that starts late just finds less to do; a chunk a helper still holds at
    the end is waited for about as long as a chunk takes, then redone by the caller (each chunk
    is computed into its own buffer and copied into the result once, under a lock, so a late
    helper never writes into a returned tensor). Worst case ~ the single-thread time.
    """

    def __init__(self, pts, starts, start, m, chunks):
        self.pts, self.starts, self.start, self.m = pts, starts, start, m
        self.bounds = chunks
        self.out = np.empty((pts.shape[0], m), dtype=np.int64)
        self.lock = threading.Lock()
        self.next = 0
        self.done = [threading.Event() for _ in chunks]
        self.status = 0
        self.chunk_s = 0.0  # the caller's slowest chunk so far

    def _compute(self, c) -> None:
        lo, hi = self.bounds[c]
        buf = np.empty((hi - lo, self.m), dtype=np.int64)
        starts = self.starts[lo:hi] if self.starts.shape[0] else self.starts
        status = _fps_points_rows(self.pts[lo:hi], starts, self.start, self.m, buf)
        with self.lock:
            if not self.done[c].is_set():
                self.out[lo:hi] = buf
                self.status = max(self.status, status)
                self.done[c].set()

    def work(self, timed: bool = False) -> None:
        while True:
            with self.lock:
                c = self.next
                if c >= len(self.bounds):
                    return
                self.next += 1
            t0 = time.perf_counter() if timed else 0.0
            self._compute(c)
            if timed:
                self.chunk_s = max(self.chunk_s, time.perf_counter() - t0)

    def finish(self):
        for c, ev in enumerate(self.done):  # chunks still held by helpers
            if not ev.wait(max(self.chunk_s, 1e-4)):
                self._compute(c)
        return self.out, self.status


_helpers: ThreadPoolExecutor | None = None
_helper_count = 0


def _forget_helpers() -> None:
    """In a forked child (DataLoader workers) the parent's helper threads do not exist: start
    afresh on first use instead of queueing work for threads that will never run it."""
    global _helpers, _helper_count
    _helpers, _helper_count = None, 0


os.register_at_fork(after_in_child=_forget_helpers)


def _fps_helpers() -> int:
    """Helper threads besides the caller, started on first use: NUMBA_NUM_THREADS (default:
    the usable cores) minus one; 0 on one core. Read from numba's config, which starts no
    thread pool (``numba.get_num_threads`` would)."""
    global _helpers, _helper_count
    if _helpers is None and _helper_count >= 0:
        from numba import config
        _helper_count = max(0, int(config.NUMBA_NUM_THREADS) - 1)
        if _helper_count:
            _helpers = ThreadPoolExecutor(_helper_count, thread_name_prefix="mmmixlab-fps")
        else:
            _helper_count = -1  # decided: no helpers
    return max(0, _helper_count)


def _fps_numba(pts: np.ndarray, starts: np.ndarray, start: int, m: int):
    """Run the numba kernels on (B, N, 3) float32/float64 ``pts``: (picks, status)."""
    b, n, _ = pts.shape
    if b == 1 or b * n * m < _FPS_PARALLEL_MIN_WORK or not _fps_helpers():
        return _fps_points_serial(pts, starts, start, m)
    # chunks of about _FPS_CHUNK_WORK updates, at least two per thread
    per = max(1, min(b // (2 * (_helper_count + 1)), _FPS_CHUNK_WORK // (n * m)))
    shared = _SharedBatch(pts, starts, start, m,
                          [(lo, min(b, lo + per)) for lo in range(0, b, per)])
    for _ in range(min(_helper_count, len(shared.bounds) - 1)):
        _helpers.submit(shared.work)
    shared.work(timed=True)
    return shared.finish()


def _fps_cpu_fast(xyz: torch.Tensor, num_samples, start_index):
    """The common CPU call (float32/float64 points, int or CPU tensor start) with no torch op:
    a zero-copy numpy view goes straight to the kernel, which converts and checks the points
    itself. Returns None for anything else or anything invalid; the checked path handles it
    (and raises the errors)."""
    if xyz.dtype not in _FAST_DTYPES or xyz.dim() != 3:
        return None
    b, n, c = xyz.shape
    if c != 3 or b == 0 or n == 0:
        return None
    if type(num_samples) is int or isinstance(num_samples, np.integer):
        m = int(num_samples)
    else:
        return None
    if not 1 <= m <= n:
        return None
    if type(start_index) is int or isinstance(start_index, np.integer):
        start, starts = int(start_index), _NO_STARTS
        if not 0 <= start < n:
            return None
    elif isinstance(start_index, torch.Tensor) and start_index.is_cpu \
            and not (start_index.is_floating_point() or start_index.is_complex()):
        s = start_index.detach().numpy().reshape(-1)
        if s.shape[0] == 1:
            start, starts = int(s[0]), _NO_STARTS
        elif s.shape[0] == b:
            start, starts = 0, np.ascontiguousarray(s, dtype=np.int64)
        else:
            return None
    else:
        return None
    pts = (xyz.detach() if xyz.requires_grad else xyz).numpy()
    out, status = _fps_numba(pts, starts, start, m)
    return torch.from_numpy(out) if status == 0 else None


def farthest_point_sample(xyz: torch.Tensor, num_samples: int,
                          start_index: int | torch.Tensor = 0) -> torch.Tensor:
    """Farthest point sampling; returns (B, num_samples) long indices on ``xyz.device``.

    Args:
        xyz: (B, N, 3) float tensor on any device; gradients are ignored (indices carry none).
        num_samples: how many points to pick, 1 <= num_samples <= N.
        start_index: the first pick, an int or a (B,) integer tensor.

    On CPU with numba installed this runs a compiled kernel (one cloud or little work in the
    calling thread, larger batches spread over numba's threads); on CUDA, or without numba,
    it runs :func:`farthest_point_sample_reference`. MPS has no float64, so there the sampling
    runs on a CPU copy (numba when available). All paths give the same indices as open3d's
    legacy FPS (see the module docstring).
    """
    if HAVE_NUMBA and isinstance(xyz, torch.Tensor):
        if xyz.is_cpu:
            idx = _fps_cpu_fast(xyz, num_samples, start_index)
            if idx is not None:
                return idx
        if xyz.is_cpu or xyz.device.type == "mps":
            m, start = _check_fps_args(xyz, num_samples, start_index)
            x = xyz.detach().to("cpu", torch.float64).numpy()
            idx, status = _fps_numba(x, start.numpy(), 0, m)
            if status:  # pragma: no cover - the checks above reject what the kernel rejects
                raise ValueError(f"farthest_point_sample: invalid input (status {status})")
            return torch.from_numpy(idx).to(xyz.device)
    return farthest_point_sample_reference(xyz, num_samples, start_index)


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


def ball_query(query: torch.Tensor, points: torch.Tensor, radius: float, k: int,
               inclusive: bool = False) -> torch.Tensor:
    """Up to k neighbours within ``radius`` of each query, pointnet2 style; (B, M, k) indices.

    Semantics (those of the pointnet2 CUDA op, so Point-BERT/PointNet++ groupings carry over):

    * take the first k point indices, in index order, with squared distance < radius**2
      (strict, as pointnet2 compares ``d2 < radius2``; ``inclusive=True``: ``<=``, as
      OpenShape's ``query_ball_point`` drops only ``d2 > radius**2``), not the k closest ones;
    * fewer than k found: the remaining slots repeat the first found index;
    * none found (a query that is not a cloud point, farther than ``radius`` from all of them):
      every slot holds the nearest point (pointnet2 would leave index 0, an arbitrary point).

    k may exceed N; slots beyond the points found are padded by the same rule.

    On CPU this runs a compiled kernel (:func:`_ball_query_numba`: each query scans the points
    in index order and stops at the k-th found, the same float arithmetic as the reference);
    elsewhere, or without numba, :func:`ball_query_reference`. Both give the same indices.
    """
    k = _check_pair(query, points, k)
    r = float(radius)
    if not (r > 0 and np.isfinite(r)):
        raise ValueError(f"radius must be a positive finite number, got {radius!r}")
    if HAVE_NUMBA and query.is_cpu and query.dtype in _FAST_DTYPES \
            and points.dtype in _FAST_DTYPES and query.shape[0] * query.shape[1] > 0:
        return _ball_query_cpu(query, points, r, k, inclusive)
    return _ball_query_torch(query, points, r, k, inclusive)


if HAVE_NUMBA:
    @njit(cache=True, nogil=True)
    def _ball_query_rows(q, p, thr, k, inclusive, out):  # pragma: no cover - compiled
        """:func:`ball_query` for every query of ``q`` (B, M, 3) in ``p`` (B, N, 3) into ``out``
        (B, M, k): squared distances as ``((dx*dx) + dy*dy) + dz*dz`` in the arrays' dtype (the
        reference's order), the scan stops at the k-th point inside."""
        b, m = q.shape[0], q.shape[1]
        n = p.shape[1]
        kk = min(k, n)
        for i in range(b):
            for j in range(m):
                qx, qy, qz = q[i, j, 0], q[i, j, 1], q[i, j, 2]
                found = 0
                nearest, nearest_d = 0, np.inf
                for t in range(n):
                    dx = p[i, t, 0] - qx
                    dy = p[i, t, 1] - qy
                    dz = p[i, t, 2] - qz
                    d = dx * dx
                    d += dy * dy
                    d += dz * dz
                    if (d <= thr) if inclusive else (d < thr):
                        out[i, j, found] = t
                        found += 1
                        if found == kk:
                            break
                    if d < nearest_d:  # strict: the first of equal distances, as argmin
                        nearest, nearest_d = t, d
                head = out[i, j, 0] if found else nearest  # none found: the scan was complete
                for s in range(found, k):
                    out[i, j, s] = head


def _ball_query_cpu(query, points, r: float, k: int, inclusive: bool) -> torch.Tensor:
    """The compiled ball query on CPU float32/float64 tensors, in the reference's precision
    (the query's dtype, at least float32); large batches are split over the FPS helpers."""
    dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    q = query.detach().to(dtype).contiguous().numpy()
    p = points.detach().to(dtype).contiguous().numpy()
    thr = (np.float64 if dtype == torch.float64 else np.float32)(r * r)  # as torch compares
    b, m, _ = q.shape
    out = np.empty((b, m, k), dtype=np.int64)
    if b > 1 and b * m * p.shape[1] >= _FPS_PARALLEL_MIN_WORK and _fps_helpers():
        parts = min(b, _helper_count + 1)
        bounds = [(b * i // parts, b * (i + 1) // parts) for i in range(parts)]
        futures = [_helpers.submit(_ball_query_rows, q[lo:hi], p[lo:hi], thr, k, inclusive,
                                   out[lo:hi]) for lo, hi in bounds[1:]]
        lo, hi = bounds[0]
        _ball_query_rows(q[lo:hi], p[lo:hi], thr, k, inclusive, out[lo:hi])
        for f in futures:
            f.result()
    else:
        _ball_query_rows(q, p, thr, k, inclusive, out)
    return torch.from_numpy(out)


def ball_query_reference(query: torch.Tensor, points: torch.Tensor, radius: float, k: int,
                         inclusive: bool = False) -> torch.Tensor:
    """:func:`ball_query` in vectorised torch (any device): (B, chunk, N) squared distances,
    the first k inside by a running count; the reference the compiled kernel is tested on."""
    k = _check_pair(query, points, k)
    r = float(radius)
    if not (r > 0 and np.isfinite(r)):
        raise ValueError(f"radius must be a positive finite number, got {radius!r}")
    return _ball_query_torch(query, points, r, k, inclusive)


def _ball_query_torch(query, points, r: float, k: int, inclusive: bool) -> torch.Tensor:
    n = points.shape[1]
    kk = min(k, n)
    out = []
    for _, d in _sq_dist_chunks(query, points):
        inside = d <= r * r if inclusive else d < r * r
        first = _first_true(inside, kk)  # found, in index order; n marks an empty slot
        head = first[..., :1]
        head = torch.where(head < n, head, d.argmin(dim=-1, keepdim=True))
        idx = torch.where(first < n, first, head)
        if kk < k:
            idx = torch.cat([idx, head.expand(*head.shape[:-1], k - kk)], dim=-1)
        out.append(idx)
    return torch.cat(out, 1)


# ----------------------------------------------------------------------------- sorting

def argsort_rows_reference(keys: torch.Tensor, stable: bool = False) -> torch.Tensor:
    """``torch.argsort(keys, dim=1, stable=stable)``: what :func:`argsort_rows` must return."""
    return torch.argsort(keys, dim=1, stable=stable)


def argsort_rows(keys: torch.Tensor, stable: bool = False) -> torch.Tensor:
    """:func:`argsort_rows_reference` (each row of a (B, N) tensor sorted ascending), the same
    indices, faster on the CPU for the keys a training step sorts: float32, non-negative and
    finite (random draws for a random subset or a random pairing of points, squared distances
    for PointCutMix-K).

    Why: torch's CPU sort took 1.2 ms for the 32 x 1,024 stable argsorts of one input mix and
    2.6 ms for the 32 x 2,048 argsort of one batch's random subset, ~2-3% of a ``pointbert-tiny``
    step on one core (``benchmarks/sorting.py``). Here each key's float bits (which order as the
    floats do for non-negative values) are packed above its index into one int64, so every
    packed key is distinct; numpy's sort (SIMD on x86) then gives exactly the stable order.
    With ``stable=False`` torch's order of tied keys is its own; rows with ties are handed to
    torch (with 2,048 random draws, ~12% of rows hold a tie), so the result is torch's, bit for
    bit, either way (``tests/test_ops.py``). Unstable sorts of rows longer than
    ``_ARGSORT_UNSTABLE_MAX_N`` stay with torch: from 10,000 random draws on most rows hold a
    tie, and the detour measured 1.3x torch's time. Other dtypes, devices and keys: torch."""
    if (keys.device.type != "cpu" or keys.dtype != torch.float32 or keys.dim() != 2
            or keys.numel() == 0 or keys.shape[1] >= 1 << 31 or keys.requires_grad
            or (not stable and keys.shape[1] > _ARGSORT_UNSTABLE_MAX_N)):
        return argsort_rows_reference(keys, stable)
    lo, hi = torch.aminmax(keys)
    if not (bool(lo >= 0) and bool(hi < float("inf"))):   # negative, inf or NaN keys
        return argsort_rows_reference(keys, stable)
    n = keys.shape[1]
    shift = max(1, (n - 1).bit_length())
    # the sign bit off: -0.0 ties with 0.0, as the floats do
    bits = keys.contiguous().view(torch.int32).numpy().astype(np.int64) & 0x7FFFFFFF
    packed = (bits << shift) | np.arange(n, dtype=np.int64)
    packed.sort(axis=1)
    order = torch.from_numpy(packed & ((1 << shift) - 1))
    if not stable:
        ranked = packed >> shift
        tied = torch.from_numpy(np.flatnonzero((ranked[:, 1:] == ranked[:, :-1]).any(axis=1)))
        if len(tied):
            order[tied] = argsort_rows_reference(keys[tied], stable)
    return order


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


# ----------------------------------------------------------------------------- pooling

def max_over_rows_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.max(x, dim=1)`` of a (P, k, C) tensor: values (P, C) and, for each, the lowest
    index of its maximum (the first NaN where a column holds one)."""
    values, indices = x.max(dim=1)
    return values, indices


if HAVE_NUMBA:
    @njit(cache=True, nogil=True)
    def _max_over_rows_kernel(x, values, indices):  # pragma: no cover - compiled
        """Rows scanned in order, columns in the inner loop (vectorised): a later row replaces
        only a strictly larger value, or a NaN a non-NaN one, as torch's kernel does."""
        p_count, k, c = x.shape
        for p in range(p_count):
            for j in range(c):
                values[p, j] = x[p, 0, j]
                indices[p, j] = 0
            for i in range(1, k):
                for j in range(c):
                    v = x[p, i, j]
                    best = values[p, j]
                    take = (v > best) | ((v != v) & (best == best))
                    values[p, j] = v if take else best
                    indices[p, j] = i if take else indices[p, j]


    @njit(cache=True, nogil=True)
    def _max_over_rows_bf16_kernel(bits, values, indices):  # pragma: no cover - compiled
        """The same scan on bf16 values held as their uint16 bits (numba has no bf16): each
        patch widened to float32 in a small buffer (a bf16 is the high half of its float32:
        exact) and scanned by the kernel above; the kept values are the original bits (NaN
        payloads too)."""
        p_count, k, c = bits.shape
        wide = np.empty((1, k, c), dtype=np.uint32)
        best = np.empty((1, c), dtype=np.float32)
        for p in range(p_count):
            for i in range(k):
                for j in range(c):
                    wide[0, i, j] = np.uint32(bits[p, i, j]) << 16
            _max_over_rows_kernel(wide.view(np.float32), best, indices[p:p + 1])
            for j in range(c):
                values[p, j] = bits[p, indices[p, j], j]


    @njit(cache=True, nogil=True)
    def _scatter_rows_kernel(values, indices, out):  # pragma: no cover - compiled
        for p in range(values.shape[0]):
            for j in range(values.shape[1]):
                out[p, indices[p, j], j] = values[p, j]


_BITS_OF = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def scatter_rows_reference(values: torch.Tensor, indices: torch.Tensor, k: int) -> torch.Tensor:
    """A (P, k, C) tensor of zeros holding ``values`` (P, C) at row ``indices`` (P, C) of each
    column: the gradient of :func:`max_over_rows`' values (torch's ``scatter``)."""
    out = values.new_zeros((values.shape[0], k, values.shape[1]))
    return out.scatter_(1, indices.unsqueeze(1), values.unsqueeze(1))


def scatter_rows(values: torch.Tensor, indices: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`scatter_rows_reference`, the same bits. On CPU with numba: zeros, then one write
    per (P, C) entry through integer views of the values (any 2/4/8-byte dtype, bf16 included).
    Why: torch's CPU scatter along dim 1 took 1.3-5.8 ms for a 64-cloud tokenizer pool's
    (4,096, 32, 32) gradient, most of it a copy of the whole zero tensor, for 131,072 writes."""
    if values.dim() != 2 or indices.shape != values.shape:
        raise ValueError(f"values and indices must both be (P, C), got {tuple(values.shape)} "
                         f"and {tuple(indices.shape)}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= k):
        raise ValueError(f"indices must lie in [0, {k}), got [{int(indices.min())}, "
                         f"{int(indices.max())}]")
    view = _BITS_OF.get(values.element_size())
    if not (HAVE_NUMBA and values.is_cpu and view is not None and values.numel()
            and indices.dtype == torch.int64):
        return scatter_rows_reference(values, indices, k)
    out = values.new_zeros((values.shape[0], k, values.shape[1]))
    _scatter_rows_kernel(values.detach().contiguous().view(view).numpy(),
                         indices.contiguous().numpy(), out.view(view).numpy())
    return out


def scatter_add_rows_reference(out: torch.Tensor, indices: torch.Tensor,
                               values: torch.Tensor) -> torch.Tensor:
    """``out[p, indices[p, j], j] += values[p, j]`` in place on a (P, k, C) ``out`` (torch's
    ``scatter_add_``): the max-pool's gradient added onto a gradient already there."""
    return out.scatter_add_(1, indices.unsqueeze(1), values.unsqueeze(1))


if HAVE_NUMBA:
    @njit(cache=True, nogil=True, inline="always")
    def _bf16_round(bits32):  # pragma: no cover - compiled
        """float32 bits -> bfloat16 bits, round to nearest even, NaN -> 0x7FC0 (as c10 does)."""
        if (bits32 & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
            return np.uint16(0x7FC0)
        return np.uint16((bits32 + np.uint32(0x7FFF) + ((bits32 >> np.uint32(16))
                                                         & np.uint32(1))) >> np.uint32(16))

    @njit(cache=True, nogil=True)
    def _scatter_add_rows_bf16_kernel(out, indices, values):  # pragma: no cover - compiled
        """bf16 bits: each sum in float32, rounded once, as torch's bf16 add."""
        a = np.empty(2, dtype=np.uint32)
        for p in range(values.shape[0]):
            for j in range(values.shape[1]):
                i = indices[p, j]
                a[0] = np.uint32(out[p, i, j]) << np.uint32(16)
                a[1] = np.uint32(values[p, j]) << np.uint32(16)
                f = a.view(np.float32)
                f[0] = f[0] + f[1]
                out[p, i, j] = _bf16_round(a[0])


def scatter_add_rows_(out: torch.Tensor, indices: torch.Tensor,
                      values: torch.Tensor) -> torch.Tensor:
    """:func:`scatter_add_rows_reference`, the same bits. On a contiguous CPU bf16 ``out`` with
    numba a compiled loop (the sums in float32, rounded once, as torch's bf16 add): torch's
    CPU ``scatter_add_`` over dim 1 is the slow path of a bf16 step's tokenizer backward."""
    if out.dim() != 3 or values.dim() != 2 or indices.shape != values.shape \
            or values.shape != (out.shape[0], out.shape[2]):
        raise ValueError(f"out must be (P, k, C) and indices, values (P, C), got "
                         f"{tuple(out.shape)}, {tuple(indices.shape)}, {tuple(values.shape)}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= out.shape[1]):
        raise ValueError(f"indices must lie in [0, {out.shape[1]}), got [{int(indices.min())}, "
                         f"{int(indices.max())}]")
    if not (HAVE_NUMBA and out.is_cpu and out.dtype == torch.bfloat16 and out.is_contiguous()
            and values.dtype == torch.bfloat16 and indices.dtype == torch.int64):
        return scatter_add_rows_reference(out, indices, values)
    _scatter_add_rows_bf16_kernel(_bf16_bits(out), indices.contiguous().numpy(),
                                  _bf16_bits(values))
    return out


def max_over_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`max_over_rows_reference`, the same values bit for bit and the same indices: the
    max-pool over a patch's points (``x`` (P, k, C), no gradient).

    On CPU float32/float64 with numba, a compiled scan: ~2.8x torch's max-with-indices over a
    middle dimension at the tokenizer's (4096, 32, 32), 3.4 vs 9.9 ms on one core
    (``benchmarks/pooling.py``); ``tests/test_ops.py`` holds them equal on ties, signed zeros,
    infinities and NaN. On CPU bfloat16 (a CPU autocast step) the same scan over the values
    widened patch by patch to float32, which is exact (``_max_over_rows_bf16_kernel``), so
    values (bits, NaN payloads included) and indices are still torch's; torch's own bf16 kernel
    is ~5x slower. Elsewhere torch's own kernel."""
    if x.dim() != 3 or x.shape[1] == 0:
        raise ValueError(f"x must have shape (P, k, C) with k >= 1, got {tuple(x.shape)}")
    if HAVE_NUMBA and x.is_cpu and x.dtype == torch.bfloat16 and x.numel():
        bits = x.detach().contiguous().view(torch.uint16)
        values = torch.empty((x.shape[0], x.shape[2]), dtype=torch.uint16)
        indices = torch.empty((x.shape[0], x.shape[2]), dtype=torch.int64)
        _max_over_rows_bf16_kernel(bits.numpy(), values.numpy(), indices.numpy())
        return values.view(torch.bfloat16), indices
    if not (HAVE_NUMBA and x.is_cpu and x.dtype in _FAST_DTYPES and x.numel()):
        return max_over_rows_reference(x)
    src = x.detach().contiguous()
    values = torch.empty((x.shape[0], x.shape[2]), dtype=x.dtype)
    indices = torch.empty((x.shape[0], x.shape[2]), dtype=torch.int64)
    _max_over_rows_kernel(src.numpy(), values.numpy(), indices.numpy())
    return values, indices


# ----------------------------------------------------------------------------- layer norm

def layer_norm_relu_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                              eps: float, relu: bool = True,
                              add: torch.Tensor | None = None) -> torch.Tensor:
    """``relu(layer_norm(x [+ add]))`` over the last dimension as torch runs it on CPU bf16
    tensors under autocast: ``add`` (P, C), if given, added to each of the k rows of its group
    of ``x`` (P, k, C) in ``x``'s dtype (a bf16 add rounds); the norm's arithmetic in float32
    (torch's CPU layer norm of a bf16 input computes in float32 and rounds its output to bf16,
    and CPU autocast leaves ``layer_norm`` to it); the ReLU (exact)."""
    if add is not None:
        x = x + add.unsqueeze(1)
    y = F.layer_norm(x.float(), (x.shape[-1],), weight.float(), bias.float(), eps)
    return (F.relu(y) if relu else y).to(x.dtype)


# Rows per block of the compiled layer norm (whole groups of k rows with an ``add``): the weight
# and bias gradients are summed per block (float64) and the blocks' sums added in order, so
# they do not depend on how blocks are split over threads; 256 rows of 32 bf16 values is 16 KB.
_LN_BLOCK = 256
_LN_PARALLEL_MIN_ROWS = 1 << 14


if HAVE_NUMBA:
    # reassoc: the row sums (16-128 values) vectorise instead of running as one dependent chain
    # of adds; they are summed in another order than torch's kernel (rounding, not bits)
    @njit(cache=True, nogil=True, fastmath={"reassoc"})
    def _ln_relu_fwd_blocks(xbits, qbits, k, w, b, eps, relu, block, first, last, ybits, mean,
                            rstd):  # pragma: no cover - compiled
        """Blocks ``first..last-1`` of ``block`` rows: bf16 bits in, float32 statistics, bf16
        bits out. (The row's load is written out in both kernels: as an inlined helper it
        kept the loops from vectorising, 3x slower.)"""
        rows, c = xbits.shape
        wide = np.empty(c, dtype=np.uint32)
        xf = wide.view(np.float32)
        sumbits = np.empty(c, dtype=np.uint32)
        sf = sumbits.view(np.float32)
        out = np.empty(c, dtype=np.float32)
        outbits = out.view(np.uint32)
        inv_c = np.float32(1.0) / np.float32(c)
        for blk in range(first, last):
            for r in range(blk * block, min(rows, (blk + 1) * block)):
                for j in range(c):
                    wide[j] = np.uint32(xbits[r, j]) << np.uint32(16)
                if k > 0:  # the bf16 sum x + q[r // k], rounded as torch's bf16 add
                    p = r // k
                    for j in range(c):
                        sumbits[j] = np.uint32(qbits[p, j]) << np.uint32(16)
                    for j in range(c):
                        sf[j] = xf[j] + sf[j]
                    for j in range(c):
                        wide[j] = np.uint32(_bf16_round(sumbits[j])) << np.uint32(16)
                s = np.float32(0.0)
                for j in range(c):
                    s += xf[j]
                m = s * inv_c
                q = np.float32(0.0)
                for j in range(c):
                    d = xf[j] - m
                    q += d * d
                rs = np.float32(1.0) / np.sqrt(q * inv_c + eps)
                mean[r], rstd[r] = m, rs
                for j in range(c):
                    v = (xf[j] - m) * rs * w[j] + b[j]
                    out[j] = v if (not relu or v > 0 or v != v) else np.float32(0.0)
                for j in range(c):
                    ybits[r, j] = _bf16_round(outbits[j])

    @njit(cache=True, nogil=True, fastmath={"reassoc"})
    def _ln_relu_bwd_blocks(xbits, qbits, k, gbits, w, b, relu, mean, rstd, block, first, last,
                            dxbits, dw_parts, db_parts, dq):  # pragma: no cover - compiled
        """The gradient of :func:`_ln_relu_fwd_blocks` for blocks ``first..last-1``: dx as bf16
        bits, each block's weight and bias gradients (float64) in its row of the parts and,
        with an add, each group's sum of the bf16 dx in ``dq`` (float32)."""
        rows, c = xbits.shape
        wide = np.empty(c, dtype=np.uint32)
        xf = wide.view(np.float32)
        sumbits = np.empty(c, dtype=np.uint32)
        sf = sumbits.view(np.float32)
        gwide = np.empty(c, dtype=np.uint32)
        gf = gwide.view(np.float32)
        xhat = np.empty(c, dtype=np.float32)
        dxhat = np.empty(c, dtype=np.float32)
        out = np.empty(c, dtype=np.float32)
        outbits = out.view(np.uint32)
        inv_c = np.float32(1.0) / np.float32(c)
        for blk in range(first, last):
            dw = dw_parts[blk]
            db = db_parts[blk]
            for j in range(c):
                dw[j] = 0.0
                db[j] = 0.0
            for r in range(blk * block, min(rows, (blk + 1) * block)):
                m, rs = mean[r], rstd[r]
                for j in range(c):
                    wide[j] = np.uint32(xbits[r, j]) << np.uint32(16)
                if k > 0:  # the bf16 sum x + q[r // k], rounded as torch's bf16 add
                    p = r // k
                    for j in range(c):
                        sumbits[j] = np.uint32(qbits[p, j]) << np.uint32(16)
                    for j in range(c):
                        sf[j] = xf[j] + sf[j]
                    for j in range(c):
                        wide[j] = np.uint32(_bf16_round(sumbits[j])) << np.uint32(16)
                for j in range(c):
                    gwide[j] = np.uint32(gbits[r, j]) << np.uint32(16)
                sa = np.float32(0.0)
                sb = np.float32(0.0)
                for j in range(c):
                    xh = (xf[j] - m) * rs
                    g = gf[j]
                    if relu and not (xh * w[j] + b[j] > 0):
                        g = np.float32(0.0)
                    xhat[j] = xh
                    dw[j] += g * xh
                    db[j] += g
                    dxh = g * w[j]
                    dxhat[j] = dxh
                    sa += dxh
                    sb += dxh * xh
                sa *= inv_c
                sb *= inv_c
                for j in range(c):
                    out[j] = rs * (dxhat[j] - sa - xhat[j] * sb)
                for j in range(c):
                    dxbits[r, j] = _bf16_round(outbits[j])
                if k > 0:
                    p = r // k
                    if r % k == 0:
                        for j in range(c):
                            dq[p, j] = 0.0
                    for j in range(c):
                        gwide[j] = np.uint32(dxbits[r, j]) << np.uint32(16)
                    for j in range(c):
                        dq[p, j] += gf[j]


def _run_blocks(kernel, rows: int, block: int, head: tuple, tail: tuple,
                rows_of_work: int | None = None) -> None:
    """``kernel(*head, block, first, last, *tail)`` over all blocks of ``block`` rows: on one
    thread, or split over the compiled ops' helper threads for large inputs (``rows_of_work``,
    default ``rows``) when torch has more than one thread. Each block's output is its own, so
    the split never changes a bit."""
    blocks = -(-rows // block)
    threads = torch.get_num_threads()
    if (rows_of_work or rows) < _LN_PARALLEL_MIN_ROWS or threads < 2 or not _fps_helpers():
        kernel(*head, block, 0, blocks, *tail)
        return
    parts = min(threads, _helper_count + 1, blocks)
    bounds = [(blocks * i // parts, blocks * (i + 1) // parts) for i in range(parts)]
    futures = [_helpers.submit(kernel, *head, block, lo, hi, *tail) for lo, hi in bounds[1:]]
    kernel(*head, block, *bounds[0], *tail)
    for f in futures:
        f.result()


_NO_ADD = np.zeros((0, 0), dtype=np.uint16)


def _ln_layout(x: torch.Tensor, weight, bias, add):
    """Checks; ``(rows as (R, C) uint16 bits, add bits or an empty array, k, rows per block)``
    (numpy views)."""
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last dimension, got {tuple(x.shape)}")
    c = x.shape[-1]
    if weight.shape != (c,) or bias.shape != (c,):
        raise ValueError(f"weight and bias must have shape ({c},), got {tuple(weight.shape)} "
                         f"and {tuple(bias.shape)}")
    if not layer_norm_relu_fused_supported(x):
        raise ValueError(f"the compiled layer norm takes CPU bfloat16, got {x.dtype} on "
                         f"{x.device}; use layer_norm_relu_reference")
    bits = _bf16_bits(x).reshape(-1, c)
    if add is None:
        return bits, _NO_ADD, 0, _LN_BLOCK
    if x.dim() != 3 or add.shape != (x.shape[0], c) or add.dtype != x.dtype or not add.is_cpu:
        raise ValueError(f"with add, x must be (P, k, C) and add (P, C) of its dtype, got "
                         f"{tuple(x.shape)} {x.dtype} and {tuple(add.shape)} {add.dtype}")
    k = x.shape[1]
    if k == 0:
        raise ValueError(f"x has no rows per group: {tuple(x.shape)}")
    return bits, _bf16_bits(add), k, k * max(1, _LN_BLOCK // k)


def layer_norm_relu_fused_supported(x: torch.Tensor) -> bool:
    """Whether :func:`layer_norm_relu_forward` runs compiled for ``x``: CPU bfloat16 with numba."""
    return HAVE_NUMBA and x.is_cpu and x.dtype == torch.bfloat16


def layer_norm_relu_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                            eps: float, relu: bool = True, add: torch.Tensor | None = None):
    """:func:`layer_norm_relu_reference` on CPU bf16 tensors in one compiled pass, plus what
    its gradient needs: ``(y, mean, rstd)`` (statistics float32, one per row).

    Why: under CPU autocast torch's bf16 layer norm, the ReLU and (in the Point-BERT
    tokenizer) the broadcast add before them are separate passes over the tokenizer's
    per-point activations (131,072 x 32 for 64 clouds, the largest tensors of a
    ``pointbert-tiny`` step); here one pass forward and one backward: 15.8 against 21.9 ms
    forward + backward at 131,072 x 32 with the add, 6.0 against 8.9 ms at 131,072 x 16 (one
    Sapphire Rapids core, interleaved, ``benchmarks/cpu_bf16.py``). The add rounds as
    torch's; the statistics are float32, summed in another order than torch's kernel, so an
    output may differ from the reference's by one bf16 rounding step (about 2 in 100,000
    values; ``tests/test_ops.py``)."""
    bits, qbits, k, block = _ln_layout(x, weight, bias, add)
    rows, c = bits.shape
    y = torch.empty((rows, c), dtype=torch.uint16)
    mean = torch.empty(rows, dtype=torch.float32)
    rstd = torch.empty(rows, dtype=torch.float32)
    w = weight.detach().float().contiguous().numpy()
    b = bias.detach().float().contiguous().numpy()
    _run_blocks(_ln_relu_fwd_blocks, rows, block, (bits, qbits, k, w, b, np.float32(eps), relu),
                (y.numpy(), mean.numpy(), rstd.numpy()))
    return y.view(torch.bfloat16).view(x.shape), mean, rstd


def layer_norm_relu_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                             bias: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                             relu: bool = True, add: torch.Tensor | None = None):
    """Gradients of :func:`layer_norm_relu_forward` from the bf16 gradient of its output:
    ``(dx, dweight, dbias, dadd)``: ``dx`` bf16 (torch's layer-norm backward formula in float32,
    the ReLU's mask recomputed from the saved statistics), the weight's and bias's in their
    dtype, summed in float64 (torch's bf16 layer-norm backward was off by ~5% of their scale
    against float64 at 5,000 x 16, ours by ~1e-7), and with an ``add`` its gradient (each
    group's sum of ``dx`` in float32, rounded to bf16 as torch's bf16 sum rounds), else None."""
    bits, qbits, k, block = _ln_layout(x, weight, bias, add)
    rows, c = bits.shape
    if grad.shape != x.shape:
        raise ValueError(f"grad must have x's shape {tuple(x.shape)}, got {tuple(grad.shape)}")
    gbits = _bf16_bits(grad.to(torch.bfloat16)).reshape(-1, c)
    blocks = -(-rows // block)
    dx = torch.empty((rows, c), dtype=torch.uint16)
    dw_parts = np.empty((blocks, c), dtype=np.float64)
    db_parts = np.empty((blocks, c), dtype=np.float64)
    dq = torch.empty((x.shape[0], c) if k else (0, 0), dtype=torch.float32)
    w = weight.detach().float().contiguous().numpy()
    b = bias.detach().float().contiguous().numpy()
    _run_blocks(_ln_relu_bwd_blocks, rows, block,
                (bits, qbits, k, gbits, w, b, relu, mean.numpy(), rstd.numpy()),
                (dx.numpy(), dw_parts, db_parts, dq.numpy()))
    dw = torch.from_numpy(dw_parts.sum(0)).to(weight.dtype)
    db = torch.from_numpy(db_parts.sum(0)).to(bias.dtype)
    dadd = dq.to(add.dtype) if k else None
    return dx.view(torch.bfloat16).view(x.shape), dw, db, dadd


# ----------------------------------------------------------------------------- linear + max-pool

def linear_max_rows_backward_reference(grad: torch.Tensor, x: torch.Tensor,
                                       weight: torch.Tensor, indices: torch.Tensor
                                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``max over dim 1 of F.linear(x, weight)`` (x (P, k, C), pooled values
    (P, O) taken at ``indices``) with respect to ``x`` and ``weight``, as autograd computes
    them: the values' gradient ``grad`` scattered into a zero (P, k, O) tensor, then the two
    products, in ``x``'s dtype."""
    dense = scatter_rows_reference(grad.to(x.dtype), indices, x.shape[1])
    w = weight.to(x.dtype)
    dw = dense.reshape(-1, w.shape[0]).t() @ x.reshape(-1, x.shape[2])
    return dense @ w, dw.to(weight.dtype)


# Patches per block of the compiled backward (its weight gradient is summed per block in
# float64, the blocks in order: the same bits on any number of threads).
_LM_BLOCK = 64


if HAVE_NUMBA:
    @njit(cache=True, nogil=True, fastmath={"contract"})
    def _linear_max_bwd_blocks(xbits, w, indices, gbits, block, first, last, dxbits,
                               dw_parts):  # pragma: no cover - compiled
        """Blocks ``first..last-1`` of ``block`` patches: each pooled value's gradient reaches
        only its row: dx[p, i] = sum over o with indices[p, o] == i of g[p, o] w[o] (float32,
        rounded to bf16; the other rows 0), and each block's weight gradient
        sum over p of g[p, o] x[p, indices[p, o]] (float64) in its row of the parts."""
        p_count, k, c = xbits.shape
        o_count = w.shape[0]
        rows = np.empty((k, c), dtype=np.float32)
        rowbits = rows.view(np.uint32)
        wide = np.empty(c, dtype=np.uint32)
        xf = wide.view(np.float32)
        gw = np.empty(1, dtype=np.uint32)
        gf = gw.view(np.float32)
        for blk in range(first, last):
            dw = dw_parts[blk]
            for o in range(o_count):
                for j in range(c):
                    dw[o, j] = 0.0
            for p in range(blk * block, min(p_count, (blk + 1) * block)):
                for i in range(k):
                    for j in range(c):
                        rows[i, j] = 0.0
                for o in range(o_count):
                    i = indices[p, o]
                    gw[0] = np.uint32(gbits[p, o]) << np.uint32(16)
                    g = gf[0]
                    for j in range(c):
                        rows[i, j] += g * w[o, j]
                    for j in range(c):
                        wide[j] = np.uint32(xbits[p, i, j]) << np.uint32(16)
                    for j in range(c):
                        dw[o, j] += np.float64(g) * np.float64(xf[j])
                for i in range(k):
                    for j in range(c):
                        dxbits[p, i, j] = _bf16_round(rowbits[i, j])


def linear_max_rows_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                             indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`linear_max_rows_backward_reference` for a CPU bf16 ``x`` without the (P, k, O)
    tensor: each pooled value's gradient goes straight to its row (``dx``: the sums of
    ``g w[o]`` over the values a row gave, float32 rounded to bf16 once, as the dense product
    rounds them; the other rows 0) and into the weight's gradient (float64 sums over the
    patches, returned in the weight's dtype: the reference rounds its product to bf16).

    Why: the Point-BERT tokenizer's last layer is a product over every point of which only its
    patch's maximum survives (131,072 x 32 x 32 for 64 clouds); autograd's backward of it fills
    a zero tensor of that size, scatters the pooled gradient in and runs two products over it,
    passes over 8 MB each: 4.8 ms against 2.4 here (one Sapphire Rapids core). ``dx`` is the
    reference's bit for bit where the float32 sums round alike (every value in the tests)."""
    if x.dim() != 3 or x.shape[1] == 0 or weight.dim() != 2 or weight.shape[1] != x.shape[2]:
        raise ValueError(f"x must be (P, k >= 1, C) and weight (O, C), got {tuple(x.shape)} and "
                         f"{tuple(weight.shape)}")
    p_count, k, c = x.shape
    o_count = weight.shape[0]
    if grad.shape != (p_count, o_count) or indices.shape != (p_count, o_count):
        raise ValueError(f"grad and indices must be ({p_count}, {o_count}), got "
                         f"{tuple(grad.shape)} and {tuple(indices.shape)}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= k):
        raise ValueError(f"indices must lie in [0, {k}), got [{int(indices.min())}, "
                         f"{int(indices.max())}]")
    if not (HAVE_NUMBA and x.is_cpu and x.dtype == torch.bfloat16 and x.numel()
            and indices.dtype == torch.int64):
        return linear_max_rows_backward_reference(grad, x, weight, indices)
    w = weight.detach().to(torch.bfloat16).float().contiguous()  # the bf16 the product used
    dx = torch.empty((p_count, k, c), dtype=torch.bfloat16)
    blocks = -(-p_count // _LM_BLOCK)
    dw_parts = np.empty((blocks, o_count, c), dtype=np.float64)
    _run_blocks(_linear_max_bwd_blocks, p_count, _LM_BLOCK,
                (_bf16_bits(x), w.numpy(), indices.contiguous().numpy(),
                 _bf16_bits(grad.to(torch.bfloat16))),
                (_bf16_bits(dx), dw_parts), rows_of_work=p_count * k)
    return dx, torch.from_numpy(dw_parts.sum(0)).to(weight.dtype)


def _bf16_bits(t: torch.Tensor) -> np.ndarray:
    """A CPU bf16 tensor's bits as a contiguous uint16 numpy view (of ``t`` itself when it is
    contiguous, so a kernel can write into it)."""
    return t.detach().contiguous().view(torch.uint16).numpy()
