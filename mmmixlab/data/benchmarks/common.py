"""What every benchmark reader shares: the dataset types and the checks on what is read.

:class:`PointDataset` is what :func:`mmmixlab.data.load_benchmark` returns for every release;
:class:`LazyPoints` stands in for the point array when a set is too large for memory
(Objaverse-LVIS). The helpers read the file types the releases use (HDF5 shards, class-name
lists, pickled ``.npy`` dicts through the restricted unpickler), check labels against the class
list, and bring every cloud to OpenShape's evaluation frame (y/z swap, unit sphere, optional
constant rgb). Each error names the file and the problem.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..openshape import normalize_unit_sphere
from ..prompts import class_prompts

# The 64 templates ULIP averages for ModelNet40 zero-shot (its data/templates.json,
# "modelnet40_64"); OpenShape's "prompt_avg" features use the same set. Kept as published,
# including the one template without a final period.
ULIP_TEMPLATES: list[str] = [
    "a point cloud model of {}.", "There is a {} in the scene.", "There is the {} in the scene.",
    "a photo of a {} in the scene.", "a photo of the {} in the scene.",
    "a photo of one {} in the scene.", "itap of a {}.", "itap of my {}.", "itap of the {}.",
    "a photo of a {}.", "a photo of my {}.", "a photo of the {}.", "a photo of one {}.",
    "a photo of many {}.", "a good photo of a {}.", "a good photo of the {}.",
    "a bad photo of a {}.", "a bad photo of the {}.", "a photo of a nice {}.",
    "a photo of the nice {}.", "a photo of a cool {}.", "a photo of the cool {}.",
    "a photo of a weird {}.", "a photo of the weird {}.", "a photo of a small {}.",
    "a photo of the small {}.", "a photo of a large {}.", "a photo of the large {}.",
    "a photo of a clean {}.", "a photo of the clean {}.", "a photo of a dirty {}.",
    "a photo of the dirty {}.", "a bright photo of a {}.", "a bright photo of the {}.",
    "a dark photo of a {}.", "a dark photo of the {}.", "a photo of a hard to see {}.",
    "a photo of the hard to see {}.", "a low resolution photo of a {}.",
    "a low resolution photo of the {}.", "a cropped photo of a {}.", "a cropped photo of the {}.",
    "a close-up photo of a {}.", "a close-up photo of the {}.", "a jpeg corrupted photo of a {}.",
    "a jpeg corrupted photo of the {}.", "a blurry photo of a {}.", "a blurry photo of the {}.",
    "a pixelated photo of a {}.", "a pixelated photo of the {}.",
    "a black and white photo of the {}.", "a black and white photo of a {}", "a plastic {}.",
    "the plastic {}.", "a toy {}.", "the toy {}.", "a plushie {}.", "the plushie {}.",
    "a cartoon {}.", "the cartoon {}.", "an embroidered {}.", "the embroidered {}.",
    "a painting of the {}.", "a painting of a {}.",
]
assert len(ULIP_TEMPLATES) == 64


# ---------------------------------------------------------------------------------- datasets

class LazyPoints:
    """A read-on-index (N, P, C) float32 array of point clouds kept in per-shape files.

    ``loader(i)`` returns shape ``i`` as a (P, C) float32 array. Integer, slice and integer-array
    indexing read only the shapes asked for; ``np.asarray`` reads them all (avoid at 46k shapes:
    iterate in batches instead).
    """

    def __init__(self, loader: Callable[[int], np.ndarray], length: int, num_points: int,
                 channels: int):
        self._loader = loader
        self._len = int(length)
        self.shape = (self._len, int(num_points), int(channels))
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    def __len__(self) -> int:
        return self._len

    def _one(self, i: int) -> np.ndarray:
        j = i + self._len if i < 0 else i
        if not 0 <= j < self._len:
            raise IndexError(f"index {i} out of range for {self._len} shapes")
        pts = self._loader(j)
        if pts.shape != self.shape[1:]:
            raise ValueError(f"shape {j} has points of shape {pts.shape}, expected "
                             f"{self.shape[1:]} (mixed point counts; pass num_points=...)")
        return pts

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return self._one(int(idx))
        if isinstance(idx, slice):
            idx = range(*idx.indices(self._len))
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if idx.ndim != 1:
            raise IndexError("LazyPoints supports int, slice and 1-D index arrays")
        out = np.empty((len(idx),) + self.shape[1:], dtype=np.float32)
        for k, i in enumerate(idx.tolist()):
            out[k] = self._one(int(i))
        return out

    def __array__(self, dtype=None, copy=None):
        arr = self[:]
        return arr if dtype is None else arr.astype(dtype)

    def __repr__(self) -> str:
        return f"LazyPoints(shape={self.shape}, dtype=float32)"


@dataclass
class PointDataset:
    """A labelled evaluation set.

    points: (N, P, C) float32 (C = 3, or 6 = xyz + rgb in [0, 1]); a numpy array or, for sets
      too large for memory, a :class:`LazyPoints`.
    labels: (N,) int64 in [0, len(class_names)).
    class_names: the dataset's canonical label order (ModelNet40's shape_names.txt, ScanObjectNN's
      15 classes, sorted LVIS categories).
    prompt_templates: ``"... {} ..."`` templates whose text features are averaged per class
      (ULIP-style) to build zero-shot classifiers; see :meth:`prompts`.
    """

    points: object
    labels: np.ndarray
    class_names: list[str]
    name: str
    split: str
    prompt_templates: list[str] = field(default_factory=lambda: list(ULIP_TEMPLATES))
    names: list[str] | None = None
    normals: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    # Per-shape files that carry frozen features (Objaverse-LVIS from OpenShape): shape index
    # -> first view's image feature / first text feature, filled as the shapes are read, so
    # retrieval needs no second pass over 46k files.
    modal: dict | None = None

    def __post_init__(self):
        shape = tuple(self.points.shape)
        if len(shape) != 3 or shape[2] not in (3, 6):
            raise ValueError(f"{self.name}: points must have shape (N, P, 3 or 6), got {shape}")
        self.labels = np.asarray(self.labels)
        if self.labels.shape != (shape[0],) or (
                self.labels.size and not np.issubdtype(self.labels.dtype, np.integer)):
            raise ValueError(f"{self.name}: labels must be ({shape[0]},) integers, got "
                             f"{self.labels.dtype} {self.labels.shape}")
        self.labels = self.labels.astype(np.int64)
        c = len(self.class_names)
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= c):
            raise ValueError(f"{self.name}: labels span [{self.labels.min()}, "
                             f"{self.labels.max()}] but there are {c} class names")
        if self.names is not None and len(self.names) != shape[0]:
            raise ValueError(f"{self.name}: {len(self.names)} names for {shape[0]} shapes")

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def __getitem__(self, i) -> dict:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"PointDataset indices must be integers, got {type(i).__name__}")
        n = len(self)
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"index {i} out of range for {n} shapes")
        return {"points": np.asarray(self.points[j]), "label": int(self.labels[j]),
                "name": self.names[j] if self.names is not None else str(j)}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prompts(self) -> list[list[str]]:
        """Per class, every prompt template filled with the class's display name."""
        return [class_prompts(c, self.prompt_templates) for c in self.class_names]

    def with_rgb(self, value: float = 0.4) -> PointDataset:
        """6-channel copy of a colourless set: rgb set to ``value`` (OpenShape uses 0.4)."""
        if self.points.shape[2] == 6:
            return self
        pts = np.asarray(self.points)
        rgb = np.full(pts.shape, value, dtype=np.float32)
        return PointDataset(np.concatenate([pts, rgb], axis=2), self.labels, self.class_names,
                            self.name, self.split, self.prompt_templates, self.names,
                            self.normals, dict(self.info))


