"""Run every benchmark, print a table of ratios, write ``benchmarks/results-<device>.json``.

    python -m benchmarks.run_all [--device cpu|cuda] [--quick] [--only fps,mixing,...]

``make bench`` runs it with the defaults (``--device auto``: the GPU rows too when torch sees a
GPU). The CPU rows always run: the FPS comparison with open3d and the tiny-encoder mixing
overhead are CPU numbers by definition. ``<device>`` in the file name is ``cpu`` or the GPU
name as a slug (``nvidia-h100-80gb-hbm3``). The file holds at least
``fps.speedup_vs_open3d`` (open3d time / ours, batch 32, 10k -> 512) and
``mixing.overhead_ratio`` (stage-2 step time with mixing / without, tiny encoder on CPU).

``packed_store`` joins when ``benchmarks/packed_store.py`` exposes ``run``; ``threading_env``
(OpenMP wait policy, child processes) and ``candidates`` (proposed changes measured against the
library) run in full runs only. A benchmark that fails is
recorded with its error and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import time
import traceback

from .common import (
    BENCH_DIR,
    device_slug,
    machine_info,
    machine_line,
    resolve_device,
    table,
    write_json,
)

# (results key, module, runs in --quick)
BENCHMARKS = (
    ("fps", "benchmarks.fps", True),
    ("mixing", "benchmarks.mixing_overhead", True),
    ("feature_caching", "benchmarks.feature_caching", True),
    ("training", "benchmarks.training_throughput", True),
    ("sparseconv", "benchmarks.sparseconv", True),
    ("step_profile", "benchmarks.step_profile", False),
    ("step_flops", "benchmarks.step_flops", False),
    ("cpu_bf16", "benchmarks.cpu_bf16", False),
    ("shared_patches", "benchmarks.shared_patches", False),
    ("sorting", "benchmarks.sorting", False),
    ("released_encoder", "benchmarks.released_encoder", False),
    ("threading_env", "benchmarks.threading_env", False),
    ("candidates", "benchmarks.candidates", False),
)


def _run_packed_store(quick: bool) -> dict:
    mod = importlib.import_module("benchmarks.packed_store")
    params = inspect.signature(mod.run).parameters
    if "quick" in params:
        return mod.run(quick=quick)
    # Its own knobs: a smaller data set and shorter timing in quick runs.
    kwargs = {}
    if quick and "n" in params:
        kwargs["n"] = 400
    if quick and "seconds" in params:
        kwargs["seconds"] = 2.0
    return mod.run(**kwargs)


def summary_rows(results: dict) -> list:
    """(metric, value, note) rows of the headline numbers."""
    rows = []
    fps = results.get("fps", {})
    for c in fps.get("configs", []):
        rows.append([f"fps.speedup_vs_open3d B={c['B']} {c['N']}->{c['M']}",
                     c["speedup_vs_open3d"]["of_medians"],
                     f"ours {c['ours_ms']['median']} ms, open3d {c['open3d_ms']['median']} ms, "
                     f"identical={c['identical_to_open3d']}"])
    if "speedup_vs_open3d" in fps:
        rows.append(["fps.speedup_vs_open3d (headline)", fps["speedup_vs_open3d"],
                     "B=32, 10k->512"])
    if isinstance(fps.get("cuda"), dict):
        c = fps["cuda"]
        rows.append(["fps cuda ms per batch", c["ms_per_batch"]["median"],
                     f"B={c['B']} N={c['N']} M={c['M']}, {c['device_name']}"])
    mix = results.get("mixing", {})
    for label, c in mix.get("cases", {}).items():
        if "error" in c:
            rows.append([f"mixing {label}", None, c["error"][:80]])
            continue
        rows.append([f"mixing.overhead_ratio {label}", c["overhead_ratio"]["paired"],
                     f"mix {c['step_ms']['mix']['median']} ms / no_mix "
                     f"{c['step_ms']['no_mix']['median']} ms; ops ratio {c['ops_ratio']}"])
    if "overhead_ratio" in mix:
        rows.append(["mixing.overhead_ratio (headline)", mix["overhead_ratio"],
                     "tiny, 64x1024, CPU"])
    fc = results.get("feature_caching", {})
    for k, v in fc.get("rates", {}).items():
        rows.append([f"feature_caching {k} per s", v["per_s"], f"{v['items']} items"])
    tr = results.get("training", {})
    for label, c in tr.get("cases", {}).items():
        if "error" in c:
            rows.append([f"training {label}", None, c["error"][:80]])
            continue
        for s in ("stage1", "stage2"):
            rows.append([f"training {label} {s} samples/s", c["samples_per_s"][s],
                         f"batch {c['batch']}x{c['num_points']}, {c['precision']}, peak "
                         f"{c['peak_mib'][s]} MiB"])
    th = results.get("threading_env", {})
    for w, v in th.get("workloads", {}).items():
        for k in v:
            if k.startswith("default_over_"):
                setting = k[len("default_over_"):]
                rows.append([f"threading default/{setting} {w}", v[k],
                             f"{v['default_ms']} ms vs {v[setting + '_ms']} ms"])
    cand = results.get("candidates", {}).get("fps_numpy_io", {})
    for r in cand.get("fps", []):
        rows.append([f"candidate fps_numpy_io B={r['B']} {r['N']}->{r['M']} library/cand.",
                     r["library_over_candidate"]["paired"],
                     f"FPS after a torch op: {r['fps_ms']['library']} ms vs "
                     f"{r['fps_ms']['candidate']} ms (open3d {r['fps_ms']['open3d']} ms)"])
    if cand.get("step"):
        s = cand["step"]
        rows.append(["candidate fps_numpy_io tiny step library/cand.",
                     s["library_over_candidate"]["paired"],
                     f"{s['step_ms']['library']['median']} ms vs "
                     f"{s['step_ms']['candidate']['median']} ms"])
    ps = results.get("packed_store", {})
    for k, v in (ps.get("results") or {}).items():
        if isinstance(v, dict) and "ratio" in v:
            rows.append([f"packed_store {k} packed/files", round(v["ratio"], 3), "shapes/s"])
    for k, v in results.items():
        if isinstance(v, dict) and "error" in v:
            rows.append([f"{k} FAILED", None, v["error"].splitlines()[-1][:100]])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--quick", action="store_true",
                    help="fewer rounds, no paper-size CPU cases, no threading probe (~5 min)")
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(
        [k for k, _, _ in BENCHMARKS] + ["packed_store"]))
    ap.add_argument("--out", help="results file (default benchmarks/results-<device>.json)")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    only = set(args.only.split(",")) if args.only else None
    info = machine_info(device)
    print(f"machine: {machine_line(info)}", flush=True)
    results: dict = {"machine": info, "quick": args.quick, "device": device_slug(device),
                     "seconds": {}}
    t_all = time.perf_counter()
    todo = [(k, m) for k, m, in_quick in BENCHMARKS if (in_quick or not args.quick)]
    if (BENCH_DIR / "packed_store.py").exists():
        todo.append(("packed_store", None))
    for key, module in todo:
        if only is not None and key not in only:
            continue
        t0 = time.perf_counter()
        print(f"\n== {key} ==", flush=True)
        try:
            if module is None:
                res = _run_packed_store(args.quick)
                print({k: v for k, v in res.items() if k != "machine"})
            else:
                mod = importlib.import_module(module)
                res = mod.run(device=device, quick=args.quick)
                print(mod.report(res), flush=True)
        except Exception:  # noqa: BLE001 - one failed benchmark must not lose the others
            res = {"error": traceback.format_exc()}
            print(res["error"], file=sys.stderr, flush=True)
        results[key] = res
        results["seconds"][key] = round(time.perf_counter() - t0, 1)
    results["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    results["machine"]["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    path = write_json(results, args.out or BENCH_DIR / f"results-{device_slug(device)}.json")
    print("\n== summary ==")
    print(table(summary_rows(results), ["metric", "value", "note"]))
    print(f"\nmachine: {machine_line(info)}")
    print(f"wrote {path} in {results['seconds']['total']:.0f} s")
    return 1 if any(isinstance(v, dict) and "error" in v for v in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
