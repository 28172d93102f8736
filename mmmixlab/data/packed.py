"""A packed store for OpenShape-scale training data: a few memory-mapped arrays.

Reading 875k small pickled files per epoch costs one open + unpickle + copy per shape and
leaves the file system's metadata cache thrashing; a packed store turns each read into a slice
of a memory map. :func:`pack_triplets` converts a folder (or split file, or list) of OpenShape
per-shape ``.npy`` dicts once, in one streaming pass (nothing is ever loaded whole), and
:class:`PackedTriplets` reads it lazily as a torch Dataset.

Layout of ``out_dir`` (``S`` shapes, ``P`` points, ``V`` views, ``T`` text slots, ``D`` width)::

    manifest.json         {"format": "mmmixlab-packed-triplets", "version": 1, "num_shapes": S,
                           "points_per_shape": P, "views": V, "max_texts": T, "dim": D,
                           "points_dtype", "feat_dtype", "text_version", "skipped": [...],
                           "text_entries_truncated": n, "shapes_without_text": n, ...}
    points.npy            (S, P, 6) xyz + rgb, float16 (default) or float32, as stored (y-up,
                          unnormalized: the loader's transform runs at read time)
    image_feat.npy        (S, V, D) feat_dtype
    thumbnail_feat.npy    (S, D) feat_dtype, and thumbnail_mask.npy (S,) bool
    text_feat.npy         (S, T, D) feat_dtype, and text_mask.npy (S, T) bool
    index.jsonl           one line per shape: {"name", "path", "dataset", "group", "num_texts"}

Rules: a shape with more than ``max_texts`` text entries keeps the first ``max_texts`` (in
:mod:`mmmixlab.data.openshape`'s order) and the dropped count is recorded in the manifest (and
warned about), never silently. Files that fail to read are skipped with their reason in
``manifest["skipped"]`` (``on_error="skip"``, the default at this scale) or stop the pack
(``on_error="raise"``). Points are cast to float16 only after checking they fit its range.

Atomic and resumable: the arrays are written into ``.{name}.partial`` next to ``out_dir`` with a
``progress.json`` checkpoint (updated every ``checkpoint_every`` files, after flushing); an
interrupted pack started again with the same inputs continues from the checkpoint, and the
folder is renamed to ``out_dir`` (manifest written last) only when complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..fileio import atomic_write
from .openshape import TEXT_VERSIONS, list_openshape_files, make_item, read_openshape_npy, subsample

__all__ = ["FORMAT", "PackedTriplets", "pack_triplets"]

FORMAT = "mmmixlab-packed-triplets"
VERSION = 1
_FP16_MAX = 65000.0
_DTYPES = {"float16": np.float16, "float32": np.float32}


# ---------------------------------------------------------------------------------- writing

def _read_one(path: str, index: int, text_version: str, num_points: int | None, seed: int):
    """Worker: one file -> ("ok", arrays) or ("error", reason). Never raises."""
    try:
        rec = read_openshape_npy(path, text_version)
        xyz, rgb = rec.xyz, rec.rgb
        if num_points is not None and xyz.shape[0] != num_points:
            if xyz.shape[0] < num_points:
                return "error", (f"{xyz.shape[0]} points, fewer than num_points={num_points}")
            sel = np.sort(subsample(xyz.shape[0], num_points, np.random.default_rng((seed, index))))
            xyz, rgb = xyz[sel], rgb[sel]
        return "ok", {"points": np.concatenate([xyz, rgb], axis=1),
                      "image_feat": rec.image_feat, "thumbnail_feat": rec.thumbnail_feat,
                      "text_feats": rec.text_feats, "name": rec.name,
                      "dataset": rec.dataset, "group": rec.group}
    except (OSError, ValueError) as e:
        return "error", str(e)
    except Exception as e:  # noqa: BLE001 (a corrupt pickle raises anything; report it)
        return "error", f"{type(e).__name__}: {e}"


def _fingerprint(files, config: dict) -> str:
    h = hashlib.sha1(json.dumps(config, sort_keys=True).encode())
    for f in files:
        h.update(str(f).encode() + b"\0")
    return h.hexdigest()


def _write_json_atomic(obj, path: Path) -> None:
    atomic_write(path, json.dumps(obj, indent=1))


def _shrink_npy(path: Path, rows: int) -> None:
    """Cut a (N, ...) .npy file to its first ``rows`` rows in place (header rewritten, file
    truncated); left as is when the new header would not have the same length."""
    with open(path, "rb+") as f:
        version = np.lib.format.read_magic(f)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = reader(f)
        offset = f.tell()
        if shape[0] == rows:
            return
        buf = io.BytesIO()
        writer = (np.lib.format.write_array_header_1_0 if version == (1, 0)
                  else np.lib.format.write_array_header_2_0)
        writer(buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran,
                     "shape": (rows,) + tuple(shape[1:])})
        header = buf.getvalue()  # magic string and version included
        if len(header) != offset:
            return
        f.seek(0)
        f.write(header)
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        f.truncate(offset + rows * row_bytes)


class _Arrays:
    """The output memory maps of a pack in progress."""

    NAMES = ("points", "image_feat", "thumbnail_feat", "thumbnail_mask", "text_feat",
             "text_mask")

    def __init__(self, folder: Path, dims: dict, mode: str):
        s, p, v, t, d = (dims[k] for k in ("alloc", "points", "views", "max_texts", "dim"))
        pdt, fdt = _DTYPES[dims["points_dtype"]], _DTYPES[dims["feat_dtype"]]
        specs = {"points": ((s, p, 6), pdt), "image_feat": ((s, v, d), fdt),
                 "thumbnail_feat": ((s, d), fdt), "thumbnail_mask": ((s,), np.bool_),
                 "text_feat": ((s, t, d), fdt), "text_mask": ((s, t), np.bool_)}
        self.maps = {}
        for name, (shape, dtype) in specs.items():
            path = folder / f"{name}.npy"
            if mode == "w+":
                self.maps[name] = np.lib.format.open_memmap(path, mode="w+", dtype=dtype,
                                                            shape=shape)
            else:
                arr = np.load(path, mmap_mode="r+")
                if arr.shape != shape or arr.dtype != dtype:
                    raise ValueError(f"{path}: holds {arr.dtype} {arr.shape}, expected "
                                     f"{np.dtype(dtype)} {shape}; delete the partial folder")
                self.maps[name] = arr

    def flush(self):
        for m in self.maps.values():
            m.flush()

    def close(self):
        self.flush()
        self.maps.clear()


def _iter_results(files, start: int, workers: int, args: tuple, window: int = 64):
    """(index, path, status, payload) in file order, reading in a process pool when
    ``workers > 1`` (a bounded window of files in flight, so memory stays flat)."""
    if workers <= 1:
        for i in range(start, len(files)):
            yield (i, files[i]) + _read_one(str(files[i]), i, *args)
        return
    import multiprocessing as mp

    # never fork a parent that may hold threads (torch, BLAS): forkserver, else spawn
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["mmmixlab.data.packed"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        pending = []
        nxt = start
        while nxt < len(files) or pending:
            while nxt < len(files) and len(pending) < window * workers:
                pending.append((nxt, ex.submit(_read_one, str(files[nxt]), nxt, *args)))
                nxt += 1
            i, fut = pending.pop(0)
            yield (i, files[i]) + fut.result()


def pack_triplets(src, out_dir, *, num_points: int | None = None,
                  points_dtype: str = "float16", feat_dtype: str = "float16",
                  max_texts: int = 8, text_version: str = "prompt_avg",
                  on_error: str = "skip", workers: int = 1, checkpoint_every: int = 512,
                  overwrite: bool = False, seed: int = 0, progress: bool = True) -> dict:
    """Pack OpenShape per-shape files into ``out_dir`` (see the module docstring).

    src: a folder of ``.npy`` dicts, an OpenShape split ``.json``, a text file of paths or a list.
    num_points: keep a seeded random subset of this many points per shape (``None`` keeps all
      and requires every shape to have the first shape's count; others are skipped/raise).
    Returns the manifest dict.
    """
    from ..progress import bar as tqdm

    if points_dtype not in _DTYPES or feat_dtype not in _DTYPES:
        raise ValueError(f"dtypes must be one of {list(_DTYPES)}, got {points_dtype!r}, "
                         f"{feat_dtype!r}")
    if text_version not in TEXT_VERSIONS:
        raise ValueError(f"text_version must be one of {TEXT_VERSIONS}, got {text_version!r}")
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if int(max_texts) < 1:
        raise ValueError(f"max_texts must be >= 1, got {max_texts}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not (out_dir / "manifest.json").is_file() and any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir} exists and is not a packed store; refusing to "
                                  f"overwrite it")
        if not overwrite and (out_dir / "manifest.json").is_file():
            raise FileExistsError(f"{out_dir} already holds a packed store (overwrite=True to "
                                  f"replace it)")
    files = list_openshape_files(src)
    config = {"num_points": num_points, "points_dtype": points_dtype, "feat_dtype": feat_dtype,
              "max_texts": int(max_texts), "text_version": text_version, "seed": seed,
              "num_files": len(files)}
    fp = _fingerprint(files, config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial"
    prog_path = partial / "progress.json"
    state = None
    if prog_path.is_file():
        try:
            state = json.loads(prog_path.read_text(encoding="utf-8"))
        except ValueError:
            state = None
        if state is None or state.get("fingerprint") != fp:
            if progress:
                print(f"pack: {partial} belongs to other inputs or settings; starting over")
            state = None
    if state is None:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    args = (text_version, num_points, seed)
    arrays = None
    index_f = None
    dims = state["dims"] if state else None
    done = state["done"] if state else 0
    rows = state["rows"] if state else 0
    skipped = list(state["skipped"]) if state else []
    truncated = state.get("truncated", 0) if state else 0
    no_text = state.get("no_text", 0) if state else 0
    if state:
        arrays = _Arrays(partial, dims, "r+")
        lines = (partial / "index.jsonl").read_text(encoding="utf-8").splitlines()[:rows]
        (partial / "index.jsonl").write_text("".join(ln + "\n" for ln in lines),
                                             encoding="utf-8")
    index_f = open(partial / "index.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed below)

    def checkpoint():
        if arrays is not None:
            arrays.flush()
        index_f.flush()
        os.fsync(index_f.fileno())
        _write_json_atomic({"fingerprint": fp, "dims": dims, "done": done, "rows": rows,
                            "skipped": skipped, "truncated": truncated, "no_text": no_text},
                           prog_path)

    bar = tqdm(total=len(files), initial=done, desc="pack", unit="shape", disable=not progress)
    try:
        for i, path, status, payload in _iter_results(files, done, int(workers), args):
            if status == "ok" and dims is None:
                p0, v0, d0 = (payload["points"].shape[0], payload["image_feat"].shape[0],
                              payload["image_feat"].shape[1])
                dims = {"alloc": len(files) - i, "points": p0, "views": v0, "dim": d0,
                        "max_texts": int(max_texts), "points_dtype": points_dtype,
                        "feat_dtype": feat_dtype, "first": i}
                arrays = _Arrays(partial, dims, "w+")
            if status == "ok":
                problem = None
                pts = payload["points"]
                if pts.shape[0] != dims["points"]:
                    problem = (f"{pts.shape[0]} points, but the store holds {dims['points']} "
                               f"per shape (mixed point counts; pass num_points=...)")
                elif payload["image_feat"].shape != (dims["views"], dims["dim"]):
                    problem = (f"image_feat has shape {payload['image_feat'].shape}, the store "
                               f"holds ({dims['views']}, {dims['dim']})")
                elif points_dtype == "float16" and np.abs(pts[:, :3]).max() > _FP16_MAX:
                    problem = "coordinates exceed the float16 range (pack with float32)"
                if problem:
                    status, payload = "error", problem
            if status == "error":
                reason = f"{path}: {payload}" if str(path) not in str(payload) else str(payload)
                if on_error == "raise":
                    raise ValueError(reason)
                skipped.append({"path": str(path), "reason": reason})
            else:
                m = arrays.maps
                m["points"][rows] = payload["points"]
                m["image_feat"][rows] = payload["image_feat"]
                if payload["thumbnail_feat"] is not None:
                    m["thumbnail_feat"][rows] = payload["thumbnail_feat"]
                    m["thumbnail_mask"][rows] = True
                tf = payload["text_feats"]
                k = min(len(tf), dims["max_texts"])
                truncated += len(tf) - k
                no_text += int(len(tf) == 0)
                if k:
                    m["text_feat"][rows, :k] = tf[:k]
                    m["text_mask"][rows, :k] = True
                index_f.write(json.dumps({"name": payload["name"], "path": str(path),
                                          "dataset": payload["dataset"],
                                          "group": payload["group"], "num_texts": len(tf)},
                                         ensure_ascii=False) + "\n")
                rows += 1
            done = i + 1
            bar.update(1)
            if done % max(1, int(checkpoint_every)) == 0:
                checkpoint()
        checkpoint()
    finally:
        bar.close()
        index_f.close()
    if rows == 0:
        raise ValueError(f"pack: none of the {len(files)} files could be read; first problems: "
                         + "; ".join(s["reason"] for s in skipped[:3]))
    arrays.close()
    for name in _Arrays.NAMES:
        _shrink_npy(partial / f"{name}.npy", rows)
    manifest = {"format": FORMAT, "version": VERSION, "num_shapes": rows,
                "points_per_shape": dims["points"], "views": dims["views"],
                "max_texts": dims["max_texts"], "dim": dims["dim"],
                "points_dtype": points_dtype, "feat_dtype": feat_dtype,
                "text_version": text_version, "num_files": len(files),
                "skipped": skipped, "text_entries_truncated": truncated,
                "shapes_without_text": no_text, "source": str(src) if not isinstance(
                    src, (list, tuple)) else f"{len(files)} listed files",
                "subsampled_to": num_points, "seed": seed}
    _write_json_atomic(manifest, partial / "manifest.json")
    prog_path.unlink()
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out_dir, old)
        os.rename(partial, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(partial, out_dir)
    if truncated:
        warnings.warn(f"pack: {truncated} text entries beyond max_texts={max_texts} were not "
                      f"packed (recorded in {out_dir / 'manifest.json'})", stacklevel=2)
    if progress:
        print(f"pack: {rows} shapes -> {out_dir}; {len(skipped)} skipped"
              + "".join(f"\n  skipped {s['reason']}" for s in skipped[:20]))
    return manifest


# ---------------------------------------------------------------------------------- reading

class PackedTriplets:
    """A lazily read packed store (a torch Dataset; items as :class:`OpenShapeTriplets`).

    The memory maps are opened on first access in each process (DataLoader workers open their
    own), so pickling the dataset to workers copies no data. ``num_points`` defaults to the
    stored count; items are subsampled and augmented at read time exactly as
    :class:`mmmixlab.data.openshape.OpenShapeTriplets` does, with randomness that depends only
    on (seed, epoch, index).
    """

    def __init__(self, root, num_points: int | None = None, augment: bool = True,
                 up_swap: bool = True, normalize: bool = True, rotate: bool = True,
                 rgb_drop_prob: float = 0.5, rgb_drop_value: float = 0.4,
                 thumbnail_prob: float = 0.0, seed: int = 0):
        self.root = Path(root)
        man_path = self.root / "manifest.json"
        if not man_path.is_file():
            raise FileNotFoundError(f"{man_path} is missing: {self.root} is not a packed store "
                                    f"(or its packing did not finish)")
        try:
            man = json.loads(man_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{man_path}: not valid JSON ({e})") from e
        if not isinstance(man, dict) or man.get("format") != FORMAT:
            raise ValueError(f"{man_path}: format tag is "
                             f"{man.get('format') if isinstance(man, dict) else None!r}, "
                             f"expected {FORMAT!r}")
        if not isinstance(man.get("version"), int) or man["version"] > VERSION:
            raise ValueError(f"{man_path}: unsupported version {man.get('version')!r}")
        self.manifest = man
        self.num_points = int(num_points or man["points_per_shape"])
        self.augment = augment
        self.transform = {"up_swap": up_swap, "normalize": normalize,
                          "rotate": rotate and augment,
                          "rgb_drop_prob": rgb_drop_prob if augment else 0.0,
                          "rgb_drop_value": rgb_drop_value}
        self.thumbnail_prob = float(thumbnail_prob) if augment else 0.0
        self.seed = int(seed)
        self.epoch = 0
        self._maps = None
        self._pid = None
        self._offsets = None
        self._open()  # check the files now, so a broken store fails at construction

    def _open(self) -> dict:
        if self._maps is not None and self._pid == os.getpid():
            return self._maps
        man = self.manifest
        s = man["num_shapes"]
        expect = {"points": (man["points_per_shape"], 6),
                  "image_feat": (man["views"], man["dim"]), "thumbnail_feat": (man["dim"],),
                  "thumbnail_mask": (), "text_feat": (man["max_texts"], man["dim"]),
                  "text_mask": (man["max_texts"],)}
        maps = {}
        for name, tail in expect.items():
            path = self.root / f"{name}.npy"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: file missing from the packed store")
            try:
                arr = np.load(path, mmap_mode="r")
            except (ValueError, OSError) as e:
                raise ValueError(f"{path}: corrupt or truncated .npy file ({e})") from e
            if arr.ndim != 1 + len(tail) or arr.shape[0] < s or tuple(arr.shape[1:]) != tail:
                raise ValueError(f"{path}: shape {arr.shape}, expected ({s}, "
                                 f"{', '.join(map(str, tail))}) per manifest.json")
            maps[name] = arr
        self._maps, self._pid = maps, os.getpid()
        return maps

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_maps"] = None
        state["_pid"] = None
        state["_offsets"] = None
        return state

    def __len__(self) -> int:
        return int(self.manifest["num_shapes"])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _line_offsets(self) -> np.ndarray:
        """Byte offset of each line of index.jsonl (8 bytes a shape, not a list of strings)."""
        if self._offsets is None:
            path = self.root / "index.jsonl"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: file missing from the packed store")
            data = np.fromfile(path, dtype=np.uint8)
            ends = np.flatnonzero(data == 10)
            if len(ends) != len(self):
                raise ValueError(f"{path}: {len(ends)} lines for {len(self)} shapes")
            self._offsets = np.concatenate([[0], ends + 1]).astype(np.int64)
        return self._offsets

    def entry(self, index: int) -> dict:
        """The index.jsonl record of shape ``index`` (name, source path, dataset, group)."""
        off = self._line_offsets()
        with open(self.root / "index.jsonl", "rb") as f:
            f.seek(int(off[index]))
            return json.loads(f.read(int(off[index + 1] - off[index])).decode("utf-8"))

    @property
    def names(self) -> list[str]:
        path = self.root / "index.jsonl"
        return [json.loads(ln)["name"] for ln in path.read_text(encoding="utf-8").splitlines()]

    def read(self, index: int) -> dict:
        """Raw arrays of shape ``index`` (float32): points (P, 6), image_feat (V, D),
        thumbnail_feat (D,) or None, text_feats (T_i, D) (only the real entries)."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} shapes")
        index = int(index) % n
        m = self._open()
        mask = np.asarray(m["text_mask"][index])
        return {"points": np.asarray(m["points"][index], dtype=np.float32),
                "image_feat": np.asarray(m["image_feat"][index], dtype=np.float32),
                "thumbnail_feat": (np.asarray(m["thumbnail_feat"][index], dtype=np.float32)
                                   if m["thumbnail_mask"][index] else None),
                "text_feats": np.asarray(m["text_feat"][index][mask], dtype=np.float32)}

    def read_batch(self, indices) -> dict:
        """Raw float32 arrays of many shapes at once: points (B, P, 6), image_feat (B, V, D),
        text_feat (B, T, D) and text_mask (B, T), read in row order, returned in the given
        order."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        m = self._open()
        srt = idx[order]
        out = {}
        for k in ("points", "image_feat", "text_feat", "text_mask"):
            block = m[k][srt]  # one pass over the file in row order
            if block.dtype == np.float16:
                block = block.astype(np.float32)
            out[k] = block[inv] if not np.array_equal(order, np.arange(len(idx))) else block
        return out

    def __getitem__(self, index: int) -> dict:
        r = self.read(index)
        i = int(index) % len(self)
        rng = np.random.default_rng((self.seed, self.epoch, i))
        pts = r["points"]
        return make_item(pts[:, :3], pts[:, 3:], r["image_feat"], r["thumbnail_feat"],
                         r["text_feats"], i, self.entry(i)["name"],
                         rng, self.num_points, self.augment, self.transform,
                         self.thumbnail_prob)
