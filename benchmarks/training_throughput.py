"""Training throughput: samples/s and peak memory of a full stage-1 and stage-2 step.

One step is what ``Trainer.fit`` does per batch: the phase's loss under autocast (bf16 on
CUDA, fp32 on CPU), ``zero_grad``, backward, gradient clipping, AdamW step, scheduler step and
the loss read back (the trainer's finiteness check). The mixing settings are the defaults
(``mix_prob=1``, ``align_unmixed=True``: stage 2 encodes the mixed and the unmixed clouds, 2B
clouds per step). Stage-1 and stage-2 steps alternate on one trainer (each with its own
optimizer, as in ``fit``), so their ratio is measured side by side.

Sizes: ``pointbert-tiny`` (batch 64 x 1024 points, 64-d features); the paper-size
``pointbert`` (33.5M parameters, 1280-d features) at a small batch on CPU (4 x 10k points,
full runs only, one step per stage and no warm-up: tens of seconds per step here) and at
batch 200 x 10k with bf16 on CUDA.

Peak memory: CUDA allocator peak per step; on CPU the process's resident high-water mark
during the step (whole process: interpreter, torch, model, optimizer, data), see
:class:`benchmarks.common.PeakMemory`.

    python -m benchmarks.training_throughput [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import torch
from torch import nn

from mmmixlab.encoders import count_parameters

from .common import PeakMemory, guarded, interleaved, log, ratio, standalone, table
from .workloads import autocast, enter_phase, make_workload, summarize_device


def train_step(tr, phase, batch, opt, sched) -> float:
    """One optimizer step as ``Trainer._run_epoch`` takes it (minus logging/checkpoints)."""
    tc = tr.cfg.train
    opt.zero_grad(set_to_none=True)
    scaler = getattr(tr, "scaler", None)
    if hasattr(tr, "_forward_backward"):
        loss, _ = tr._forward_backward(phase, batch)  # autocast inside, scaled backward
    else:  # the trainer before gradient caching
        with autocast(tr):
            loss, _ = tr._phase_loss(phase, batch)
        loss.backward()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss in {phase.name}")
    if scaler is not None:
        scaler.unscale_(opt)
    params = [p for g in opt.param_groups for p in g["params"]]
    if tc.grad_clip > 0:
        nn.utils.clip_grad_norm_(params, tc.grad_clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    sched.step()
    return float(loss.detach())


def bench_case(label: str, encoder: str, batch: int, num_points: int, device: torch.device,
               amp: str, rounds: int, warmup: int, budget_s: float) -> dict:
    log(f"[training] {label}: {encoder}, batch {batch} x {num_points} points ...")
    wl = make_workload(encoder, batch, num_points, device, amp=amp)
    tr, b = wl.trainer, wl.batch
    opts = {p.name: tr._optimizer(p) for p in tr.phases}

    def make_step(phase_name):
        def step():
            phase = enter_phase(tr, phase_name)
            return train_step(tr, phase, b, *opts[phase_name])
        return step

    mem = PeakMemory(device)
    peaks = {"stage1": 0.0, "stage2": 0.0}

    def after(name):
        peaks[name] = max(peaks[name], mem.peak_mib())

    t = interleaved({"stage1": make_step("stage1"), "stage2": make_step("stage2")},
                    rounds=rounds, warmup=warmup, min_rounds=min(rounds, 2), budget_s=budget_s,
                    device=device, before_each=lambda name: mem.reset(), after_each=after)
    return {
        "label": label, "encoder": encoder, "batch": batch, "num_points": num_points,
        "parameters": count_parameters(tr.encoders["A"], trainable_only=False),
        "precision": summarize_device(device, tr.amp_dtype),
        "step_ms": {k: v.summary() for k, v in t.items()},
        "samples_per_s": {k: round(batch / v.median, 2) for k, v in t.items()},
        "stage2_over_stage1": ratio(t["stage2"], t["stage1"]),
        "peak_mib": {k: round(v, 1) for k, v in peaks.items()},
        "peak_kind": mem.kind,
        "baseline_mib": round(mem.baseline_mib, 1),
        "align_unmixed": tr.cfg.mix.align_unmixed,
    }


def run(device: torch.device | None = None, quick: bool = False) -> dict:
    device = device if device is not None else torch.device("cpu")
    cpu = torch.device("cpu")
    cases = [bench_case("cpu_tiny", "pointbert-tiny", 64, 1024, cpu, "off",
                        rounds=5 if quick else 8, warmup=1, budget_s=30 if quick else 60)]
    if not quick:
        # ~30-60 s per step on 2 shared cores: one timed step per stage, no warm-up (marked).
        cases.append(bench_case("cpu_paper_small_batch", "pointbert", 4, 10000, cpu, "off",
                                rounds=1, warmup=0, budget_s=30))
    if device.type == "cuda":
        cases.append(guarded("cuda_tiny", lambda: bench_case(
            "cuda_tiny", "pointbert-tiny", 64, 1024, device, "bf16", rounds=5 if quick else 20,
            warmup=3, budget_s=60), batch=64, num_points=1024))
        cases.append(guarded("cuda_paper", lambda: bench_case(
            "cuda_paper", "pointbert", 200, 10000, device, "bf16", rounds=4 if quick else 12,
            warmup=2, budget_s=60 if quick else 150), batch=200, num_points=10000))
    res = {"cases": {c["label"]: c for c in cases}}
    for c in cases:
        res[f"{c['label']}_samples_per_s"] = c.get("samples_per_s", c.get("error"))
    if device.type != "cuda":
        res["cuda"] = "not measured (no GPU in this run)"
    return res


def report(res: dict) -> str:
    rows = []
    for c in res["cases"].values():
        if "error" in c:
            rows.append([c["label"], f"{c['batch']}x{c['num_points']}", c["error"][:40]]
                        + [None] * 8)
            continue
        rows.append([c["label"], f"{c['batch']}x{c['num_points']}", c["precision"],
                     c["step_ms"]["stage1"]["median"], c["step_ms"]["stage2"]["median"],
                     c["samples_per_s"]["stage1"], c["samples_per_s"]["stage2"],
                     c["stage2_over_stage1"]["paired"], c["peak_mib"]["stage1"],
                     c["peak_mib"]["stage2"], c["step_ms"]["stage1"]["rounds"]])
    out = ["Training throughput: full optimizer step (align_unmixed=True), peak memory in MiB "
           "(CPU: process resident set)",
           table(rows, ["case", "batch", "precision", "s1 ms", "s2 ms", "s1 samples/s",
                        "s2 samples/s", "s2/s1", "s1 peak MiB", "s2 peak MiB", "rounds"])]
    if "cuda" in res:
        out.append(f"CUDA: {res['cuda']}")
    return "\n".join(out)


if __name__ == "__main__":
    standalone("training", run, report)
