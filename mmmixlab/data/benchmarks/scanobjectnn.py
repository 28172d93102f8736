"""ScanObjectNN: the HDF5 release's three variants, and OpenShape's test file.

The HDF5 release (keys ``data`` (N, 2048, 3) and ``label`` (N,)): ``obj_only`` =
``main_split_nobg/{training,test}_objectdataset.h5``, ``obj_bg`` =
``main_split/{training,test}_objectdataset.h5``, ``pb_t50_rs`` =
``main_split/{training,test}_objectdataset_augmentedrot_scale75.h5``; ``root`` may be the folder
holding ``main_split*/``, its ``h5_files/`` parent, or the ``main_split*`` folder itself.
``variant="openshape"`` (or ``None`` when only that file is there) reads OpenShape's
``scanobjectnn/xyz_label.npy`` (a pickled dict with ``xyz`` and ``label``; which ScanObjectNN
variant it holds is not documented by OpenShape).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import PointDataset, _check_labels, _finish_points, _h5_arrays, _np_load_pickle

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
