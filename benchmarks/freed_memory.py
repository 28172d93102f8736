"""glibc keeping freed memory (``train.retain_freed_memory``, on by default) against glibc's
default, on the README plan's steps (issue 23).

By default glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh
``mmap``, returns it on ``free`` and trims the heap's free top, so the kernel zero-fills the
same activations' pages again every step. ``mmmixlab.device.retain_freed_memory`` turns mmap
off and raises the trim threshold to 1 GiB: the next step reuses the freed blocks. The setting
is process-wide, so each side runs in its own child process, as ``ablate``'s workers do: a
plain ``python`` that builds a ``pointbert-tiny`` trainer (batch 32 x 1,024, one thread, the
tiny world's feature width) and times ``--steps`` steps of each phase after two warm-up
steps. Sides alternate (default, retained, retained, default, ...) for ``--rounds`` rounds;
``--side-by-side`` runs two children of the same side at once (the plan's two runs on 2 cores).

Reported per phase and side: the median over rounds of the mean step's wall time, its system
time and minor page faults, the child's peak resident memory, and retained / default (< 1:
retaining is faster). The arithmetic is the same, so the numbers are the same bits
(``tests/test_train.py``).

    python -m benchmarks.freed_memory [--rounds 4] [--steps 12] [--side-by-side] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import torch

from .common import REPO_DIR, machine_info, machine_line, table

PHASES = {"baseline": "baseline", "stage1": "mm-mixing", "stage2": "mm-mixing",
          "im": "im", "joint": "one-stage"}

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from benchmarks.training_throughput import train_step
from benchmarks.workloads import enter_phase, make_workload
retain, steps, phases = sys.argv[1] == "retain", int(sys.argv[2]), json.loads(sys.argv[3])
out = {}
for name, variant in phases.items():
    w = make_workload("pointbert-tiny", 32, 1024, torch.device("cpu"), variant=variant,
                      retain_memory=retain)
    tr = w.trainer
    opt = tr._optimizer(enter_phase(tr, name))
    step = lambda: train_step(tr, enter_phase(tr, name), w.batch, *opt)
    step(); step()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out[name] = {"wall_ms": 1e3 * (t1 - t0) / steps,
                 "sys_ms": 1e3 * (r1.ru_stime - r0.ru_stime) / steps,
                 "faults": (r1.ru_minflt - r0.ru_minflt) / steps}
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child(side: str, steps: int, phases: dict, copies: int) -> list:
    """``copies`` children of ``side`` at once; their results."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMP_", "MKL_", "MALLOC_", "OPENBLAS_"))}
    env["PYTHONPATH"] = str(REPO_DIR)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, side, str(steps), json.dumps(phases)],
                              cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(copies)]
    outs = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"the {side} child failed (exit {p.returncode})")
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    return outs


def run(rounds: int, steps: int, phases: dict, copies: int) -> dict:
    got = {"default": [], "retain": []}
    for r in range(rounds):
        for side in (("default", "retain") if r % 2 == 0 else ("retain", "default")):
            got[side] += child(side, steps, phases, copies)
            print(f"[freed_memory] round {r} {side} done", file=sys.stderr, flush=True)
    med = lambda side, ph, key: statistics.median(o[ph][key] for o in got[side])
    rows = {ph: {side: {k: med(side, ph, k) for k in ("wall_ms", "sys_ms", "faults")}
                 for side in got} for ph in phases}
    for r in rows.values():
        r["retain/default"] = r["retain"]["wall_ms"] / r["default"]["wall_ms"]
    peak = {side: max(o["peak_rss_mb"] for o in got[side]) for side in got}
    return {"rounds": rounds, "steps": steps, "copies_at_once": copies, "phases": rows,
            "peak_rss_mb": peak, "raw": got}


def report(res: dict) -> str:
    rows = []
    for ph, r in res["phases"].items():
        d, k = r["default"], r["retain"]
        rows.append([ph, f"{d['wall_ms']:.0f}", f"{k['wall_ms']:.0f}", f"{r['retain/default']:.3f}",
                     f"{d['sys_ms']:.1f}", f"{k['sys_ms']:.1f}", f"{d['faults']:.0f}",
                     f"{k['faults']:.0f}"])
    head = ["phase", "default ms", "retained ms", "retained/default", "default sys ms",
            "retained sys ms", "default faults", "retained faults"]
    return (table(rows, head) + f"\npeak RSS (MB): default {res['peak_rss_mb']['default']:.0f}, "
            f"retained {res['peak_rss_mb']['retain']:.0f}; {res['copies_at_once']} child(ren) "
            f"at once, {res['rounds']} rounds x {res['steps']} steps")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--side-by-side", action="store_true",
                   help="two children of a side at once (the plan's two runs on 2 cores)")
    p.add_argument("--quick", action="store_true", help="2 rounds x 3 steps, two phases")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    phases = PHASES
    if args.quick:
        args.rounds, args.steps = 2, 3
        phases = {k: PHASES[k] for k in ("baseline", "stage2")}
    print(f"[freed_memory] machine: {machine_line(machine_info(torch.device('cpu')))}", flush=True)
    res = run(args.rounds, args.steps, phases, 2 if args.side_by_side else 1)
    print(report(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
