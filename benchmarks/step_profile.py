"""Where a stage-2 step's time goes, against a stage-1 step (pointbert-tiny, batch 64 x 1024).

A stage-1 step encodes the batch once with encoder A (forward + backward). A stage-2 step
(``mm-mixing``) draws pairs and ratios, input-mixes the clouds (PointCutMix-K: kNN ranking
around a seed point), runs the new encoder B forward + backward on the mixed clouds and, with
``mix.align_unmixed`` (mmmixlab's default), on the unmixed ones too (one pass over 2B clouds),
runs the frozen stage-1 encoder A forward under ``no_grad`` for the point targets, and
evaluates eq. 6 (three targets, six InfoNCE directions; twelve with the unmixed terms).

Both full steps (``benchmarks.training_throughput.train_step``: zero_grad, loss, backward,
clip, AdamW, schedule) and each public piece of the stage-2 step are timed alternately in one
process on the same trainer and batch, so load from other jobs hits them alike:

* ``mixing``: ``Trainer.draw_mixing`` (pairs, Beta ratios) + ``mixing.input_mix`` (kNN variant)
  + the concatenation of mixed and unmixed clouds, as ``Stage2.plan`` does (and,
  apart, the same with ``input_mix(check=False)``: no NaN/inf scans of the clouds);
* ``B mixed`` / ``B unmixed``: ``Trainer.encode("B", .)`` forward + backward (a fixed
  feature gradient) on the B mixed / B unmixed clouds; ``B all`` the 2B clouds in one pass,
  which is how the step runs them (and what the sum of parts uses);
* ``A targets``: ``Trainer.encode("A", batch.points)`` under ``no_grad``;
* ``patches``: the encoder's FPS + ball query alone (``PointBERT.patches``, ``no_grad``) on B
  clouds, a part of every encoder row above (once per cloud per encoder call);
* ``loss``: ``objectives.stage2_objective`` forward + backward on detached features;
* ``optimizer``: gradient clipping + AdamW + scheduler step (gradients of a real step).

``--faithful`` settings are :data:`mmmixlab.config.FAITHFUL` (``align_unmixed=False``,
``normalize_before_mix=False``, ``data.sampling="fps"``). Data sampling happens before the
step (in the training process for in-memory data, in DataLoader workers for streamed data),
so it is listed apart: ``make_batch`` for 64 clouds of 2,048 stored points down to 1,024, by
random subset (default) or FPS (faithful). A torch.profiler table of one stage-2 step's top
ops (self CPU time) is the second view.

    python -m benchmarks.step_profile [--device cpu|cuda] [--quick] [--faithful | --default]
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

from mmmixlab import objectives
from mmmixlab.batches import TripletBatches
from mmmixlab.config import FAITHFUL
from mmmixlab.mixing import input_mix

from .common import guarded, interleaved, log, quiet_stderr, ratio, standalone, table
from .training_throughput import train_step
from .workloads import enter_phase, make_workload, random_batches, summarize_device, zero_grads

ENCODER, BATCH, POINTS, STORED_POINTS = "pointbert-tiny", 64, 1024, 2048

SETTINGS = {
    "default": {},
    "faithful": {k.split(".", 1)[1]: v for k, v in FAITHFUL.items() if k.startswith("mix.")},
}
SAMPLING = {"default": "random",
            "faithful": FAITHFUL.get("data.sampling", "random")}

# (key, label, part of the step's sum)
ROWS = (
    ("stage1_step", "stage-1 step (A fwd+bwd on B clouds, loss, optimizer)", False),
    ("stage2_step", "stage-2 step", False),
    ("mixing", "  input mixing (pairs, lambda, kNN input_mix, concat)", True),
    ("mixing_nocheck", "  [alternative] the same with input_mix(check=False)", False),
    ("B_mixed", "  encoder B fwd+bwd, mixed clouds (B)", False),
    ("B_unmixed", "  encoder B fwd+bwd, unmixed clouds (B; align_unmixed)", False),
    ("B_all", "  encoder B fwd+bwd, all clouds in one pass (as the step runs it)", True),
    ("A_targets", "  encoder A forward, no_grad (point targets, B clouds)", True),
    ("loss", "  eq. 6 loss terms fwd+bwd", True),
    ("optimizer", "  clip + AdamW + schedule", True),
    ("patches", "  [within each encoder call] FPS + ball query, B clouds", False),
    ("sampling", "[before the step] make_batch: 2,048 -> 1,024 points", False),
)


def _pieces(tr, b, opts, sampler, device) -> dict:
    """name -> zero-argument callable for the full steps and every piece of a stage-2 step,
    and name -> a setup run before each call (outside the timed region)."""
    mc = tr.cfg.mix
    n = b.points.shape[0]
    phase2 = enter_phase(tr, "stage2")
    plan = phase2.plan(b, tr)   # one fixed draw for the pieces
    al = plan.alignment
    with torch.no_grad():
        target_p = phase2.point_target(plan, {}, tr)
    x_all = plan.inputs["B"]
    x_mixed, x_plain = x_all[:n], x_all[n:] if mc.align_unmixed else b.points
    g = torch.Generator(device="cpu").manual_seed(1)
    grad_feats = torch.randn(x_all.shape[0], tr.embed_dim, generator=g).to(device)
    # the gradients of one real step, restored before each optimizer call
    train_step(tr, phase2, b, *opts["stage2"])
    params2 = [p for grp in opts["stage2"][0].param_groups for p in grp["params"]]
    saved = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params2]

    def step(name):
        def fn():
            return train_step(tr, enter_phase(tr, name), b, *opts[name])
        return fn

    def mixing(check=True):
        def fn():
            partner, lam = tr.draw_mixing(n)
            im = input_mix(b.points, b.points[partner], lam, mc.input_variant,
                           generator=tr.local_generator, check=check)
            return torch.cat([im.points, b.points]) if mc.align_unmixed else im.points
        return fn

    def encode_b(x, gf):
        def fn():
            tr.encode("B", x).backward(gf)
        return fn

    def a_targets():
        with torch.no_grad():
            return tr.encode("A", b.points)

    with torch.no_grad():
        feats_b = tr.encode("B", x_all)

    def loss():
        leaf = feats_b.detach().requires_grad_(True)
        scale = tr.logit_scales["B"]()
        out = objectives.stage2_objective(leaf[:n], leaf[n:] if mc.align_unmixed else None,
                                          target_p, al, scale, mc.modalities)
        out.backward()

    def optimizer():
        opt, sched = opts["stage2"]
        if tr.cfg.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(params2, tr.cfg.train.grad_clip)
        opt.step()
        sched.step()

    def patches():
        with torch.no_grad():
            return tr.encoders["B"].patches(b.points)

    fns = {"stage1_step": step("stage1"), "stage2_step": step("stage2"), "mixing": mixing(),
           "mixing_nocheck": mixing(check=False),
           "B_mixed": encode_b(x_mixed, grad_feats[:n])}
    if mc.align_unmixed:
        fns["B_unmixed"] = encode_b(x_plain, grad_feats[n:])
        fns["B_all"] = encode_b(x_all, grad_feats)
    fns.update({"A_targets": a_targets, "loss": loss, "optimizer": optimizer})
    if hasattr(tr.encoders["B"], "patches"):
        fns["patches"] = patches
    if sampler is not None:
        gen = torch.Generator().manual_seed(2)
        idx = torch.arange(n)
        fns["sampling"] = lambda: sampler.make_batch(idx, gen)

    def setup(name):
        if name in ("stage1_step", "stage2_step"):
            return
        enter_phase(tr, "stage2")
        if name.startswith("B_"):
            zero_grads(tr, ("B",))
        elif name == "optimizer":
            for p, s in zip(params2, saved):
                p.grad = s.clone()

    return fns, setup


def profile_stage2(tr, b, opts, top: int = 15) -> dict:
    """torch.profiler's top ops (self CPU time) over one stage-2 step."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if tr.device.type == "cuda" else [])
    phase = enter_phase(tr, "stage2")
    train_step(tr, phase, b, *opts["stage2"])
    with quiet_stderr(), profile(activities=acts) as prof:
        train_step(tr, phase, b, *opts["stage2"])
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) / 1e3
    ops = [{"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 2),
            "share": round(e.self_cpu_time_total / 1e3 / total, 3), "calls": e.count}
           for e in events[:top]]
    if tr.device.type == "cuda":
        for o, e in zip(ops, events[:top]):
            o["self_cuda_ms"] = round(getattr(e, "self_device_time_total",
                                              getattr(e, "self_cuda_time_total", 0)) / 1e3, 2)
    return {"self_cpu_total_ms": round(total, 1), "top_ops": ops}


