"""The training step's row sorts: ``ops.argsort_rows`` against ``torch.argsort`` (issue 23).

A step sorts random keys twice over: the batch's random subset (``augment.subsample``, one
unstable argsort of (B, stored points)) and, in the mixing phases, the input mix
(``mixing.input_mix``, two stable argsorts of (B, N)). ``ops.argsort_rows`` returns torch's
indices bit for bit (each row checked here) from numpy's sort of the keys' bits packed above
their indices. Three levels, each timed alternately against torch in one process, one
thread:

- the sorts alone, at the tiny world's shapes (32 x 2,048 subset, 32 x 1,024 mix), the paper's
  (200 x 10,000, OpenShape's stored points) and the streamed path's (1 x 10,000 a shape);
- a batch (``TripletBatches.make_batch``: subset, augmentation, features), 32 of 2,048 -> 1,024;
- a ``pointbert-tiny`` stage-2 step at 32 x 1,024 (``benchmarks.training_throughput.train_step``,
  the machine's default precision), with the losses of both sides compared.

    python -m benchmarks.sorting [--quick] [--json FILE]
"""

from __future__ import annotations

import torch

from mmmixlab import ops
from mmmixlab.device import precision_name

from .common import interleaved, log, ratio, standalone, table
from .training_throughput import train_step
from .workloads import enter_phase, make_workload, random_batches

SORTS = (("subset, tiny world", 32, 2048, False), ("input mix, tiny world", 32, 1024, True),
         ("subset, at the unstable limit", 32, 4096, False),
         ("subset, paper size (torch's sort)", 200, 10_000, False),
         ("input mix, paper size", 200, 10_000, True),
         ("subset, one streamed shape (torch's sort)", 1, 10_000, False))


def _torch_sort(keys, stable=False):
    return torch.argsort(keys, dim=1, stable=stable)


class _Sorting:
    """Runs ``fn`` with ``ops.argsort_rows`` as given (the library's, or torch's)."""

    def __init__(self, sort):
        self.sort = sort

    def __call__(self, fn):
        def timed():
            saved, ops.argsort_rows = ops.argsort_rows, self.sort
            try:
                return fn()
            finally:
                ops.argsort_rows = saved
        return timed


FAST, TORCH = _Sorting(ops.argsort_rows), _Sorting(_torch_sort)


def _row(what, t, **extra) -> dict:
    return {"what": what, "torch_ms": round(t["torch"].median * 1e3, 3),
            "fast_ms": round(t["fast"].median * 1e3, 3), "fast/torch": ratio(t["fast"], t["torch"]),
            **extra}


def sort_rows(rounds: int) -> list:
    rows = []
    for what, b, n, stable in SORTS:
        log(f"[sorting] {what} ...")
        keys = torch.rand(b, n, generator=torch.Generator().manual_seed(n))
        same = torch.equal(ops.argsort_rows(keys, stable), _torch_sort(keys, stable))
        t = interleaved({"torch": lambda: _torch_sort(keys, stable),
                         "fast": lambda: ops.argsort_rows(keys, stable)}, rounds=rounds)
        rows.append(_row(f"{what}: {b} x {n:,}, {'stable' if stable else 'unstable'}", t,
                         same=same))
    return rows


def batch_row(rounds: int) -> dict:
    log("[sorting] a batch ...")
    batches = random_batches(640, 2048, 64)
    batches.num_points = 1024
    idx = torch.arange(32)

    def make(sorting):
        return sorting(lambda: batches.make_batch(idx, torch.Generator().manual_seed(0)))

    same = torch.equal(make(FAST)().points, make(TORCH)().points)
    t = interleaved({"torch": make(TORCH), "fast": make(FAST)}, rounds=rounds)
    return _row("a batch: 32 clouds, 2,048 -> 1,024 points, augmented", t, same=same)


def step_row(rounds: int, batch: int = 32, points: int = 1024) -> dict:
    log("[sorting] a stage-2 step ...")
    sides, losses = {}, {"torch": [], "fast": []}
    for name in ("torch", "fast"):  # the same seed: the same weights and batch
        w = make_workload("pointbert-tiny", batch, points, torch.device("cpu"), amp="auto")
        sides[name] = (w, w.trainer._optimizer(enter_phase(w.trainer, "stage2")))

    def step(name):
        w, opt = sides[name]
        sorting = TORCH if name == "torch" else FAST
        return sorting(lambda: losses[name].append(
            train_step(w.trainer, enter_phase(w.trainer, "stage2"), w.batch, *opt)))

    t = interleaved({"torch": step("torch"), "fast": step("fast")}, rounds=rounds, warmup=1)
    precision = precision_name(sides["fast"][0].trainer.amp_dtype)
    return _row(f"a pointbert-tiny stage-2 step, {batch} x {points:,}, {precision}", t,
                same=losses["torch"] == losses["fast"])


def run(device: torch.device, quick: bool = False) -> dict:
    if device.type != "cpu":
        log("[sorting] measuring on the CPU (one thread)")
    torch.set_num_threads(1)
    rounds = 5 if quick else 30
    return {"threads": 1, "rows": sort_rows(rounds) + [batch_row(rounds),
                                                       step_row(3 if quick else 16)]}


def report(res: dict) -> str:
    return table([[r["what"], f"{r['torch_ms']:.2f}", f"{r['fast_ms']:.2f}",
                   f"{r['fast/torch']['paired']:.3f}", f"{r['fast/torch']['of_mins']:.3f}",
                   "yes" if r["same"] else "NO"] for r in res["rows"]],
                 ["what", "torch.argsort ms", "ops.argsort_rows ms", "fast/torch (paired)",
                  "(of minimums)", "same result"])


def main(argv=None) -> dict:
    return standalone("sorting", run, report, argv)


if __name__ == "__main__":
    main()
