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
unmixed alignment. :class:`Alignment` carries one step's frozen targets and mixing draw.

Each phase is one object below (:class:`Baseline`, :class:`FeatureMixing`, :class:`InputMixing`,
:class:`Stage2`, :class:`Joint`): what it feeds the encoders, its targets and its loss. The
stage-2 point target m^P is built in one method, :meth:`Stage2.point_target` (:class:`Joint`
overrides it: the live A, detached). The trainer (:mod:`mmmixlab.train`) runs the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from .losses import MODALITIES, stage1_loss, stage2_loss
from .mixing import feature_mix

__all__ = ["PHASES", "Alignment", "Baseline", "FeatureMixing", "InputMixing", "Joint", "Phase",
           "Stage2", "StepContext", "StepPlan", "baseline_objective", "input_mixing_objective",
           "stage1_modalities", "stage1_objective", "stage2_objective"]


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


# ---------------------------------------------------------------------------------- phases
#
# One object per training phase: what it feeds the encoders for a batch and a mixing draw
# (:meth:`Phase.plan`), its targets (:meth:`Stage2.point_target` for m^P) and its loss
# (:meth:`Phase.loss`), and which encoders it trains and which one is judged. The trainer
# (:class:`mmmixlab.train.Trainer`) runs the optimisation, schedules, checkpoints and the loop
# around them; ``workbench.one_step`` (notebook 04) calls the same objects.


class StepContext:
    """What a phase needs from its trainer for one step (the trainer implements it).

    ``mix``: the :class:`~mmmixlab.config.MixConfig`; ``gather``: rows of all ranks;
    ``draw_mixing(b)``: ``(partner, lam)`` for a batch of ``b``; ``input_mix(p1, p2, lam)``: an
    :class:`~mmmixlab.mixing.InputMix` (eqs. 2-3) from the trainer's random stream;
    ``encode(name, points, plan=None)``: encoder ``name``'s (normalised) features under the
    step's precision (with ``plan``, the plan's unmixed clouds' patches are cut once a step).
    """

    mix = None

    def gather(self, x):  # pragma: no cover - the protocol; Trainer implements it
        raise NotImplementedError

    def draw_mixing(self, b: int):  # pragma: no cover
        raise NotImplementedError

    def input_mix(self, p1, p2, lam):  # pragma: no cover
        raise NotImplementedError

    def encode(self, name: str, points, plan=None):  # pragma: no cover
        raise NotImplementedError


@dataclass
class StepPlan:
    """One step of a phase before any encoder ran: the batch's clouds, what each encoder it
    runs encodes (``{"A"|"B": clouds}``, input-mixed rows first, then the unmixed ones with
    ``align_unmixed``), and the :class:`Alignment` (frozen targets and the mixing draw).

    ``unmixed_from[name]``: the row of ``inputs[name]`` from which it holds ``points`` (the
    unmixed clouds) to its end, where it does; ``patch_memo``: the unmixed clouds' patches,
    cut once a step for every encoder and pass that reads them (the trainer fills it)."""

    points: torch.Tensor
    inputs: dict
    alignment: Alignment
    unmixed_from: dict = field(default_factory=dict)
    patch_memo: dict = field(default_factory=dict, repr=False)


class Phase:
    """A training phase: ``name`` (logs, checkpoints), ``epochs``, ``trains`` (the encoders it
    updates), ``evaluated`` (the one judged after it; its temperature is logged)."""

    name = ""
    trains: tuple = ("A",)
    mixes = True                 # draws partners and ratios for its batch
    copies_stage1_init = False   # train.stage2_init="stage1" starts its B from A

    def __init__(self, epochs: int):
        self.epochs = int(epochs)

    @property
    def evaluated(self) -> str:
        return self.trains[-1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, epochs={self.epochs}, trains={self.trains})"

    @staticmethod
    def first_stage_modalities(ctx: StepContext) -> tuple:
        """The modalities of the eq.-5 terms: the run's set, or all of them when Table 5's
        ablation is scoped to stage 2 (``mix.modality_scope``)."""
        return ctx.mix.modalities if ctx.mix.modality_scope == "both" else MODALITIES

    def _alignment(self, batch, ctx: StepContext) -> Alignment:
        # check=False: the trainer checks each batch once on the CPU (check_batch); a NaN/inf
        # scan per loss term would be a host sync on an accelerator, up to 12 per stage-2 step
        al = Alignment(batch.image, batch.text, batch.text_valid,
                       align_unmixed=ctx.mix.align_unmixed, gather=ctx.gather, check=False)
        if self.mixes:
            al.partner, al.lam = ctx.draw_mixing(batch.points.shape[0])
            al.lam_x = al.lam
        return al

    def _input_mixed(self, points, al: Alignment, ctx: StepContext) -> tuple:
        """Eqs. 2-3 on each row and its partner; ``al.lam_x`` becomes the exact ratio kept.
        Returns the clouds to encode (mixed rows, then the unmixed ones with align_unmixed)
        and the row where the unmixed ones start (None without them)."""
        im = ctx.input_mix(points, points[al.partner], al.lam)
        al.lam_x = im.lam
        if al.align_unmixed:
            return torch.cat([im.points, points]), im.points.shape[0]
        return im.points, None

    def plan(self, batch, ctx: StepContext) -> StepPlan:
        """What this phase feeds the encoders for ``batch`` and a fresh mixing draw."""
        raise NotImplementedError

    def loss(self, plan: StepPlan, feats: dict, scales: dict, ctx: StepContext):
        """``(loss, {term: value})`` from the encoders' features of ``plan.inputs``."""
        raise NotImplementedError

    def anchors(self, plan: StepPlan, feats: dict) -> dict:
        """The features the loss aligns, by role (``mixed``, ``plain``): what notebook 04 shows."""
        raise NotImplementedError