def bench_case(label: str, setting: str, device: torch.device, amp: str, rounds: int,
               warmup: int, budget_s: float, profile: bool = True) -> dict:
    log(f"[step_profile] {label}: {ENCODER} {BATCH} x {POINTS}, {setting} settings ...")
    wl = make_workload(ENCODER, BATCH, POINTS, device, amp=amp, **SETTINGS[setting])
    tr, b = wl.trainer, wl.batch
    opts = {p.name: tr._optimizer(p) for p in tr.phases}
    sampler = None
    if device.type == "cpu":
        src = random_batches(BATCH, STORED_POINTS, wl.embed_dim, seed=3)
        sampler = TripletBatches(src.points, src.features, num_points=POINTS,
                                 batch_size=BATCH, sampling=SAMPLING[setting])
    fns, setup = _pieces(tr, b, opts, sampler, device)
    t = interleaved(fns, rounds=rounds, warmup=warmup, min_rounds=min(rounds, 2),
                    budget_s=budget_s, device=device, before_each=setup)
    s1, s2 = t["stage1_step"], t["stage2_step"]
    ms = {k: v.summary() for k, v in t.items()}
    enc = "B_all" if "B_all" in t else "B_mixed"   # encoder B's pass(es) as the step runs them
    parts = [k for k, _, in_sum in ROWS if (in_sum or k == enc) and k in t]
    encoders = t[enc].median + t["A_targets"].median
    sum_parts = sum(t[k].median for k in parts)
    res = {
        "label": label, "setting": setting, "encoder": ENCODER, "batch": BATCH,
        "num_points": POINTS, "precision": summarize_device(device, tr.amp_dtype),
        "align_unmixed": tr.cfg.mix.align_unmixed,
        "normalize_before_mix": tr.cfg.mix.normalize_before_mix,
        "input_variant": tr.cfg.mix.input_variant,
        "sampling": SAMPLING[setting] if sampler is not None else None,
        "ms": ms,
        "share_of_stage2": {k: round(v.median / s2.median, 4) for k, v in t.items()},
        "stage2_over_stage1": ratio(s2, s1),
        "sum_of_parts_ms": round(sum_parts * 1e3, 3),
        "sum_of_parts_share": round(sum_parts / s2.median, 4),
        "encoder_passes_share": round(encoders / s2.median, 4),
        "encoder_passes_over_stage1": round(encoders / s1.median, 4),
        "B_over_stage1": ratio(t[enc], s1),
        "mixing_check_off_over_on": ratio(t["mixing_nocheck"], t["mixing"]),
        "A_targets_over_B_mixed": ratio(t["A_targets"], t["B_mixed"]),
    }
    if "B_all" in t:
        res["B_all_over_B_mixed"] = ratio(t["B_all"], t["B_mixed"])
    if profile:
        res["profile"] = profile_stage2(tr, b, opts)
    return res