# ---------------------------------------------------------------------------------- helpers

def _finish_points(xyz: np.ndarray, rgb: np.ndarray | None, swap_yz: bool,
                   normalize: bool, rgb_fill: float | None, where: str) -> np.ndarray:
    xyz = np.ascontiguousarray(xyz, dtype=np.float32)
    if not np.isfinite(xyz).all():
        bad = np.flatnonzero(~np.isfinite(xyz).reshape(len(xyz), -1).all(1))
        raise ValueError(f"{where}: NaN or inf coordinates in shapes {bad[:10].tolist()}")
    if swap_yz:
        xyz = xyz[..., [0, 2, 1]]
    if normalize:
        xyz = normalize_unit_sphere(xyz)
    if rgb is None and rgb_fill is not None:
        rgb = np.full(xyz.shape, rgb_fill, dtype=np.float32)
    if rgb is None:
        return xyz
    return np.concatenate([xyz, np.asarray(rgb, dtype=np.float32)], axis=-1)


def _read_names(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class-name file missing")
    try:
        names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file of class names ({e})") from e
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"{path}: class-name file is empty")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{path}: duplicate class names {dup[:5]}")
    return names


def _check_labels(labels: np.ndarray, num_classes: int, where: str, names_file=None):
    if labels.size == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        extra = f" ({names_file} lists {num_classes} class names)" if names_file else ""
        raise ValueError(f"{where}: labels span [{lo}, {hi}], out of range for "
                         f"{num_classes} classes{extra}")


