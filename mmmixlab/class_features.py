"""Class-name features for zero-shot classification, from a file.

OpenShape ships them as ``cat_name_pt_feat.npy``: an array in the benchmark's class order, a
pickled {name: feature} dict, or (ModelNet40) {name: {"open_clip_text_feat": (1, D)}}; all are
read here without running code (:func:`mmmixlab.safe_pickle.load_npy`), matched to the class
names and checked against the 3D encoder's width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data.benchmarks.common import _canon

__all__ = ["load_class_features"]


def load_class_features(path, class_names: Sequence[str], dim: Optional[int] = None,
                        what: str = "") -> torch.Tensor:
    """(C, D) unit class features from ``path`` in the order of ``class_names``.

    Accepts an array (C, D) already in that order, or a pickled {name: feature} dict (matched
    by name, case, ``_``/space and ``-`` ignored). Wrong width, class count or names that do
    not match raise a ValueError naming both sides.
    """
    from .safe_pickle import load_npy

    path = Path(path)
    what = what or "the benchmark"
    if path.suffix == ".pt":
        obj = torch.load(path, map_location="cpu", weights_only=True)
        obj = obj.numpy() if isinstance(obj, torch.Tensor) else obj
    else:
        obj = load_npy(path)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if isinstance(obj, dict):
        table = {_canon(k): v for k, v in obj.items()}
        missing = [c for c in class_names if _canon(c) not in table]
        if missing:
            raise ValueError(f"{path}: no feature for {len(missing)} of the {len(class_names)} "
                             f"classes of {what}, e.g. {missing[:5]}; the file names "
                             f"{sorted(obj)[:8]}{' ...' if len(obj) > 8 else ''}")
        try:
            feats = np.stack([np.asarray(_feature_of(table[_canon(c)], path, c),
                                         dtype=np.float32).reshape(-1) for c in class_names])
        except ValueError as e:
            raise ValueError(f"{path}: class features of different widths ({e})") from e
    else:
        if isinstance(obj, np.ndarray) and obj.dtype == object:  # an array of per-class arrays
            try:
                obj = np.stack([np.asarray(v, dtype=np.float32).reshape(-1) for v in obj])
            except (ValueError, TypeError) as e:
                raise ValueError(f"{path}: an object array that is not one feature per class "
                                 f"({e})") from e
        feats = np.asarray(obj, dtype=np.float32)
        if feats.ndim == 3 and feats.shape[1] == 1:  # (C, 1, D), as some exports save it
            feats = feats[:, 0]
        if feats.ndim != 2:
            raise ValueError(f"{path}: class features must be a (classes, width) array or a "
                             f"{{name: feature}} dict, got shape {feats.shape}")
        if feats.shape[0] != len(class_names):
            raise ValueError(f"{path}: holds features of {feats.shape[0]} classes, {what} has "
                             f"{len(class_names)} classes")
    if dim is not None and feats.shape[1] != dim:
        raise ValueError(f"{path}: class features are {feats.shape[1]}-d, the run's 3D encoder "
                         f"outputs {dim}-d features")
    if not np.isfinite(feats).all():
        raise ValueError(f"{path}: class features hold NaN or inf")
    return F.normalize(torch.from_numpy(feats), dim=-1)


def _feature_of(value, path, name):
    """A class's feature from a {name: value} file: the array itself, or OpenShape's
    ModelNet40 form ``{name: {"open_clip_text_feat": (1, D)}}`` (its loader reads that key)."""
    if isinstance(value, dict):
        if "open_clip_text_feat" in value:
            return value["open_clip_text_feat"]
        arrays = [v for v in value.values() if np.asarray(v).dtype != object]
        if len(arrays) != 1:
            raise ValueError(f"{path}: the entry of {name!r} is a dict with keys "
                             f"{sorted(value)[:6]}; expected a feature or 'open_clip_text_feat'")
        return arrays[0]
    return value
