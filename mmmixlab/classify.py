"""``mmmixlab classify``: zero-shot labels for a user's mesh or point files, each brought into
the run's input convention (up axis, unit sphere, colour) before it is encoded."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .benchmark_eval import RunModel
from .class_features import load_class_features
from .data.benchmarks.common import _canon

__all__ = ["classify_files", "read_point_file"]

POINT_SUFFIXES = (".npy", ".npz")


def read_point_file(path, up_axis: str = "y") -> np.ndarray:
    """A user's point file -> (P, 6) xyz + rgb in the unit sphere, z up (``up_axis``: y, z or
    y-swap, see :data:`mmmixlab.data.meshes.UP_AXES`). ``.npy``: an (P, 3|6)
    array or an OpenShape-style dict with ``xyz`` (and ``rgb``); ``.npz``: the array under
    ``xyz``/``points``/``pc`` or the only one. rgb missing -> 0.4 grey."""
    from .data.meshes import finish_cloud
    from .safe_pickle import load_npy

    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            key = next((k for k in ("xyz", "points", "pc", "data") if k in z.files),
                       z.files[0] if len(z.files) == 1 else None)
            if key is None:
                raise ValueError(f"{path}: holds arrays {z.files}; name one xyz or points")
            arr = np.asarray(z[key], dtype=np.float32)
            rgb = np.asarray(z["rgb"], dtype=np.float32) if "rgb" in z.files else None
    else:
        obj = load_npy(path)
        if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
            obj = obj.item()
        if isinstance(obj, dict):
            if "xyz" not in obj:
                raise ValueError(f"{path}: a dict without 'xyz' (keys {sorted(obj)[:8]})")
            arr = np.asarray(obj["xyz"], dtype=np.float32)
            rgb = np.asarray(obj["rgb"], dtype=np.float32) if obj.get("rgb") is not None \
                else None
        else:
            arr, rgb = np.asarray(obj, dtype=np.float32), None
    if arr.ndim != 2 or arr.shape[1] not in (3, 6) or arr.shape[0] == 0:
        raise ValueError(f"{path}: points must have shape (P, 3) or (P, 6), got {arr.shape}")
    if arr.shape[1] == 6 and rgb is None:
        arr, rgb = arr[:, :3], arr[:, 3:]
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: points hold NaN or inf")
    if rgb is None:
        rgb = np.full_like(arr, 0.4)
    if rgb.shape != arr.shape:
        raise ValueError(f"{path}: rgb has shape {rgb.shape}, xyz {arr.shape}")
    rgb = rgb / 255.0 if rgb.max() > 1.0 else rgb
    return finish_cloud(arr, rgb, up_axis)[0]  # the mesh importer's axes and unit sphere
def classify_files(model: RunModel, files: Sequence, classes: Sequence[str], top_k: int = 3,
                   up_axis: str = "y", class_features=None, points: Optional[int] = None
                   ) -> list[dict]:
    """Zero-shot labels for each file: ``[{"file", "labels": [(class, score), ...]}]`` or
    ``{"file", "error"}``. Scores are the softmax over the classes of the run's logit scale
    times the cosine similarity (CLIP's probabilities).

    Files are brought into the run's input convention: a y-up file is turned z-up the way the
    weights were trained (``data.up_convention``: rotated, or OpenShape's column swap for
    imported releases), centred and scaled to the unit sphere, rgb in [0, 1] or grey 0.4;
    meshes are sampled at ``points`` (default: the run's ``data.num_points``)."""
    from .data import PROMPT_TEMPLATES
    from .data.meshes import SHAPE_EXTENSIONS as MESH_SUFFIXES
    from .data.meshes import sample_mesh

    classes = [c.strip() for c in classes if c.strip()]
    if len(classes) < 2:
        raise ValueError(f"--classes needs at least two class names, got {classes}")
    if len(set(map(_canon, classes))) != len(classes):
        raise ValueError(f"--classes has duplicate names: {classes}")
    if up_axis not in ("y", "z"):
        raise ValueError(f"up axis must be 'y' or 'z', got {up_axis!r}")
    if up_axis == "y" and model.cfg.data.up_convention == "swap":
        up_axis = "y-swap"
    points = int(points or model.num_points)
    if class_features is not None:
        class_feats = load_class_features(class_features, classes, model.embed_dim, "--classes")
    else:
        class_feats = model.class_features(classes, PROMPT_TEMPLATES, "classify")
    out = []
    for f in files:
        path = Path(f)
        try:
            if not path.is_file():
                raise FileNotFoundError("no such file")
            suffix = path.suffix.lower()
            if suffix in POINT_SUFFIXES:
                cloud = read_point_file(path, up_axis)
            elif suffix in MESH_SUFFIXES:
                cloud, _ = sample_mesh(path, num_points=points, up_axis=up_axis)
            else:
                raise ValueError(f"unsupported file type {suffix!r} (meshes and scans: "
                                 f"{', '.join(MESH_SUFFIXES)}; arrays: .npy, .npz)")
        except Exception as err:  # noqa: BLE001 (a bad file is reported by name, others go on)
            out.append({"file": str(path), "error": f"{type(err).__name__}: {err}"})
            continue
        feats = model.encode(cloud[None])
        probs = (model.logit_scale * feats @ class_feats.t()).softmax(-1)[0]
        top = probs.topk(min(top_k, len(classes)))
        out.append({"file": str(path), "labels": [(classes[i], float(p)) for p, i in
                                                  zip(top.values.tolist(), top.indices.tolist())]})
    return out
