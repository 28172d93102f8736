"""Contrastive losses of MM-Mixing (eqs. 4-6) and the learnable temperature.

Eq. 4 is printed loosely in the paper; it is read here as standard InfoNCE (as in CLIP,
ULIP and OpenShape): L2-normalize both sides, logits = logit_scale * x @ y.T, cross-entropy
with the matching row (the diagonal) as the target.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import check_features, check_same_batch

# Modality toggles for the Table 5 ablation: which alignment targets contribute terms.
MODALITIES = ("image", "text", "point")


class LogitScale(nn.Module):
    """Learnable inverse temperature, stored as a log (CLIP's parametrization).

    ``forward()`` returns ``exp(log_scale)`` clamped to ``max_scale`` (CLIP clamps at 100 so
    the logits cannot blow up early in training). Initial value 1/0.07.
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0,
                 learnable: bool = True):
        super().__init__()
        if not (init_temperature > 0):
            raise ValueError(f"init_temperature must be > 0, got {init_temperature}")
        value = torch.tensor(math.log(1.0 / init_temperature))
        self.log_scale = nn.Parameter(value, requires_grad=learnable)
        self.max_scale = max_scale

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=self.max_scale)

    @property
    def temperature(self) -> float:
        return float(1.0 / self.forward().detach())


def info_nce(x: torch.Tensor, y: torch.Tensor, logit_scale, weights: Optional[torch.Tensor] = None,
             check: bool = True) -> torch.Tensor:
    """One direction of eq. 4: rows of ``x`` classify their partner among the rows of ``y``.

    ``loss = mean_i CE(logit_scale * norm(x) @ norm(y).T, i)``. ``weights`` (B,) bool/float
    masks rows out of the mean (e.g. shapes without text) while they still serve as negatives.
    ``check=False`` skips the NaN/inf scan of the inputs (a host sync on a GPU): the trainer
    validates each batch once, on the CPU, before it reaches the device. Shapes are always
    checked (free).
    """
    if check:
        check_features(x, "x")
        check_features(y, "y")
    elif x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"x and y must be (B, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    check_same_batch(x=x, y=y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature widths differ: x {tuple(x.shape)} vs y {tuple(y.shape)}")
    logits = logit_scale * F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).t()
    targets = torch.arange(x.shape[0], device=x.device)
    if weights is None:
        return F.cross_entropy(logits, targets)
    per_row = F.cross_entropy(logits, targets, reduction="none")
    weights = weights.to(per_row.dtype)
    # no row with a target of this kind: 0 / tiny = 0 with the graph kept, and no host sync
    return (per_row * weights).sum() / weights.sum().clamp(min=torch.finfo(per_row.dtype).tiny)


def symmetric_info_nce(a, b, logit_scale, weights=None) -> torch.Tensor:
    """Mean of both directions a->b and b->a."""
    return 0.5 * (info_nce(a, b, logit_scale, weights) + info_nce(b, a, logit_scale, weights))


def _check_modalities(modalities: Iterable[str], allowed: tuple) -> tuple:
    modalities = tuple(modalities)
    unknown = [m for m in modalities if m not in allowed]
    if unknown:
        raise ValueError(f"unknown modality {unknown}; choose from {allowed}")
    if not modalities:
        raise ValueError("at least one modality term must be enabled")
    return modalities


def stage1_loss(m_p, m_i, m_t, logit_scale, modalities=("image", "text"),
                text_mask: Optional[torch.Tensor] = None, check: bool = True) -> torch.Tensor:
    """Eq. 5: mean of P->I, I->P, P->T and T->P over mixed features.

    ``modalities`` toggles the image and text terms (Table 5); the mean is over the enabled
    terms. ``text_mask`` (B,) drops shapes without a caption from the text terms.
    """
    return _multi_target_loss(m_p, {"image": m_i, "text": m_t}, logit_scale,
                              _check_modalities(modalities, ("image", "text")), text_mask, check)


def stage2_loss(m_m, m_p, m_i, m_t, logit_scale, modalities=MODALITIES,
                text_mask: Optional[torch.Tensor] = None, check: bool = True) -> torch.Tensor:
    """Eq. 6: mean of M<->I, M<->T and M<->P, six directional terms.

    ``m_m``: features of the mixed clouds from the new encoder; ``m_p``: feature-mixed output
    of the frozen stage-1 encoder; ``m_i``/``m_t``: mixed image/text features.
    """
    return _multi_target_loss(m_m, {"image": m_i, "text": m_t, "point": m_p}, logit_scale,
                              _check_modalities(modalities, MODALITIES), text_mask, check)


def _multi_target_loss(anchor, targets: dict, logit_scale, modalities, text_mask, check=True):
    check_same_batch(anchor=anchor, **{k: targets[k] for k in modalities})
    terms = []
    for name in modalities:
        weights = text_mask if name == "text" else None
        terms.append(info_nce(anchor, targets[name], logit_scale, weights, check))
        terms.append(info_nce(targets[name], anchor, logit_scale, weights, check))
    return torch.stack(terms).mean()
