"""Intervals for comparisons between variants: over seeds, paired by seed.

An ablation trains every variant with the same seeds; seed ``s`` gives every variant the same
world, frozen encoders, epoch order and evaluation clouds, so the per-seed differences to the
baseline remove the shared seed-to-seed variation. Intervals are Student t intervals over seeds
(``n - 1`` degrees of freedom), the standard choice for a handful of paired replicates.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["binomial_se", "mean_interval", "paired_difference"]


def _t_interval(values: np.ndarray, level: float) -> tuple[float, float, float, float]:
    from scipy import stats

    n = len(values)
    if n < 2:
        raise ValueError(f"an interval needs at least 2 seeds, got {n}")
    mean = float(values.mean())
    sd = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def mean_interval(values: Sequence[float], level: float = 0.95) -> dict:
    """``{mean, sd (ddof=1), lo, hi, n}``: the mean over seeds and its t interval."""
    v = np.asarray(values, dtype=np.float64)
    mean, sd, lo, hi = _t_interval(v, level)
    return {"mean": mean, "sd": sd, "lo": lo, "hi": hi, "n": len(v)}


def paired_difference(variant: Sequence[float], baseline: Sequence[float],
                      level: float = 0.95) -> dict:
    """``{mean, lo, hi, sd, n}`` of ``variant[s] - baseline[s]`` over the shared seeds."""
    a, b = np.asarray(variant, np.float64), np.asarray(baseline, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired difference needs the same seeds: {a.shape} vs {b.shape}")
    mean, sd, lo, hi = _t_interval(a - b, level)
    return {"mean": mean, "sd": sd, "lo": lo, "hi": hi, "n": len(a)}


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` independent shapes."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(n, 1))
