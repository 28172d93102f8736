"""Pieces every encoder shares: config building with checked overrides, weight init, counts.

Configs are dataclasses so an experiment's encoder is fully described by plain field values
(they go into run records as ``dataclasses.asdict(config)``); overrides are checked by field
name so a typo fails loudly instead of silently training the default model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional, Sequence, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import native, ops
from ..checks import check_points, values_are_checked

C = TypeVar("C")


def build_config(cls: type[C], values: dict[str, Any]) -> C:
    """``cls(**values)``, but an unknown field name raises ValueError listing the valid ones."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; valid options: "
                         f"{', '.join(names)}")
    return cls(**values)


def check_positive(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(config).__name__}.{name} must be a positive int, "
                             f"got {value!r}")


def check_in_channels(in_channels: int) -> None:
    if in_channels not in (3, 6):
        raise ValueError(f"in_channels must be 3 (xyz) or 6 (xyz+rgb), got {in_channels!r}")


def check_encoder_input(points: torch.Tensor, in_channels: int, min_points: int = 1) -> None:
    """(B, N, in_channels), finite, non-empty, N >= min_points; ValueError otherwise."""
    check_points(points, channels=(in_channels,))
    if points.shape[1] < min_points:
        raise ValueError(f"this encoder needs at least {min_points} points per cloud, "
                         f"got {points.shape[1]} (shape {tuple(points.shape)})")


class PatchIndex(NamedTuple):
    """Which points form each patch of a batch of clouds: the FPS picks ``centers`` (B, G) and
    each patch's points ``neighbors`` (B, G, k), both int64 indices into a cloud's N points.

    Patches are a function of a cloud's xyz and the encoder's patch settings only (FPS from
    point 0, then ball query or kNN), row by row: an encoder's ``patch_index(points)`` computes
    them, its ``forward(points, patches=index)`` uses them instead of computing them again.
    That is how the trainer computes the unmixed clouds' patches once per step for A and B
    (``train.share_patches``): the same indices, so the same features, bit for bit. Encoders
    with equal ``patch_key`` cut clouds alike; a ``patch_key`` of None (a random FPS start)
    means patches are never shared. A NamedTuple, so DDP moves it with the inputs."""

    centers: torch.Tensor
    neighbors: torch.Tensor

    def rows(self, rows: slice) -> "PatchIndex":
        return PatchIndex(self.centers[rows], self.neighbors[rows])

    def split(self, size: int) -> list:
        """Chunks of ``size`` clouds, as ``points.split(size)`` cuts the clouds."""
        return [PatchIndex(c, n) for c, n in zip(self.centers.split(size),
                                                 self.neighbors.split(size))]

    @staticmethod
    def cat(parts: Sequence["PatchIndex"]) -> "PatchIndex":
        """The index of the clouds of ``parts`` stacked in order (``torch.cat`` of the clouds)."""
        return PatchIndex(torch.cat([p.centers for p in parts]),
                          torch.cat([p.neighbors for p in parts]))


def check_patch_index(index: Optional[PatchIndex], points: torch.Tensor, groups: int,
                      group_size: int) -> Optional[PatchIndex]:
    """``index`` fits ``points`` (B, N, C) and an encoder cutting ``groups`` patches of
    ``group_size`` points: int64 centres (B, groups) and neighbours (B, groups, group_size) on
    the clouds' device, every value in [0, N) (that scan skipped inside
    :func:`~mmmixlab.checks.values_checked`, where the trainer computed the index itself).
    ValueError naming what is wrong otherwise; None passes through."""
    if index is None:
        return None
    if not isinstance(index, PatchIndex):
        raise TypeError(f"patches must be a PatchIndex (from the encoder's patch_index), got "
                        f"{type(index).__name__}")
    b, n = points.shape[:2]
    for name, t, shape in (("centers", index.centers, (b, groups)),
                           ("neighbors", index.neighbors, (b, groups, group_size))):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64:
            raise ValueError(f"patches.{name} must be an int64 tensor, got "
                             f"{getattr(t, 'dtype', type(t).__name__)}")
        if tuple(t.shape) != shape:
            raise ValueError(f"patches.{name} must have shape {shape} for clouds of shape "
                             f"{tuple(points.shape)}, got {tuple(t.shape)}")
        if t.device != points.device:
            raise ValueError(f"patches.{name} is on {t.device}, the clouds on {points.device}")
        if not values_are_checked() and t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
            raise ValueError(f"patches.{name} holds indices outside [0, {n}) (the clouds have "
                             f"{n} points)")
    return index


