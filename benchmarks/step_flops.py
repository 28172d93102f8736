"""How far a training step is from the machine's floor: FLOPs, the GEMM rate at the step's own
shapes, and the step's share of that floor (issue 23).

For each tiny preset (``pointbert-tiny``, ``openshape-pointbert-tiny``, ``sparseconv-tiny``;
batch 32 x 1,024 points, the tiny world's feature width 64, fp32, one thread: how ``ablate``
runs each run) and each of a stage-1 and a stage-2 step (zero_grad, loss, backward, clip,
AdamW, schedule; ``mm-mixing`` defaults, ``align_unmixed`` on):

* ``GFLOP``: the step's floating-point operations, by ``torch.utils.flop_counter`` (matrix
  products, convolutions and attention: what the hardware's multiply-add units do; the
  element-wise work is not counted, as is usual);
* ``GEMM floor``: every matrix product of the step (recorded with its shapes and operand
  layout by a dispatch mode) replayed alone on random tensors of the same shapes and layout,
  timed, summed: the time the step's GEMMs take at the rate this CPU reaches *at those shapes*
  (narrow shapes such as (65,536 x 6) @ (6 x 16) run far below the peak; that is part of the
  floor, not overhead);
* ``step``: the whole step, timed interleaved with the others in one process (CPU time of this
  single-threaded process, so load from other jobs adds little);
* ``share``: floor / step: 1.0 would mean the step is nothing but its GEMMs at their own
  rates. What is left is element-wise work (norms, activations, copies, gathers), FPS and
  neighbour search, the loss and the optimizer.

The README plan's floor: ``pointbert-tiny``'s other phases (baseline, im, joint) are measured
the same way, and the plan (30 epochs per stage, 5 seeds) is costed at the steps' GEMM floors
on this machine's cores with perfect scaling: no schedule of the same arithmetic on this CPU
trains it faster.

    python -m benchmarks.step_flops [--quick]
"""

from __future__ import annotations

import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from .common import log, standalone, table
from .training_throughput import train_step
from .workloads import enter_phase, make_workload

ENCODERS = ("pointbert-tiny", "openshape-pointbert-tiny", "sparseconv-tiny")
BATCH, POINTS = 32, 1024
GEMMS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
         torch.ops.aten.baddbmm.default}


class GemmRecorder(TorchDispatchMode):
    """Counts every matrix product by (op, operand shapes, which operands are transposed)."""

    def __init__(self):
        super().__init__()
        self.calls = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in GEMMS:
            mats = [a for a in args if isinstance(a, torch.Tensor)]
            key = (func, tuple((tuple(a.shape), _transposed(a)) for a in mats))
            self.calls[key] += 1
        return func(*args, **(kwargs or {}))


def _transposed(t: torch.Tensor) -> bool:
    return t.dim() >= 2 and not t.is_contiguous() and t.transpose(-1, -2).is_contiguous()


def _operand(shape, transposed: bool) -> torch.Tensor:
    if transposed:
        return torch.randn(*shape[:-2], shape[-1], shape[-2]).transpose(-1, -2)
    return torch.randn(*shape)


def gemm_floor(calls: Counter, rounds: int) -> tuple[float, float]:
    """Seconds the recorded GEMMs take replayed alone (best of ``rounds`` per shape), and
    their FLOPs."""
    total, flops = 0.0, 0.0
    for (func, mats), count in calls.items():
        ops = [_operand(s, t) for s, t in mats]
        for _ in range(2):
            func(*ops)
        best = min(_cpu_time(lambda: func(*ops)) for _ in range(rounds))
        total += best * count
        a, b = ops[-2], ops[-1]
        batch = a.shape[0] if a.dim() == 3 else 1
        flops += 2.0 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1] * count
    return total, flops


