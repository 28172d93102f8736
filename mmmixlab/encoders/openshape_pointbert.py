"""OpenShape's point-patch transformer ("PointBERT" in OpenShape and MM-Mixing), layer for layer.

This is the 3D backbone the paper trains (MM-Mixing builds on OpenShape's code), written here
from the architecture facts of OpenShape's public code (``src/models/ppat.py`` and
``src/models/pointnet_util.py`` of ``Colin97/OpenShape_code``) so that the released state dicts
(OpenShape's and MM-Mixing's ``model.pt``) load with ``strict=True``:

1. **Set abstraction** (PointNet++): ``num_patches`` centres by farthest point sampling; around
   each, the first ``patch_points`` points *in index order* within ``radius`` (inclusive),
   the missing slots filled with the first one found; per point ``[xyz - centre, features]``
   (features = the whole input: normalised xyz + rgb, so 3 + 6 = 9 channels); a shared MLP of
   1x1 convolutions, each followed by BatchNorm and ReLU (``sa_mlp``, 64-64-256 at the release
   size); max over the patch.
2. **Lift**: ``[centre xyz, patch feature]`` through a 1x1 convolution to the width, then
   LayerNorm: one token per patch. No positional embedding: the centre enters here only.
3. A learned CLS token (``randn`` init) before the patch tokens.
4. **Transformer**: ``depth`` pre-norm blocks ``x + Attn(LN(x))``, ``x + FF(LN(x))``;
   attention with ``heads`` heads of ``dim_head`` (64), qkv projection *without* bias,
   output projection with bias; FF ``Linear -> GELU -> Linear``; dropout 0.
5. **Projection**: the CLS output through ``Linear(width, out_dim)`` (the CLIP width, 1280 for
   ViT-bigG-14). ``project=False`` returns the CLS output itself (OpenShape's ViT-B/32 release).

Parameter names follow the released layout (``ppat.sa.mlp_convs.0.weight``,
``ppat.transformer.layers.3.0.fn.to_qkv.weight``, ``proj.weight``, ...), so a release minus its
DDP ``module.`` prefix is this module's state dict; :mod:`mmmixlab.released` does the import.

Sizes (:data:`SIZES`): ``g14`` (= OpenShape's ``scaling 4``, the ViT-bigG-14 release: width 512,
depth 12, 8 heads, MLP 1536, SA MLP 64-64-256, 384 patches of 64 points, radius 0.2; 32,326,080
parameters at in 6 / out 1280), OpenShape's other ``make`` sizes ``s1``...``s6``, and ``l14``
(the ViT-L/14 demo release: OpenShape's ``s3`` widths with 64 patches of 256 points, radius 0.4).
``openshape-pointbert-tiny`` (:data:`TINY`) is the same network sized for a CPU.

Differences from OpenShape's code, none of which changes what a released state dict computes:
FPS starts at point 0 by default (deterministic; OpenShape's dgl FPS starts at a random point,
``fps_start="random"``); squared distances in the ball query come from coordinate differences
(OpenShape expands ``|a|^2 + |b|^2 - 2ab`` in float32), so a point within float rounding of the
radius can fall on the other side; patch dropout (0 in every released config) is not built.

BatchNorm sits in the set abstraction, so in training mode a cloud's feature depends on its
batch (``mixes_batch = True``: the trainer refuses gradient caching with it) and a training
batch of one is refused. Evaluation uses the running statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .common import (PatchIndex, check_encoder_input, check_in_channels, check_patch_index,
                     check_positive, packed_attention)

__all__ = ["OpenShapePointBERT", "OpenShapePointBERTConfig", "SIZES", "TINY"]


@dataclass
class OpenShapePointBERTConfig:
    """OpenShape's ``PointPatchTransformer`` + projection; defaults: the ViT-bigG-14 release."""

    out_dim: int = 1280
    in_channels: int = 6            # per-point features: normalised xyz (+ rgb)
    width: int = 512                # OpenShape's ``dim``
    depth: int = 12
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 1536
    sa_mlp: tuple = (64, 64, 256)   # set-abstraction MLP; OpenShape: (64, 64, sa_dim)
    num_patches: int = 384
    radius: float = 0.2
    patch_points: int = 64
    project: bool = True            # False: no final Linear, out_dim must equal width
    fps_start: str = "first"        # "first" (point 0, deterministic) or "random" (OpenShape)

    def __post_init__(self):
        self.sa_mlp = tuple(int(v) for v in self.sa_mlp)
        check_in_channels(self.in_channels)
        check_positive(self, "out_dim", "width", "depth", "heads", "dim_head", "mlp_dim",
                       "num_patches", "patch_points")
        if not self.sa_mlp or min(self.sa_mlp) < 1:
            raise ValueError(f"sa_mlp must be positive widths, got {self.sa_mlp}")
        if not (isinstance(self.radius, (int, float)) and self.radius > 0):
            raise ValueError(f"radius must be a positive number, got {self.radius!r}")
        if self.fps_start not in ("first", "random"):
            raise ValueError(f"fps_start must be 'first' or 'random', got {self.fps_start!r}")
        if not self.project and self.out_dim != self.width:
            raise ValueError(f"project=False returns the {self.width}-d CLS output, but "
                             f"out_dim={self.out_dim}")


