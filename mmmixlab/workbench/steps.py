"""One training step in the open (notebooks 03 and 04): the trainer's own phase object on a
batch, with every intermediate the notebook shows."""

from __future__ import annotations

import torch

from .. import pipeline
from .runs import Run


def one_step(run: Run, world: pipeline.World, phase: str = "stage1", rows: int = 8,
             seed: int = 0, batch=None, draw_state=None) -> dict:
    """What one training step of ``phase`` computes, with the run's trained encoders (in eval
    mode), through the trainer's own phase object (:mod:`mmmixlab.objectives`): the batch's
    pairs and ratios (``pairs``; ``lam_x`` only where points are mixed), the features the loss
    aligns (``features``: ``mixed`` / ``plain`` rows of the judged encoder, and the stage-2
    point ``target``), the :class:`~mmmixlab.objectives.Alignment` (``alignment``), the logit
    ``scale``, the phase's ``terms`` and ``loss``; and ``trainer_loss``, the trainer's
    ``compute_loss`` of the same batch and draw (equal, bit for bit on CPU). ``batch`` and
    ``draw_state`` (the trainer's local generator state) replay a given step instead of
    ``rows`` random training shapes and a fresh draw."""
    import pandas as pd

    from ..objectives import Stage2
    from ..train import Trainer

    cfg = run.cfg.replace(**{"train.device": "cpu"})
    trainer = Trainer(cfg, pipeline.training_batches(cfg, world), embed_dim=world.dim,
                      progress=False)
    for name, enc in trainer.encoders.items():
        enc.load_state_dict(run.encoders[name].state_dict())
        enc.eval()  # no dropout: the features shown are the ones the loss below uses
    step = next((p for p in trainer.phases if p.name == phase), None)
    if step is None:
        raise ValueError(f"run {run.path.name} has no phase {phase!r}; it has "
                         f"{[p.name for p in trainer.phases]}")
    if batch is None:
        g = torch.Generator().manual_seed(seed)
        batch = trainer.batches.make_batch(torch.randperm(len(world.splits["train"]),
                                                          generator=g)[:rows], g)
    if draw_state is not None:
        trainer.local_generator.set_state(draw_state)
    state = trainer.local_generator.get_state()
    scales = {n: s() for n, s in trainer.logit_scales.items()}
    with torch.no_grad():
        plan = step.plan(batch, trainer)
        feats = {n: trainer.encode(n, x, plan) for n, x in plan.inputs.items()}
        loss, terms = step.loss(plan, feats, scales, trainer)
        anchors = step.anchors(plan, feats)
        target = step.point_target(plan, feats, trainer) if isinstance(step, Stage2) else None
        trainer.local_generator.set_state(state)  # the trainer's own step replays the draw
        trainer_loss, _ = trainer.compute_loss(phase, batch)
    al = plan.alignment
    labels, names = world.splits["train"].labels, world.class_names
    table = {"shape": [names[labels[i]] for i in batch.index.tolist()]}
    if step.mixes:
        table["partner"] = [names[labels[batch.index[j]]] for j in al.partner.tolist()]
        table["lam (features)"] = al.lam.tolist()
    if al.lam_x is not None and al.lam_x is not al.lam:  # input-mixed: the exact ratio kept
        table["lam_x (points kept)"] = al.lam_x.tolist()
    return {"pairs": pd.DataFrame(table).round(3), "alignment": al, "phase": step,
            "scale": scales[step.evaluated], "features": {**anchors, "target": target},
            "terms": {k: float(v) for k, v in terms.items()}, "loss": float(loss),
            "trainer_loss": float(trainer_loss)}
