"""Mixing overhead: one stage-2 step with mixing vs the same step without.

A stage-2 step of ``mm-mixing`` (``Trainer.compute_loss("stage2", batch)`` + backward, with
``mix.align_unmixed=False`` so both sides encode the same number of clouds) is timed side by
side in three forms, same encoder weights, same batch:

* ``mix``: ``mix.mix_prob=1.0``: pairing + lambda, input mixing (PointCutMix-K), feature
  mixing of the three targets, the new encoder on the mixed clouds, the frozen stage-1
  encoder on the originals, eq. 6, backward;
* ``mix_prob0``: an otherwise identical trainer with ``mix.mix_prob=0.0``: lam is 1, so the
  input mix is an identity copy, but every mixing op still runs;
* ``no_mix``: no mixing code at all: the encoders on the batch and ``stage2_loss`` on the
  unmixed features.

``overhead_ratio`` = time(mix) / time(no_mix) (the median of the per-round ratios; the ratio of
medians and of minimums are reported too). The mixing ops are also timed alone, which resolves
their cost far below the noise of whole steps on a shared machine: ``ops_ratio`` = (no_mix +
mixing ops) / no_mix; and ``input_mix``, the largest of them, is profiled op by op on CPU (torch
profiler self time per call) to show where its time goes.

Sizes: ``pointbert-tiny`` at batch 64 x 1024 points on CPU (the results file's number); the
paper-size ``pointbert`` at batch 200 x 10k points with bf16 autocast on CUDA; on CPU, full
runs add the paper-size encoder at batch 2 (one round per variant: its step ratio is noise on a
shared machine, its ``ops_ratio`` is not).

    python -m benchmarks.mixing_overhead [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import os

import torch

from mmmixlab.losses import stage2_loss
from mmmixlab.mixing import feature_mix, input_mix

from .common import guarded, interleaved, log, quiet_stderr, ratio, standalone, table
from .workloads import autocast, enter_phase, make_workload, summarize_device, zero_grads


def _mix_step(trainer, batch):
    def step():
        with autocast(trainer):
            loss, _ = trainer.compute_loss("stage2", batch)
        loss.backward()
        zero_grads(trainer, ("B",))
    return step


def _no_mix_step(trainer, batch):
    mc = trainer.cfg.mix

    def step():
        with autocast(trainer):
            f = trainer.encode("B", batch.points)
            with torch.no_grad():
                target_p = trainer.encode("A", batch.points)
            loss = stage2_loss(f, target_p, batch.image, batch.text, trainer.logit_scales["B"](),
                               mc.modalities, batch.text_valid)
        loss.backward()
        zero_grads(trainer, ("B",))
    return step


def _mixing_ops(trainer, batch):
    """The mixing code of a stage-2 step, piece by piece, outside any step."""
    mc = trainer.cfg.mix
    b = batch.points.shape[0]
    partner, lam = trainer.draw_mixing(b)
    with torch.no_grad():
        target_p = trainer.encode("A", batch.points)
    lam_exact = input_mix(batch.points, batch.points[partner], lam, mc.input_variant).lam

    generator = getattr(trainer, "local_generator", trainer.generator)

    def pair_and_lambda():
        trainer.draw_mixing(b)

    def input_mixing():
        input_mix(batch.points, batch.points[partner], lam, mc.input_variant,
                  generator=generator)

    def feature_mixing():
        batch.text_valid & batch.text_valid[partner]
        for x in (target_p, batch.image, batch.text):
            feature_mix(x, x[partner], lam_exact)

    return {"pair_and_lambda": pair_and_lambda, "input_mix": input_mixing,
            "feature_mix": feature_mixing}


def profile_input_mix(trainer, batch, calls: int = 10, top: int = 8) -> dict:
    """Where ``input_mix`` spends its time: torch profiler self time per op, per call."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # CUDA builds on CPU-only hosts log errors
    from torch.profiler import ProfilerActivity, profile

    mc = trainer.cfg.mix
    b = batch.points.shape[0]
    partner, lam = trainer.draw_mixing(b)
    p2 = batch.points[partner]
    for _ in range(2):
        input_mix(batch.points, p2, lam, mc.input_variant)
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            input_mix(batch.points, p2, lam, mc.input_variant)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) / 1e3 / calls
    tops = []
    for e in events[:top]:
        ms = e.self_cpu_time_total / 1e3 / calls
        tops.append({"op": e.key, "self_ms_per_call": round(ms, 3), "share": round(ms / total, 3),
                     "calls_per_mix": round(e.count / calls, 1)})
    return {"ms_per_call": round(total, 3), "variant": mc.input_variant, "top_ops": tops}


