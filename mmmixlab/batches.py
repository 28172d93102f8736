"""Training batches: clouds with their cached image/text features.

One triplet per shape and step, as OpenShape samples them: the step's points of the cloud
(a random subset, or FPS from a random start: :func:`mmmixlab.augment.subsample`, the same
for every phase), OpenShape's augmentation (:func:`mmmixlab.augment.augment_clouds`), one
random rendered view's image feature, one random caption's text feature. All
randomness comes from one ``torch.Generator``, so a checkpointed generator state resumes the
exact stream of batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
import torch

from .augment import augment_clouds, check_sampling, subsample
from .clip import TripletFeatures


@dataclass
class Batch:
    points: torch.Tensor      # (B, N, C)
    image: torch.Tensor       # (B, D) unit vectors
    text: torch.Tensor        # (B, D) unit vectors (zeros where the shape has no caption)
    text_valid: torch.Tensor  # (B,) bool
    index: torch.Tensor       # (B,) shape indices into the dataset
    skipped: list = field(default_factory=list)  # unreadable shapes replaced in this batch

    def to(self, device) -> "Batch":
        # non_blocking: a copy from pinned memory overlaps the previous step on a GPU
        return Batch(*(t.to(device, non_blocking=True) for t in (
            self.points, self.image, self.text, self.text_valid, self.index)), self.skipped)


def rank_slice(order: torch.Tensor, b: int, batch_size: int, rank: int,
               world_size: int) -> torch.Tensor:
    """This rank's shapes in global batch ``b``: global batch ``b`` is
    ``order[b*B*W:(b+1)*B*W]`` and rank ``r`` takes its ``r``-th slice of ``B``, so ranks are
    disjoint and together cover the epoch (shared by every batch source)."""
    start = (b * world_size + rank) * batch_size
    return order[start:start + batch_size]


def check_batch(batch: Batch) -> Batch:
    """A batch's values are finite: checked once per step, on the CPU before the copy to the
    device (no host sync there), so the losses can skip their own per-term scans."""
    for name in ("points", "image", "text"):
        t = getattr(batch, name)
        if t.device.type == "cpu" and not torch.isfinite(t).all():
            rows = (~torch.isfinite(t)).flatten(1).any(1).nonzero().flatten().tolist()
            raise ValueError(f"batch {name} hold NaN or inf (rows {rows[:10]}, shapes "
                             f"{batch.index[rows[:10]].tolist()})")
    return batch


class TripletBatches:
    """Batches of (cloud, image feature, text feature) from in-memory arrays."""

    def __init__(self, points, features: TripletFeatures, num_points: int = 1024,
                 in_channels: int = 6, batch_size: int = 64, augment: bool = True,
                 rgb_dropout: float = 0.5, drop_last: bool = True, rank: int = 0,
                 world_size: int = 1, sampling: str = "random"):
        points = points.float() if isinstance(points, torch.Tensor) else torch.as_tensor(
            np.array(points, dtype=np.float32))
        if points.dim() != 3 or points.shape[-1] != 6:
            raise ValueError(f"points must be (S, P, 6) xyz+rgb, got {tuple(points.shape)}")
        if points.shape[0] != len(features):
            raise ValueError(f"{points.shape[0]} clouds but features for {len(features)} shapes")
        if num_points > points.shape[1]:
            raise ValueError(f"num_points={num_points} exceeds the {points.shape[1]} points "
                             "stored per shape")
        if batch_size * world_size > points.shape[0]:
            raise ValueError(f"batch_size={batch_size} x {world_size} rank(s) exceeds the dataset "
                             f"size {points.shape[0]}")
        if not torch.isfinite(points).all():
            raise ValueError("training clouds contain NaN or inf")
        self.points, self.features = points, features
        self.num_points, self.in_channels = num_points, in_channels
        self.batch_size, self.augment, self.rgb_dropout = batch_size, augment, rgb_dropout
        self.drop_last = drop_last
        self.sampling = check_sampling(sampling)
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        """Batches per epoch (per rank)."""
        n, step = self.points.shape[0], self.batch_size * self.world_size
        return n // step if self.drop_last or self.world_size > 1 else math.ceil(n / step)

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.points.shape[0], generator=generator)

    @property
    def dim(self) -> int:
        """Width of the image/text features."""
        return self.features.dim

    def batch_indices(self, order: torch.Tensor, b: int) -> torch.Tensor:
        return rank_slice(order, b, self.batch_size, self.rank, self.world_size)

    def iterate(self, order: torch.Tensor, generator: torch.Generator,
                start: int = 0) -> Iterator[Batch]:
        for b in range(start, len(self)):
            yield self.make_batch(self.batch_indices(order, b), generator)

    def make_batch(self, idx: torch.Tensor, generator: Optional[torch.Generator]) -> Batch:
        clouds = subsample(self.points[idx], self.num_points, self.sampling, generator)
        b = clouds.shape[0]
        if self.augment:
            clouds = augment_clouds(clouds, generator, self.rgb_dropout)
        views = torch.randint(self.features.image.shape[1], (b,), generator=generator)
        image = self.features.image[idx, views]
        mask = self.features.text_mask[idx]
        valid = mask.any(1)
        weights = torch.where(valid.unsqueeze(1), mask.float(), torch.ones_like(mask.float()))
        pick = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        text = self.features.text[idx, pick] * valid.unsqueeze(1)
        return Batch(points=clouds[..., :self.in_channels].contiguous(), image=image, text=text,
                     text_valid=valid, index=idx)
