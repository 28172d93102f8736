"""The paper-size training steps on a GPU, in one prepared script (issues 20 and 23).

For ``openshape-pointbert`` (the released network) and ``pointbert`` (this project's variant),
batch 200 x 10,000 points, bf16 autocast: a stage-1 and a stage-2 optimizer step as the
trainer's loop takes it (its optimizer, scheduler, scaler and clipping: ``step_once``):
samples/s over timed repeats after warm-up, peak memory, host syncs counted by
``torch.cuda.set_sync_debug_mode``, and the share of the step the host spends waiting in them
(``sync_wait``, from a profile of one step); and FPS at 200 x 10,000 -> 384. Data is an
in-memory batch, so data wait is 0 by construction here (``benchmarks/gpu_realdata`` measures
the streamed loader).

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

from .workloads import enter_phase, make_workload


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_once(w, phase, opt, sched) -> torch.Tensor:
    """One optimizer step as ``Trainer._run_epoch`` takes it on an accelerator (its optimizer,
    scheduler, scaler and clipping; minus logging and checkpoints): the loss is not read, so
    the step holds no host sync of its own beyond what the library does."""
    tr = w.trainer
    opt.zero_grad(set_to_none=True)
    loss, _ = tr._forward_backward(phase, w.batch)
    tr.scaler.unscale_(opt)
    if tr.cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]],
                                       tr.cfg.train.grad_clip)
    tr.scaler.step(opt)
    tr.scaler.update()
    sched.step()
    return loss


# CUDA runtime calls during which the host waits for the device
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
              "cudaMemcpy", "cudaMemcpyAsync")


def sync_wait(run_step, device, step_seconds: float):
    """The share of a step's time (``step_seconds``, the timed median) the host spends in CUDA
    calls that wait for the device (``SYNC_CALLS``; ``cudaMemcpyAsync`` waits on copies to
    pageable memory), from a profile of one more step: ``{"share", "ms", "calls": {name:
    count}}``. None off CUDA; ``{"error": ...}`` if the profiler fails (the other numbers
    stand)."""
    if device.type != "cuda":
        return None
    try:
        from torch.profiler import ProfilerActivity, profile
        sync(device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            run_step()
        sync(device)  # outside the profile: the benchmark's wait, not the step's
        waits = [e for e in prof.key_averages() if e.key in SYNC_CALLS]
        waited = sum(e.cpu_time_total for e in waits) / 1e6
        return {"share": waited / step_seconds, "ms": waited * 1e3,
                "calls": {e.key: e.count for e in waits}}
    except Exception as exc:  # noqa: BLE001 - a one-shot script: keep the other numbers
        return {"error": f"{type(exc).__name__}: {exc}"}


def time_phase(w, name: str, repeats: int) -> dict:
    device = w.trainer.device
    phase = enter_phase(w.trainer, name)
    opt, sched = w.trainer._optimizer(phase)

    def run_step():
        step_once(w, phase, opt, sched)

    for _ in range(2):  # warm-up: kernels, autotune, lazy state
        run_step()
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
                run_step()
            torch.cuda.set_sync_debug_mode("default")
            syncs += sum("synchroniz" in str(c.message) for c in caught)
        else:
            run_step()
    sync(device)
    seconds = (time.perf_counter() - t) / repeats
    out = {"seconds_per_step": seconds, "samples_per_s": w.batch_size / seconds,
           "host_syncs_per_step": syncs / repeats if device.type == "cuda" else None,
           "sync_wait": sync_wait(run_step, device, seconds)}
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