def bench_case(label: str, encoder: str, batch: int, num_points: int, device: torch.device,
               amp: str, rounds: int, warmup: int, budget_s: float, op_rounds: int) -> dict:
    log(f"[mixing] {label}: {encoder}, batch {batch} x {num_points} points ...")
    mixed = make_workload(encoder, batch, num_points, device, amp=amp, align_unmixed=False,
                          mix_prob=1.0)
    plain = make_workload(encoder, batch, num_points, device, amp=amp, align_unmixed=False,
                          mix_prob=0.0)
    for wl in (mixed, plain):
        enter_phase(wl.trainer, "stage2")
    fns = {"mix": _mix_step(mixed.trainer, mixed.batch),
           "mix_prob0": _mix_step(plain.trainer, plain.batch),
           "no_mix": _no_mix_step(plain.trainer, plain.batch)}
    t = interleaved(fns, rounds=rounds, warmup=warmup, min_rounds=min(rounds, 2),
                    budget_s=budget_s, device=device)
    ops = interleaved(_mixing_ops(mixed.trainer, mixed.batch), rounds=op_rounds, warmup=2,
                      device=device)
    ops_ms = {k: round(v.median * 1e3, 3) for k, v in ops.items()}
    prof = profile_input_mix(mixed.trainer, mixed.batch) if device.type == "cpu" else None
    ops_total = sum(v.median for v in ops.values())
    no_mix = t["no_mix"].median
    shares = {k: round(v.median / no_mix, 5) for k, v in ops.items()}
    return {
        "label": label, "encoder": encoder, "batch": batch, "num_points": num_points,
        "precision": summarize_device(device, mixed.trainer.amp_dtype),
        "step_ms": {k: v.summary() for k, v in t.items()},
        "overhead_ratio": ratio(t["mix"], t["no_mix"]),
        "overhead_ratio_vs_mix_prob0": ratio(t["mix"], t["mix_prob0"]),
        "mix_prob0_vs_no_mix": ratio(t["mix_prob0"], t["no_mix"]),
        "mixing_ops_ms": ops_ms,
        "mixing_ops_share_of_step": shares,
        "ops_ratio": round((no_mix + ops_total) / no_mix, 5),
        "hot_spot": max(ops_ms, key=ops_ms.get),
        "input_mix_profile": prof,
    }


def run(device: torch.device | None = None, quick: bool = False) -> dict:
    device = device if device is not None else torch.device("cpu")
    cpu = torch.device("cpu")
    cases = [bench_case("cpu_tiny", "pointbert-tiny", 64, 1024, cpu, "off",
                        rounds=8 if quick else 15, warmup=1, budget_s=40 if quick else 100,
                        op_rounds=15 if quick else 40)]
    if not quick:
        cases.append(bench_case("cpu_paper_small_batch", "pointbert", 2, 10000, cpu, "off",
                                rounds=1, warmup=0, budget_s=40, op_rounds=10))
    if device.type == "cuda":
        cases.append(guarded("cuda_paper", lambda: bench_case(
            "cuda_paper", "pointbert", 200, 10000, device, "bf16", rounds=6 if quick else 20,
            warmup=2, budget_s=60 if quick else 180, op_rounds=20 if quick else 50),
            encoder="pointbert", batch=200, num_points=10000))
    by_label = {c["label"]: c for c in cases}
    head = by_label["cpu_tiny"]
    res = {"overhead_ratio": head["overhead_ratio"]["paired"],
           "overhead_ratio_of_medians": head["overhead_ratio"]["of_medians"],
           "overhead_ratio_of_mins": head["overhead_ratio"]["of_mins"],
           "overhead_ratio_vs_mix_prob0": head["overhead_ratio_vs_mix_prob0"]["paired"],
           "ops_ratio": head["ops_ratio"],
           "headline": "cpu_tiny: pointbert-tiny, batch 64 x 1024, CPU fp32, align_unmixed=False",
           "cases": by_label}
    if "cuda_paper" in by_label and "error" not in by_label["cuda_paper"]:
        res["cuda_overhead_ratio"] = by_label["cuda_paper"]["overhead_ratio"]["paired"]
    else:
        res["cuda_paper"] = "not measured (no GPU in this run)"
    return res


def report(res: dict) -> str:
    rows = []
    for c in res["cases"].values():
        if "error" in c:
            rows.append([c["label"], f"{c['batch']}x{c['num_points']}", c["error"][:40]]
                        + [None] * 9)
            continue
        s = c["step_ms"]
        rows.append([c["label"], f"{c['batch']}x{c['num_points']}", c["precision"],
                     s["no_mix"]["median"], s["mix_prob0"]["median"], s["mix"]["median"],
                     c["overhead_ratio"]["paired"], c["overhead_ratio"]["of_medians"],
                     c["overhead_ratio"]["of_mins"],
                     c["overhead_ratio_vs_mix_prob0"]["paired"], c["ops_ratio"],
                     s["mix"]["rounds"]])
    out = ["Mixing overhead: stage-2 step (forward + backward), ms median; ratio = mix / no_mix",
           table(rows, ["case", "batch", "precision", "no_mix ms", "mix_p0 ms", "mix ms",
                        "ratio", "of medians", "of mins", "mix/mix_p0", "ops ratio",
                        "rounds"])]
    for c in res["cases"].values():
        if "error" in c:
            continue
        ops = ", ".join(f"{k} {v} ms" for k, v in c["mixing_ops_ms"].items())
        out.append(f"  {c['label']} mixing ops alone: {ops} (largest: {c['hot_spot']})")
        prof = c.get("input_mix_profile")
        if prof:
            tops = ", ".join(f"{o['op']} {o['self_ms_per_call']} ms x{o['calls_per_mix']:g}"
                             for o in prof["top_ops"][:5])
            out.append(f"    input_mix profile ({prof['ms_per_call']} ms per call, profiled): "
                       f"{tops}")
    if "cuda_paper" not in res["cases"]:
        out.append(f"CUDA: {res.get('cuda_paper')}")
    return "\n".join(out)


if __name__ == "__main__":
    standalone("mixing", run, report)
