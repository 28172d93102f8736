"""The paper preset on streamed OpenShape-format data: samples/s per stage, peak GPU memory and
the share of step time spent waiting for data (issue: real data end to end, GPU section).

    python -m benchmarks.gpu_realdata [--shapes 3000] [--epochs 2] [--nproc 1] [--workers 8]
    python -m benchmarks.gpu_realdata --quick      # CPU check of the script: tiny encoder

A packed store of random OpenShape-sized rows (10,000 xyz+rgb points, 12 views and 8 texts of
1280-d features; ``benchmarks/stream_memory.write_store``) is trained on through the CLI a user
runs (``mmmixlab train --preset paper --data STORE``, under ``torchrun`` when ``--nproc`` > 1),
mm-mixing with both stages. Read back from the run: per stage the samples/s of the logged steps
(median), ``max_memory_mb`` (CUDA) and data wait = time blocked on the loader / (that + step
time), from ``metrics.json``'s history.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .stream_memory import write_store


def run(shapes: int = 3000, epochs: int = 2, nproc: int = 1, workers: int = 8,
        quick: bool = False, workdir=None) -> dict:
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mmmixlab-gpu-"))
    try:
        store = base / "store"
        points = 2048 if quick else 10000
        shapes = 96 if quick else shapes
        write_store(store, shapes, points, dim=64 if quick else 1280)
        cmd = ["-m", "mmmixlab.cli", "train", "--preset", "paper", "--data", str(store),
               "--out", str(base / "run"), "--variant", "mm-mixing", "--epochs1", str(epochs),
               "--epochs2", str(epochs), "--workers", str(workers)]
        if quick:
            cmd += ["--encoder", "pointbert-tiny", "--batch-size", "16", "--device", "cpu",
                    "--set", "data.num_points=512"]
        launcher = ([str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node",
                     str(nproc)] if nproc > 1 else [sys.executable])
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        r = subprocess.run(launcher + cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-3000:])
        metrics = json.loads((base / "run" / "metrics.json").read_text())
        steps = [json.loads(ln) for ln in (base / "run" / "log.jsonl").read_text().splitlines()]
        out = {"shapes": shapes, "points": points, "ranks": metrics["ranks"],
               "batch_per_rank": metrics["config"]["train"]["batch_size"],
               "encoder": metrics["config"]["train"]["encoder"], "stages": {}}
        for phase in ("stage1", "stage2"):
            hist = [h for h in metrics["history"] if h["phase"] == phase]
            rates = [s["samples_per_s"] for s in steps
                     if s.get("kind") == "step" and s["phase"] == phase]
            busy = sum(h["seconds"] for h in hist)
            wait = sum(h["data_seconds"] for h in hist)
            out["stages"][phase] = {
                "samples_per_s_median": statistics.median(rates[1:] or rates),
                "steps": len(rates), "data_wait_share": wait / (wait + busy),
                "max_memory_mb": max((h.get("max_memory_mb", 0) for h in hist), default=0)}
        return out
    finally:
        if not workdir:
            shutil.rmtree(base, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    print(json.dumps(run(a.shapes, a.epochs, a.nproc, a.workers, a.quick), indent=1))


if __name__ == "__main__":
    main()
