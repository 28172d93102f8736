"""Benchmark (not a test): shapes per second, packed store vs OpenShape's per-shape files.

Generates ``--n`` per-shape ``.npy`` dicts with OpenShape's real shapes and dtypes (xyz and rgb
10000 x 3 float32, image_feat 12 x 1280 float32, thumbnail 1 x 1280, text / BLIP / Microsoft
caption features with their "original" and "prompt_avg" versions, two retrieval texts), packs
them with :func:`mmmixlab.data.packed.pack_triplets`, and then reads random batches both ways,
side by side in one run (batches alternate between the two readers, so drift hits both):

* ``raw``: the arrays of a batch (points, image and text features): ``np.load(...).item()`` per
  file vs one sorted slice of each memory map (``PackedTriplets.read_batch``);
* ``dataset``: training items through the two torch Datasets (subsample to 10k, OpenShape's
  augmentations, random view and text): ``OpenShapeTriplets`` vs ``PackedTriplets``;

each with a warm page cache (files just written) and a cold one (the files' cached pages
dropped with ``posix_fadvise(DONTNEED)`` before every batch, where the OS supports it).
Prints the rates, the ratios and the machine.

    python -m benchmarks.packed_store [--n 2000] [--batch 64] [--seconds 8] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

P, V, D = 10000, 12, 1280


def make_shape(rng: np.random.Generator, uid: str) -> dict:
    """One OpenShape-style dict with the released files' keys, shapes and dtypes."""
    def feat():
        f = rng.standard_normal((1, D), dtype=np.float32)
        return f / np.linalg.norm(f)

    xyz = rng.uniform(-1, 1, (P, 3)).astype(np.float32)
    return {"dataset": "Objaverse", "group": "000-000", "id": uid, "xyz": xyz,
            "rgb": rng.uniform(0, 1, (P, 3)).astype(np.float32),
            "image_feat": rng.standard_normal((V, D), dtype=np.float32),
            "thumbnail_feat": feat(),
            "text": [f"shape {uid}"],
            "text_feat": [{"original": feat(), "prompt_avg": feat()}],
            "blip_caption": "a blip caption", "blip_caption_feat": {"original": feat(),
                                                                    "prompt_avg": feat()},
            "msft_caption": "a msft caption", "msft_caption_feat": {"original": feat(),
                                                                    "prompt_avg": feat()},
            "retrieval_text": ["retrieved a", "retrieved b"],
            "retrieval_text_feat": [{"original": feat()}, {"original": feat()}]}


def generate(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = make_shape(rng, "base")
    paths = []
    for i in range(n):
        d = dict(base)  # fresh point clouds per shape; features shared (content is irrelevant)
        d["id"] = f"{i:032x}"
        d["xyz"] = rng.uniform(-1, 1, (P, 3)).astype(np.float32)
        path = folder / d["group"] / f"{d['id']}.npy"
        path.parent.mkdir(exist_ok=True)
        np.save(path, d, allow_pickle=True)
        paths.append(path)
    return paths


def drop_cache(paths) -> bool:
    """Evict the files' pages from the OS page cache (no root needed); False if unsupported."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def read_files_batch(paths, idx):
    pts, img, txt = [], [], []
    for i in idx:
        d = np.load(paths[i], allow_pickle=True).item()
        pts.append(np.concatenate([d["xyz"], d["rgb"]], 1))
        img.append(d["image_feat"])
        txt.append(np.concatenate([e["prompt_avg"] for e in d["text_feat"]]))
    return np.stack(pts), np.stack(img), txt


def side_by_side(readers: dict, n: int, batch: int, seconds: float, cold: dict | None,
                 seed: int) -> dict:
    """Alternate batches between readers for about ``seconds`` each; shapes/s per reader."""
    rng = np.random.default_rng(seed)
    spent = {k: 0.0 for k in readers}
    shapes = {k: 0 for k in readers}
    while min(spent.values()) < seconds:
        idx = rng.choice(n, batch, replace=False)
        for name, fn in readers.items():
            if cold is not None:
                drop_cache(cold[name])
            t = time.perf_counter()
            fn(idx)
            spent[name] += time.perf_counter() - t
            shapes[name] += batch
    return {k: shapes[k] / spent[k] for k in readers}


def run(n: int = 2000, batch: int = 64, seconds: float = 8.0, workdir: str | None = None,
        keep: bool = False, seed: int = 0) -> dict:
    from mmmixlab.data.openshape import OpenShapeTriplets
    from mmmixlab.data.packed import PackedTriplets, pack_triplets

    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mmmixlab-bench-"))
    t0 = time.time()
    try:
        paths = generate(root / "files", n, seed)
        t_gen = time.time() - t0
        t = time.time()
        pack_triplets(root / "files", root / "packed", progress=False)
        t_pack = time.time() - t
        os.sync() if hasattr(os, "sync") else None
        store = PackedTriplets(root / "packed", num_points=P, seed=seed)
        per_file = OpenShapeTriplets(root / "files", num_points=P, seed=seed)
        # the Datasets list the folder in sorted order; benchmark on the same order
        paths = per_file.files
        packed_files = sorted((root / "packed").glob("*.npy"))
        file_bytes = sum(p.stat().st_size for p in paths) / n
        packed_bytes = sum(p.stat().st_size for p in packed_files) / n
        raw = {"files": lambda idx: read_files_batch(paths, idx),
               "packed": lambda idx: store.read_batch(idx)}
        items = {"files": lambda idx: [per_file[int(i)] for i in idx],
                 "packed": lambda idx: [store[int(i)] for i in idx]}
        cold_sets = {"files": paths, "packed": packed_files}
        can_drop = drop_cache(paths[:1])
        results = {}
        for label, readers in (("raw", raw), ("dataset", items)):
            results[f"{label}_warm"] = side_by_side(readers, n, batch, seconds, None, seed)
            if can_drop:
                results[f"{label}_cold"] = side_by_side(readers, n, batch, seconds, cold_sets,
                                                        seed + 1)
        for r in results.values():
            r["ratio"] = r["packed"] / r["files"]
        return {"n": n, "batch": batch, "points": P, "views": V, "dim": D,
                "store_dtypes": "points float16, features float16",
                "bytes_per_shape": {"files": round(file_bytes), "packed": round(packed_bytes)},
                "seconds": {"generate": round(t_gen, 1), "pack": round(t_pack, 1),
                            "total": round(time.time() - t0, 1)},
                "results": results,
                "machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                            "cpu_count": os.cpu_count(), "numpy": np.__version__,
                            "processor": platform.processor() or platform.machine()}}
    finally:
        if not keep and not workdir:
            shutil.rmtree(root, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="number of generated shapes")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per reader and "
                                                               "setting")
    ap.add_argument("--dir", help="work folder (kept); default: a temp folder, removed")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    res = run(args.n, args.batch, args.seconds, args.dir)
    m = res["machine"]
    print(f"packed store vs per-shape files: {res['n']} shapes of {P} points, batch "
          f"{res['batch']}, on {m['platform']} ({m['cpu_count']} CPUs, {m['processor']})")
    print(f"  bytes per shape: files {res['bytes_per_shape']['files']:,}, packed "
          f"{res['bytes_per_shape']['packed']:,}; generate {res['seconds']['generate']} s, "
          f"pack {res['seconds']['pack']} s")
    for k, r in res["results"].items():
        print(f"  {k:13s} files {r['files']:9.1f} shapes/s   packed {r['packed']:9.1f} "
              f"shapes/s   ratio {r['ratio']:6.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