def _size(width, depth, heads, mlp_dim, sa_dim, patches, radius, points) -> dict:
    return {"width": width, "depth": depth, "heads": heads, "mlp_dim": mlp_dim,
            "sa_mlp": (64, 64, sa_dim), "num_patches": patches, "radius": radius,
            "patch_points": points}


# OpenShape's ``ppat.make`` sizes (``model.scaling`` 1-6) and the ViT-L/14 demo release's.
SIZES = {
    "s1": _size(256, 6, 4, 1024, 96, 64, 0.4, 256),
    "s2": _size(512, 6, 8, 1024, 128, 64, 0.4, 256),
    "s3": _size(512, 12, 8, 1024, 128, 128, 0.35, 128),
    "g14": _size(512, 12, 8, 1536, 256, 384, 0.2, 64),     # scaling 4: the released G14 model
    "s5": _size(768, 12, 12, 2304, 256, 512, 0.2, 64),
    "s6": _size(768, 24, 12, 3072, 256, 512, 0.2, 64),
    "l14": _size(512, 12, 8, 1024, 128, 64, 0.4, 256),
}
SIZES["s4"] = SIZES["g14"]

# CPU preset: the same network, narrow and shallow (a stage-1 epoch of the tiny world, 20 steps
# of 32 x 1,024 points, takes ~3 s on 2 cores). 64 patches of 32 points cover a 1,024-point
# cloud twice. Listed in SIZES too, so a checkpoint of it imports like a release.
TINY = {"width": 128, "depth": 2, "heads": 2, "dim_head": 64, "mlp_dim": 256,
        "sa_mlp": (32, 32, 64), "num_patches": 64, "radius": 0.2, "patch_points": 32}
SIZES["tiny"] = {k: v for k, v in TINY.items() if k != "dim_head"}



