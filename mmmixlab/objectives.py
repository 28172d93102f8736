"""How the paper's equations combine in each training phase: one named function per phase.

=====================  ============================================================  ==========
phase (variant)        loss                                                          function
=====================  ============================================================  ==========
baseline (baseline)    eq. 5 without mixing: E(P) <-> I, T                           :func:`baseline_objective`
stage1 (fm, mm-mixing) eq. 5 on feature-mixed P, I, T (eq. 1)                        :func:`stage1_objective`
im (im)                eq. 5 with E(input-mixed P) (eqs. 2-3) <-> mixed I, T         :func:`input_mixing_objective`
stage2 (mm-mixing)     eq. 6: new encoder on mixed clouds <-> mixed P (frozen A),    :func:`stage2_objective`
                       mixed I, T
joint (one-stage)      stage1 + stage2, B's point targets from A, detached           both
=====================  ============================================================  ==========

Every mixing objective aligns the mixed anchors with targets feature-mixed at the same ratio
(``lam`` for feature mixing, the input mix's exact ``lam_x = floor(lam N)/N`` after input
mixing) and, with ``align_unmixed`` (mmmixlab's default, not the paper's), averages in the
unmixed alignment. :class:`Alignment` carries one step's frozen targets and mixing draw; the
trainer (:mod:`mmmixlab.train`) encodes the clouds and calls these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from .losses import stage1_loss, stage2_loss
from .mixing import feature_mix

__all__ = ["Alignment", "baseline_objective", "input_mixing_objective", "stage1_modalities",
           "stage1_objective", "stage2_objective"]


def _identity(x):
    return x


@dataclass
class Alignment:
    """One step's targets and mixing draw (local rows; ``gather`` makes them global).

    image, text: (B, D) frozen features of the batch (text zero where a shape has none);
    text_valid: (B,) bool; partner: (B,) each row's mixing partner; lam: (B,) feature-mixing
    ratio; lam_x: (B,) exact input-mixing ratio; gather: concatenates rows of all ranks.
    """

    image: torch.Tensor
    text: torch.Tensor
    text_valid: torch.Tensor
    partner: Optional[torch.Tensor] = None
    lam: Optional[torch.Tensor] = None
    lam_x: Optional[torch.Tensor] = None
    align_unmixed: bool = True
    gather: Callable = _identity
    check: bool = True   # NaN/inf scan in the losses; the trainer checks batches once instead

    def mix(self, x: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """Eq. 1 for each row and its partner: ``ratio * x_i + (1 - ratio) * x_partner(i)``.

        With ``check=False`` the ratio's range scan is skipped too: the trainer's ratios come
        from ``sample_lambda`` and ``input_mix`` (in [0, 1] by construction), and the scan
        would be three host syncs per mixed target on an accelerator (nine per objective)."""
        return feature_mix(x, x[self.partner], ratio, check=self.check)

    @property
    def mixed_text_valid(self) -> torch.Tensor:
        """A mixed text target exists only when both partners have text."""
        return self.text_valid & self.text_valid[self.partner]


def stage1_modalities(modalities: Sequence[str]) -> tuple:
    """Eq. 5's target modalities among the enabled ones (image and/or text)."""
    return tuple(m for m in modalities if m in ("image", "text")) or ("image",)


def _aligned(loss_fn, al: Alignment, anchor_mixed, anchor_plain, targets, ratio, scale,
             modalities) -> torch.Tensor:
    """Mixed anchors against targets feature-mixed at ``ratio``; with ``align_unmixed``, the
    mean of that and the unmixed alignment."""
    g = al.gather
    mixed = [g(al.mix(t, ratio)) for t in targets]
    loss = loss_fn(g(anchor_mixed), *mixed, scale, modalities, g(al.mixed_text_valid),
                   al.check)
    if al.align_unmixed:
        plain = [g(t) for t in targets]
        loss = 0.5 * (loss + loss_fn(g(anchor_plain), *plain, scale, modalities,
                                     g(al.text_valid), al.check))
    return loss


def baseline_objective(point: torch.Tensor, al: Alignment, scale, modalities) -> torch.Tensor:
    """OpenShape's alignment (eq. 5 without mixing): E(P) <-> I and T."""
    g = al.gather
    return stage1_loss(g(point), g(al.image), g(al.text), scale, stage1_modalities(modalities),
                       g(al.text_valid), al.check)


def stage1_objective(point: torch.Tensor, al: Alignment, scale, modalities) -> torch.Tensor:
    """Stage 1 (eq. 5 over eq. 1): the encoder's features of the unmixed clouds are mixed like
    the image and text features, at ``al.lam``."""
    return _aligned(stage1_loss, al, al.mix(point, al.lam), point, [al.image, al.text], al.lam,
                    scale, stage1_modalities(modalities))


def input_mixing_objective(point_mixed: torch.Tensor, point_plain: Optional[torch.Tensor],
                           al: Alignment, scale, modalities) -> torch.Tensor:
    """Input mixing alone (``im``): the encoder's features of input-mixed clouds (eqs. 2-3)
    against image and text features mixed at the exact ratio ``al.lam_x``."""
    return _aligned(stage1_loss, al, point_mixed, point_plain, [al.image, al.text], al.lam_x,
                    scale, stage1_modalities(modalities))


def stage2_objective(point_mixed: torch.Tensor, point_plain: Optional[torch.Tensor],
                     target_point: torch.Tensor, al: Alignment, scale, modalities
                     ) -> torch.Tensor:
    """Stage 2 (eq. 6): the new encoder's features of input-mixed clouds against the frozen
    stage-1 encoder's features (m^P), the image and the text features, all mixed at
    ``al.lam_x``."""
    return _aligned(stage2_loss, al, point_mixed, point_plain,
                    [target_point, al.image, al.text], al.lam_x, scale, modalities)
