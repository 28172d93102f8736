"""Evaluation sets as researchers keep them on disk: ModelNet40, ScanObjectNN, Objaverse-LVIS.

One entry point, :func:`load_benchmark`, reads each set in the formats of the field and returns
a :class:`PointDataset` (points, labels, class names in the dataset's canonical order, and the
prompt templates for zero-shot category features). Every reader checks what it reads and fails
with an error that names the file and the problem (missing key, wrong shape, labels out of
range, class-name file that does not match the labels, mixed point counts, truncated file),
because a silently wrong eval set gives silently wrong numbers.

One module per release (see ``shared/FIELD_NOTES.md`` for the formats):

* :mod:`.modelnet40`: PointNet's ``modelnet40_ply_hdf5_2048``, PointNet++'s
  ``modelnet40_normal_resampled`` and OpenShape's ``meta_data/modelnet40``, detected from the
  files under ``root``.
* :mod:`.scanobjectnn`: the HDF5 release's ``obj_only`` / ``obj_bg`` / ``pb_t50_rs`` variants
  and OpenShape's ``scanobjectnn/xyz_label.npy``.
* :mod:`.objaverse_lvis`: OpenShape's ``meta_data/split/lvis.json`` and its per-shape ``.npy``
  files (read lazily: 46k shapes of 10k points do not fit in memory).
* :mod:`.common`: :class:`PointDataset`, :class:`LazyPoints`, ULIP's prompt templates and the
  checks every reader shares.

Axes: all three sets are stored y-up; like OpenShape's evaluation we swap y and z
(``swap_yz=True``, the same swap :func:`mmmixlab.data.openshape.swap_yz` applies to the
training triplets, so train and test agree) and centre and scale each cloud into the unit
sphere (``normalize=True``). Sets without colour have 3 channels unless ``rgb_fill`` is given
(OpenShape feeds a constant 0.4 to its 6-channel models).
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import ULIP_TEMPLATES, LazyPoints, PointDataset, _keep_random_points
from .common import _canon as _canon  # re-exported: older imports read it here
from .modelnet40 import MODELNET40_CLASSES, _modelnet40
from .objaverse_lvis import LVIS_NUM_CLASSES as LVIS_NUM_CLASSES
from .objaverse_lvis import _objaverse_lvis
from .scanobjectnn import SCANOBJECTNN_CLASSES, SCANOBJECTNN_VARIANTS, _scanobjectnn

__all__ = [
    "BENCHMARKS", "MODELNET40_CLASSES", "SCANOBJECTNN_CLASSES", "SCANOBJECTNN_VARIANTS",
    "ULIP_TEMPLATES", "LazyPoints", "PointDataset", "load_benchmark",
]

BENCHMARKS = ("modelnet40", "scanobjectnn", "objaverse_lvis")


def load_benchmark(name: str, root, split: str = "test", variant: str | None = None, *,
                   num_points: int | None = None, swap_yz: bool = True,
                   normalize: bool = True, rgb_fill: float | None = None,
                   check_files: bool = True, seed: int = 0,
                   progress: bool = False) -> PointDataset:
    """Read an evaluation set from ``root`` in its on-disk format (see the release's module).

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
        ds = _modelnet40(root, split, variant, opts)
        if ds.info["format"] != "normal_resampled":  # that reader keeps each file's first points
            _keep_random_points(ds, num_points, seed)
        return ds
    if key == "scanobjectnn":
        ds = _scanobjectnn(root, split, variant, opts)
        _keep_random_points(ds, num_points, seed)
        return ds
    return _objaverse_lvis(root, split, opts)
