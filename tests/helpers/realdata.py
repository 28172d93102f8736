"""Small files in the released formats, written by the tests: OpenShape's training folder and
split list, ModelNet40's HDF5 release, ScanObjectNN's HDF5 release, Objaverse-LVIS's split with
per-shape files, and the three ``cat_name_pt_feat.npy`` class-feature files.

Shapes come from a few procedural categories (sphere, box, rod, disc, ...), and their frozen
"CLIP" features are a category prototype plus noise, so a run on them has something to learn.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from mmmixlab.data.benchmarks import MODELNET40_CLASSES, SCANOBJECTNN_CLASSES

D = 32              # feature width of the fake "CLIP"
POINTS = 1024       # points per training shape (OpenShape: 10,000)
KINDS = ("sphere", "box", "rod", "disc")
# the categories of each benchmark that the procedural kinds stand for
MN_KIND = {"bowl": "sphere", "dresser": "box", "lamp": "rod", "table": "disc"}
SCAN_KIND = {"bag": "sphere", "box": "box", "door": "rod", "table": "disc"}


def cloud(kind: str, rng, n: int) -> np.ndarray:
    """(n, 3) points of a y-up procedural shape (as OpenShape stores them)."""
    u = rng.normal(size=(n, 3))
    if kind == "sphere":
        xyz = u / np.linalg.norm(u, axis=1, keepdims=True)
    elif kind == "box":
        xyz = rng.uniform(-1, 1, (n, 3))
        face = rng.integers(0, 3, n)
        xyz[np.arange(n), face] = np.sign(xyz[np.arange(n), face])
        xyz *= [0.6, 1.0, 0.4]
    elif kind == "rod":
        xyz = np.stack([0.05 * u[:, 0], rng.uniform(-1, 1, n), 0.05 * u[:, 2]], 1)
    else:  # disc
        r, a = np.sqrt(rng.uniform(0, 1, n)), rng.uniform(0, 2 * np.pi, n)
        xyz = np.stack([r * np.cos(a), 0.02 * u[:, 1], r * np.sin(a)], 1)
    return (xyz * rng.uniform(0.7, 1.3) + rng.normal(scale=0.02, size=(n, 3))).astype(np.float32)


def prototypes(seed: int = 123) -> dict:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=D).astype(np.float32) for k in KINDS}


def openshape_shape(kind: str, rng, protos: dict, uid: str, with_text: bool = True,
                    n: int = POINTS) -> dict:
    def feat():
        return (protos[kind] + 0.7 * rng.normal(size=D)).astype(np.float32)

    texts = [f"a {kind}"] if with_text else []
    return {"dataset": "Objaverse", "group": "000-000", "id": uid,
            "xyz": cloud(kind, rng, n), "rgb": rng.uniform(0, 1, (n, 3)).astype(np.float32),
            "image_feat": np.stack([feat() for _ in range(12)]),
            "thumbnail_feat": feat()[None],
            "text": texts, "text_feat": [{"original": feat(), "prompt_avg": feat()}
                                         for _ in texts],
            "blip_caption": f"a {kind} shape" if with_text else "",
            "blip_caption_feat": {"original": feat(), "prompt_avg": feat()},
            "msft_caption": "", "retrieval_text": [], "retrieval_text_feat": []}


def write_openshape_training(root: Path, per_kind: int = 12, seed: int = 0,
                             no_text_every: int = 5) -> dict:
    """``root/objaverse-processed/merged_for_training_final/{ShapeNet,Objaverse}/*.npy`` plus
    ``root/meta_data/split/train_all.json`` (absolute paths of OpenShape's machines)."""
    rng = np.random.default_rng(seed)
    protos = prototypes()
    base = root / "objaverse-processed" / "merged_for_training_final"
    entries, k = [], 0
    for kind in KINDS:
        for i in range(per_kind):
            source = ("ShapeNet", "Objaverse")[i % 2]
            uid = f"{kind}-{i:03d}"
            path = base / source / f"{uid}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, openshape_shape(kind, rng, protos, uid,
                                          with_text=(k % no_text_every != 0)), allow_pickle=True)
            entries.append({"data_path": f"/mnt/data/objaverse-processed/"
                                         f"merged_for_training_final/{source}/{uid}.npy",
                            "group": source})
            k += 1
    split = root / "meta_data" / "split"
    split.mkdir(parents=True, exist_ok=True)
    (split / "train_all.json").write_text(json.dumps(entries))
    (split / "train_half.json").write_text(json.dumps(entries[::2]))
    return {"folder": base, "split": split / "train_all.json", "num_shapes": len(entries)}


def _write_h5(path: Path, data, label):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data)
        f.create_dataset("label", data=label)


def _labelled_clouds(kinds: dict, names: list, rng, per_class: int, n: int = 512):
    data, labels = [], []
    for name, kind in kinds.items():
        for _ in range(per_class):
            data.append(cloud(kind, rng, n))
            labels.append(names.index(name))
    return np.stack(data), np.array(labels)


def write_modelnet40_hdf5(root: Path, per_class: int = 3, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    d = root / "modelnet40_ply_hdf5_2048"
    for split in ("train", "test"):
        data, labels = _labelled_clouds(MN_KIND, MODELNET40_CLASSES, rng, per_class)
        half = len(data) // 2  # two shards, listed with PointNet's repo-relative paths
        _write_h5(d / f"ply_data_{split}0.h5", data[:half], labels[:half, None].astype(np.uint8))
        _write_h5(d / f"ply_data_{split}1.h5", data[half:], labels[half:, None].astype(np.uint8))
        (d / f"{split}_files.txt").write_text("".join(
            f"data/modelnet40_ply_hdf5_2048/ply_data_{split}{k}.h5\n" for k in range(2)))
    (d / "shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")
    return d


def write_scanobjectnn(root: Path, per_class: int = 3, seed: int = 2) -> Path:
    rng = np.random.default_rng(seed)
    d = root / "h5_files"
    for folder, stem in (("main_split", "objectdataset"), ("main_split_nobg", "objectdataset")):
        for split, prefix in (("train", "training"), ("test", "test")):
            data, labels = _labelled_clouds(SCAN_KIND, SCANOBJECTNN_CLASSES, rng, per_class)
            _write_h5(d / folder / f"{prefix}_{stem}.h5", data, labels.astype(np.int64))
    return d


def write_lvis(root: Path, per_class: int = 3, seed: int = 3) -> Path:
    """``root/meta_data/split/lvis.json`` + per-shape files under ``root/objaverse-processed``."""
    rng = np.random.default_rng(seed)
    protos = prototypes()
    cats = {"ball": "sphere", "crate": "box", "pole": "rod", "plate": "disc"}
    entries = []
    for cat, kind in cats.items():
        for i in range(per_class):
            uid = f"lvis-{cat}-{i}"
            path = (root / "objaverse-processed" / "merged_for_training_final" / "Objaverse"
                    / "000-001" / f"{uid}.npy")
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, openshape_shape(kind, rng, protos, uid, with_text=i != 1),
                    allow_pickle=True)
            entries.append({"uid": uid, "category": cat, "data_path":
                            f"/mnt/data/objaverse-processed/merged_for_training_final/"
                            f"Objaverse/000-001/{uid}.npy"})
    split = root / "meta_data" / "split"
    split.mkdir(parents=True, exist_ok=True)
    (split / "lvis.json").write_text(json.dumps(entries))
    return split / "lvis.json"


def write_class_features(root: Path) -> dict:
    """OpenShape's three class-feature files: ModelNet40's as an array in label order,
    ScanObjectNN's as a pickled {name: feature} dict, LVIS's as an array in sorted order."""
    rng = np.random.default_rng(9)
    protos = prototypes()
    meta = root / "meta_data"

    def feat(name, kinds):
        kind = kinds.get(name)
        base = protos[kind] if kind else rng.normal(size=D)
        return (base + 0.1 * rng.normal(size=D)).astype(np.float32)

    (meta / "modelnet40").mkdir(parents=True, exist_ok=True)
    mn = np.stack([feat(c, MN_KIND) for c in MODELNET40_CLASSES])
    np.save(meta / "modelnet40" / "cat_name_pt_feat.npy", mn)
    (meta / "scanobjectnn").mkdir(parents=True, exist_ok=True)
    scan = {c: feat(c, SCAN_KIND) for c in SCANOBJECTNN_CLASSES}
    np.save(meta / "scanobjectnn" / "cat_name_pt_feat.npy", scan, allow_pickle=True)
    lvis_kinds = {"ball": "sphere", "crate": "box", "pole": "rod", "plate": "disc"}
    lvis = np.stack([feat(c, lvis_kinds) for c in sorted(lvis_kinds)])
    np.save(meta / "lvis_cat_name_pt_feat.npy", lvis)
    return {"modelnet40": meta / "modelnet40" / "cat_name_pt_feat.npy",
            "scanobjectnn": meta / "scanobjectnn" / "cat_name_pt_feat.npy",
            "objaverse_lvis": meta / "lvis_cat_name_pt_feat.npy"}