class Baseline(Phase):
    """OpenShape: E(P) aligned with I and T, no mixing (:func:`baseline_objective`)."""

    name, mixes = "baseline", False

    def plan(self, batch, ctx):
        return StepPlan(batch.points, {"A": batch.points}, self._alignment(batch, ctx),
                        unmixed_from={"A": 0})

    def loss(self, plan, feats, scales, ctx):
        loss = baseline_objective(feats["A"], plan.alignment, scales["A"],
                                  self.first_stage_modalities(ctx))
        return loss, {"loss": loss}

    def anchors(self, plan, feats):
        return {"mixed": None, "plain": feats["A"]}


class FeatureMixing(Phase):
    """Stage 1 (eq. 5 over eq. 1): A's features of the clouds mixed like I and T at ``lam``."""

    name = "stage1"

    def plan(self, batch, ctx):
        return StepPlan(batch.points, {"A": batch.points}, self._alignment(batch, ctx),
                        unmixed_from={"A": 0})

    def stage1_term(self, plan, feats, scales, ctx):
        return stage1_objective(feats["A"], plan.alignment, scales["A"],
                                self.first_stage_modalities(ctx))

    def loss(self, plan, feats, scales, ctx):
        loss = self.stage1_term(plan, feats, scales, ctx)
        return loss, {"loss": loss, "loss_stage1": loss}

    def anchors(self, plan, feats):
        al = plan.alignment
        return {"mixed": al.mix(feats["A"], al.lam), "plain": feats["A"]}


class InputMixing(Phase):
    """Input mixing alone (``im``): A on input-mixed clouds (eqs. 2-3) against I and T mixed
    at the exact ``lam_x`` (:func:`input_mixing_objective`)."""

    name = "im"

    def plan(self, batch, ctx):
        al = self._alignment(batch, ctx)
        clouds, unmixed_from = self._input_mixed(batch.points, al, ctx)
        return StepPlan(batch.points, {"A": clouds}, al, unmixed_from={"A": unmixed_from})

    def loss(self, plan, feats, scales, ctx):
        b, fa = plan.points.shape[0], feats["A"]
        loss = input_mixing_objective(fa[:b], fa[b:], plan.alignment, scales["A"],
                                      self.first_stage_modalities(ctx))
        return loss, {"loss": loss, "loss_im": loss}

    def anchors(self, plan, feats):
        b = plan.points.shape[0]
        return {"mixed": feats["A"][:b], "plain": feats["A"][b:]}


class Stage2(Phase):
    """Stage 2 (eq. 6): a new encoder B on input-mixed clouds against the mixed targets, m^P
    from the stage-1 encoder A (frozen: no gradient reaches it)."""

    name, trains, copies_stage1_init = "stage2", ("B",), True

    def plan(self, batch, ctx):
        al = self._alignment(batch, ctx)
        clouds, unmixed_from = self._input_mixed(batch.points, al, ctx)
        return StepPlan(batch.points, {"B": clouds}, al, unmixed_from={"B": unmixed_from})

    def point_target(self, plan, feats, ctx) -> torch.Tensor:
        """m^P before mixing: A's features of the unmixed clouds. The one place the stage-2
        point target is built (change it here)."""
        with torch.no_grad():
            return ctx.encode("A", plan.points, plan)

    def stage2_term(self, plan, feats, scales, ctx):
        b, fb = plan.points.shape[0], feats["B"]
        return stage2_objective(fb[:b], fb[b:], self.point_target(plan, feats, ctx),
                                plan.alignment, scales["B"], ctx.mix.modalities)

    def loss(self, plan, feats, scales, ctx):
        loss = self.stage2_term(plan, feats, scales, ctx)
        return loss, {"loss": loss, "loss_stage2": loss}

    def anchors(self, plan, feats):
        b = plan.points.shape[0]
        return {"mixed": feats["B"][:b], "plain": feats["B"][b:]}


class Joint(Stage2):
    """One stage (Table 4): stage 1 for A and stage 2 for B in the same steps, each with its
    own loss; B's point targets are the live A's features, detached (the paper trains both
    "without shared weights")."""

    name, trains, copies_stage1_init = "joint", ("A", "B"), False

    def plan(self, batch, ctx):
        al = self._alignment(batch, ctx)
        clouds, unmixed_from = self._input_mixed(batch.points, al, ctx)
        return StepPlan(batch.points, {"A": batch.points, "B": clouds}, al,
                        unmixed_from={"A": 0, "B": unmixed_from})

    def point_target(self, plan, feats, ctx):
        return feats["A"].detach()

    def loss(self, plan, feats, scales, ctx):
        s1 = FeatureMixing.stage1_term(self, plan, feats, scales, ctx)
        s2 = self.stage2_term(plan, feats, scales, ctx)
        return s1 + s2, {"loss": s1 + s2, "loss_stage1": s1, "loss_stage2": s2}


PHASES = {p.name: p for p in (Baseline, FeatureMixing, InputMixing, Stage2, Joint)}
