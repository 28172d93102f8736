"""Evaluation sets as researchers keep them on disk: ModelNet40, ScanObjectNN, Objaverse-LVIS.

One entry point, :func:`load_benchmark`, reads each set in the formats of the field and returns
a :class:`PointDataset` (points, labels, class names in the dataset's canonical order, and the
prompt templates for zero-shot category features). Every reader checks what it reads and fails
with an error that names the file and the problem (missing key, wrong shape, labels out of
range, class-name file that does not match the labels, mixed point counts, truncated file),
because a silently wrong eval set gives silently wrong numbers.

Formats (see ``shared/FIELD_NOTES.md``):

* ``modelnet40``, detected from the files under ``root``:

  - ``hdf5``: ``modelnet40_ply_hdf5_2048`` (PointNet's release): shards ``ply_data_*.h5`` with
    ``data`` (N, 2048, 3) float32 and ``label`` (N, 1) integers, listed in ``test_files.txt`` /
    ``train_files.txt`` (lines are paths relative to PointNet's repo, e.g.
    ``data/modelnet40_ply_hdf5_2048/ply_data_test0.h5``, so shards are also looked up by base
    name next to the list), class names in ``shape_names.txt``.
  - ``normal_resampled``: PointNet++'s ``modelnet40_normal_resampled``: one
    ``CLASS/CLASS_0001.txt`` per shape with 10,000 lines ``x,y,z,nx,ny,nz``, the split in
    ``modelnet40_{train,test}.txt`` (one shape id per line), class names in
    ``modelnet40_shape_names.txt``. Normals are kept in ``PointDataset.normals``.
  - ``openshape``: OpenShape's ``meta_data/modelnet40/``: ``test_split.json`` (a list of
    ``{"name", "category"}``) and ``test_pc.npy`` (a pickled object array of dicts with ``xyz``
    (10000, 3) and ``rgb`` (10000, 3)). OpenShape divides that rgb by 255 (the stored value is a
    constant 100, i.e. grey 0.4); we do the same whenever rgb exceeds 1. Test split only.

* ``scanobjectnn`` with ``variant`` (the HDF5 release, keys ``data`` (N, 2048, 3) and
  ``label`` (N,)): ``obj_only`` = ``main_split_nobg/{training,test}_objectdataset.h5``,
  ``obj_bg`` = ``main_split/{training,test}_objectdataset.h5``, ``pb_t50_rs`` =
  ``main_split/{training,test}_objectdataset_augmentedrot_scale75.h5``; ``root`` may be the
  folder holding ``main_split*/``, its ``h5_files/`` parent, or the ``main_split*`` folder itself.
  ``variant="openshape"`` (or ``None`` when only that file is there) reads OpenShape's
  ``scanobjectnn/xyz_label.npy`` (a pickled dict with ``xyz`` and ``label``; which ScanObjectNN
  variant it holds is not documented by OpenShape).

* ``objaverse_lvis``: OpenShape's ``meta_data/split/lvis.json``, a list of
  ``{"uid", "category", "data_path"[, "group"]}`` whose ``data_path`` points at OpenShape's
  per-shape ``.npy`` dicts. Those paths were written on OpenShape's machines
  (``/mnt/data/...``), so a path that does not exist as written is looked up relative to
  ``root`` and then by its tail from the ``Objaverse/`` component on. Class names are the sorted
  distinct categories (1,156 in the full file), as OpenShape orders them. 46k shapes of 10k
  points do not fit in memory, so ``points`` is a :class:`LazyPoints` that reads shapes on
  indexing.

Axes: all three sets are stored y-up; like OpenShape's evaluation we swap y and z
(``swap_yz=True``, the same swap :func:`mmmixlab.data.openshape.swap_yz` applies to the
training triplets, so train and test agree) and centre and scale each cloud into the unit
sphere (``normalize=True``). Sets without colour have 3 channels unless ``rgb_fill`` is given
(OpenShape feeds a constant 0.4 to its 6-channel models).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..openshape import normalize_unit_sphere
from ..prompts import class_prompts

__all__ = [
    "BENCHMARKS", "MODELNET40_CLASSES", "SCANOBJECTNN_CLASSES", "SCANOBJECTNN_VARIANTS",
    "ULIP_TEMPLATES", "LazyPoints", "PointDataset", "load_benchmark",
]

# PointNet's shape_names.txt order (alphabetical): the label order of every ModelNet40 release.
MODELNET40_CLASSES: list[str] = [
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard",
    "lamp", "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio",
    "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase",
    "wardrobe", "xbox",
]

# ScanObjectNN's label order (its README and every loader, OpenShape's included).
SCANOBJECTNN_CLASSES: list[str] = [
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed",
    "pillow", "sink", "sofa", "toilet",
]

# variant -> (folder, file stem); the file is f"{stem_prefix}_{stem}.h5" with training/test.
SCANOBJECTNN_VARIANTS: dict[str, tuple[str, str]] = {
    "obj_only": ("main_split_nobg", "objectdataset"),
    "obj_bg": ("main_split", "objectdataset"),
    "pb_t50_rs": ("main_split", "objectdataset_augmentedrot_scale75"),
}

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

BENCHMARKS = ("modelnet40", "scanobjectnn", "objaverse_lvis")
LVIS_NUM_CLASSES = 1156


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


# ---------------------------------------------------------------------------------- ModelNet40

def _modelnet_layout(root: Path) -> tuple[str, Path]:
    """Which ModelNet40 release lives under ``root`` (or one folder below it)."""
    candidates = [root] + [root / d for d in ("modelnet40_ply_hdf5_2048",
                                               "modelnet40_normal_resampled", "modelnet40",
                                               "meta_data/modelnet40")]
    for d in candidates:
        if (d / "test_split.json").is_file() or (d / "test_pc.npy").is_file():
            return "openshape", d
        if (d / "modelnet40_shape_names.txt").is_file():
            return "normal_resampled", d
        if ((d / "test_files.txt").is_file() or (d / "train_files.txt").is_file()
                or (d / "shape_names.txt").is_file() or any(d.glob("ply_data_*.h5"))):
            return "hdf5", d
    raise FileNotFoundError(
        f"{root}: no ModelNet40 release found; expected one of: modelnet40_ply_hdf5_2048 "
        f"(test_files.txt, shape_names.txt, ply_data_*.h5), modelnet40_normal_resampled "
        f"(modelnet40_shape_names.txt, modelnet40_test.txt, CLASS/CLASS_0001.txt) or OpenShape's "
        f"meta_data/modelnet40 (test_split.json, test_pc.npy)")


def _modelnet_hdf5(d: Path, split: str, opts: dict) -> PointDataset:
    names_file = d / "shape_names.txt"
    class_names = _read_names(names_file) if names_file.is_file() else list(MODELNET40_CLASSES)
    list_file = d / f"{split}_files.txt"
    if list_file.is_file():
        shards = []
        for n, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            p = Path(line)
            options = [p, d / p, d / p.name]
            found = next((c for c in options if c.is_file()), None)
            if found is None:
                raise FileNotFoundError(f"{list_file}: line {n} lists {line!r}, found neither "
                                        f"as written nor as {d / p.name}")
            shards.append(found)
        if not shards:
            raise ValueError(f"{list_file}: lists no HDF5 shards")
    else:
        shards = sorted(d.glob(f"ply_data_{split}*.h5"), key=lambda p: (len(p.name), p.name))
        if not shards:
            raise FileNotFoundError(f"{d}: neither {list_file.name} nor ply_data_{split}*.h5")
    datas, labels = [], []
    for s in shards:
        arr = _h5_arrays(s)
        if datas and arr["data"].shape[1] != datas[0].shape[1]:
            raise ValueError(f"{s}: {arr['data'].shape[1]} points per shape, but {shards[0]} has "
                             f"{datas[0].shape[1]} (mixed point counts)")
        _check_labels(arr["label"], len(class_names), str(s),
                      names_file if names_file.is_file() else None)
        datas.append(arr["data"])
        labels.append(arr["label"])
    pts = _finish_points(np.concatenate(datas), None, opts["swap_yz"], opts["normalize"],
                         opts["rgb_fill"], str(d))
    return PointDataset(pts, np.concatenate(labels), class_names, "modelnet40", split,
                        info={"format": "hdf5", "root": str(d),
                              "files": [str(s) for s in shards]})


def _read_modelnet_txt(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shape file missing")
    try:
        arr = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as e:
        raise ValueError(f"{path}: not 'x,y,z,nx,ny,nz' lines ({e})") from e
    if arr.shape[0] == 0:
        raise ValueError(f"{path}: no points")
    if arr.shape[1] != 6:
        raise ValueError(f"{path}: {arr.shape[1]} values per line, expected 6 "
                         f"(x,y,z,nx,ny,nz)")
    return arr


def _modelnet_txt(d: Path, split: str, opts: dict) -> PointDataset:
    from ...progress import bar as tqdm

    names_file = d / "modelnet40_shape_names.txt"
    class_names = _read_names(names_file)
    split_file = d / f"modelnet40_{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file}: split file missing")
    ids = [ln.strip() for ln in split_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not ids:
        raise ValueError(f"{split_file}: lists no shapes")
    index = {c: i for i, c in enumerate(class_names)}
    labels, clouds = [], []
    num_points = opts["num_points"]
    for n, sid in enumerate(tqdm(ids, desc=f"modelnet40 {split}", disable=not opts["progress"])):
        cls = sid.rsplit("_", 1)[0]
        if cls not in index:
            raise ValueError(f"{split_file}: line {n + 1}: shape {sid!r} has class {cls!r}, "
                             f"which is not in {names_file}")
        path = d / cls / f"{sid}.txt"
        arr = _read_modelnet_txt(path)
        if num_points is not None:
            if arr.shape[0] < num_points:
                raise ValueError(f"{path}: {arr.shape[0]} points, fewer than num_points="
                                 f"{num_points}")
            arr = arr[:num_points]  # the file order, as PointNet++ reads it
        elif clouds and arr.shape[0] != clouds[0].shape[0]:
            raise ValueError(f"{path}: {arr.shape[0]} points but the first shape has "
                             f"{clouds[0].shape[0]} (mixed point counts; pass num_points=...)")
        clouds.append(arr)
        labels.append(index[cls])
    stacked = np.stack(clouds)
    normals = stacked[..., 3:6]
    if opts["swap_yz"]:
        normals = normals[..., [0, 2, 1]]
    pts = _finish_points(stacked[..., :3], None, opts["swap_yz"], opts["normalize"],
                         opts["rgb_fill"], str(d))
    return PointDataset(pts, np.asarray(labels), class_names, "modelnet40", split,
                        names=ids, normals=np.ascontiguousarray(normals),
                        info={"format": "normal_resampled", "root": str(d)})


def _modelnet_openshape(d: Path, split: str, opts: dict) -> PointDataset:
    if split != "test":
        raise ValueError(f"{d}: OpenShape's ModelNet40 release has only the test split, "
                         f"asked for {split!r}")
    split_file, pc_file = d / "test_split.json", d / "test_pc.npy"
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file}: file missing (next to {pc_file.name})")
    try:
        entries = json.loads(split_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{split_file}: not valid JSON ({e})") from e
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{split_file}: expected a non-empty list of {{name, category}}")
    pcs = _np_load_pickle(pc_file)
    if pcs.dtype != object or pcs.ndim != 1:
        raise ValueError(f"{pc_file}: expected a pickled 1-D array of dicts with xyz/rgb, got "
                         f"{pcs.dtype} {pcs.shape}")
    if len(pcs) != len(entries):
        raise ValueError(f"{pc_file}: {len(pcs)} point clouds but {split_file} lists "
                         f"{len(entries)} shapes")
    lookup = {_canon(c): i for i, c in enumerate(MODELNET40_CLASSES)}
    xyzs, rgbs, labels, names = [], [], [], []
    for i, (e, pc) in enumerate(zip(entries, pcs)):
        if not isinstance(e, dict) or "category" not in e:
            raise ValueError(f"{split_file}: entry {i} has no 'category': {e!r:.100}")
        cat = _canon(e["category"])
        if cat not in lookup:
            raise ValueError(f"{split_file}: entry {i} has category {e['category']!r}, not one "
                             f"of the 40 ModelNet40 classes")
        if not isinstance(pc, dict) or "xyz" not in pc:
            raise ValueError(f"{pc_file}: item {i} is not a dict with 'xyz'")
        xyz = np.asarray(pc["xyz"], dtype=np.float32)
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise ValueError(f"{pc_file}: item {i} xyz has shape {xyz.shape}, expected (P, 3)")
        if xyzs and xyz.shape != xyzs[0].shape:
            raise ValueError(f"{pc_file}: item {i} has {xyz.shape[0]} points, item 0 has "
                             f"{xyzs[0].shape[0]} (mixed point counts)")
        rgb = pc.get("rgb")
        if rgb is not None:
            rgb = np.asarray(rgb, dtype=np.float32)
            if rgb.shape != xyz.shape:
                raise ValueError(f"{pc_file}: item {i} rgb shape {rgb.shape} != xyz "
                                 f"{xyz.shape}")
        xyzs.append(xyz)
        rgbs.append(rgb)
        labels.append(lookup[cat])
        names.append(str(e.get("name", i)))
    has_rgb = [r is not None for r in rgbs]
    if any(has_rgb) and not all(has_rgb):
        raise ValueError(f"{pc_file}: some items have 'rgb' and some do not")
    rgb = np.stack(rgbs) if all(has_rgb) else None
    if rgb is not None:
        if not np.isfinite(rgb).all() or rgb.min() < 0:
            raise ValueError(f"{pc_file}: rgb holds negative, NaN or inf values")
        if rgb.max() > 1.0:
            if rgb.max() > 255.0:
                raise ValueError(f"{pc_file}: rgb values up to {rgb.max()}, neither [0, 1] nor "
                                 f"[0, 255]")
            rgb = rgb / 255.0  # OpenShape's loader does the same
    pts = _finish_points(np.stack(xyzs), rgb, opts["swap_yz"], opts["normalize"],
                         opts["rgb_fill"], str(pc_file))
    return PointDataset(pts, np.asarray(labels), list(MODELNET40_CLASSES), "modelnet40", split,
                        names=names, info={"format": "openshape", "root": str(d)})


# ---------------------------------------------------------------------------------- ScanObjectNN

def _scan_file(root: Path, variant: str, split: str) -> Path:
    folder, stem = SCANOBJECTNN_VARIANTS[variant]
    fname = f"{'training' if split == 'train' else 'test'}_{stem}.h5"
    options = [root / folder / fname, root / "h5_files" / folder / fname]
    if root.name == folder:
        options.insert(0, root / fname)
    for p in options:
        if p.is_file():
            return p
    raise FileNotFoundError(f"ScanObjectNN {variant} {split}: {fname} not found; looked at "
                            + ", ".join(str(p) for p in options))


def _openshape_scan_file(root: Path) -> Path | None:
    for p in (root / "xyz_label.npy", root / "scanobjectnn" / "xyz_label.npy",
              root / "meta_data" / "scanobjectnn" / "xyz_label.npy"):
        if p.is_file():
            return p
    return None


def _scanobjectnn(root: Path, split: str, variant: str | None, opts: dict) -> PointDataset:
    if variant is None:
        if _openshape_scan_file(root) is not None:
            variant = "openshape"
        else:
            raise ValueError(f"scanobjectnn needs variant= one of "
                             f"{', '.join(SCANOBJECTNN_VARIANTS)} (or 'openshape' for OpenShape's "
                             f"xyz_label.npy)")
    variant = variant.lower().replace("-", "_")
    if variant == "openshape":
        path = _openshape_scan_file(root)
        if path is None:
            raise FileNotFoundError(f"{root}: OpenShape's scanobjectnn/xyz_label.npy not found")
        if split != "test":
            raise ValueError(f"{path}: OpenShape's ScanObjectNN file holds only the test split, "
                             f"asked for {split!r}")
        obj = _np_load_pickle(path)
        if obj.dtype != object or obj.shape != ():
            raise ValueError(f"{path}: expected a pickled dict with 'xyz' and 'label', got an "
                             f"array {obj.dtype} {obj.shape}")
        d = obj.item()
        if not isinstance(d, dict) or "xyz" not in d or "label" not in d:
            keys = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"{path}: expected keys 'xyz' and 'label', found {keys}")
        try:
            xyz = np.stack([np.asarray(x, dtype=np.float32) for x in d["xyz"]])
        except ValueError as e:
            raise ValueError(f"{path}: 'xyz' clouds have mixed point counts ({e})") from e
        label = np.asarray(d["label"]).reshape(-1)
        if xyz.ndim != 3 or xyz.shape[2] != 3 or label.shape != (len(xyz),):
            raise ValueError(f"{path}: xyz {xyz.shape} / label {label.shape} are not "
                             f"(N, P, 3) / (N,)")
        rgb = d.get("rgb")
        data = {"data": xyz, "label": label.astype(np.int64)}
        files = [str(path)]
    else:
        if variant not in SCANOBJECTNN_VARIANTS:
            raise ValueError(f"unknown ScanObjectNN variant {variant!r}; choose one of "
                             f"{', '.join(SCANOBJECTNN_VARIANTS)} or 'openshape'")
        path = _scan_file(root, variant, split)
        data = _h5_arrays(path)
        rgb = None
        files = [str(path)]
    _check_labels(data["label"], len(SCANOBJECTNN_CLASSES), str(path))
    if rgb is not None:
        rgb = np.asarray(rgb, dtype=np.float32)
    pts = _finish_points(data["data"], rgb, opts["swap_yz"], opts["normalize"],
                         opts["rgb_fill"], str(path))
    return PointDataset(pts, data["label"], list(SCANOBJECTNN_CLASSES), "scanobjectnn", split,
                        info={"format": variant, "variant": variant, "files": files})


# ---------------------------------------------------------------------------------- LVIS

def _lvis_split_file(root: Path) -> Path:
    if root.is_file():
        return root
    for p in (root / "lvis.json", root / "split" / "lvis.json",
              root / "meta_data" / "split" / "lvis.json"):
        if p.is_file():
            return p
    raise FileNotFoundError(f"{root}: OpenShape's split file lvis.json not found (looked for "
                            f"lvis.json, split/lvis.json, meta_data/split/lvis.json)")


def _resolve_data_path(data_path: str, bases: Sequence[Path]) -> Path | None:
    from ..openshape import split_path_tails

    p = Path(data_path)
    if p.is_file():
        return p
    for base in bases:
        for t in split_path_tails(p):
            if (base / t).is_file():
                return base / t
    return None


def _objaverse_lvis(root: Path, split: str, opts: dict) -> PointDataset:
    from ..openshape import read_json_list, read_openshape_npy

    if split != "test":
        raise ValueError(f"Objaverse-LVIS is an evaluation set; asked for split {split!r}")
    split_file = _lvis_split_file(root)
    entries = read_json_list(split_file, "{uid, category, data_path}")
    base_root = root if root.is_dir() else split_file.parent
    bases = [base_root, split_file.parent, *split_file.parents[:3]]
    paths, cats, uids, missing = [], [], [], []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise ValueError(  # noqa: TRY004 (bad file content, not a bad argument)
                f"{split_file}: entry {i} is not an object: {e!r:.100}")
        lack = [k for k in ("category", "data_path") if k not in e]
        if lack or ("uid" not in e and "id" not in e):
            raise ValueError(f"{split_file}: entry {i} lacks {lack or ['uid']}: {e!r:.150}")
        found = _resolve_data_path(str(e["data_path"]), bases) if opts["check_files"] else \
            Path(e["data_path"])
        if found is None:
            missing.append(str(e["data_path"]))
        paths.append(found)
        cats.append(str(e["category"]))
        uids.append(str(e.get("uid", e.get("id"))))
    if missing:
        raise FileNotFoundError(
            f"{split_file}: {len(missing)} of {len(entries)} shape files not found (looked as "
            f"written, under {base_root}, and by their Objaverse/... tail), e.g. {missing[:3]}")
    class_names = sorted(set(cats))
    index = {c: i for i, c in enumerate(class_names)}
    labels = np.array([index[c] for c in cats], dtype=np.int64)
    num_points = opts["num_points"]
    if num_points is None:
        num_points = read_openshape_npy(paths[0], texts=False, features=False).xyz.shape[0]
    swap, norm, seed = opts["swap_yz"], opts["normalize"], opts["seed"]

    modal = {"image": {}, "text": {}}

    def load(i: int) -> np.ndarray:
        rec = read_openshape_npy(paths[i])  # the whole pickle is read anyway: keep features
        modal["image"][i] = rec.image_feat[0]
        if rec.has_text:
            modal["text"][i] = rec.text_feats[0]
        xyz, rgb = rec.xyz, rec.rgb
        if xyz.shape[0] != num_points:
            if xyz.shape[0] < num_points:
                raise ValueError(f"{paths[i]}: {xyz.shape[0]} points, fewer than "
                                 f"{num_points} (mixed point counts; pass num_points=...)")
            if opts["num_points"] is None:
                raise ValueError(f"{paths[i]}: {xyz.shape[0]} points but the first shape has "
                                 f"{num_points} (mixed point counts; pass num_points=...)")
            sel = np.random.default_rng((seed, i)).choice(xyz.shape[0], num_points,
                                                           replace=False)
            sel.sort()
            xyz, rgb = xyz[sel], rgb[sel]
        return _finish_points(xyz[None], rgb[None], swap, norm, None, str(paths[i]))[0]

    points = LazyPoints(load, len(paths), num_points, 6)
    info = {"format": "openshape", "split_file": str(split_file), "paths": [str(p) for p in paths]}
    if len(class_names) != LVIS_NUM_CLASSES:
        info["note"] = (f"{len(class_names)} categories (the full Objaverse-LVIS has "
                        f"{LVIS_NUM_CLASSES}); a subset of lvis.json?")
    return PointDataset(points, labels, class_names, "objaverse_lvis", split, names=uids,
                        info=info, modal=modal)


# ---------------------------------------------------------------------------------- entry point

def load_benchmark(name: str, root, split: str = "test", variant: str | None = None, *,
                   num_points: int | None = None, swap_yz: bool = True,
                   normalize: bool = True, rgb_fill: float | None = None,
                   check_files: bool = True, seed: int = 0,
                   progress: bool = False) -> PointDataset:
    """Read an evaluation set from ``root`` in its on-disk format (see the module docstring).

    name: ``modelnet40``, ``scanobjectnn`` or ``objaverse_lvis``.
    split: ``test`` or ``train`` (where the release has one).
    variant: ScanObjectNN's ``obj_only``, ``obj_bg``, ``pb_t50_rs`` (or ``openshape``);
      ModelNet40's release is detected from the files (``variant`` may name it to check).
    num_points: keep this many points per shape (the first ones for the txt release, a seeded
      random subset for LVIS); ``None`` keeps all and requires equal counts.
    swap_yz / normalize: y-up to z-up swap and unit-sphere normalization (OpenShape's eval).
    rgb_fill: give colourless sets 6 channels with this constant rgb (OpenShape: 0.4).
    """
    key = str(name).lower().replace("-", "_")
    if key in ("lvis", "objaverse"):
        key = "objaverse_lvis"
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if num_points is not None and (not isinstance(num_points, int) or num_points < 1):
        raise ValueError(f"num_points must be a positive integer or None, got {num_points!r}")
    root = Path(os.path.expanduser(str(root)))
    if not root.exists():
        raise FileNotFoundError(f"{root}: benchmark folder not found")
    if root.is_dir() and not any(root.iterdir()):
        raise FileNotFoundError(f"{root}: folder is empty (no {key} files)")
    opts = {"num_points": num_points, "swap_yz": bool(swap_yz), "normalize": bool(normalize),
            "rgb_fill": rgb_fill, "check_files": check_files, "seed": seed,
            "progress": progress}
    if key == "modelnet40":
        layout, d = _modelnet_layout(root)
        if variant is not None and variant != layout:
            raise ValueError(f"{d}: holds ModelNet40's {layout!r} release, not {variant!r}")
        if layout == "hdf5":
            ds = _modelnet_hdf5(d, split, opts)
        elif layout == "normal_resampled":
            ds = _modelnet_txt(d, split, opts)
        else:
            ds = _modelnet_openshape(d, split, opts)
        if num_points is not None and layout != "normal_resampled" \
                and ds.points.shape[1] > num_points:
            keep = np.random.default_rng(seed).choice(ds.points.shape[1], num_points,
                                                      replace=False)
            ds.points = np.ascontiguousarray(ds.points[:, np.sort(keep)])
        return ds
    if key == "scanobjectnn":
        ds = _scanobjectnn(root, split, variant, opts)
        if num_points is not None and ds.points.shape[1] > num_points:
            keep = np.random.default_rng(seed).choice(ds.points.shape[1], num_points,
                                                      replace=False)
            ds.points = np.ascontiguousarray(ds.points[:, np.sort(keep)])
        return ds
    return _objaverse_lvis(root, split, opts)