def _canon(name: str) -> str:
    return "_".join(str(name).strip().lower().replace("-", " ").split())


def _h5_arrays(path: Path, keys=("data", "label")) -> dict:
    import h5py

    if not path.is_file():
        raise FileNotFoundError(f"{path}: HDF5 file missing")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {e}") from e
    with f:
        missing = [k for k in keys if k not in f]
        if missing:
            raise ValueError(f"{path}: missing key(s) {missing}; found {sorted(f.keys())}")
        out = {}
        for k in keys:
            try:
                out[k] = f[k][()]
            except (OSError, ValueError, KeyError) as e:
                raise ValueError(f"{path}: cannot read dataset {k!r} (truncated or corrupt?): "
                                 f"{e}") from e
    data, label = out["data"], np.asarray(out["label"])
    if data.ndim != 3 or data.shape[2] < 3:
        raise ValueError(f"{path}: 'data' must have shape (N, P, 3), got {data.shape}")
    if label.ndim == 2 and label.shape[1] == 1:
        label = label[:, 0]
    if label.shape != (data.shape[0],):
        raise ValueError(f"{path}: 'label' has shape {label.shape} but 'data' holds "
                         f"{data.shape[0]} shapes")
    if label.size and not np.issubdtype(label.dtype, np.integer) \
            and not np.all(np.mod(label, 1) == 0):
        raise ValueError(f"{path}: 'label' holds non-integer values")
    return {"data": data[..., :3], "label": label.astype(np.int64)}


def _np_load_pickle(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file missing")
    from ...safe_pickle import load_npy

    try:
        return load_npy(path)  # restricted unpickler: plain data and numpy arrays only
    except ValueError:
        raise
    except Exception as e:  # pickle errors come as many types
        raise ValueError(f"{path}: corrupt or truncated .npy file ({type(e).__name__}: {e})"
                         ) from e


def _keep_random_points(ds: PointDataset, num_points: int | None, seed: int) -> None:
    """Keep a seeded random subset of ``num_points`` points (the same for every shape, in file
    order) when the set holds more; in place."""
    if num_points is not None and ds.points.shape[1] > num_points:
        keep = np.random.default_rng(seed).choice(ds.points.shape[1], num_points, replace=False)
        ds.points = np.ascontiguousarray(ds.points[:, np.sort(keep)])
