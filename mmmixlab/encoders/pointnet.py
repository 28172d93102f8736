"""A small PointNet: the fast baseline encoder for CPU experiments and smoke tests.

Shared per-point MLP (64-128-256) -> max-pool over points -> MLP head -> out_dim. Max pooling
makes it exactly invariant to the order of the points, and it needs no sampling or grouping,
so it is the cheapest way to check that a training pipeline learns anything.

Normalisation: LayerNorm per point by default, so a cloud's feature never depends on the rest
of its batch (contrastive training learns to exploit batch statistics, and DDP / gradient-cache
equivalence needs per-sample independence). ``norm="batch"`` gives the classic BatchNorm1d
over every point of the batch; ``norm="none"`` drops normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .common import check_encoder_input, check_in_channels, check_positive, max_pool


@dataclass
class PointNetConfig:
    out_dim: int = 1280
    in_channels: int = 6
    mlp_dims: tuple[int, ...] = (64, 128, 256)   # shared per-point MLP widths
    head_dims: tuple[int, ...] = (256,)          # hidden widths of the head after pooling
    norm: str = "layer"                          # "layer", "batch" or "none"

    def __post_init__(self):
        self.mlp_dims, self.head_dims = tuple(self.mlp_dims), tuple(self.head_dims)
        check_in_channels(self.in_channels)
        check_positive(self, "out_dim")
        if not self.mlp_dims or min(self.mlp_dims) < 1 or min(self.head_dims, default=1) < 1:
            raise ValueError(f"mlp_dims must be non-empty and all widths positive, got "
                             f"mlp_dims={self.mlp_dims}, head_dims={self.head_dims}")
        if self.norm not in ("layer", "batch", "none"):
            raise ValueError(f"norm must be 'layer', 'batch' or 'none', got {self.norm!r}")


class PointNet(nn.Module):
    """(B, N, in_channels) clouds -> (B, out_dim) features."""

    def __init__(self, config: PointNetConfig):
        super().__init__()
        self.config = config
        self.in_channels, self.out_dim = config.in_channels, config.out_dim
        layers, width = [], config.in_channels
        for i, dim in enumerate(config.mlp_dims):
            layers.append(nn.Linear(width, dim))
            if config.norm == "batch":
                layers.append(nn.BatchNorm1d(dim))
            elif config.norm == "layer":
                layers.append(nn.LayerNorm(dim))
            if i < len(config.mlp_dims) - 1:  # last layer linear before the max, as in PointNet
                layers.append(nn.ReLU(inplace=True))
            width = dim
        self.point_mlp = nn.Sequential(*layers)
        head = []
        for dim in config.head_dims:
            head += [nn.Linear(width, dim), nn.ReLU(inplace=True)]
            width = dim
        self.head = nn.Sequential(*head, nn.Linear(width, config.out_dim))

    @property
    def mixes_batch(self) -> bool:
        """True when training-mode outputs depend on the other clouds of the batch."""
        return self.config.norm == "batch"

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        check_encoder_input(points, self.config.in_channels)
        b, n, c = points.shape
        f = self.point_mlp(points.reshape(b * n, c)).view(b, n, -1)
        return self.head(max_pool(f, dim=1))
