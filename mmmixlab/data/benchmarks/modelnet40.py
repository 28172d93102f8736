"""ModelNet40 in the three layouts it is released in; the layout is detected from the files.

* ``hdf5``: ``modelnet40_ply_hdf5_2048`` (PointNet's release): shards ``ply_data_*.h5`` with
  ``data`` (N, 2048, 3) float32 and ``label`` (N, 1) integers, listed in ``test_files.txt`` /
  ``train_files.txt`` (lines are paths relative to PointNet's repo, e.g.
  ``data/modelnet40_ply_hdf5_2048/ply_data_test0.h5``, so shards are also looked up by base
  name next to the list), class names in ``shape_names.txt``.
* ``normal_resampled``: PointNet++'s ``modelnet40_normal_resampled``: one
  ``CLASS/CLASS_0001.txt`` per shape with 10,000 lines ``x,y,z,nx,ny,nz``, the split in
  ``modelnet40_{train,test}.txt`` (one shape id per line), class names in
  ``modelnet40_shape_names.txt``. Normals are kept in ``PointDataset.normals``.
* ``openshape``: OpenShape's ``meta_data/modelnet40/``: ``test_split.json`` (a list of
  ``{"name", "category"}``) and ``test_pc.npy`` (a pickled object array of dicts with ``xyz``
  (10000, 3) and ``rgb`` (10000, 3)). OpenShape divides that rgb by 255 (the stored value is a
  constant 100, i.e. grey 0.4); we do the same whenever rgb exceeds 1. Test split only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .common import (
    PointDataset,
    _canon,
    _check_labels,
    _finish_points,
    _h5_arrays,
    _np_load_pickle,
    _read_names,
)

# PointNet's shape_names.txt order (alphabetical): the label order of every ModelNet40 release.
MODELNET40_CLASSES: list[str] = [
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard",
    "lamp", "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio",
    "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase",
    "wardrobe", "xbox",
]


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


def _modelnet40(root: Path, split: str, variant: str | None, opts: dict) -> PointDataset:
    """Whichever ModelNet40 release lives under ``root``; ``variant`` may name it to check."""
    layout, d = _modelnet_layout(root)
    if variant is not None and variant != layout:
        raise ValueError(f"{d}: holds ModelNet40's {layout!r} release, not {variant!r}")
    if layout == "hdf5":
        return _modelnet_hdf5(d, split, opts)
    if layout == "normal_resampled":
        return _modelnet_txt(d, split, opts)
    return _modelnet_openshape(d, split, opts)