def _cpu_time(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def measure(encoder: str, rounds: int, variant: str = "mm-mixing") -> list:
    """Rows for every phase of ``variant`` (stage 1 and stage 2 for mm-mixing)."""
    w = make_workload(encoder, BATCH, POINTS, torch.device("cpu"), variant=variant)
    tr, b = w.trainer, w.batch
    opts = {}
    for phase in tr.phases:
        opts[phase.name] = tr._optimizer(enter_phase(tr, phase.name))

    def step(name):
        return train_step(tr, enter_phase(tr, name), b, *opts[name])

    rows = []
    times = {n: [] for n in opts}
    for name in opts:  # warm up (lazy set-up, numba compilation)
        step(name)
        step(name)
    for r in range(rounds):
        for name in (list(opts) if r % 2 == 0 else list(opts)[::-1]):
            times[name].append(_cpu_time(lambda: step(name)))
    for name in opts:
        with FlopCounterMode(display=False) as fc:
            step(name)
        rec = GemmRecorder()
        with rec:
            step(name)
        floor, gemm_flops = gemm_floor(rec.calls, rounds=max(3, rounds // 2))
        t = min(times[name])
        flops = fc.get_total_flops()
        rows.append({"encoder": encoder, "step": name, "gflop": round(flops / 1e9, 3),
                     "gemm_gflop": round(gemm_flops / 1e9, 3),
                     "step_ms": round(1e3 * t, 1),
                     "step_gflops": round(flops / t / 1e9, 1),
                     "gemm_floor_ms": round(1e3 * floor, 1),
                     "gemm_rate_gflops": round(gemm_flops / floor / 1e9, 1),
                     "share": round(floor / t, 3),
                     "gemm_shapes": len(rec.calls)})
        log(f"{encoder} {name}: {rows[-1]}")
    return rows


# The README's Tables 3 + 4 plan (`mmmixlab ablate --seeds 5 --epochs1 30 --epochs2 30`, per-stage
# budget): each row's epochs by phase, the mm-mixing row's stage 1 being its fm run's
PLAN_EPOCHS, PLAN_SEEDS = 30, 5
PLAN = {"baseline": {"baseline": 1}, "fm": {"stage1": 1}, "im": {"im": 1},
        "mm-mixing": {"stage2": 1}, "one-stage": {"joint": 2}, "baseline-2x": {"baseline": 2}}
PHASE_OF = {"baseline": "baseline", "stage1": "mm-mixing", "stage2": "mm-mixing",
            "im": "im", "joint": "one-stage"}  # phase -> a variant that runs it


def plan_floor(rows: list, steps_per_epoch: int, cores: int) -> dict:
    """The README plan's training time if every step ran at its GEMM floor on ``cores``
    cores with perfect scaling (evaluation and set-up left out): a lower bound, against the
    same plan at the steps' measured times."""
    by_phase = {r["step"]: r for r in rows}
    floor = measured = 0.0
    for phases in PLAN.values():
        for phase, stages in phases.items():
            steps = stages * PLAN_EPOCHS * steps_per_epoch * PLAN_SEEDS
            floor += steps * by_phase[phase]["gemm_floor_ms"] / 1e3
            measured += steps * by_phase[phase]["step_ms"] / 1e3
    return {"cores": cores, "steps_per_epoch": steps_per_epoch,
            "floor_min": round(floor / cores / 60, 1),
            "measured_steps_min": round(measured / cores / 60, 1)}


def tiny_steps_per_epoch() -> int:
    from mmmixlab.config import preset
    from mmmixlab.pipeline import synth_config

    cfg = preset("tiny")
    synth = synth_config(cfg)
    return synth.train_per_class * len(synth.categories) // cfg.train.batch_size


COLUMNS = ["encoder", "step", "gflop", "step_ms", "step_gflops", "gemm_gflop", "gemm_floor_ms",
           "gemm_rate_gflops", "share"]


def run(device: torch.device, quick: bool = False) -> dict:
    """The tiny presets' stage-1 and stage-2 steps; then, for ``pointbert-tiny`` (the README
    plan's encoder), the plan's other phases and the plan's floor on this machine's cores."""
    if device.type != "cpu":
        raise SystemExit("step_flops measures the CPU floor; run it with --device cpu")
    from mmmixlab.run_pool import available_cores

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ablate's runs: one thread each
    rounds = 3 if quick else 9
    try:
        encoders = ENCODERS[:1] if quick else ENCODERS
        rows = [r for e in encoders for r in measure(e, rounds)]
        plan_rows = [r for r in rows if r["encoder"] == ENCODERS[0]]
        for variant in ("baseline", "im", "one-stage"):
            plan_rows += measure(ENCODERS[0], rounds, variant=variant)
    finally:
        torch.set_num_threads(threads)
    return {"rows": rows, "plan_rows": plan_rows, "batch": BATCH, "points": POINTS,
            "plan": plan_floor(plan_rows, tiny_steps_per_epoch(), available_cores())}


def report(res: dict) -> str:
    plan = res["plan"]
    summary = (f"README plan ({PLAN_EPOCHS} epochs per stage, {PLAN_SEEDS} seeds, "
               f"{plan['steps_per_epoch']} steps per epoch) on {plan['cores']} cores, training "
               f"only: {plan['measured_steps_min']} min at the steps' measured times, "
               f"{plan['floor_min']} min at their GEMM floor (perfect scaling: a lower bound)")
    return "\n".join([
        table([[r[c] for c in COLUMNS] for r in res["rows"]], COLUMNS), "",
        f"the README plan's phases ({ENCODERS[0]}):",
        table([[r[c] for c in COLUMNS] for r in res["plan_rows"]], COLUMNS), "", summary])


if __name__ == "__main__":
    standalone("step_flops", run, report)
