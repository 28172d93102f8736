"""The project's on-disk dataset format: (point cloud, rendered views, captions) triplets.

A dataset is a folder::

    manifest.json   {"format": "mmmixlab-triplets", "version": 1, "num_shapes": S,
                     "points_per_shape": P, "channels": 6, "views": K, "image_size": H,
                     "class_names": [...] | null, "info": {...}}
    points.npy      (S, P, 6) float32: xyz + rgb in [0, 1]
    images.npy      (S, K, H, H, 3) uint8
    meta.jsonl      one line per shape: {"name", "captions": [...], "label": int | null,
                                         "category": str | null}

Writes are atomic (a temp folder next to the target, renamed into place); loads memory-map the
arrays and fail with an error naming the file at fault. In memory, a missing label is -1.
"""

from __future__ import annotations

import contextvars
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["FORMAT", "VERSION", "TripletSet", "load_triplets", "write_triplets"]

FORMAT = "mmmixlab-triplets"
VERSION = 1
# Above this many points (S * P) the finiteness of a memory-mapped points array is NOT checked
# on load: it would read the whole file (hundreds of GB for OpenShape-sized data) just to open it.
FINITE_CHECK_LIMIT = 50_000_000
_CHUNK = 1_000_000  # points per chunk when checking a memory-mapped array

_check_finite_on_init = contextvars.ContextVar("_check_finite_on_init", default=True)


