"""This project's point-patch transformer (``pointbert``, ``pointbert-tiny``): a variant of the
Point-BERT-style backbone OpenShape and MM-Mixing train, not that network. The paper's own
network, whose released checkpoints load, is ``openshape-pointbert``
(:mod:`mmmixlab.encoders.openshape_pointbert`).

Why it differs: its tokenizer uses LayerNorm, not OpenShape's BatchNorm, so a cloud's feature
never depends on the other clouds of its batch (gradient caching and the multi-rank tests
rely on that, and contrastive training can otherwise read batch statistics); it re-adds a
learned position of the patch centres at every block and pools ``concat(CLS, max)`` where
OpenShape feeds the centres once and keeps the CLS token. The tiny world's tables were
measured with it.

Pipeline: farthest point sampling picks ``num_groups`` patch centres; each centre gathers
``group_size`` neighbours (ball query, radius 0.2, or kNN); a mini-PointNet turns each patch,
in coordinates relative to its centre, into one token; a small MLP embeds the centre xyz as a
learned position; a CLS token is prepended and a pre-norm transformer mixes the tokens; the
output ``concat(CLS, max over patch tokens)`` goes through LayerNorm and a linear projection to
the CLIP feature width.

Sizes. The default config is the paper-size model (OpenShape: width 512, depth 12, 8 heads,
384 patches of 64 points, ~32M parameters). With ``mlp_ratio=3`` (transformer MLP width 1536)
and a tokenizer of widths (128, 256, 512, 512) it has 33,473,152 parameters for
in_channels=6 and out_dim=1280 (31.53M transformer blocks, 0.56M tokenizer, 0.07M positional
MLP, 1.31M head; measured with ``count_parameters``); ``mlp_ratio=4`` would give 39.8M.
``pointbert-tiny`` (see ``TINY``) is the same architecture sized for CPU.

The encoder is not permutation invariant: FPS starts at point 0, so the data loader's random
subsampling is what varies the start (OpenShape reported a bias when it did not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import native, ops
from .common import (
    NarrowInputLinear,
    PatchIndex,
    check_encoder_input,
    check_in_channels,
    check_patch_index,
    check_positive,
    init_weights,
    layer_norm_relu,
    max_pool,
    packed_attention,
)


@dataclass
class PointBERTConfig:
    """Point-BERT hyper-parameters; defaults are the paper-size (OpenShape) model."""

    out_dim: int = 1280
    in_channels: int = 6
    num_groups: int = 384          # patches (FPS centres) per cloud
    group_size: int = 64           # points per patch
    radius: float = 0.2            # ball-query radius, clouds normalised to the unit sphere
    grouping: str = "ball"         # "ball" (pointnet2 ball query) or "knn"
    # mini-PointNet widths: hidden1, first pooled width, hidden2, token width (projected to
    # trans_dim by a per-token linear when they differ, which is cheaper than per point)
    tokenizer_dims: tuple[int, int, int, int] = (128, 256, 512, 512)
    pos_hidden: int = 128          # hidden width of the centre-xyz positional MLP
    trans_dim: int = 512
    depth: int = 12
    num_heads: int = 8
    mlp_ratio: float = 3.0         # transformer MLP width = trans_dim * mlp_ratio

    def __post_init__(self):
        self.tokenizer_dims = tuple(self.tokenizer_dims)
        check_in_channels(self.in_channels)
        check_positive(self, "out_dim", "num_groups", "group_size", "pos_hidden", "trans_dim",
                       "depth", "num_heads")
        if self.grouping not in ("ball", "knn"):
            raise ValueError(f"grouping must be 'ball' or 'knn', got {self.grouping!r}")
        if not self.radius > 0:
            raise ValueError(f"radius must be positive, got {self.radius!r}")
        if len(self.tokenizer_dims) != 4 or min(self.tokenizer_dims) < 1:
            raise ValueError(f"tokenizer_dims must be 4 positive ints, got {self.tokenizer_dims}")
        if self.trans_dim % self.num_heads:
            raise ValueError(f"trans_dim={self.trans_dim} is not divisible by "
                             f"num_heads={self.num_heads}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio!r}")


# CPU-sized preset (~0.68M parameters at out_dim=1280). The per-point tokenizer layers dominate
# the cost on CPU (64 x 64 x 32 = 131k points per batch of 64), hence its narrow widths; tokens
# are projected to trans_dim once per patch. Measured forward+backward, batch 64 x 1024 points,
# 2 CPU cores (AMD EPYC, torch 2.14): ~0.18 s (fps+ball query 0.04, tokenizer 0.08).
TINY = {"num_groups": 64, "group_size": 32, "trans_dim": 128, "depth": 2, "num_heads": 4,
        "tokenizer_dims": (16, 32, 32, 32), "pos_hidden": 64}


class PatchTokenizer(nn.Module):
    """Mini-PointNet: one token per patch from its points (relative xyz [+ rgb]).

    Shared MLP -> max-pool -> the pooled feature concatenated back onto every point -> second
    shared MLP -> max-pool. The second stage lets each point see the patch's summary, which a
    single PointNet layer cannot. LayerNorm, not Point-BERT's BatchNorm: a cloud's feature must
    not depend on the other clouds of its batch, or contrastive training learns to read batch
    statistics (features collapsed in eval mode here), and large-batch equivalences (DDP,
    gradient caching) stop holding.
    """

    # The compiled tokenizer (mmmixlab.native) where it fits: the trainer sets this from
    # train.fused_tokenizer; an encoder built elsewhere (evaluation, notebooks) uses it too.
    fused = True

    def __init__(self, in_channels: int, dims: tuple[int, int, int, int], out_dim: int):
        super().__init__()
        h1, mid, h2, token = dims
        self.first = nn.Sequential(NarrowInputLinear(in_channels, h1), nn.LayerNorm(h1),
                                   nn.ReLU(inplace=True), nn.Linear(h1, mid))
        self.second = nn.Sequential(nn.Linear(2 * mid, h2), nn.LayerNorm(h2),
                                    nn.ReLU(inplace=True), nn.Linear(h2, token))
        self.project = nn.Identity() if token == out_dim else nn.Linear(token, out_dim)

    def fused_fits(self, patches: torch.Tensor) -> bool:
        """Whether :class:`_FusedTokenizer` runs this forward: ``fused`` on, the tiny widths
        (16, 32, 32, 32) on 3 or 6 channels, at most 64 points a patch, one eps for both norms,
        float32 CPU patches and parameters, no gradient wanted for the patches (the compiled
        module built here, see :func:`mmmixlab.native.compiled`). Like the bf16 path it
        is once differentiable."""
        first, second = self.first, self.second
        dims = (first[0].out_features, first[3].out_features, second[0].out_features,
                second[3].out_features)
        return (self.fused and dims == (16, 32, 32, 32) and patches.shape[-1] in (3, 6)
                and first[1].eps == second[1].eps
                and 1 <= patches.shape[-2] <= 64 and patches.device.type == "cpu"
                and patches.dtype == torch.float32 and not patches.requires_grad
                and all(p.dtype == torch.float32 for p in self._fused_params())
                and native.compiled() is not None)

    def _fused_params(self) -> list:
        first, second = self.first, self.second
        return [first[0].weight, first[0].bias, first[1].weight, first[1].bias, first[3].weight,
                first[3].bias, second[0].weight, second[0].bias, second[1].weight,
                second[1].bias, second[3].weight]

    def forward(self, patches: torch.Tensor) -> torch.Tensor:  # (B, G, k, C) -> (B, G, D)
        b, g, k, c = patches.shape
        if self.fused_fits(patches):
            tokens = _FusedTokenizer.apply(patches.reshape(b * g, k, c).contiguous(),
                                           self.first[1].eps, *self._fused_params())
            return self.project(tokens + self.second[3].bias).view(b, g, -1)
        first = self.first
        h = layer_norm_relu(first[0](patches.reshape(b * g * k, c)), first[1])
        f = first[3](h).view(b * g, k, -1)
        lin, norm, last = self.second[0], self.second[1], self.second[3]
        if ops.layer_norm_relu_fused_supported(f) and torch.is_autocast_enabled("cpu"):
            # CPU bf16 autocast: the same layers in fewer passes over the per-point tensors
            a = _PoolBroadcastNormBF16.apply(f, lin.weight, lin.bias, norm.weight, norm.bias,
                                             norm.eps)
            pooled = _LinearMaxBF16.apply(a, last.weight)
        else:
            if _hand_backward(f):
                h = _PoolBroadcastLinear.apply(f, lin.weight, lin.bias)
            else:  # the same function in plain ops (autocast, double backward, no grad)
                h = _PoolBroadcastLinear.plain(f, lin.weight, lin.bias)
            a = layer_norm_relu(h.view(b * g * k, -1), norm)
            pooled = max_pool(F.linear(a, last.weight).view(b * g, k, -1), dim=1)
        # max_k(W a_k + b) = max_k(W a_k) + b: the bias once per patch, not copied into every
        # point's row (rounding is monotonic, so the values are the same)
        return self.project(pooled + last.bias).view(b, g, -1)


class _FusedTokenizer(torch.autograd.Function):
    """The tiny tokenizer up to its last bias in one compiled pass per patch, float32 whatever
    the autocast (``mmmixlab/native/tokenizer.cpp``). The forward keeps which row each max-pool
    chose (64 bytes a patch); backward recomputes those rows alone (only they carry gradient)
    and returns the parameters' gradients (summed per chunk of patches, then in order in
    float64: the same bits on any thread count). Against torch's float32 ops: the same
    function to float32 rounding (``tests/test_native.py``). Once differentiable; the patches
    get no gradient."""

    @staticmethod
    def forward(ctx, patches, eps, *params):
        with torch.autocast("cpu", enabled=False):
            tokens, choice = native.compiled().tokenizer_forward(patches, list(params), eps)
        ctx.save_for_backward(patches, choice, *params)
        ctx.eps = eps
        return tokens

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        patches, choice, *params = ctx.saved_tensors
        with torch.autocast("cpu", enabled=False):
            grads = native.compiled().tokenizer_backward(
                patches, grad.float().contiguous(), choice, list(params), ctx.eps)
        return (None, None, *grads)


def _hand_backward(x: torch.Tensor) -> bool:
    """The hand-written backward below: on the CPU (where it was measured; on a GPU the plain
    ops stay, as measured there, and no scatter-add meets ``enable_determinism``), in training,
    without autocast (it holds no autocast rules)."""
    return (x.device.type == "cpu" and torch.is_grad_enabled() and x.requires_grad
            and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled("cpu"))


class _PoolBroadcastLinear(torch.autograd.Function):
    """``h = W [max_k f ; f] + b`` for every point of a patch, without building the
    concatenation: ``W``'s pooled half once per patch, broadcast over the patch's points.

    Autograd of the plain ops (:meth:`plain`) fills a zero
    tensor the size of ``f`` for the max-pool's gradient and adds it to the per-point half's;
    here the pooled gradient is scatter-added straight into it (the same sums: the same
    values; ``tests/test_encoders.py``). f: (P, k, mid); weight: (h, 2 mid)."""

    @staticmethod
    def plain(f, weight, bias, pooled=None):
        """The forward in differentiable torch ops."""
        mid = f.shape[-1]
        pooled = max_pool(f, dim=1, keepdim=True) if pooled is None else pooled
        return F.linear(f, weight[:, mid:]) + F.linear(pooled, weight[:, :mid], bias)

    @staticmethod
    def forward(ctx, f, weight, bias):
        pooled, arg = (t.unsqueeze(1) for t in ops.max_over_rows(f))   # (P, 1, mid)
        ctx.save_for_backward(f, pooled, arg, weight)
        return _PoolBroadcastLinear.plain(f, weight, bias, pooled)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh):
        f, pooled, arg, weight = ctx.saved_tensors
        mid, out = f.shape[-1], dh.shape[-1]
        d_summed = dh.sum(dim=1, keepdim=True)                          # (P, 1, h)
        df = dh @ weight[:, mid:]                                       # (P, k, mid)
        df.scatter_add_(1, arg, d_summed @ weight[:, :mid])
        dweight = torch.cat([d_summed.view(-1, out).t() @ pooled.view(-1, mid),
                             dh.reshape(-1, out).t() @ f.reshape(-1, mid)], dim=1)
        return df, dweight, d_summed.view(-1, out).sum(0)


class _PoolBroadcastNormBF16(torch.autograd.Function):
    """``relu(LN(W [max_k f ; f] + b))`` under CPU bf16 autocast, in the arithmetic autocast
    gives the plain ops (bf16 products and adds, the norm in float32, its output rounded to
    bf16 for the next layer) with fewer passes over the per-point tensors: the pooled half's
    broadcast add happens inside the compiled norm (:func:`mmmixlab.ops.layer_norm_relu_forward`),
    and backward adds the pooled gradient in place at the max's indices instead of building a
    zero tensor and adding it (``ops.scatter_add_rows_``). Profiled on one Sapphire Rapids core:
    autocast's plain ops spent ~30 ms of a stage-2 step (64 clouds through B) in this layer's
    add, its gradient's add, the zero fill, the norm and the ReLU. Once differentiable.
    f: (P, k, mid) bf16; weight (h, 2 mid), bias (h,) float32 as autocast sees them."""

    @staticmethod
    def forward(ctx, f, weight, bias, norm_weight, norm_bias, eps):
        mid = f.shape[-1]
        w = weight.to(torch.bfloat16)  # autocast's casts of F.linear's weight and bias
        pooled, arg = ops.max_over_rows(f)
        per_point = F.linear(f, w[:, mid:])                              # (P, k, h)
        per_patch = F.linear(pooled, w[:, :mid], bias.to(torch.bfloat16))  # (P, h)
        a, mean, rstd = ops.layer_norm_relu_forward(per_point, norm_weight, norm_bias, eps,
                                                    add=per_patch)
        ctx.save_for_backward(f, pooled, arg, w, per_point, per_patch, norm_weight, norm_bias,
                              mean, rstd)
        ctx.dtypes = weight.dtype, bias.dtype
        return a

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, da):
        f, pooled, arg, w, per_point, per_patch, nw, nb, mean, rstd = ctx.saved_tensors
        mid, out = f.shape[-1], w.shape[0]
        dh, dnw, dnb, d_patch = ops.layer_norm_relu_backward(da, per_point, nw, nb, mean, rstd,
                                                             add=per_patch)
        df = dh @ w[:, mid:]                                              # (P, k, mid)
        ops.scatter_add_rows_(df, arg, d_patch @ w[:, :mid])
        dw = torch.cat([d_patch.t() @ pooled, dh.reshape(-1, out).t() @ f.reshape(-1, mid)],
                       dim=1)
        return df, dw.to(ctx.dtypes[0]), d_patch.sum(0).to(ctx.dtypes[1]), dnw, dnb, None


class _LinearMaxBF16(torch.autograd.Function):
    """``max_k (a W^T)``, the tokenizer's last layer pooled over each patch, under CPU bf16
    autocast: forward as autocast runs it (the bf16 product, then the compiled pool with its
    indices: the same values), backward without the (P, k, O) tensor autograd would rebuild
    (:func:`mmmixlab.ops.linear_max_rows_backward`: each pooled gradient straight to its row;
    ``a``'s gradient the same bits, the weight's summed in float64). Once differentiable.
    a: (P, k, C) bf16; weight (O, C) float32."""

    @staticmethod
    def forward(ctx, a, weight):
        values, indices = ops.max_over_rows(F.linear(a, weight.to(torch.bfloat16)))
        ctx.save_for_backward(a, weight, indices)
        return values

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        a, weight, indices = ctx.saved_tensors
        return ops.linear_max_rows_backward(grad, a, weight, indices)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    # the compiled attention (mmmixlab.native) where it fits; the trainer sets it per run from
    # train.fused_attention (set_fused_attention)
    fused_attention = True

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = round(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = packed_attention(self.qkv(self.norm1(x)), self.num_heads, self.fused_attention)
        x = x + self.proj(attn)
        return x + self.mlp(self.norm2(x))


class PointBERT(nn.Module):
    """Point-patch transformer: (B, N, in_channels) clouds -> (B, out_dim) features."""

    # train.amp=auto trains it in bf16 on a CPU with AMX (device.autocast_dtype): its steps
    # took 0.75-0.80 of their float32 time there, zero-shot within seed noise
    cpu_autocast_pays = True

    def __init__(self, config: PointBERTConfig):
        super().__init__()
        self.config = config
        self.in_channels, self.out_dim = config.in_channels, config.out_dim
        d = config.trans_dim
        self.tokenizer = PatchTokenizer(config.in_channels, config.tokenizer_dims, d)
        self.pos_embed = nn.Sequential(nn.Linear(3, config.pos_hidden), nn.GELU(),
                                       nn.Linear(config.pos_hidden, d))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList(Block(d, config.num_heads, config.mlp_ratio)
                                    for _ in range(config.depth))
        self.head_norm = nn.LayerNorm(2 * d)
        self.head = nn.Linear(2 * d, config.out_dim)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.cls_pos, std=0.02)

    @property
    def patch_key(self) -> tuple:
        """Encoders with equal keys cut a cloud into the same patches (:class:`PatchIndex`)."""
        cfg = self.config
        return ("fps-first", cfg.num_groups, cfg.grouping, cfg.group_size,
                cfg.radius if cfg.grouping == "ball" else None)

    def patch_index(self, points: torch.Tensor) -> PatchIndex:
        """Which points form each patch (no gradient): FPS centres from point 0, then each
        centre's ball-query (or kNN) neighbours, searched on the detached xyz."""
        cfg = self.config
        anchor = points[..., :3].detach()
        centers = ops.farthest_point_sample(anchor, cfg.num_groups).to(points.device)
        center_xyz = ops.index_points(anchor, centers)
        if cfg.grouping == "ball":
            idx = ops.ball_query(center_xyz, anchor, cfg.radius, cfg.group_size)
        else:
            idx = ops.knn(center_xyz, anchor, cfg.group_size)[1]
        return PatchIndex(centers, idx)

    def patches(self, points: torch.Tensor, index: Optional[PatchIndex] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Centres (B, G, 3) and relative neighbourhoods (B, G, k, C) of a checked batch, cut
        where ``index`` says (computed here when None)."""
        if index is None:
            index = self.patch_index(points)
        centers = ops.index_points(points[..., :3], index.centers)
        return centers, ops.group(points, centers, index.neighbors)

    def forward(self, points: torch.Tensor, patches: Optional[PatchIndex] = None
                ) -> torch.Tensor:
        """(B, N, C) clouds -> (B, out_dim); ``patches``: their :class:`PatchIndex` when the
        caller has it (``patch_index(points)``), else computed here."""
        cfg = self.config
        need = max(cfg.num_groups, cfg.group_size if cfg.grouping == "knn" else 1)
        check_encoder_input(points, cfg.in_channels, min_points=need)
        check_patch_index(patches, points, cfg.num_groups, cfg.group_size)
        centers, groups = self.patches(points, patches)
        b = points.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), self.tokenizer(groups)], dim=1)
        pos = torch.cat([self.cls_pos.expand(b, -1, -1), self.pos_embed(centers)], dim=1)
        for block in self.blocks:
            x = block(x + pos)  # position re-added at every block, as in Point-BERT
        feat = torch.cat([x[:, 0], max_pool(x[:, 1:], dim=1)], dim=-1)
        return self.head(self.head_norm(feat))