class _MaxOverRows(torch.autograd.Function):
    """``x.max(dim=1).values`` of a (P, k, C) tensor through :func:`mmmixlab.ops.max_over_rows`,
    with autograd's own backward for it: the gradient scattered into zeros at the indices."""

    @staticmethod
    def forward(ctx, x):
        values, indices = ops.max_over_rows(x)
        ctx.save_for_backward(indices)
        ctx.shape = x.shape
        return values

    @staticmethod
    def backward(ctx, grad):
        (indices,) = ctx.saved_tensors
        if torch.is_grad_enabled() and grad.requires_grad:  # double backward: torch's op
            return ops.scatter_rows_reference(grad, indices, ctx.shape[1])
        # ops.scatter_rows: torch's scatter copied the whole zero tensor first (3-5 ms for a
        # 64-cloud tokenizer pool, the largest copy of a bf16 step); the same bits
        return ops.scatter_rows(grad, indices, ctx.shape[1])


def max_pool(x: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    """Max over ``dim`` (values only), the same values and gradients whichever way it runs.

    With autograd recording through ``x``, a maximum with indices: the gradient of a tie goes
    to its lowest index (ball query pads a patch with copies of a point, so ties are common),
    as ``torch.max`` has it; over dim 1 of a (P, k, C) CPU tensor through the compiled
    :func:`mmmixlab.ops.max_over_rows` (~2.8x faster), elsewhere ``torch.max`` itself.
    Without (stage 2's frozen targets, evaluation, feature extraction), ``amax``: no
    indices, ~7x faster than ``torch.max`` at the tokenizer's (4096, 32, 32) on the CPU
    (``benchmarks/pooling.py``); for a CPU bf16 (P, k, C) (autocast's frozen targets) the
    compiled scan's values, 1.3 against 5.3 ms at (4096, 32, 32). A maximum is exact, so the
    values are the same bits (``tests/test_encoders.py``)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        if x.dtype == torch.bfloat16 and x.is_cpu and x.dim() == 3 and dim in (1, -2) \
                and x.shape[1] and ops.HAVE_NUMBA:  # torch's bf16 amax: ~4x the compiled scan
            values = ops.max_over_rows(x)[0]
            return values.unsqueeze(1) if keepdim else values
        return x.amax(dim=dim, keepdim=keepdim)
    if x.is_cpu and x.dim() == 3 and dim in (1, -2):
        values = _MaxOverRows.apply(x)
        return values.unsqueeze(1) if keepdim else values
    return x.max(dim=dim, keepdim=keepdim).values


class _LayerNormReLU(torch.autograd.Function):
    """:func:`mmmixlab.ops.layer_norm_relu_forward` with its compiled backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        y, mean, rstd = ops.layer_norm_relu_forward(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        dx, dw, db, _ = ops.layer_norm_relu_backward(grad, x, weight, bias, mean, rstd)
        return dx, dw, db, None


def layer_norm_relu(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``relu(norm(x))``: a tokenizer's per-point layer norm and activation.

    On a CPU bfloat16 ``x`` (a layer's output under CPU autocast) one compiled pass forward and
    one backward (:func:`mmmixlab.ops.layer_norm_relu_forward`), the same function as torch's
    bf16 norm and ReLU (float32 statistics, bf16 output): 6.0 against 8.9 ms forward + backward
    at the 64-cloud tokenizer's 131,072 x 16 (one Sapphire Rapids core,
    ``benchmarks/cpu_bf16.py``). Its statistics are summed in another
    order, so an output can differ from torch's by one bf16 rounding step (about 2 in 100,000
    here); its weight and bias gradients are summed in float64 (torch's were ~5% off); it is
    once-differentiable. Otherwise (float32, float64, another device) ``norm`` and an in-place
    ReLU, as before."""
    if (ops.layer_norm_relu_fused_supported(x) and len(norm.normalized_shape) == 1
            and norm.weight is not None and norm.bias is not None):
        return _LayerNormReLU.apply(x, norm.weight, norm.bias, norm.eps)
    return F.relu(norm(x), inplace=True)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` (``F.scaled_dot_product_attention``), with one exception:
    under CPU autocast the attention itself runs in float32 (its inputs cast up, the output
    left float32 for the next layer's autocast to cast down).

    Why: CPU autocast runs SDPA in bf16, and torch's CPU flash-attention backward in bf16 was
    6x its float32 time at the tiny presets' shapes (64 x 4 heads x 65 tokens x 32: 22.9 vs
    3.5 ms a call, one Sapphire Rapids core, ``benchmarks/RESULTS.md``); it made a bf16
    ``pointbert-tiny`` step slower than float32. The projections around it keep bf16. Without
    autocast, or on another device, it is SDPA as called."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    return F.scaled_dot_product_attention(q, k, v)


def packed_attention(qkv: torch.Tensor, num_heads: int, fused: bool = True) -> torch.Tensor:
    """Multi-head self-attention from a transformer's packed projection: ``qkv`` (B, T, 3 * H *
    D) holds q, k and v side by side, each H heads of D; returns the heads' outputs side by
    side, (B, T, H * D), for the output projection. The function is :func:`attention`'s on each
    head (float32 under CPU autocast, as there).

    With ``fused`` and where it fits (:func:`fused_attention_fits`: the CPU, 1-128 tokens, heads
    of 16, 32 or 64, float32 or bf16 under autocast, the compiled module built), it runs
    ``mmmixlab/native/attention.cpp``: one (cloud, head) slice at a time in float32, read from
    and written to these layouts directly. Against torch's kernel: the same function to float32
    rounding (``tests/test_fused_attention.py``); it is once differentiable."""
    b, t, width = qkv.shape
    if width % (3 * num_heads):
        raise ValueError(f"packed qkv width {width} is not 3 x {num_heads} heads")
    packed = qkv.reshape(b, t, 3, num_heads, width // (3 * num_heads))
    if fused and fused_attention_fits(packed):
        return _FusedAttention.apply(packed, num_heads)
    q, k, v = packed.permute(2, 0, 3, 1, 4)
    return attention(q, k, v).transpose(1, 2).reshape(b, t, width // 3)


def fused_attention_fits(packed: torch.Tensor) -> bool:
    """Whether the compiled attention runs for ``packed`` (B, T, 3, H, D): on the CPU, 1-128
    tokens, D of 16, 32 or 64, contiguous, float32, or bfloat16 under CPU autocast (where
    :func:`attention` computes in float32 too), and the compiled module built here."""
    return (packed.device.type == "cpu" and 1 <= packed.shape[1] <= 128
            and packed.shape[-1] in (16, 32, 64) and packed.is_contiguous()
            and (packed.dtype == torch.float32
                 or (packed.dtype == torch.bfloat16 and torch.is_autocast_enabled("cpu")))
            and native.compiled() is not None)


class _FusedAttention(torch.autograd.Function):
    """:func:`packed_attention` in one compiled pass (``mmmixlab/native/attention.cpp``):
    float32 output, the rows' log-sum-exp kept for a backward that recomputes the
    probabilities from it and returns the packed gradient in qkv's dtype."""

    @staticmethod
    def forward(ctx, packed, num_heads):
        with torch.autocast("cpu", enabled=False):
            out, lse = native.compiled().attention_forward(packed, num_heads)
        ctx.save_for_backward(packed, lse)
        ctx.num_heads = num_heads
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        packed, lse = ctx.saved_tensors
        with torch.autocast("cpu", enabled=False):
            dqkv = native.compiled().attention_backward(packed, lse, grad.float().contiguous(),
                                                        ctx.num_heads)
        return dqkv, None


def init_weights(module: nn.Module) -> None:
    """Transformer-style init (truncated normal, std 0.02; zero biases), used by Point-BERT.

    Small weights keep the residual stream near identity at the start, which the contrastive
    objective with a learnable temperature trains stably from.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class _NarrowInputLinearFn(torch.autograd.Function):
    """``F.linear`` whose weight gradient is computed as ``(x^T g)^T`` rather than ``g^T x``."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = (g @ weight).view(x.shape)
        if ctx.needs_input_grad[1]:
            dw = (x.reshape(-1, x.shape[-1]).t() @ g).t().contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g.sum(0)
        return dx, dw, db


class NarrowInputLinear(nn.Linear):
    """``nn.Linear`` for inputs of a few channels over very many rows: a tokenizer's first
    layer on raw xyz (+ rgb). Same parameters (a drop-in: the state dict is unchanged) and the
    same forward. On the CPU, in training, its weight gradient is computed as ``(x^T g)^T``:
    MKL runs ``g^T x`` at (131,072 x 16)^T (131,072 x 6) about 8x slower than the transposed
    product (21.6 vs 2.6 ms, one AMD EPYC core; ``benchmarks/RESULTS.md``). Elsewhere (a GPU,
    autocast, no grad) it is ``nn.Linear`` itself. The sums run in another order, so the
    gradient agrees with ``nn.Linear``'s to rounding, not bit for bit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or not torch.is_grad_enabled()
                or torch.is_autocast_enabled("cpu")
                or not (self.weight.requires_grad or x.requires_grad)):
            return F.linear(x, self.weight, self.bias)
        return _NarrowInputLinearFn.apply(x, self.weight, self.bias)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
