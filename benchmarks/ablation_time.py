"""An ablation plan's run time and the demo's cold start: this checkout against an earlier
commit, side by side on one machine (issue 23).

Each side runs as users run it, a plain ``python -m mmmixlab.cli`` process with no thread or
OpenMP variables (``OMP_*``/``MKL_*``/``NUMBA_*`` are removed from the environment), the old
one from a temporary ``git worktree`` of ``--base``:

* ``ablate``: the README's Tables 3 + 4 plan (``--variants``, default all six rows) at
  ``--epochs`` per stage and ``--seeds`` seeds, old and new alternately (``--rounds`` times),
  each into a fresh ``--out`` folder over one shared, pre-built cache (world, frozen encoders
  and features are built before timing: the plan is what is timed);
* the plan at the README's size (30 epochs per stage, 5 seeds), extrapolated from the measured
  runs: each run's epochs at its phases' measured seconds per epoch plus its measured
  evaluation and set-up time, divided by the parallelism the side reached (run seconds / wall);
* ``--demo``: ``mmmixlab demo`` from an empty cache (world generation, frozen-encoder
  pre-training, features, both runs), old and new alternately.

``--new-set SECTION.FIELD=VALUE`` (repeatable) passes ``--set`` to the new side only, e.g.
``train.amp=bf16`` to time this checkout's CPU bf16 against the start commit's fp32.

    python -m benchmarks.ablation_time [--base REV] [--epochs 4] [--seeds 2] [--rounds 1]
                                       [--demo] [--quick] [--new-set train.amp=bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = "9202542"  # the commit issue 23's work started from
PLAN = "baseline,fm,im,mm-mixing,one-stage,baseline-2x"
README_EPOCHS, README_SEEDS = 30, 5
QUICK_WORLD = ["--set", "data.synth_train_per_class=8", "--set", "data.synth_test_per_class=4",
               "--set", "data.synth_scan_per_class=4", "--set", "clip.tiny_steps=50"]


def plain_env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMP_", "MKL_", "NUMBA_", "OPENBLAS_"))}
    env["PYTHONPATH"] = str(root)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def cli(root: Path, args: list, log: Path) -> float:
    """``python -m mmmixlab.cli ARGS`` from ``root``; wall seconds. Output goes to ``log``."""
    t = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "mmmixlab.cli", *args], cwd=root,
                              env=plain_env(root), stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args[:2])} failed in {root} (exit {proc.returncode}); see "
                         f"{log}:\n" + log.read_text()[-2000:])
    return time.perf_counter() - t


def plan_epochs(variant: str, e: int) -> dict:
    """Epochs per phase a run of the plan trains at stage length ``e`` (per-stage budget: the
    one-stage run trains both stages' epochs; an mm-mixing run takes its seed's fm run as stage
    1 on both sides)."""
    return {"baseline": {"baseline": e}, "baseline-2x": {"baseline": 2 * e},
            "fm": {"stage1": e}, "im": {"im": e}, "mm-mixing": {"stage2": e},
            "one-stage": {"joint": 2 * e}}[variant]


def run_costs(out: Path) -> dict:
    """From a finished ablation folder: seconds per epoch by phase, and per run the seconds
    besides its epochs (evaluation, set-up), by variant."""
    epoch_s, other_s, run_s = {}, {}, 0.0
    for m in sorted(out.glob("*/metrics.json")):
        d = json.loads(m.read_text())
        hist = [h for h in d.get("history", []) if "seconds" in h]
        if d["config"]["train"]["variant"] == "mm-mixing":
            hist = [h for h in hist if h["phase"] == "stage2"]  # stage 1 was the fm run's
        for h in hist:
            epoch_s.setdefault(h["phase"], []).append(h["seconds"])
        train = sum(h["seconds"] for h in hist)
        total = d["seconds"].get("train", train) + d["seconds"].get("eval", 0.0)
        other_s.setdefault(d["config"]["train"]["variant"], []).append(total - train)
        run_s += total
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return {"epoch_s": {k: mean(v) for k, v in epoch_s.items()},
            "other_s": {k: mean(v) for k, v in other_s.items()}, "run_s": run_s}


def extrapolate(costs: dict, wall: float, variants: list, epochs: int, seeds: int) -> dict:
    """The plan at ``epochs`` per stage and ``seeds`` seeds from measured per-epoch and per-run
    costs, at the parallelism measured (run seconds / wall)."""
    work = sum(sum(n * costs["epoch_s"][p] for p, n in plan_epochs(v, epochs).items())
               + costs["other_s"][v] for v in variants) * seeds
    parallel = max(1.0, costs["run_s"] / wall)
    return {"work_s": work, "parallel": parallel, "wall_s": work / parallel}


def side_sets(side: str, args) -> list:
    """``--set`` arguments for ``side``: ``--new-set`` values on the new side only."""
    return [a for v in (args.new_set if side == "new" else []) for a in ("--set", v)]


def ablation_rounds(old: Path, new: Path, work: Path, args) -> dict:
    cache = work / "cache"
    variants = args.variants.split(",")
    common = ["--cache", str(cache), "--device", "cpu"] + (QUICK_WORLD if args.quick else [])
    for side, root in (("old", old), ("new", new)):  # build the caches, untimed
        cli(root, ["features"] + common, work / f"features-{side}.log")
    walls = {"old": [], "new": []}
    costs = {}
    for r in range(args.rounds):
        for side, root in ((("old", old), ("new", new)) if r % 2 == 0
                           else (("new", new), ("old", old))):
            out = work / f"abl-{side}-{r}"
            walls[side].append(cli(root, ["ablate", "--variants", args.variants, "--seeds",
                                          str(args.seeds), "--epochs1", str(args.epochs),
                                          "--epochs2", str(args.epochs), "--out", str(out)]
                                   + common + side_sets(side, args),
                                   work / f"ablate-{side}-{r}.log"))
            costs.setdefault(side, []).append(run_costs(out))
            print(f"[ablation_time] round {r} {side}: {walls[side][-1]:.0f} s", flush=True)
    res = {"measured": {}, "readme_plan": {}}
    for side in walls:
        best = min(range(len(walls[side])), key=lambda i: walls[side][i])
        res["measured"][side] = {"wall_s": walls[side], "best_s": walls[side][best]}
        res["readme_plan"][side] = extrapolate(costs[side][best], walls[side][best], variants,
                                               README_EPOCHS, README_SEEDS)
        res["readme_plan"][side]["epoch_s"] = costs[side][best]["epoch_s"]
    res["measured"]["new/old"] = res["measured"]["new"]["best_s"] / res["measured"]["old"]["best_s"]
    res["readme_plan"]["new/old"] = (res["readme_plan"]["new"]["wall_s"]
                                     / res["readme_plan"]["old"]["wall_s"])
    return res


def demo_rounds(old: Path, new: Path, work: Path, args) -> dict:
    walls = {"old": [], "new": []}
    extra = (QUICK_WORLD + ["--epochs1", "2", "--epochs2", "2"]) if args.quick else []
    for r in range(args.rounds):
        for side, root in ((("old", old), ("new", new)) if r % 2 == 0
                           else (("new", new), ("old", old))):
            cache = work / f"demo-cache-{side}-{r}"
            walls[side].append(cli(root, ["demo", "--out", str(work / f"demo-{side}-{r}"),
                                          "--cache", str(cache), "--device", "cpu"] + extra
                                   + side_sets(side, args), work / f"demo-{side}-{r}.log"))
            shutil.rmtree(cache, ignore_errors=True)
            print(f"[ablation_time] demo round {r} {side}: {walls[side][-1]:.0f} s", flush=True)
    return {"old_s": walls["old"], "new_s": walls["new"],
            "new/old": min(walls["new"]) / min(walls["old"])}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default=BASE, help="the earlier commit (default: %(default)s)")
    p.add_argument("--variants", default=PLAN)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--demo", action="store_true", help="also time the demo's cold start")
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument("--quick", action="store_true", help="a shrunken world, 1 epoch, 3 rows")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (logs, runs)")
    p.add_argument("--new-set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="--set for the new side only (repeatable), e.g. train.amp=bf16")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.variants = 1, "baseline,fm,mm-mixing"
    work = Path(args.keep or tempfile.mkdtemp(prefix="ablation-time-"))
    work.mkdir(parents=True, exist_ok=True)
    old = work / "old-tree"
    if not old.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old),
                        args.base], check=True, capture_output=True)
    load0 = os.getloadavg()[0]
    res = {"base": args.base, "epochs": args.epochs, "seeds": args.seeds,
           "variants": args.variants, "new_set": args.new_set, "load_start": load0}
    try:
        if not args.no_ablation:
            res["ablation"] = ablation_rounds(old, ROOT, work, args)
        if args.demo:
            res["demo"] = demo_rounds(old, ROOT, work, args)
    finally:
        if not args.keep:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
                           capture_output=True)
            shutil.rmtree(work, ignore_errors=True)
    res["load_end"] = os.getloadavg()[0]
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
