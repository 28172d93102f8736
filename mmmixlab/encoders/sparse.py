"""Sparse 3D convolution in plain PyTorch: voxels, coordinate hashing, gather-GEMM-scatter.

The semantics are MinkowskiEngine's (Choy, Gwak and Savarese 2019), the engine OpenShape's
SparseConv backbone is written in, so its architecture carries over layer for layer:

- A :class:`SparseTensor` is a set of occupied voxels of a batch: integer coordinates
  ``(batch, x, y, z)`` and one feature row each, at a tensor stride ``s`` (coordinates are
  multiples of ``s``, in units of the finest voxel).
- :func:`voxelize` turns clouds into the stride-1 tensor: voxel ``floor(xyz / voxel_size)``,
  feature = the unweighted mean of the point features in it (ME's default quantization).
- A convolution with kernel size ``k`` and stride ``t`` maps stride ``s`` to ``s*t``. Its output
  voxels are the input voxels (``t = 1``, submanifold: the occupied set does not grow) or the
  input voxels floored to multiples of ``s*t`` (``t > 1``). Output ``u`` is
  ``sum_d W_d x(u + d*s)`` over the kernel offsets ``d`` whose voxel ``u + d*s`` is occupied;
  offsets run over ``{-(k-1)/2 .. (k-1)/2}^3`` for odd ``k`` and ``{0 .. k-1}^3`` for even ``k``.
  This is dense cross-correlation (``torch.nn.Conv3d``) on a grid of zeros, read at the output
  voxels only: tests/test_sparseconv.py checks values and gradients against ``Conv3d``.
- Global max / mean pooling over each batch element's voxels.

How it runs: coordinates are packed into int64 keys and sorted once per tensor
(:class:`CoordinateIndex`); a kernel map lists, per offset, the (input row, output row) pairs
found by ``searchsorted`` (or, for OpenShape's 2^3 stride-2 convs, read off the floor itself); :class:`_SparseConvolution` gathers the input rows of each offset,
multiplies by that offset's weight and scatter-adds into the outputs, and recomputes the
gathers in backward instead of saving them (memory stays O(voxels x channels), not
O(pairs x channels)). Everything is ordinary tensor ops, so it runs on CPU, CUDA and MPS alike.
Building a map needs its sizes on the host (one sync per map, as in every sparse engine); maps
are built once per forward and shared by the layers at the same stride.

Weights are stored as ``(out_channels, k, k, k, in_channels)``, kernel axes in (x, y, z)
order, which is spconv 2's layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["CoordinateIndex", "SparseConv3d", "SparseTensor", "global_pool", "kernel_offsets",
           "voxelize"]

# Queries are processed in chunks of about this many (offset, voxel) pairs so that a big
# kernel (the 5^3 stem) on a big batch does not materialise a (125 x voxels x 4) table at once.
_QUERY_CHUNK = 1 << 22


@dataclass
class SparseTensor:
    """Occupied voxels of a batch: ``coords`` (V, 4) int64 ``(batch, x, y, z)``, ``feats`` (V, C).

    ``stride`` is the tensor stride (coordinates are multiples of it); ``cache`` holds the
    coordinate index and kernel maps computed for these coordinates, shared by every tensor
    with the same coordinates (see :meth:`with_feats`).
    """

    coords: torch.Tensor
    feats: torch.Tensor
    stride: int
    batch_size: int
    cache: dict = field(default_factory=dict, repr=False)

    def with_feats(self, feats: torch.Tensor) -> "SparseTensor":
        """Same voxels (and cached maps), new features."""
        if feats.shape[0] != self.coords.shape[0]:
            raise ValueError(f"{feats.shape[0]} feature rows for {self.coords.shape[0]} voxels")
        return SparseTensor(self.coords, feats, self.stride, self.batch_size, self.cache)

    @property
    def index(self) -> "CoordinateIndex":
        if "index" not in self.cache:
            self.cache["index"] = CoordinateIndex(self.coords)
        return self.cache["index"]


class CoordinateIndex:
    """Sorted packed keys of a coordinate set; :meth:`find` maps coordinates to rows (-1: none).

    A key packs ``(batch, x - lo_x, y - lo_y, z - lo_z)`` with the set's own extent, so any
    clouds fit as long as batch x extent fits in 62 bits (checked: a cloud spanning billions of
    voxels means the clouds are not normalised or the voxel size is wrong).
    """

    def __init__(self, coords: torch.Tensor, sort: bool = True):
        xyz = coords[:, 1:]
        self.lo = xyz.min(dim=0).values
        self.hi = xyz.max(dim=0).values
        span = (self.hi - self.lo + 1).tolist()
        batches = int(coords[:, 0].max()) + 1
        if math.log2(batches) + sum(math.log2(s) for s in span) > 62:
            raise ValueError(f"voxel coordinates span {span} voxels per axis over {batches} "
                             f"clouds, too many to index; normalise the clouds (unit sphere) "
                             f"or raise voxel_size")
        self.span = span
        if sort:  # sort=False: only the packing (for unique), no lookups
            self.keys, self.order = self.pack(coords).sort()

    def pack(self, coords: torch.Tensor) -> torch.Tensor:
        rel = coords[:, 1:] - self.lo
        sx, sy, sz = self.span
        return ((coords[:, 0] * sx + rel[:, 0]) * sy + rel[:, 1]) * sz + rel[:, 2]

    def find(self, coords: torch.Tensor) -> torch.Tensor:
        """Row of each coordinate in the indexed set, -1 where it is not occupied."""
        inside = ((coords[:, 1:] >= self.lo) & (coords[:, 1:] <= self.hi)).all(dim=1)
        keys = self.pack(coords)
        pos = torch.searchsorted(self.keys, keys).clamp_(max=self.keys.numel() - 1)
        hit = inside & (self.keys[pos] == keys)
        return torch.where(hit, self.order[pos], torch.full_like(pos, -1))


def kernel_offsets(kernel_size: int, device=None) -> torch.Tensor:
    """(k^3, 3) int64 offsets in (x, y, z), x slowest, in the weight tensor's kernel order."""
    if kernel_size % 2:
        r = torch.arange(-(kernel_size // 2), kernel_size // 2 + 1, device=device)
    else:
        r = torch.arange(kernel_size, device=device)
    return torch.cartesian_prod(r, r, r).reshape(-1, 3)


@dataclass
class KernelMap:
    """Per kernel offset: input rows and output rows of its pairs; ``identity`` is the offset
    whose pairs are (i, i) for every voxel (the centre of a submanifold kernel), or -1."""

    inputs: list
    outputs: list
    num_out: int
    identity: int = -1


def _build_kernel_map(src: SparseTensor, out_coords: torch.Tensor, kernel_size: int,
                      submanifold: bool) -> KernelMap:
    offsets = kernel_offsets(kernel_size, device=out_coords.device) * src.stride
    index = src.index
    k, v = offsets.shape[0], out_coords.shape[0]
    identity = k // 2 if submanifold and kernel_size % 2 else -1  # offset (0, 0, 0)
    inputs, outputs = [], []
    step = max(1, _QUERY_CHUNK // max(v, 1))  # offsets per chunk: memory stays bounded
    for a in range(0, k, step):
        q = out_coords.unsqueeze(0).repeat(min(step, k - a), 1, 1)
        q[:, :, 1:] += offsets[a:a + step].unsqueeze(1)
        rows = index.find(q.reshape(-1, 4)).view(-1, v)
        if a <= identity < a + step:
            rows[identity - a] = -1  # every voxel pairs with itself: one dense matmul instead
        hit = rows >= 0
        counts = hit.sum(dim=1).tolist()  # the host sync of a chunk (one per map, usually)
        which, out_rows = hit.nonzero(as_tuple=True)
        inputs += rows[which, out_rows].split(counts)
        outputs += out_rows.split(counts)
    return KernelMap(inputs, outputs, v, identity)


class _SparseConvolution(torch.autograd.Function):
    """out[o] = sum_k feats[i] @ W_k over the pairs (i, o) of offset k; gathers recomputed in
    backward rather than saved."""

    @staticmethod
    def forward(ctx, feats, weight, kmap):  # weight (K, C_in, C_out), feats' dtype
        with torch.autocast(feats.device.type, enabled=False):  # one dtype for index_add_
            out = feats.new_zeros((kmap.num_out, weight.shape[2]))
            if kmap.identity >= 0:
                out += feats @ weight[kmap.identity]
            for k, (i, o) in enumerate(zip(kmap.inputs, kmap.outputs)):
                if i.numel():
                    out.index_add_(0, o, feats.index_select(0, i) @ weight[k])
        ctx.save_for_backward(feats, weight)
        ctx.kmap = kmap
        return out

    @staticmethod
    def backward(ctx, grad_out):
        feats, weight = ctx.saved_tensors
        kmap = ctx.kmap
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.zeros_like(feats) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        if kmap.identity >= 0:
            if need_x:
                grad_x += grad_out @ weight[kmap.identity].T
            if need_w:
                grad_w[kmap.identity] = feats.T @ grad_out
        for k, (i, o) in enumerate(zip(kmap.inputs, kmap.outputs)):
            if not i.numel():
                continue
            g = grad_out.index_select(0, o)
            if need_x:
                grad_x.index_add_(0, i, g @ weight[k].T)
            if need_w:
                grad_w[k] = feats.index_select(0, i).T @ g
        return grad_x, grad_w, None


def downsample_coords(coords: torch.Tensor, stride: int, return_inverse: bool = False):
    """Unique voxels of ``coords`` floored to multiples of ``stride`` (batch kept), sorted;
    with ``return_inverse`` also each input row's output row."""
    c = coords.clone()
    c[:, 1:] = torch.div(c[:, 1:], stride, rounding_mode="floor") * stride
    out, inverse = unique_coords(c)
    return (out, inverse) if return_inverse else out


def unique_coords(coords: torch.Tensor):
    """The distinct rows of (V, 4) ``coords`` (sorted by packed key) and each row's index
    among them."""
    keys = CoordinateIndex(coords, sort=False).pack(coords)
    packed, inverse = torch.unique(keys, return_inverse=True)
    out = coords.new_empty((packed.numel(), 4))
    out.index_copy_(0, inverse, coords)  # duplicates carry identical rows
    return out, inverse


def _pooling_kernel_map(src: SparseTensor, stride: int):
    """Kernel map of a conv with kernel size == stride (OpenShape's 2^3 stride-2 convs): every
    input voxel falls in exactly one output cell, at offset (input - cell) / input stride, so
    the map comes from the floor itself with no search."""
    out_coords, inverse = downsample_coords(src.coords, src.stride * stride, True)
    rel = torch.div(src.coords[:, 1:] - out_coords[inverse, 1:], src.stride,
                    rounding_mode="floor")
    which = (rel[:, 0] * stride + rel[:, 1]) * stride + rel[:, 2]  # kernel_offsets' order
    order = torch.argsort(which, stable=True)
    counts = torch.bincount(which, minlength=stride ** 3).tolist()
    kmap = KernelMap(list(order.split(counts)), list(inverse[order].split(counts)),
                     out_coords.shape[0])
    return kmap, out_coords


class SparseConv3d(nn.Module):
    """Sparse convolution with MinkowskiEngine's semantics (see the module docstring).

    ``stride = 1`` keeps the occupied voxels (submanifold); ``stride > 1`` floors them to the
    coarser grid. No bias by default, as ``MinkowskiConvolution``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, bias: bool = False):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("kernel_size", kernel_size), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SparseConv3d {name} must be a positive int, got {value!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        k = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, k, k, k, in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # MinkowskiEngine's kaiming_normal_(mode="fan_out", relu): fan_out = C_out * k^3
        fan_out = self.out_channels * self.kernel_size ** 3
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / fan_out))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, bias={self.bias is not None}")

    def forward(self, x: SparseTensor) -> SparseTensor:
        if x.feats.shape[1] != self.in_channels:
            raise ValueError(f"SparseConv3d expects {self.in_channels} input channels, got "
                             f"{x.feats.shape[1]}")
        key = ("map", self.kernel_size, self.stride)
        if key not in x.cache:
            if self.stride == 1:
                kmap = _build_kernel_map(x, x.coords, self.kernel_size, True)
                out_coords, out_cache = x.coords, x.cache
            elif self.kernel_size == self.stride and self.kernel_size % 2 == 0:
                kmap, out_coords = _pooling_kernel_map(x, self.stride)
                out_cache = {}
            else:
                out_coords = downsample_coords(x.coords, x.stride * self.stride)
                kmap = _build_kernel_map(x, out_coords, self.kernel_size, False)
                out_cache = {}
            x.cache[key] = (kmap, out_coords, out_cache)
        kmap, out_coords, out_cache = x.cache[key]
        # (C_out, k, k, k, C_in) -> (k^3, C_in, C_out), offsets in kernel_offsets' order
        w = self.weight.reshape(self.out_channels, -1, self.in_channels).permute(1, 2, 0)
        feats = x.feats
        if feats.dtype != w.dtype:  # autocast: compute in the features' precision
            w = w.to(feats.dtype)
        out = _SparseConvolution.apply(feats, w, kmap)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        if self.stride == 1:
            return x.with_feats(out)
        return SparseTensor(out_coords, out, x.stride * self.stride, x.batch_size, out_cache)


def voxelize(points: torch.Tensor, voxel_size: float, features: torch.Tensor | None = None,
             check_finite: bool = True) -> SparseTensor:
    """(B, N, 3+) clouds -> the stride-1 :class:`SparseTensor` of their occupied voxels.

    Voxel ``floor(xyz / voxel_size)``; a voxel's feature is the unweighted mean of the
    features of its points (default: the points' channels, xyz first). Raises ValueError for
    a voxel size <= 0, empty or non-finite clouds, and a cloud whose points all fall into one
    voxel (nothing for a convolution to see: the voxel size is too big for the cloud).
    ``check_finite=False`` skips the NaN scan (a host sync on a GPU) for callers that checked.
    """
    if isinstance(voxel_size, bool) or not (isinstance(voxel_size, (int, float))
                                            and voxel_size > 0 and math.isfinite(voxel_size)):
        raise ValueError(f"voxel_size must be a positive number, got {voxel_size!r}")
    if points.dim() != 3 or points.shape[2] < 3:
        raise ValueError(f"points must be (B, N, 3+), got shape {tuple(points.shape)}")
    b, n, _ = points.shape
    if b == 0 or n == 0:
        raise ValueError(f"empty clouds: points have shape {tuple(points.shape)}")
    if check_finite and not torch.isfinite(points).all():  # callers that checked pass False
        raise ValueError("points contain NaN or infinite coordinates/features")
    feats = points if features is None else features
    if feats.shape[:2] != (b, n):
        raise ValueError(f"features {tuple(feats.shape)} do not match points "
                         f"{tuple(points.shape)}")
    grid = torch.floor(points[..., :3].detach().to(torch.float64) / voxel_size).long()
    batch = torch.arange(b, device=points.device).repeat_interleave(n)
    coords = torch.cat([batch.unsqueeze(1), grid.reshape(-1, 3)], dim=1)
    vox_coords, inverse = unique_coords(coords)
    v = vox_coords.shape[0]
    per_cloud = torch.bincount(vox_coords[:, 0], minlength=b)
    if bool((per_cloud < 2).any()):
        bad = (per_cloud < 2).nonzero().flatten().tolist()
        raise ValueError(f"cloud(s) {bad[:10]} fall into a single voxel at voxel_size="
                         f"{voxel_size}: the voxel size is too large for these clouds (they are "
                         f"expected in the unit sphere)")
    flat = feats.reshape(b * n, -1)
    sums = flat.new_zeros((v, flat.shape[1])).index_add_(0, inverse, flat)
    counts = torch.bincount(inverse, minlength=v).to(flat.dtype).unsqueeze(1)
    return SparseTensor(vox_coords, sums / counts, 1, b)


def global_pool(x: SparseTensor, mode: str) -> torch.Tensor:
    """(batch_size, C): max or mean of each batch element's voxel features."""
    batch = x.coords[:, 0]
    c = x.feats.shape[1]
    idx = batch.unsqueeze(1).expand(-1, c)
    if mode == "max":
        init = x.feats.new_full((x.batch_size, c), float("-inf"))
        return init.scatter_reduce(0, idx, x.feats, reduce="amax", include_self=True)
    if mode == "mean":
        sums = x.feats.new_zeros((x.batch_size, c)).index_add_(0, batch, x.feats)
        counts = torch.bincount(batch, minlength=x.batch_size).to(sums.dtype).clamp_(min=1)
        return sums / counts.unsqueeze(1)
    raise ValueError(f"pool mode must be 'max' or 'mean', got {mode!r}")


def gather_parents(fine: SparseTensor, coarse: SparseTensor) -> torch.Tensor:
    """(V_fine, C) features of each fine voxel's enclosing voxel in ``coarse`` (ME's slice for
    points sharing a fine voxel: they all see the same coarse voxel)."""
    c = fine.coords.clone()
    c[:, 1:] = torch.div(c[:, 1:], coarse.stride, rounding_mode="floor") * coarse.stride
    rows = coarse.index.find(c)
    return coarse.feats.index_select(0, rows)  # every fine voxel has a parent by construction
