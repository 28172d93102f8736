"""glibc keeping freed memory (``train.retain_freed_memory``, on by default) against glibc's
default, and the retained heap on huge pages against 4 KB pages, on the README plan's steps
(issue 23).

By default glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh
``mmap``, returns it on ``free`` and trims the heap's free top, so the kernel zero-fills the
same activations' pages again every step. ``mmmixlab.device.retain_freed_memory`` turns mmap
off and raises the trim threshold to 1 GiB: the next step reuses the freed blocks. It then
advises the heap for transparent huge pages (``huge_pages=True``, the default). The settings
are process-wide, so each side runs in its own child process, as ``ablate``'s workers do: a
plain ``python`` that builds a ``pointbert-tiny`` trainer (batch 32 x 1,024, one thread, the
tiny world's feature width, ``--amp`` as a run has it: ``auto``) and times ``--steps`` steps
of each phase after two warm-up steps. Sides:

- ``default``: glibc's defaults;
- ``retain-4k``: freed memory retained, the heap on 4 KB pages;
- ``retain``: freed memory retained, the heap on huge pages (what ``Trainer.fit`` does).

Their order rotates each round for ``--rounds`` rounds; ``--side-by-side`` runs two children of
the same side at once (the plan's two runs on 2 cores).

Reported per phase and side: the median over rounds of the mean step's wall time, its system
time and minor page faults; the child's peak resident memory; retain / default and
retain / retain-4k (< 1: faster). The arithmetic is the same, so the numbers are the same
bits (``tests/test_train.py``).

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
side, steps, phases, amp = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
out = {}
for name, variant in phases.items():
    w = make_workload("pointbert-tiny", 32, 1024, torch.device("cpu"), variant=variant, amp=amp,
                      retain_memory=side != "default", huge_pages=side == "retain")
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
from mmmixlab.device import heap_on_huge_pages
out["huge_heap"] = heap_on_huge_pages()
print(json.dumps(out))
"""


SIDES = ("default", "retain-4k", "retain")


def child(side: str, steps: int, phases: dict, copies: int, amp: str) -> list:
    """``copies`` children of ``side`` at once; their results."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMP_", "MKL_", "MALLOC_", "OPENBLAS_"))}
    env["PYTHONPATH"] = str(REPO_DIR)
    argv = [sys.executable, "-c", CHILD, side, str(steps), json.dumps(phases), amp]
    procs = [subprocess.Popen(argv, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(copies)]
    outs = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"the {side} child failed (exit {p.returncode})")
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    return outs


def run(rounds: int, steps: int, phases: dict, copies: int, amp: str = "auto") -> dict:
    got = {side: [] for side in SIDES}
    for r in range(rounds):
        for side in SIDES[r % 3:] + SIDES[:r % 3]:
            got[side] += child(side, steps, phases, copies, amp)
            print(f"[freed_memory] round {r} {side} done", file=sys.stderr, flush=True)
    med = lambda side, ph, key: statistics.median(o[ph][key] for o in got[side])
    rows = {ph: {side: {k: med(side, ph, k) for k in ("wall_ms", "sys_ms", "faults")}
                 for side in got} for ph in phases}
    for r in rows.values():
        r["retain/default"] = r["retain"]["wall_ms"] / r["default"]["wall_ms"]
        r["retain/retain-4k"] = r["retain"]["wall_ms"] / r["retain-4k"]["wall_ms"]
    peak = {side: max(o["peak_rss_mb"] for o in got[side]) for side in got}
    huge = all(o["huge_heap"] for o in got["retain"])
    return {"rounds": rounds, "steps": steps, "copies_at_once": copies, "amp": amp,
            "phases": rows, "peak_rss_mb": peak, "huge_heap": huge, "raw": got}


def report(res: dict) -> str:
    rows = []
    for ph, r in res["phases"].items():
        rows.append([ph] + [f"{r[side]['wall_ms']:.0f}" for side in SIDES]
                    + [f"{r['retain/default']:.3f}", f"{r['retain/retain-4k']:.3f}"]
                    + [f"{r[side]['sys_ms']:.1f}" for side in SIDES]
                    + [f"{r[side]['faults']:.0f}" for side in SIDES])
    head = (["phase"] + [f"{side} ms" for side in SIDES] + ["retain/default", "retain/retain-4k"]
            + [f"{side} sys ms" for side in SIDES] + [f"{side} faults" for side in SIDES])
    peak = ", ".join(f"{side} {res['peak_rss_mb'][side]:.0f}" for side in SIDES)
    return (table(rows, head) + f"\npeak RSS (MB): {peak}; heap on huge pages in the retain "
            f"children: {res['huge_heap']}; amp {res['amp']}; {res['copies_at_once']} "
            f"child(ren) at once, {res['rounds']} rounds x {res['steps']} steps")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--side-by-side", action="store_true",
                   help="two children of a side at once (the plan's two runs on 2 cores)")
    p.add_argument("--phases", help="comma-separated phases (default: all five)")
    p.add_argument("--amp", default="auto", help="train.amp of the children (auto: as a run)")
    p.add_argument("--quick", action="store_true", help="3 rounds x 3 steps, two phases")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    phases = PHASES
    if args.quick:
        args.rounds, args.steps = 3, 3
        phases = {k: PHASES[k] for k in ("baseline", "stage2")}
    if args.phases:
        unknown = set(args.phases.split(",")) - set(PHASES)
        if unknown:
            p.error(f"--phases: unknown {sorted(unknown)}; choose from {sorted(PHASES)}")
        phases = {k: PHASES[k] for k in args.phases.split(",")}
    print(f"[freed_memory] machine: {machine_line(machine_info(torch.device('cpu')))}", flush=True)
    res = run(args.rounds, args.steps, phases, 2 if args.side_by_side else 1, args.amp)
    print(report(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
