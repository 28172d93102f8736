"""Resident memory while streaming packed stores of growing size (issue: real data end to end).

    python -m benchmarks.stream_memory [--shapes 1500,12000] [--points 10000] [--workers 2]

For each size, a packed store in the real layout (OpenShape-sized rows: 10,000 xyz+rgb points in
float16, 12 views and up to 8 texts of 1280-d features) is written to a temporary folder, then a
fresh Python process (a plain ``import mmmixlab``, no environment variables) streams one epoch
of it through :class:`mmmixlab.streaming.StreamBatches` with DataLoader workers, sampling the
resident set size (RSS) of itself plus its workers every 50 ms. Side by side, the same epoch is
read through the memory-mapped reader (``PackedTriplets.read_batch``), whose touched pages count
as the process's resident memory until the kernel evicts them.

Printed: store size, peak RSS of each reader, and the ratio store size / streaming peak RSS; the
claim is that the streaming peak does not grow with the store.
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

import numpy as np

CHILD = r"""
import json, sys, threading, time, os
import psutil, torch
mode, root, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
me = psutil.Process()
peak = [0]
stop = threading.Event()
def total():
    procs = [me] + me.children(recursive=True)
    s = 0
    for p in procs:
        try:
            s += p.memory_info().rss
        except psutil.Error:
            pass
    return s
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], total())
        time.sleep(0.05)
base = total()
threading.Thread(target=sample, daemon=True).start()
t = time.perf_counter()
n = 0
if mode == "stream":
    from mmmixlab.streaming import PackedSource, StreamBatches
    sb = StreamBatches(PackedSource(root), num_points=1024, batch_size=64, num_workers=workers)
    order = sb.epoch_order(torch.Generator().manual_seed(0))
    for b in sb.iterate(order):
        n += b.points.shape[0]
else:
    from mmmixlab.data.packed import PackedTriplets
    store = PackedTriplets(root)
    order = torch.randperm(len(store), generator=torch.Generator().manual_seed(0)).numpy()
    for s in range(0, len(order) - 63, 64):
        out = store.read_batch(order[s:s + 64])
        n += out["points"].shape[0]
stop.set()
peak[0] = max(peak[0], total())
print(json.dumps({"shapes": n, "seconds": time.perf_counter() - t, "peak_rss": peak[0],
                  "baseline_rss": base}))
"""


def write_store(root: Path, shapes: int, points: int, dim: int = 1280, views: int = 12,
                texts: int = 8, seed: int = 0) -> int:
    """A packed store in mmmixlab's layout (``data/packed.py``), written row block by block."""
    from mmmixlab.data.packed import FORMAT, VERSION

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    specs = {"points": ((shapes, points, 6), np.float16),
             "image_feat": ((shapes, views, dim), np.float16),
             "thumbnail_feat": ((shapes, dim), np.float16),
             "thumbnail_mask": ((shapes,), np.bool_),
             "text_feat": ((shapes, texts, dim), np.float16),
             "text_mask": ((shapes, texts), np.bool_)}
    maps = {k: np.lib.format.open_memmap(root / f"{k}.npy", mode="w+", dtype=dt, shape=sh)
            for k, (sh, dt) in specs.items()}
    block = 256
    for s in range(0, shapes, block):
        e = min(s + block, shapes)
        maps["points"][s:e] = rng.uniform(-1, 1, (e - s, points, 6)).astype(np.float16)
        maps["image_feat"][s:e] = rng.normal(size=(e - s, views, dim)).astype(np.float16)
        maps["text_feat"][s:e] = rng.normal(size=(e - s, texts, dim)).astype(np.float16)
        maps["text_mask"][s:e, :2] = True
    for m in maps.values():
        m.flush()
    del maps
    with open(root / "index.jsonl", "w") as f:
        for i in range(shapes):
            f.write(json.dumps({"name": f"s{i}", "path": f"s{i}.npy", "dataset": "bench",
                                "group": "0", "num_texts": 2}) + "\n")
    (root / "manifest.json").write_text(json.dumps({
        "format": FORMAT, "version": VERSION, "num_shapes": shapes, "points_per_shape": points,
        "views": views, "max_texts": texts, "dim": dim, "points_dtype": "float16",
        "feat_dtype": "float16", "text_version": "prompt_avg", "skipped": []}))
    return sum(p.stat().st_size for p in root.iterdir())


def drop_cache(root: Path) -> None:
    """Evict the store's pages, so each reader starts cold (posix_fadvise DONTNEED)."""
    for p in root.iterdir():
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(mode: str, root: Path, workers: int) -> dict:
    drop_cache(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, "-c", CHILD, mode, str(root), str(workers)],
                       capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(sizes=(1500, 12000), points: int = 10000, workers: int = 2, workdir=None) -> dict:
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mmmixlab-stream-"))
    rows = []
    try:
        for shapes in sizes:
            root = base / f"store-{shapes}"
            t = time.perf_counter()
            size = write_store(root, shapes, points)
            write_s = time.perf_counter() - t
            stream = measure("stream", root, workers)
            mmap = measure("mmap", root, 0)
            rows.append({"shapes": shapes, "store_bytes": size, "write_seconds": write_s,
                         "stream": stream, "mmap": mmap,
                         "store_over_stream_peak": size / stream["peak_rss"]})
            shutil.rmtree(root)
    finally:
        if not workdir:
            shutil.rmtree(base, ignore_errors=True)
    return {"rows": rows, "workers": workers, "points": points}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="1500,12000")
    ap.add_argument("--points", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    res = run(tuple(int(s) for s in args.shapes.split(",")), args.points, args.workers)
    mb = 1 / 2 ** 20
    print(f"{'shapes':>7s} {'store MB':>9s} {'stream peak RSS MB':>19s} {'shapes/s':>9s} "
          f"{'mmap peak RSS MB':>17s} {'store / stream peak':>20s}")
    for r in res["rows"]:
        print(f"{r['shapes']:7d} {r['store_bytes'] * mb:9.0f} "
              f"{r['stream']['peak_rss'] * mb:19.0f} "
              f"{r['stream']['shapes'] / r['stream']['seconds']:9.0f} "
              f"{r['mmap']['peak_rss'] * mb:17.0f} {r['store_over_stream_peak']:20.1f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
