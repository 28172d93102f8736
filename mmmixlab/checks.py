"""Input checks shared by every public entry point.

Each check raises a ``ValueError`` that names the argument and what is wrong with it, so bad
input fails before a training step instead of turning into NaN losses later.
"""

from __future__ import annotations

import contextlib
import threading

import math
from typing import Sequence

import torch


_VALUES = threading.local()


@contextlib.contextmanager
def values_checked():
    """Inside: :func:`check_points` skips its NaN/inf scan (shapes are still checked). For a
    caller that scanned the batch once already, on the CPU (the trainer's ``check_batch``):
    on an accelerator the scan is a host sync per encoder forward."""
    before = getattr(_VALUES, "checked", False)
    _VALUES.checked = True
    try:
        yield
    finally:
        _VALUES.checked = before


def values_are_checked() -> bool:
    """Whether the caller is inside :func:`values_checked` (value scans skipped)."""
    return getattr(_VALUES, "checked", False)


def check_points(points: torch.Tensor, name: str = "points", channels: Sequence[int] = (3, 6),
                 allow_empty: bool = False) -> torch.Tensor:
    """Validate a batch of point clouds of shape (B, N, C) (finite values too, unless inside
    :func:`values_checked`)."""
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(points).__name__}")
    if points.dim() != 3:
        raise ValueError(f"{name} must have shape (B, N, C), got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {points.dtype}")
    b, n, c = points.shape
    if channels and c not in channels:
        raise ValueError(f"{name} must have {' or '.join(map(str, channels))} channels "
                         f"(last dim), got shape {tuple(points.shape)}")
    if not allow_empty and (b == 0 or n == 0):
        raise ValueError(f"{name} is empty: shape {tuple(points.shape)}")
    if not values_are_checked() and not torch.isfinite(points).all():
        bad = (~torch.isfinite(points)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"{name} contains NaN or inf values (clouds {bad[:10]})")
    return points


def check_features(features: torch.Tensor, name: str) -> torch.Tensor:
    """Validate a batch of feature vectors of shape (B, D)."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() != 2:
        raise ValueError(f"{name} must have shape (B, D), got {tuple(features.shape)}")
    if features.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch: shape {tuple(features.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return features


def check_same_batch(**tensors: torch.Tensor) -> int:
    """All tensors share the leading (batch) dimension; returns it."""
    sizes = {k: int(v.shape[0]) for k, v in tensors.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch sizes differ between modalities: {sizes}")
    return next(iter(sizes.values()))


def check_unit_interval(value, name: str = "lam"):
    """A float or tensor whose values all lie in [0, 1]."""
    if isinstance(value, torch.Tensor):
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or inf")
        if value.numel() and (value.min() < 0 or value.max() > 1):
            raise ValueError(f"{name} must lie in [0, 1], got values in "
                             f"[{value.min().item():.4g}, {value.max().item():.4g}]")
    else:
        v = float(value)
        if not math.isfinite(v) or v < 0 or v > 1:
            raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return value


def check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
    return value
