"""Patches of the unmixed clouds cut once a step for A and B (``train.share_patches``) against
cutting them in every pass (issue 23).

A stage-2 step encodes the unmixed clouds twice (B's unmixed rows, A's frozen targets), a
one-stage step too (A's stage-1 pass, B's unmixed rows); each pass cut them into patches (FPS,
ball query). With sharing they are cut once. For ``pointbert-tiny`` and
``openshape-pointbert-tiny``, stage 2 and one-stage, batch 32 x 1,024, one thread, the
machine's default precision (``train.amp=auto``): two trainers with the same seed (the same
weights and batch), sharing off and on, ``benchmarks.training_throughput.train_step`` timed
alternately in CPU time (``time.process_time``: FPS runs helper threads, whose work on an idle
second core wall time would hide; in a run pool both cores are busy). Each row checks that the
two trainers' losses agree bit for bit over the timed steps, and counts the clouds cut a step.

    python -m benchmarks.shared_patches [--quick] [--json FILE]
"""

from __future__ import annotations

import time

import torch

from mmmixlab import ops
from mmmixlab.device import precision_name

from .common import interleaved, log, ratio, standalone, table
from .training_throughput import train_step
from .workloads import enter_phase, make_workload

PHASES = {"stage2": "mm-mixing", "joint": "one-stage"}
ENCODERS = ("pointbert-tiny", "openshape-pointbert-tiny")


def _clouds_cut(trainer, phase, batch, opt) -> int:
    """Clouds FPS'd by the encoders in one step (``ops.farthest_point_sample``'s batch rows)."""
    cut, fps = [], ops.farthest_point_sample

    def counted(xyz, *args, **kwargs):
        cut.append(xyz.shape[0])
        return fps(xyz, *args, **kwargs)

    ops.farthest_point_sample = counted
    try:
        train_step(trainer, phase, batch, *opt)
    finally:
        ops.farthest_point_sample = fps
    return sum(cut)


def step_rows(rounds: int, encoders=ENCODERS, phases=PHASES, batch: int = 32,
              points: int = 1024) -> list:
    rows = []
    for encoder in encoders:
        for name, variant in phases.items():
            log(f"[shared_patches] {encoder} {name} ...")
            sides = {}
            for share in (False, True):  # the same seed: the same weights and batch
                w = make_workload(encoder, batch, points, torch.device("cpu"), amp="auto",
                                  variant=variant)
                w.trainer.cfg.train.share_patches = share
                sides[share] = (w, w.trainer._optimizer(enter_phase(w.trainer, name)))
            losses = {False: [], True: []}

            def step(share):
                w, opt = sides[share]
                return lambda: losses[share].append(
                    train_step(w.trainer, enter_phase(w.trainer, name), w.batch, *opt))

            t = interleaved({"unshared": step(False), "shared": step(True)}, rounds=rounds,
                            warmup=1, clock=time.process_time)
            cut = {s: _clouds_cut(w.trainer, enter_phase(w.trainer, name), w.batch, opt)
                   for s, (w, opt) in sides.items()}
            rows.append({"encoder": encoder, "phase": name,
                         "precision": precision_name(sides[True][0].trainer.amp_dtype),
                         "clouds_cut": {"unshared": cut[False], "shared": cut[True]},
                         "unshared_ms": round(t["unshared"].median * 1e3, 1),
                         "shared_ms": round(t["shared"].median * 1e3, 1),
                         "shared/unshared": ratio(t["shared"], t["unshared"]),
                         "same_losses": losses[False] == losses[True]})
    return rows


def run(device: torch.device, quick: bool = False) -> dict:
    if device.type != "cpu":
        log("[shared_patches] measuring on the CPU (one thread)")
    torch.set_num_threads(1)
    return {"threads": 1, "steps": step_rows(3 if quick else 16,
                                             ENCODERS[:1] if quick else ENCODERS)}


def report(res: dict) -> str:
    return table([[r["encoder"], r["phase"], r["precision"],
                   f"{r['clouds_cut']['unshared']} -> {r['clouds_cut']['shared']}",
                   f"{r['unshared_ms']:.0f}", f"{r['shared_ms']:.0f}",
                   f"{r['shared/unshared']['paired']:.3f}",
                   f"{r['shared/unshared']['of_mins']:.3f}",
                   "yes" if r["same_losses"] else "NO"] for r in res["steps"]],
                 ["encoder", "phase", "precision", "clouds cut a step", "unshared CPU ms",
                  "shared CPU ms", "shared/unshared (paired)", "(of minimums)",
                  "same losses"])


def main(argv=None) -> dict:
    return standalone("shared_patches", run, report, argv)


if __name__ == "__main__":
    main()
