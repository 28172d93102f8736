"""Thread-pool settings: the same work under the default OpenMP wait policy and alternatives.

torch (its bundled libgomp) and numba (OpenMP threading layer, the system libgomp) each keep a
pool of OpenMP worker threads, and by default an idle worker spins for a while before it
sleeps. On a machine with few cores, shared with other jobs (or in a VM, where a spinning vCPU
is costly), spinning workers of one pool take the cores the other pool, or the other
operations' fork/join, needs. The wait policy is read when the OpenMP runtime starts, so each
setting runs in its own child process; children alternate (default, passive, default, ...)
and each reports medians of:

* ``fps``: ``farthest_point_sample`` at B=32, 10k -> 512 (the numba kernel);
* ``input_mix``: one PointCutMix-K ``input_mix`` at 64 x 1024 x 6 (many small torch ops);
* ``stage2_step``: a tiny stage-2 step with mixing (forward + backward), as in
  :mod:`benchmarks.mixing_overhead`.

Settings: ``default`` (nothing set), ``omp_passive`` (``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP
workers of both pools sleep at once) and ``numba_workqueue`` (``NUMBA_THREADING_LAYER=
workqueue``: numba's own non-spinning pool instead of OpenMP; torch unchanged) and
``torch_1_thread`` (``OMP_NUM_THREADS=1``: torch single-threaded; numba keeps its threads).
Ratio = default time / the setting's time (> 1: the setting is faster here).

    python -m benchmarks.threading_env [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import torch

from .common import REPO_DIR, log, standalone, table

SETTINGS = {"default": {}, "omp_passive": {"OMP_WAIT_POLICY": "PASSIVE"},
            "numba_workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
            "torch_1_thread": {"OMP_NUM_THREADS": "1"}}
CLEARED = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "NUMBA_THREADING_LAYER",
           "OMP_NUM_THREADS")


def child(reps: int) -> dict:
    """The workloads, timed in this process (run by the parent under one setting)."""
    import time

    from mmmixlab.mixing import input_mix, sample_lambda
    from mmmixlab.ops import farthest_point_sample

    from .fps import make_clouds
    from .mixing_overhead import _mix_step
    from .workloads import enter_phase, make_workload

    x, start = make_clouds(32, 10000, 3)
    farthest_point_sample(x[:2], 16, start[:2])  # compile / load the cached kernel
    g = torch.Generator().manual_seed(0)
    p = torch.rand(64, 1024, 6, generator=g)
    partner = torch.randperm(64, generator=g)
    lam = sample_lambda(1.0, 64, generator=g)
    wl = make_workload("pointbert-tiny", 64, 1024, torch.device("cpu"), align_unmixed=False)
    enter_phase(wl.trainer, "stage2")
    fns = {"fps": lambda: farthest_point_sample(x, 512, start),
           "input_mix": lambda: input_mix(p, p[partner], lam, "knn"),
           "stage2_step": _mix_step(wl.trainer, wl.batch)}
    for f in fns.values():  # warm-up
        f()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run(device: torch.device | None = None, quick: bool = False) -> dict:
    device = device if device is not None else torch.device("cpu")
    pairs = 1 if quick else 2
    reps = 3
    per: dict = {s: [] for s in SETTINGS}
    for i in range(pairs):
        for setting, extra in SETTINGS.items():
            log(f"[threading] child {i + 1}/{pairs}: {setting} ...")
            env = {k: v for k, v in os.environ.items() if k not in CLEARED}
            env.update(extra)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_DIR),
                                                              env.get("PYTHONPATH")]))
            out = subprocess.run([sys.executable, "-m", "benchmarks.threading_env", "--child",
                                  str(reps)], cwd=REPO_DIR, env=env, capture_output=True,
                                 text=True, timeout=600)
            if out.returncode != 0:
                raise RuntimeError(f"threading_env child failed ({setting}):\n{out.stderr[-2000:]}")
            per[setting].append(json.loads(out.stdout.strip().splitlines()[-1]))
    res = {"settings": {k: " ".join(f"{a}={b}" for a, b in v.items()) or "defaults"
                        for k, v in SETTINGS.items()},
           "children_per_setting": pairs, "reps_per_child": reps, "workloads": {}}
    for w in per["default"][0]:
        d = statistics.median(c[w] for c in per["default"])
        row = {"default_ms": round(d * 1e3, 2)}
        for setting in SETTINGS:
            if setting == "default":
                continue
            t = statistics.median(c[w] for c in per[setting])
            row[f"{setting}_ms"] = round(t * 1e3, 2)
            row[f"default_over_{setting}"] = round(d / t, 3)
        res["workloads"][w] = row
    return res


def report(res: dict) -> str:
    others = [s for s in SETTINGS if s != "default"]
    rows = [[w, v["default_ms"]] + [x for s in others for x in (v[f"{s}_ms"],
                                                                 v[f"default_over_{s}"])]
            for w, v in res["workloads"].items()]
    head = ["workload", "default ms"] + [x for s in others for x in (f"{s} ms", f"default/{s}")]
    return "\n".join([
        "Thread-pool settings (child processes alternating; ratio > 1: the setting is faster)",
        table(rows, head)])


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]))), flush=True)
    else:
        standalone("threading_env", run, report)