def run(device: torch.device | None = None, quick: bool = False,
        settings: tuple = ("default", "faithful")) -> dict:
    device = device if device is not None else torch.device("cpu")
    cpu = torch.device("cpu")
    cases = []
    for s in settings:
        cases.append(bench_case(f"cpu_{s}", s, cpu, "off", rounds=3 if quick else 9,
                                warmup=1, budget_s=40 if quick else 150))
    if device.type == "cuda":
        for s in settings:
            cases.append(guarded(f"cuda_{s}", lambda s=s: bench_case(
                f"cuda_{s}", s, device, "bf16", rounds=5 if quick else 20, warmup=3,
                budget_s=60), batch=BATCH, num_points=POINTS))
    res = {"cases": {c["label"]: c for c in cases}}
    for c in cases:
        if "error" not in c:
            res[f"{c['label']}_stage2_over_stage1"] = c["stage2_over_stage1"]["paired"]
    if device.type != "cuda":
        res["cuda"] = "not measured (no GPU in this run)"
    return res


def report(res: dict) -> str:
    out = []
    for c in res["cases"].values():
        if "error" in c:
            out.append(f"{c['label']}: {c['error']}")
            continue
        rows = []
        for key, name, in_sum in ROWS:
            if key not in c["ms"]:
                continue
            m = c["ms"][key]
            counted = in_sum or key == ("B_all" if "B_all" in c["ms"] else "B_mixed")
            rows.append([name, m["median"], m["min"], c["share_of_stage2"][key],
                         "yes" if counted else "", m["rounds"]])
        rows.append(["  sum of the parts marked 'in sum'", c["sum_of_parts_ms"], None,
                     c["sum_of_parts_share"], "", None])
        r = c["stage2_over_stage1"]
        out += [f"{c['label']}: {c['encoder']} {c['batch']}x{c['num_points']}, {c['precision']}, "
                f"align_unmixed={c['align_unmixed']}, normalize_before_mix="
                f"{c['normalize_before_mix']}, input_variant={c['input_variant']}, "
                f"sampling={c['sampling']}",
                table(rows, ["piece", "median ms", "min ms", "share of s2 step", "in sum",
                             "rounds"]),
                f"stage2/stage1: {r['paired']} paired, {r['of_medians']} of medians, "
                f"{r['of_mins']} of mins; encoder passes (B fwd+bwd + A fwd): "
                f"{c['encoder_passes_share']} of the s2 step, {c['encoder_passes_over_stage1']}x "
                f"the s1 step; B alone / s1 step: {c['B_over_stage1']['paired']}; "
                f"A fwd / B fwd+bwd (B clouds): {c['A_targets_over_B_mixed']['paired']}; "
                f"input_mix check off/on: {c['mixing_check_off_over_on']['paired']}"
                + (f"; B on 2B / B on B: {c['B_all_over_B_mixed']['paired']}"
                   if "B_all_over_B_mixed" in c else "")]
        if "profile" in c:
            p = c["profile"]
            prow = [[o["op"][:48], o["self_cpu_ms"], o["share"], o["calls"]]
                    + ([o["self_cuda_ms"]] if "self_cuda_ms" in o else [])
                    for o in p["top_ops"]]
            heads = ["op", "self CPU ms", "share", "calls"] + (
                ["self CUDA ms"] if p["top_ops"] and "self_cuda_ms" in p["top_ops"][0] else [])
            out += [f"torch.profiler, one stage-2 step ({p['self_cpu_total_ms']} ms self CPU "
                    f"in total; numba FPS/ball query appear under no op):", table(prow, heads)]
        out.append("")
    if "cuda" in res:
        out.append(f"CUDA: {res['cuda']}")
    return "\n".join(out)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    settings = ("default", "faithful")
    if "--faithful" in argv:
        argv.remove("--faithful")
        settings = ("faithful",)
    elif "--default" in argv:
        argv.remove("--default")
        settings = ("default",)
    return standalone("step_profile",
                      lambda device, quick: run(device, quick, settings), report, argv)


if __name__ == "__main__":
    main()