def _nonfinite_shapes(points: np.ndarray) -> list[int]:
    """Indices of the shapes holding NaN/inf, checked in chunks (memory-map friendly)."""
    s = points.shape[0]
    step = max(1, _CHUNK // max(points.shape[1], 1))
    bad: list[int] = []
    for i in range(0, s, step):
        block = np.asarray(points[i:i + step])
        ok = np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
        bad.extend((np.flatnonzero(~ok) + i).tolist())
        if len(bad) >= 10:
            break
    return bad


@dataclass
class TripletSet:
    """S triplets: points (S, P, 6) float32, images (S, K, H, W, 3) uint8, captions, names.

    labels: int64 (S,) with -1 for "no label", or None; class_names: the label vocabulary.
    """

    points: np.ndarray
    images: np.ndarray
    captions: list[list[str]]
    names: list[str]
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self._validate(check_finite=_check_finite_on_init.get())

    def _validate(self, check_finite: bool = True):
        pts = self.points
        if not isinstance(pts, np.ndarray):
            raise TypeError(f"points must be a numpy array, got {type(pts).__name__}")
        if pts.ndim != 3 or pts.shape[2] != 6:
            raise ValueError(f"points must have shape (S, P, 6), got {pts.shape}")
        if pts.dtype != np.float32:
            if not np.issubdtype(pts.dtype, np.floating) or isinstance(pts, np.memmap):
                raise ValueError(f"points must be float32, got dtype {pts.dtype}")
            self.points = pts = pts.astype(np.float32)
        img = self.images
        if not isinstance(img, np.ndarray):
            raise TypeError(f"images must be a numpy array, got {type(img).__name__}")
        if img.ndim != 5 or img.shape[4] != 3:
            raise ValueError(f"images must have shape (S, K, H, W, 3), got {img.shape}")
        if img.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got dtype {img.dtype}")
        s = pts.shape[0]
        lengths = {"points": s, "images": img.shape[0], "captions": len(self.captions),
                   "names": len(self.names)}
        if self.labels is not None:
            lengths["labels"] = len(self.labels)
        for k, v in lengths.items():
            if v != s:
                raise ValueError(f"length mismatch: points has {s} shapes but {k} has {v}")
        caps = []
        for i, c in enumerate(self.captions):
            if isinstance(c, str) or not all(isinstance(t, str) for t in c):
                raise ValueError(f"captions[{i}] must be a list of strings, got {c!r:.80}")
            caps.append(list(c))
        self.captions = caps
        names = list(self.names)
        for i, n in enumerate(names):
            if not isinstance(n, str):
                raise TypeError(f"names[{i}] must be a string, got {n!r}")
        self.names = names
        if self.class_names is not None:
            cn = list(self.class_names)
            if not all(isinstance(c, str) for c in cn) or len(set(cn)) != len(cn):
                raise ValueError(f"class_names must be distinct strings, got {cn!r:.200}")
            self.class_names = cn
        if self.labels is not None:
            lab = np.asarray(self.labels)
            if lab.ndim != 1 or (lab.size and not np.issubdtype(lab.dtype, np.integer)):
                raise ValueError(f"labels must be a 1-D integer array, got shape {lab.shape} "
                                 f"dtype {lab.dtype}")
            lab = lab.astype(np.int64)
            hi = len(self.class_names) if self.class_names is not None else None
            bad = (lab < -1) | ((lab >= hi) if hi is not None else False)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                rng_txt = f"[0, {hi})" if hi is not None else ">= 0"
                raise ValueError(f"labels[{i}] = {int(lab[i])} is out of range {rng_txt} "
                                 f"(-1 means unlabelled)")
            self.labels = lab
        if not isinstance(self.info, dict):
            raise TypeError(f"info must be a dict, got {type(self.info).__name__}")
        big_mmap = isinstance(pts, np.memmap) and s * pts.shape[1] > FINITE_CHECK_LIMIT
        if check_finite and not big_mmap:
            bad = _nonfinite_shapes(pts)
            if bad:
                raise ValueError(f"points contains NaN or inf values (shapes {bad[:10]})")

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self.points.shape[0])

    def __getitem__(self, i) -> dict:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"TripletSet indices must be integers (use select() for subsets), "
                            f"got {type(i).__name__}")
        n = len(self)
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"index {i} out of range for {n} triplets")
        lab = None
        if self.labels is not None and self.labels[j] >= 0:
            lab = int(self.labels[j])
        return {"points": self.points[j], "images": self.images[j],
                "captions": self.captions[j], "name": self.names[j], "label": lab}

    @property
    def num_points(self) -> int:
        return int(self.points.shape[1])

    @property
    def num_views(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])

    def category(self, i: int) -> str | None:
        if self.labels is None or self.class_names is None or self.labels[i] < 0:
            return None
        return self.class_names[int(self.labels[i])]

    def select(self, indices) -> TripletSet:
        """A new in-memory TripletSet holding the given shapes (in that order)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return TripletSet(points=np.asarray(self.points[idx]), images=np.asarray(self.images[idx]),
                          captions=[list(self.captions[i]) for i in idx],
                          names=[self.names[i] for i in idx],
                          labels=None if self.labels is None else self.labels[idx].copy(),
                          class_names=None if self.class_names is None else list(self.class_names),
                          info=dict(self.info))


# ---------------------------------------------------------------------- writing

def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"info value of type {type(o).__name__} is not JSON serializable")


def write_triplets(ts: TripletSet, root: str | Path) -> Path:
    """Write ``ts`` to the folder ``root`` atomically; returns ``root`` as a Path.

    An existing ``root`` is replaced only if it is a triplet dataset (holds manifest.json) or is
    an empty folder; anything else raises FileExistsError and is left untouched.
    """
    if not isinstance(ts, TripletSet):
        raise TypeError(f"ts must be a TripletSet, got {type(ts).__name__}")
    root = Path(root)
    if root.exists() or root.is_symlink():
        if not root.is_dir() or root.is_symlink():
            raise FileExistsError(f"{root} exists and is not a folder; refusing to overwrite it")
        if not (root / "manifest.json").is_file() and any(root.iterdir()):
            raise FileExistsError(f"{root} exists and is not a triplet dataset (no "
                                  f"manifest.json); refusing to overwrite it")
    manifest = {"format": FORMAT, "version": VERSION, "num_shapes": len(ts),
                "points_per_shape": ts.num_points, "channels": 6, "views": ts.num_views,
                "image_size": ts.image_size, "class_names": ts.class_names, "info": ts.info}
    try:
        manifest_text = json.dumps(manifest, indent=1, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"cannot write the manifest of {root}: {e}") from e
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        np.save(tmp / "points.npy", ts.points, allow_pickle=False)
        np.save(tmp / "images.npy", ts.images, allow_pickle=False)
        with open(tmp / "meta.jsonl", "w", encoding="utf-8") as f:
            for i in range(len(ts)):
                lab = None if ts.labels is None or ts.labels[i] < 0 else int(ts.labels[i])
                f.write(json.dumps({"name": ts.names[i], "captions": ts.captions[i],
                                    "label": lab, "category": ts.category(i)},
                                   ensure_ascii=False) + "\n")
        # the manifest goes last: a folder without one is never a complete dataset
        with open(tmp / "manifest.json", "w", encoding="utf-8") as f:
            f.write(manifest_text)
        if root.exists():
            old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(root, old)
            try:
                os.rename(tmp, root)
            except BaseException:
                os.rename(old, root)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


# ---------------------------------------------------------------------- loading

def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file missing from the triplet dataset")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: corrupt .npy header ({e})") from e
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = path.stat().st_size - offset
    if have < need:
        raise ValueError(f"{path}: truncated .npy file: {have} data bytes, expected {need} "
                         f"for shape {shape} {dtype}")
    try:
        use_mmap = mmap and need > 0
        arr = np.load(path, mmap_mode="r" if use_mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: corrupt or truncated .npy file ({e})") from e
    return arr


def load_triplets(root: str | Path, mmap: bool = True) -> TripletSet:
    """Load a dataset written by :func:`write_triplets` (arrays memory-mapped by default)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"triplet dataset folder not found: {root}")
    man_path = root / "manifest.json"
    if not man_path.is_file():
        raise FileNotFoundError(f"{man_path} is missing: {root} is not a mmmixlab triplet "
                                f"dataset (or its write was interrupted)")
    try:
        man = json.loads(man_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{man_path}: not valid JSON ({e})") from e
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        tag = man.get("format") if isinstance(man, dict) else None
        raise ValueError(f"{man_path}: format tag is {tag!r}, expected {FORMAT!r}")
    if not isinstance(man.get("version"), int) or man["version"] > VERSION:
        raise ValueError(f"{man_path}: unsupported version {man.get('version')!r} "
                         f"(this mmmixlab reads version <= {VERSION})")
    dims = {}
    for k in ("num_shapes", "points_per_shape", "channels", "views", "image_size"):
        v = man.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{man_path}: {k} must be a non-negative integer, got {v!r}")
        dims[k] = v
    if dims["channels"] != 6:
        raise ValueError(f"{man_path}: channels must be 6, got {dims['channels']}")
    s = dims["num_shapes"]
    class_names = man.get("class_names")
    if class_names is not None and (not isinstance(class_names, list)
                                    or not all(isinstance(c, str) for c in class_names)):
        raise ValueError(f"{man_path}: class_names must be a list of strings or null")
    info = man.get("info", {})
    if not isinstance(info, dict):
        kind = type(info).__name__
        raise ValueError(f"{man_path}: info must be an object, got {kind}")  # noqa: TRY004

    pts_path, img_path = root / "points.npy", root / "images.npy"
    points = _load_npy(pts_path, mmap)
    want = (s, dims["points_per_shape"], 6)
    if points.shape != want:
        raise ValueError(f"{pts_path}: shape {points.shape} does not match manifest.json "
                         f"(num_shapes={s}, points_per_shape={want[1]}, channels=6)")
    if points.dtype != np.float32:
        raise ValueError(f"{pts_path}: dtype {points.dtype}, expected float32")
    images = _load_npy(img_path, mmap)
    h = dims["image_size"]
    want = (s, dims["views"], h, h, 3)
    if images.shape != want:
        raise ValueError(f"{img_path}: shape {images.shape} does not match manifest.json "
                         f"(num_shapes={s}, views={dims['views']}, image_size={h}) -> "
                         f"expected {want}")
    if images.dtype != np.uint8:
        raise ValueError(f"{img_path}: dtype {images.dtype}, expected uint8")

    meta_path = root / "meta.jsonl"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: file missing from the triplet dataset")
    lines = meta_path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != s:
        raise ValueError(f"{meta_path}: {len(lines)} lines but manifest.json says "
                         f"num_shapes={s}")
    names, captions, labels = [], [], []
    for i, line in enumerate(lines):
        where = f"{meta_path}: line {i + 1}"
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{where}: not valid JSON ({e})") from e
        if not isinstance(rec, dict) or not isinstance(rec.get("name"), str):
            raise ValueError(f"{where}: needs a string 'name'")  # noqa: TRY004
        caps = rec.get("captions", [])
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise ValueError(f"{where}: 'captions' must be a list of strings")
        lab = rec.get("label")
        if lab is not None:
            if not isinstance(lab, int) or isinstance(lab, bool):
                raise ValueError(f"{where}: label must be an integer or null, got {lab!r}")
            if lab < 0 or (class_names is not None and lab >= len(class_names)):
                n_cls = "no" if class_names is None else len(class_names)
                raise ValueError(f"{where}: label {lab} is out of range for the {n_cls} "
                                 f"class_names of manifest.json")
            cat = rec.get("category")
            if cat is not None and class_names is not None and class_names[lab] != cat:
                raise ValueError(f"{where}: category {cat!r} disagrees with label {lab} "
                                 f"({class_names[lab]!r} in manifest.json)")
        names.append(rec["name"])
        captions.append(caps)
        labels.append(-1 if lab is None else lab)
    label_arr = None if all(v < 0 for v in labels) or not labels else np.asarray(labels, np.int64)

    # Finiteness: checked here (naming the file) unless the memory-mapped array is huge
    # (S * P > FINITE_CHECK_LIMIT), where reading it all would defeat the memory map.
    if not (isinstance(points, np.memmap) and s * dims["points_per_shape"] > FINITE_CHECK_LIMIT):
        bad = _nonfinite_shapes(points)
        if bad:
            raise ValueError(f"{pts_path}: NaN or inf values in shapes {bad[:10]}")
    token = _check_finite_on_init.set(False)
    try:
        return TripletSet(points=points, images=images, captions=captions, names=names,
                          labels=label_arr, class_names=class_names, info=info)
    except ValueError as e:
        raise ValueError(f"{root}: {e}") from e
    finally:
        _check_finite_on_init.reset(token)
