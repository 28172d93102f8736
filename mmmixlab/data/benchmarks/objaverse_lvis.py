"""Objaverse-LVIS as OpenShape releases it: ``meta_data/split/lvis.json`` + per-shape ``.npy``.

``lvis.json`` is a list of ``{"uid", "category", "data_path"[, "group"]}`` whose ``data_path``
points at OpenShape's per-shape ``.npy`` dicts. Those paths were written on OpenShape's machines
(``/mnt/data/...``), so a path that does not exist as written is looked up relative to ``root``
and then by its tail from the ``Objaverse/`` component on. Class names are the sorted distinct
categories (1,156 in the full file), as OpenShape orders them. 46k shapes of 10k points do not
fit in memory, so ``points`` is a :class:`LazyPoints` that reads shapes on indexing; the frozen
image/text features the files carry are kept in ``PointDataset.modal`` as shapes are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .common import LazyPoints, PointDataset, _finish_points

LVIS_NUM_CLASSES = 1156


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