class _ChannelsLast(nn.Module):
    """(B, C, S) -> (B, S, C); holds no parameters (index 1 of ``lift``, as in the release)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class SetAbstraction(nn.Module):
    """PointNet++ set abstraction: FPS centres, ball-query patches, 1x1-conv MLP, max-pool."""

    def __init__(self, in_channels: int, mlp: tuple, num_patches: int, radius: float,
                 patch_points: int, fps_start: str):
        super().__init__()
        self.num_patches, self.radius, self.patch_points = num_patches, radius, patch_points
        self.fps_start = fps_start
        self.mlp_convs = nn.ModuleList()
        self.mlp_bns = nn.ModuleList()
        last = in_channels
        for width in mlp:
            self.mlp_convs.append(nn.Conv2d(last, width, 1))
            self.mlp_bns.append(nn.BatchNorm2d(width))
            last = width

    @property
    def patch_key(self) -> Optional[tuple]:
        """Equal keys cut a cloud alike; None with a random FPS start (never shared)."""
        if self.fps_start == "random":
            return None
        return ("fps-first", self.num_patches, "ball-inclusive", self.patch_points, self.radius)

    def patch_index(self, points: torch.Tensor) -> PatchIndex:
        """FPS centres (from point 0, or a random point with ``fps_start="random"``: one
        ``torch.randint`` draw per cloud) and their ball-query neighbours, no gradient."""
        anchor = points[..., :3].detach()  # indices carry no gradient
        b, n = points.shape[:2]
        start = torch.randint(0, n, (b,)) if self.fps_start == "random" else 0
        centre_idx = ops.farthest_point_sample(anchor, self.num_patches, start).to(points.device)
        idx = ops.ball_query(ops.index_points(anchor, centre_idx), anchor, self.radius,
                             self.patch_points, inclusive=True)
        return PatchIndex(centre_idx, idx)

    def patches(self, points: torch.Tensor, index: Optional[PatchIndex] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Centres (B, S, 3) and patches (B, S, k, 3 + C): ``[xyz - centre, features]``, cut
        where ``index`` says (computed here when None)."""
        if index is None:
            index = self.patch_index(points)
        centres = ops.index_points(points[..., :3], index.centers)
        grouped = ops.index_points(points, index.neighbors)          # (B, S, k, C)
        rel = grouped[..., :3] - centres.unsqueeze(2)
        return centres, torch.cat([rel, grouped], dim=-1)

    def forward(self, points: torch.Tensor, patches: Optional[PatchIndex] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        centres, x = self.patches(points, patches)
        b, s, k, c = x.shape
        x = x.reshape(b * s * k, c)
        for conv, bn in zip(self.mlp_convs, self.mlp_bns):
            # a 1x1 conv is a linear map of the channels; BatchNorm2d over (M, C, 1, 1) keeps
            # the module's own statistics bookkeeping (momentum, num_batches_tracked)
            x = F.linear(x, conv.weight.flatten(1), conv.bias)
            x = F.relu(bn(x[:, :, None, None])[:, :, 0, 0])
        return centres, x.view(b, s, k, -1).amax(dim=2)               # (B, S, C_out)


class _PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class _Attention(nn.Module):
    fused_attention = True  # the compiled attention where it fits (set_fused_attention)

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        # OpenShape drops the output projection only when one head spans the whole width
        self.to_out = (nn.Sequential(nn.Linear(inner, dim))
                       if not (heads == 1 and dim_head == dim) else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # softmax(q k^T / sqrt(dim_head)) v per head; to_qkv packs q | k | v, each heads x dim_head
        return self.to_out(packed_attention(self.to_qkv(x), self.heads, self.fused_attention))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        # index 2 is the release's (p = 0) dropout, kept so the second Linear is ``net.3``
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Identity(),
                                 nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([_PreNorm(dim, _Attention(dim, heads, dim_head)),
                           _PreNorm(dim, _FeedForward(dim, mlp_dim))]) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = x + attn(x)
            x = x + ff(x)
        return x


class PointPatchTransformer(nn.Module):
    """Set abstraction -> lift -> CLS + transformer; returns the CLS output (B, width)."""

    def __init__(self, cfg: OpenShapePointBERTConfig):
        super().__init__()
        self.sa = SetAbstraction(cfg.in_channels + 3, cfg.sa_mlp, cfg.num_patches, cfg.radius,
                                 cfg.patch_points, cfg.fps_start)
        self.lift = nn.Sequential(nn.Conv1d(cfg.sa_mlp[-1] + 3, cfg.width, 1), _ChannelsLast(),
                                  nn.LayerNorm(cfg.width))
        self.cls_token = nn.Parameter(torch.randn(cfg.width))
        self.transformer = _Transformer(cfg.width, cfg.depth, cfg.heads, cfg.dim_head,
                                        cfg.mlp_dim)

    def forward(self, points: torch.Tensor, patches: Optional[PatchIndex] = None
                ) -> torch.Tensor:
        centres, feats = self.sa(points, patches)                     # (B,S,3), (B,S,C)
        tokens = self.lift(torch.cat([centres, feats], dim=-1).transpose(1, 2))
        cls = self.cls_token.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
        return self.transformer(torch.cat([cls, tokens], dim=1))[:, 0]


class OpenShapePointBERT(nn.Module):
    """(B, N, in_channels) clouds (normalised xyz [+ rgb]) -> (B, out_dim) features."""

    mixes_batch = True  # BatchNorm in training mode normalises over the batch
    # train.amp=auto trains it in bf16 on a CPU with AMX (device.autocast_dtype): its steps
    # took 0.69-0.75 of their float32 time there
    cpu_autocast_pays = True

    def __init__(self, config: OpenShapePointBERTConfig):
        super().__init__()
        self.config = config
        self.in_channels, self.out_dim = config.in_channels, config.out_dim
        self.ppat = PointPatchTransformer(config)
        self.proj = nn.Linear(config.width, config.out_dim) if config.project else nn.Identity()

    @property
    def patch_key(self) -> Optional[tuple]:
        return self.ppat.sa.patch_key

    def patch_index(self, points: torch.Tensor) -> PatchIndex:
        """Which points form each patch (:class:`~mmmixlab.encoders.common.PatchIndex`)."""
        return self.ppat.sa.patch_index(points)

    def forward(self, points: torch.Tensor, patches: Optional[PatchIndex] = None
                ) -> torch.Tensor:
        """(B, N, C) clouds -> (B, out_dim); ``patches``: their ``patch_index(points)`` when
        the caller has it, else computed here."""
        check_encoder_input(points, self.config.in_channels,
                            min_points=self.config.num_patches)
        check_patch_index(patches, points, self.config.num_patches, self.config.patch_points)
        if self.training and points.shape[0] < 2:
            raise ValueError("openshape-pointbert in training mode needs a batch of at least 2 "
                             "clouds (its set abstraction uses BatchNorm over the batch); "
                             "call .eval() to encode single clouds")
        return self.proj(self.ppat(points, patches))
