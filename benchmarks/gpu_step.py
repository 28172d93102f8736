"""The paper-size training steps on a GPU, in one prepared script (issues 20 and 23).

For ``openshape-pointbert`` (the released network) and ``pointbert`` (this project's variant),
batch 200 x 10,000 points, bf16 autocast: a stage-1 and a stage-2 optimizer step of the
trainer (samples/s over timed repeats after warm-up, peak memory, host syncs counted by
``torch.cuda.set_sync_debug_mode``), and FPS at 200 x 10,000 -> 384. Data is an in-memory batch,
so data wait is 0 by construction here (``benchmarks/gpu_realdata`` measures the streamed loader).

    python -m benchmarks.gpu_step                 # on a CUDA machine: the paper sizes
    python -m benchmarks.gpu_step --quick         # a CPU check of the script (tiny encoders)

Writes one JSON object to stdout (and ``--out FILE``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import mmmixlab  # noqa: F401  (before torch: the OpenMP wait policy)
import torch

from mmmixlab.ops import farthest_point_sample

from .workloads import autocast, enter_phase, make_workload, zero_grads


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_once(w, phase) -> None:
    """One optimizer step of ``phase`` as the trainer's loop runs it (no logging)."""
    tr = w.trainer
    params = [p for n in phase.trains for p in tr.encoders[n].parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4)
    zero_grads(tr)
    tr._forward_backward(phase, w.batch)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def time_phase(w, name: str, repeats: int) -> dict:
    device = w.trainer.device
    phase = enter_phase(w.trainer, name)
    for _ in range(2):  # warm-up: kernels, autotune, lazy state
        step_once(w, phase)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    syncs = 0
    t = time.perf_counter()
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                step_once(w, phase)
            torch.cuda.set_sync_debug_mode("default")
            syncs += sum("synchroniz" in str(c.message) for c in caught)
        else:
            step_once(w, phase)
    sync(device)
    seconds = (time.perf_counter() - t) / repeats
    out = {"seconds_per_step": seconds, "samples_per_s": w.batch_size / seconds,
           "host_syncs_per_step": syncs / repeats if device.type == "cuda" else None}
    if device.type == "cuda":
        out["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return out


def run(device=None, quick: bool = False, batch: int | None = None, points: int | None = None,
        repeats: int | None = None) -> dict:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batch = batch or (4 if quick else 200)
    points = points or (1024 if quick else 10000)
    repeats = repeats or (2 if quick else 5)
    amp = "bf16" if device.type == "cuda" else "off"
    encoders = ("openshape-pointbert-tiny", "pointbert-tiny") if quick else \
        ("openshape-pointbert", "pointbert")
    out = {"device": str(device), "batch": batch, "points": points, "amp": amp,
           "data_wait": "0 (in-memory batch)"}
    for enc in encoders:
        w = make_workload(enc, batch, points, device, amp=amp)
        out[enc] = {name: time_phase(w, name, repeats) for name in ("stage1", "stage2")}
        del w
        if device.type == "cuda":
            torch.cuda.empty_cache()
    x = torch.rand(batch, points, 3, device=device)
    farthest_point_sample(x, 384 if not quick else 64)  # warm-up
    sync(device)
    t = time.perf_counter()
    farthest_point_sample(x, 384 if not quick else 64)
    sync(device)
    out["fps_seconds"] = {"shape": f"{batch} x {points} -> {384 if not quick else 64}",
                          "seconds": time.perf_counter() - t}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--batch", type=int)
    p.add_argument("--points", type=int)
    p.add_argument("--repeats", type=int)
    p.add_argument("--out")
    args = p.parse_args(argv)
    res = run(args.device, args.quick, args.batch, args.points, args.repeats)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return res


if __name__ == "__main__":
    main()
