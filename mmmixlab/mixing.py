"""Feature-level and input-level mixing (MM-Mixing, eqs. 1-3).

Feature-level mixing (eq. 1) interpolates two feature vectors; input-level mixing (eqs. 2-3,
after PointCutMix) builds one cloud from points of two clouds, with ``lam`` the exact share of
points taken from the first.

How input mixing puts the second cloud in correspondence with the first
-----------------------------------------------------------------------
Both variants rank the points of each cloud by a key and match the clouds rank by rank: the
j-th ranked point of ``p1`` is replaced, when it is not kept, by the j-th ranked point of
``p2`` (a one-to-one assignment, so no point of ``p2`` is used twice).

* ``"knn"`` (PointCutMix-K): a seed point is drawn from ``p1``; the key is the distance to the
  seed in both clouds. The ``N - floor(lam*N)`` points of ``p1`` nearest the seed are replaced
  by the ``N - floor(lam*N)`` points of ``p2`` nearest the same location, so a spatially
  contiguous patch of ``p2`` takes the place of the matching patch of ``p1``. Because the
  clouds are normalized to the unit sphere beforehand, the patch lands where the removed one
  was and the mix reads as one plausible shape.
* ``"random"`` (PointCutMix-R): the key is a random number, so ``p1`` keeps a uniformly random
  subset of its points and the rest are a uniformly random subset of ``p2``.

This radial rank matching is exact, bijective and O(N log N) per pair; PointCutMix's optimal
(EMD) assignment needs a CUDA module and O(N^2) work or more, and for the two variants above it
would change which ``p2`` points fill the patch only marginally.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch

from .checks import check_choice, check_points, check_unit_interval

INPUT_MIX_VARIANTS = ("random", "knn")

LamLike = Union[float, torch.Tensor]


def sample_lambda(beta: float, size=None, generator: Optional[torch.Generator] = None,
                  device=None) -> torch.Tensor:
    """Draw mixing ratios from Beta(beta, beta).

    ``beta=1`` is uniform on [0, 1]; small beta puts most mass near 0 and 1 (little mixing),
    large beta near 0.5. ``size`` is ``None`` for a 0-d tensor, an int or a shape tuple.
    Sampled through two Gamma draws so a ``torch.Generator`` makes it reproducible.
    """
    beta = float(beta)
    if not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a positive number, got {beta!r}")
    if size is None:
        shape: tuple = ()
    elif isinstance(size, int):
        shape = (size,)
    else:
        shape = tuple(size)
    # torch.distributions.Beta takes no generator, so draw Beta(a, a) = X / (X + Y) with
    # X, Y ~ Gamma(a) from a generator-aware sampler: reproducible per generator, any device.
    x = _gamma(beta, shape, generator, device)
    y = _gamma(beta, shape, generator, device)
    return x / (x + y)


def _gamma(alpha: float, shape: tuple, generator, device) -> torch.Tensor:
    """Gamma(alpha, 1) samples drawn with a given generator (Marsaglia & Tsang, 2000)."""
    boost = alpha < 1.0
    a = alpha + 1.0 if boost else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    n = int(torch.Size(shape).numel())
    out = torch.empty(n, dtype=torch.float64, device=device)
    filled = 0
    while filled < n:
        m = max(2 * (n - filled), 8)
        z = torch.randn(m, generator=generator, dtype=torch.float64, device=device)
        u = torch.rand(m, generator=generator, dtype=torch.float64, device=device)
        v = (1.0 + c * z) ** 3
        ok = (v > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * z * z + d - d * v
                        + d * torch.log(v.clamp_min(1e-300)))
        accepted = (d * v)[ok][: n - filled]
        out[filled: filled + accepted.numel()] = accepted
        filled += accepted.numel()
    if boost:
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        out = out * u.clamp_min(1e-300) ** (1.0 / alpha)
    # The smallest positive gamma draws can underflow to 0 for tiny alpha; keep x/(x+y) finite.
    out = out.clamp_min(1e-300)
    return out.reshape(shape).float()


def _as_row_lambda(lam: LamLike, batch: int, device, name: str = "lam",
                   check: bool = True) -> torch.Tensor:
    """A float or (B,) tensor of ratios as a (B,) float tensor, validated to lie in [0, 1]
    (``check=False`` skips the range scan of a tensor, not the shape check)."""
    if check or not isinstance(lam, torch.Tensor):
        check_unit_interval(lam, name)
    if isinstance(lam, torch.Tensor):
        if lam.dim() == 0:
            lam = lam.expand(batch)
        if lam.shape != (batch,):
            raise ValueError(f"{name} must be a float or a tensor of shape ({batch},), "
                             f"got shape {tuple(lam.shape)}")
        return lam.to(device)
    # float64 so floor(lam * N) below matches Python's math.floor(lam * N) for a float lam.
    return torch.full((batch,), float(lam), dtype=torch.float64, device=device)


def feature_mix(f_i: torch.Tensor, f_j: torch.Tensor, lam: LamLike,
                check: bool = True) -> torch.Tensor:
    """Eq. 1: ``m = lam * f_i + (1 - lam) * f_j``, row by row.

    ``lam`` is a float or a per-row tensor of shape (B,). ``check=False`` skips the scan of a
    ``lam`` tensor for values outside [0, 1] (three host syncs on an accelerator), for ratios
    that are in range by construction (:func:`sample_lambda`, :attr:`InputMix.lam`).
    """
    if f_i.shape != f_j.shape:
        raise ValueError(f"feature_mix needs features of equal shape, got "
                         f"{tuple(f_i.shape)} and {tuple(f_j.shape)}")
    if f_i.dim() < 1 or f_i.shape[0] == 0:
        raise ValueError(f"feature_mix needs a non-empty batch, got shape {tuple(f_i.shape)}")
    lam_rows = _as_row_lambda(lam, f_i.shape[0], f_i.device, check=check).to(f_i.dtype)
    lam_rows = lam_rows.reshape(-1, *([1] * (f_i.dim() - 1)))
    return lam_rows * f_i + (1.0 - lam_rows) * f_j


@dataclass
class InputMix:
    """Result of :func:`input_mix`.

    points:     (B, N, C) mixed clouds.
    from_first: (B, N) bool, True where the point is taken from ``p1`` (S in eq. 2).
    lam:        (B,) exact share of points from ``p1``: floor(lam * N) / N (eq. 3).
    """

    points: torch.Tensor
    from_first: torch.Tensor
    lam: torch.Tensor


def input_mix(p1: torch.Tensor, p2: torch.Tensor, lam: LamLike, variant: str = "random",
              generator: Optional[torch.Generator] = None, check: bool = True) -> InputMix:
    """Eqs. 2-3: mix two batches of clouds point by point (PointCutMix-R / -K).

    ``floor(lam * N)`` points come from ``p1`` and the rest from ``p2``; see the module
    docstring for how the two clouds are put in correspondence. ``p1`` and ``p2`` are
    (B, N, C) with xyz in the first three channels. ``check=False`` skips the NaN/inf scans of
    the clouds and the range scan of a ``lam`` tensor (five host syncs on an accelerator), for
    a caller that has checked its batch already (shapes are always checked).
    """
    check_choice(variant, INPUT_MIX_VARIANTS, "input-mixing variant")
    if check:
        check_points(p1, "p1", channels=())
        check_points(p2, "p2", channels=())
    else:
        for name, p in (("p1", p1), ("p2", p2)):
            if not isinstance(p, torch.Tensor) or p.dim() != 3 or not p.is_floating_point() \
                    or p.shape[0] == 0 or p.shape[1] == 0:
                raise ValueError(f"{name} must be a non-empty floating-point (B, N, C) tensor, "
                                 f"got {getattr(p, 'shape', type(p).__name__)}")
    if p1.shape != p2.shape:
        raise ValueError(f"input_mix needs clouds of equal shape, got p1 {tuple(p1.shape)} "
                         f"and p2 {tuple(p2.shape)}")
    if p1.shape[-1] < 3:
        raise ValueError(f"clouds need xyz in the first 3 channels, got shape {tuple(p1.shape)}")
    b, n, _ = p1.shape
    device = p1.device
    lam_rows = _as_row_lambda(lam, b, device, check=check)
    # floor(lam * N) in lam's own dtype, as a caller computing it from the same lam would.
    keep = torch.floor(lam_rows * n).long().clamp_(0, n)  # points kept from p1

    if variant == "knn":
        gen_device = generator.device if generator is not None else device
        seed_idx = torch.randint(n, (b,), generator=generator, device=gen_device).to(device)
        seed = p1[torch.arange(b, device=device), seed_idx, :3].unsqueeze(1)  # (B, 1, 3)
        key1 = (p1[..., :3] - seed).pow(2).sum(-1)
        key2 = (p2[..., :3] - seed).pow(2).sum(-1)
    else:
        gen_device = generator.device if generator is not None else device
        key1 = torch.rand(b, n, generator=generator, device=gen_device).to(device)
        key2 = torch.rand(b, n, generator=generator, device=gen_device).to(device)

    from .ops import argsort_rows  # not at import: config imports this module, ops loads numba

    order1 = argsort_rows(key1, stable=True)  # rank -> position in p1
    order2 = argsort_rows(key2, stable=True)  # rank -> position in p2
    # Position in p1 of rank j receives p2's rank-j point: partner[order1[j]] = order2[j].
    partner = torch.empty_like(order1).scatter_(1, order1, order2)
    rank1 = torch.empty_like(order1).scatter_(
        1, order1, torch.arange(n, device=device).expand(b, n).contiguous())
    # The (N - keep) lowest-ranked positions (nearest the seed, for "knn") come from p2.
    from_first = rank1 >= (n - keep).unsqueeze(1)
    replacement = torch.gather(p2, 1, partner.unsqueeze(-1).expand_as(p2))
    mixed = torch.where(from_first.unsqueeze(-1), p1, replacement)
    return InputMix(points=mixed, from_first=from_first, lam=keep.float() / n)


def pair_indices(batch_size: int, pairing: str = "shuffle",
                 generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """Partner index j for each row i of a batch.

    ``"shuffle"``: a random permutation (mixup's rule; a row may be its own partner, which is
    then an unmixed pair). ``"derangement"``: a random cyclic shift of a random order, so no row
    is its own partner. ``"flip"``: row i pairs with row B-1-i (deterministic).
    """
    check_choice(pairing, PAIRINGS, "pairing")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen_device = generator.device if generator is not None else device
    if pairing == "flip":
        return torch.arange(batch_size - 1, -1, -1, device=device)
    perm = torch.randperm(batch_size, generator=generator, device=gen_device)
    if pairing == "shuffle":
        return perm.to(device)
    partner = torch.empty_like(perm)
    partner[perm] = perm.roll(1)
    return partner.to(device)


PAIRINGS = ("shuffle", "derangement", "flip")
