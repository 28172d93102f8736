"""SparseConv: OpenShape's MinkResNet34 on the plain-PyTorch sparse convolution of ``sparse.py``.

The paper's second 3D backbone; all of its ablations (Tables 3-5) use it. Layer for layer it is
OpenShape's ``MinkResNet34`` (``src/models/Minkowski.py``), without MinkowskiEngine:

1. voxelize the cloud at ``voxel_size`` (0.02 in OpenShape's ``train.yaml``) with the point
   channels (xyz, or xyz+rgb) as features, averaged per voxel;
2. stem: 5^3 submanifold conv -> BN -> ReLU (32 channels);
3. four stages, each a 2^3 stride-2 conv -> BN -> ReLU and ``layers[i]`` residual BasicBlocks
   (3^3 conv-BN-ReLU-3^3 conv-BN, plus a 1^3 conv-BN shortcut when the width changes):
   widths 32, 64, 128, 256 at tensor strides 2, 4, 8, 16; ResNet34 depths (3, 4, 6, 3);
4. every stride-1 voxel gathers its enclosing voxel's features from the four stages (ME's
   ``slice`` + ``cat``: 32+64+128+256 = 480 channels) -> two 3^3 stride-2 convs to
   ``embedding_channels / 2`` and ``embedding_channels`` (BN, LeakyReLU);
5. global max and mean pooling, concatenated -> MLP head (linear-BN-LeakyReLU 1024, dropout,
   linear-BN-LeakyReLU 1024, linear) to the CLIP width.

Parameter count at in_channels=6, out_dim=1280 (OpenShape's setting): 41,327,104 (``count_parameters``),
the 41.3M OpenShape reports for its SparseConv.

Normalisation. OpenShape uses BatchNorm, whose statistics run across the batch: a cloud's
feature then depends on the other clouds of its batch, which gradient caching and multi-rank
equivalence cannot reproduce (the trainer refuses grad caching with it). ``norm="layer"``
(per-voxel LayerNorm; the ``sparseconv-tiny`` default) keeps every cloud independent.

Point order and duplicate points do not change the output: voxelization averages within a
voxel and every later step sees voxels, not points. ``sparseconv-tiny`` (see ``TINY``) is the
same architecture with fewer, narrower layers and coarser voxels, for the 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .common import check_encoder_input, check_in_channels, check_positive
from .sparse import SparseConv3d, SparseTensor, gather_parents, global_pool, voxelize

__all__ = ["SparseConvConfig", "SparseConvEncoder", "TINY"]


@dataclass
class SparseConvConfig:
    """MinkResNet34 hyper-parameters; the defaults are OpenShape's."""

    out_dim: int = 1280
    in_channels: int = 6
    voxel_size: float = 0.02               # clouds in the unit sphere: 100 voxels across
    stem_channels: int = 32                # INIT_DIM
    stem_kernel: int = 5
    planes: tuple[int, ...] = (32, 64, 128, 256)
    layers: tuple[int, ...] = (3, 4, 6, 3)  # ResNet34
    embedding_channels: int = 1024
    head_hidden: int = 1024
    dropout: float = 0.5                   # MinkowskiDropout's default
    norm: str = "batch"                    # "batch" (OpenShape) or "layer" (per voxel)

    def __post_init__(self):
        self.planes, self.layers = tuple(self.planes), tuple(self.layers)
        check_in_channels(self.in_channels)
        check_positive(self, "out_dim", "stem_channels", "stem_kernel", "embedding_channels",
                       "head_hidden")
        if (isinstance(self.voxel_size, bool) or not isinstance(self.voxel_size, (int, float))
                or not self.voxel_size > 0):
            raise ValueError(f"voxel_size must be a positive number, got {self.voxel_size!r}")
        if (not self.planes or len(self.planes) != len(self.layers)
                or min(self.planes) < 1 or min(self.layers) < 1):
            raise ValueError(f"planes and layers must be non-empty, of equal length and "
                             f"positive, got planes={self.planes}, layers={self.layers}")
        if self.embedding_channels % 2:
            raise ValueError(f"embedding_channels must be even, got {self.embedding_channels}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.norm not in ("batch", "layer"):
            raise ValueError(f"norm must be 'batch' or 'layer', got {self.norm!r}")


# A few minutes per tiny-world run on 2 CPU cores: one block per stage, narrow, 0.1 voxels (20
# across the unit sphere; 0.05 doubled the step time for the same 1,024-point clouds).
TINY = dict(voxel_size=0.1, stem_channels=16, stem_kernel=3, planes=(16, 32, 64, 64),
            layers=(1, 1, 1, 1), embedding_channels=128, head_hidden=256, dropout=0.0,
            norm="layer")


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm1d(channels) if kind == "batch" else nn.LayerNorm(channels)


class _Features(nn.Module):
    """A feature-wise module (norm, activation) applied to a sparse tensor's rows."""

    def __init__(self, *modules: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*modules)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.with_feats(self.body(x.feats))


class _ConvNorm(nn.Sequential):
    """conv -> norm (-> activation): ME's conv + MinkowskiBatchNorm (+ ReLU/LeakyReLU)."""

    def __init__(self, c_in, c_out, kernel, stride, norm, act: nn.Module | None = None):
        tail = [_norm(norm, c_out)] + ([act] if act is not None else [])
        super().__init__(SparseConv3d(c_in, c_out, kernel, stride), _Features(*tail))


class BasicBlock(nn.Module):
    """ResNet basic block (MinkowskiEngine's): conv3-norm-relu-conv3-norm + shortcut, relu."""

    def __init__(self, c_in: int, c_out: int, norm: str):
        super().__init__()
        self.branch = nn.Sequential(_ConvNorm(c_in, c_out, 3, 1, norm, nn.ReLU()),
                                    _ConvNorm(c_out, c_out, 3, 1, norm))
        self.shortcut = _ConvNorm(c_in, c_out, 1, 1, norm) if c_in != c_out else None

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.branch(x)
        skip = x.feats if self.shortcut is None else self.shortcut(x).feats
        return out.with_feats(torch.relu(out.feats + skip))


class SparseConvEncoder(nn.Module):
    """(B, N, in_channels) clouds -> (B, out_dim) features (OpenShape's MinkResNet34)."""

    def __init__(self, config: SparseConvConfig):
        super().__init__()
        self.config = config
        self.in_channels, self.out_dim = config.in_channels, config.out_dim
        norm = config.norm
        self.stem = _ConvNorm(config.in_channels, config.stem_channels, config.stem_kernel, 1,
                              norm, nn.ReLU())
        stages, width = [], config.stem_channels
        for planes, depth in zip(config.planes, config.layers):
            blocks = [_ConvNorm(width, width, 2, 2, norm, nn.ReLU())]
            for _ in range(depth):
                blocks.append(BasicBlock(width, planes, norm))
                width = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        emb = config.embedding_channels
        self.fuse = nn.Sequential(
            _ConvNorm(sum(config.planes), emb // 2, 3, 2, norm, nn.LeakyReLU()),
            _ConvNorm(emb // 2, emb, 3, 2, norm, nn.LeakyReLU()))
        hid = config.head_hidden
        self.head = nn.Sequential(
            nn.Linear(2 * emb, hid, bias=False), _norm(norm, hid), nn.LeakyReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(hid, hid, bias=False), _norm(norm, hid), nn.LeakyReLU(),
            nn.Linear(hid, config.out_dim))
        for m in self.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def mixes_batch(self) -> bool:
        """True when training-mode outputs depend on the other clouds of the batch."""
        return self.config.norm == "batch"

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        check_encoder_input(points, self.config.in_channels)
        if self.training and self.mixes_batch and points.shape[0] < 2:
            raise ValueError("norm='batch' (OpenShape's BatchNorm) needs at least 2 clouds per "
                             "training batch, got 1; use a bigger batch or norm='layer'")
        x = voxelize(points, self.config.voxel_size, check_finite=False)  # checked above
        fine = self.stem(x)
        out, scales = fine, []
        for stage in self.stages:
            out = stage(out)
            scales.append(gather_parents(fine, out))
        y = self.fuse(fine.with_feats(torch.cat(scales, dim=1)))
        pooled = torch.cat([global_pool(y, "max"), global_pool(y, "mean")], dim=1)
        return self.head(pooled)
