"""OpenShape's training triplets: one pickled ``.npy`` dict per shape, read as it is on disk.

OpenShape (and MM-Mixing after it) train on ~875k shapes whose point clouds and frozen CLIP
features (OpenCLIP ViT-bigG-14, 1280-d) were precomputed. Each file is
``np.save(path, dict)``, read back with ``np.load(path, allow_pickle=True).item()``; its keys
(OpenShape's README):

* ``xyz`` (10000, 3) in [-1, 1] and ``rgb`` (10000, 3) in [0, 1]: the point cloud, y-up;
* ``image_feat`` (12, D): features of 12 rendered views; ``thumbnail_feat`` (D,) or (1, D);
* ``text`` list of str and ``text_feat`` list of ``{"original": f, "prompt_avg": f}``;
* ``blip_caption`` / ``msft_caption`` str (may be empty) with ``*_caption_feat`` dicts of the
  same two versions; ``retrieval_text`` list of str with ``retrieval_text_feat`` list of
  ``{"original": f}``;
* ``dataset``, ``group``, ``id``: provenance.

Only ``xyz``, ``rgb`` and ``image_feat`` are required here; every text source is optional, and a
shape may end up with no text at all. Such a shape gets ``has_text=False`` and a zero text
feature: its text loss term is masked, and under text mixing a mixed text target exists only
when both partners have text (the rule ``mmmixlab.losses``/``mixing`` follow; rows without one
still serve as negatives).

Text entries, in this order: each ``text_feat`` entry (``text_version``, default
``prompt_avg``: OpenShape's template-averaged feature), the BLIP caption, the Microsoft caption,
each retrieval text (``original``; no template version exists). Per step one entry is drawn
uniformly. (OpenShape draws one per *source* first, then one of the sources; with one entry per
source this is the same up to weighting; uniform over entries is our documented choice.)

Transforms (OpenShape's loader habits): :func:`swap_yz` (y-up to z-up, a column swap as
OpenShape does it) and :func:`normalize_unit_sphere` on the points kept; the training
augmentation (rotation about z, scale jitter, colour dropout) is :mod:`mmmixlab.augment`'s, the
same on every data path. :func:`rotate_z` and :func:`drop_rgb` are the single-cloud forms.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "OpenShapeRecord",
    "OpenShapeTriplets",
    "drop_rgb",
    "list_openshape_files",
    "normalize_unit_sphere",
    "read_openshape_npy",
    "rotate_z",
    "subsample",
    "swap_yz",
]

TEXT_VERSIONS = ("prompt_avg", "original")


# ---------------------------------------------------------------------------------- augmentations

def swap_yz(xyz: np.ndarray) -> np.ndarray:
    """OpenShape's y-up -> z-up conversion: swap the y and z columns (returns a new array).

    This is a reflection, not a rotation; what matters is that training and evaluation clouds
    get the same swap (``load_benchmark`` applies it too).
    """
    return xyz[..., [0, 2, 1]]


def normalize_unit_sphere(xyz: np.ndarray) -> np.ndarray:
    """Centre each cloud on its mean and scale it so its farthest point lies on the unit
    sphere: one (P, 3) cloud or a batch (..., P, 3). The project's one normalizer (training
    triplets, benchmarks, meshes, user files).

    Computed in float64 so huge or tiny coordinates neither overflow nor lose precision; a cloud
    whose points all coincide becomes all zeros (never NaN).
    """
    x = np.asarray(xyz, dtype=np.float64)
    if x.shape[-2] == 0:
        return x.astype(np.float32)
    x = x - x.mean(axis=-2, keepdims=True)
    r = np.sqrt((x * x).sum(-1)).max(axis=-1, keepdims=True)[..., None]
    if not np.isfinite(r).all():
        raise ValueError("cannot normalize a cloud with NaN or inf coordinates")
    x = x / np.where(r > 0, r, 1.0)
    return x.astype(np.float32)


def rotate_z(xyz: np.ndarray, angle: float) -> np.ndarray:
    """Rotate about the z (up) axis by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    return (np.asarray(xyz, dtype=np.float32) @ rot.T).astype(np.float32)


def drop_rgb(rgb: np.ndarray, rng: np.random.Generator, p: float = 0.5,
             value: float = 0.4) -> np.ndarray:
    """With probability ``p`` replace every colour by the constant ``value`` (OpenShape: 0.4,
    the grey its colourless eval sets get), so the model does not rely on colour alone."""
    if rng.random() < p:
        return np.full_like(rgb, value, dtype=np.float32)
    return np.asarray(rgb, dtype=np.float32)


def subsample(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` random indices into ``n`` points: without replacement when n >= k (uniform, no
    FPS start bias), else all points plus random repeats."""
    if n <= 0:
        raise ValueError("cannot subsample an empty cloud")
    if n >= k:
        return rng.choice(n, k, replace=False)
    return np.concatenate([rng.permutation(n), rng.integers(0, n, k - n)])


# ---------------------------------------------------------------------------------- one file

@dataclass
class OpenShapeRecord:
    """One shape of OpenShape's training data.

    xyz, rgb: (P, 3) float32; image_feat: (V, D) float32 (V = 12 views); thumbnail_feat: (D,) or
    None; text_feats: (T, D) float32, T >= 0; texts / text_sources: T strings each.
    """

    path: str
    name: str
    xyz: np.ndarray
    rgb: np.ndarray
    image_feat: np.ndarray
    thumbnail_feat: np.ndarray | None = None
    text_feats: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    texts: list = field(default_factory=list)
    text_sources: list = field(default_factory=list)
    dataset: str | None = None
    group: str | None = None

    @property
    def points(self) -> np.ndarray:
        """(P, 6) float32: xyz + rgb as stored (no augmentation)."""
        return np.concatenate([self.xyz, self.rgb], axis=1)

    @property
    def has_text(self) -> bool:
        return len(self.text_feats) > 0

    @property
    def dim(self) -> int:
        return int(self.image_feat.shape[-1])


def _feature(value, where: str, dim: int | None) -> np.ndarray:
    try:
        f = np.asarray(value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: not a numeric feature vector ({e})") from e
    if f.size == 0 or (dim is not None and f.size != dim):
        raise ValueError(f"{where}: feature of width {f.size}, expected {dim}")
    if not np.isfinite(f).all():
        raise ValueError(f"{where}: feature holds NaN or inf")
    return f


def _load_dict(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: OpenShape shape file missing")
    from ..safe_pickle import load_npy

    try:
        obj = load_npy(path)  # restricted unpickler: a doctored file cannot run code
    except ValueError:
        raise
    except Exception as e:  # truncated files raise EOFError, OSError...
        raise ValueError(f"{path}: corrupt or truncated .npy file "
                         f"({type(e).__name__}: {e})") from e
    if not (isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ()):
        shape = getattr(obj, "shape", None)
        raise ValueError(f"{path}: expected a pickled dict (OpenShape's per-shape format), got "
                         f"an array of dtype {getattr(obj, 'dtype', type(obj).__name__)} shape "
                         f"{shape}")
    d = obj.item()
    if not isinstance(d, dict):
        raise ValueError(  # noqa: TRY004 (bad file content, not a bad argument)
            f"{path}: expected a pickled dict, got {type(d).__name__}")
    return d


def read_openshape_npy(path, text_version: str = "prompt_avg", texts: bool = True,
                       features: bool = True) -> OpenShapeRecord:
    """Read and check one OpenShape per-shape ``.npy`` dict (see the module docstring).

    ``texts=False`` / ``features=False`` skip the text / image features (faster for evaluation
    sets, where only the cloud is needed). Errors name the file and the problem.
    """
    if text_version not in TEXT_VERSIONS:
        raise ValueError(f"text_version must be one of {TEXT_VERSIONS}, got {text_version!r}")
    path = Path(path)
    d = _load_dict(path)
    missing = [k for k in ("xyz", "rgb") + (("image_feat",) if features else ()) if k not in d]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; found {sorted(map(str, d))}")
    xyz = np.asarray(d["xyz"], dtype=np.float32)
    rgb = np.asarray(d["rgb"], dtype=np.float32)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or xyz.shape[0] == 0:
        raise ValueError(f"{path}: 'xyz' must have shape (P, 3), got {xyz.shape}")
    if rgb.shape != xyz.shape:
        raise ValueError(f"{path}: 'rgb' has shape {rgb.shape}, 'xyz' {xyz.shape}")
    if not np.isfinite(xyz).all():
        raise ValueError(f"{path}: 'xyz' holds NaN or inf")
    if not np.isfinite(rgb).all() or rgb.min() < -1e-3 or rgb.max() > 1 + 1e-3:
        raise ValueError(f"{path}: 'rgb' must lie in [0, 1], got range "
                         f"[{np.nanmin(rgb):.4g}, {np.nanmax(rgb):.4g}]")
    rgb = np.clip(rgb, 0.0, 1.0)
    name = str(d.get("id", path.stem))
    rec = OpenShapeRecord(path=str(path), name=name, xyz=xyz, rgb=rgb,
                          image_feat=np.zeros((0, 0), np.float32),
                          dataset=d.get("dataset"), group=d.get("group"))
    if not features:
        return rec
    img = np.asarray(d["image_feat"], dtype=np.float32)
    if img.ndim == 3 and img.shape[1] == 1:
        img = img[:, 0]
    if img.ndim != 2 or img.shape[0] == 0:
        raise ValueError(f"{path}: 'image_feat' must have shape (V, D), got {img.shape}")
    if not np.isfinite(img).all():
        raise ValueError(f"{path}: 'image_feat' holds NaN or inf")
    dim = img.shape[1]
    rec.image_feat = img
    if d.get("thumbnail_feat") is not None:
        rec.thumbnail_feat = _feature(d["thumbnail_feat"], f"{path}: 'thumbnail_feat'", dim)
    if not texts:
        return rec
    feats, strings, sources = [], [], []

    def add(value, source: str, text: str, where: str):
        feats.append(_feature(value, f"{path}: {where}", dim))
        strings.append(text)
        sources.append(source)

    raw_texts = d.get("text") or []
    for i, entry in enumerate(d.get("text_feat") or []):
        if not isinstance(entry, dict) or text_version not in entry:
            got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ValueError(f"{path}: text_feat[{i}] lacks {text_version!r} (has {got})")
        text = str(raw_texts[i]) if i < len(raw_texts) else ""
        add(entry[text_version], "text", text, f"text_feat[{i}][{text_version!r}]")
    for src in ("blip", "msft"):
        caption = d.get(f"{src}_caption")
        entry = d.get(f"{src}_caption_feat")
        if caption and entry is not None:
            if not isinstance(entry, dict) or text_version not in entry:
                raise ValueError(f"{path}: {src}_caption_feat lacks {text_version!r}")
            add(entry[text_version], f"{src}_caption", str(caption),
                f"{src}_caption_feat[{text_version!r}]")
    ret_texts = d.get("retrieval_text") or []
    for i, entry in enumerate(d.get("retrieval_text_feat") or []):
        if not isinstance(entry, dict) or "original" not in entry:
            raise ValueError(f"{path}: retrieval_text_feat[{i}] lacks 'original'")
        text = str(ret_texts[i]) if i < len(ret_texts) else ""
        add(entry["original"], "retrieval_text", text, f"retrieval_text_feat[{i}]")
    rec.text_feats = np.stack(feats) if feats else np.zeros((0, dim), np.float32)
    rec.texts, rec.text_sources = strings, sources
    return rec


# ---------------------------------------------------------------------------------- file lists

def read_json_list(path: Path, what: str) -> list:
    """A JSON file holding a non-empty list (OpenShape's split files); errors name the file."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list of {what}")
    return entries


def read_split_entries(path: Path) -> list[str]:
    """The shape paths a split list names, as written: an OpenShape split ``.json`` (a list of
    ``{"data_path", ...}``, or of strings) or a text file with one path a line."""
    path = Path(path)
    if path.suffix == ".json":
        out = []
        for i, e in enumerate(read_json_list(path, "{data_path, ...} entries (OpenShape's "
                                                   "meta_data/split/ format)")):
            p = e.get("data_path") if isinstance(e, dict) else e if isinstance(e, str) else None
            if not p:
                raise ValueError(f"{path}: entry {i} has no 'data_path': {e!r:.100}")
            out.append(str(p))
        return out
    out = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not out:
        raise ValueError(f"{path}: lists no shape files")
    return out


def list_openshape_files(src) -> list[Path]:
    """The shape files named by ``src``: a folder (every ``*.npy`` below it, sorted), an
    OpenShape split ``.json`` or a text file of paths (:func:`read_split_entries`; paths that do
    not exist as written, such as OpenShape's ``/mnt/data/...``, are found below the list's
    folders by :func:`resolve_split_paths`), or a list of paths."""
    if isinstance(src, (list, tuple)):
        files = [Path(p) for p in src]
    else:
        src = Path(src)
        if src.is_dir():
            files = sorted(src.rglob("*.npy"))
            if not files:
                raise FileNotFoundError(f"{src}: folder holds no .npy shape files")
        elif src.is_file():
            bases = [src.parent, *src.parent.parents[:4]]
            files = [Path(p) for p in resolve_split_paths(read_split_entries(src), bases)]
        else:
            raise FileNotFoundError(f"{src}: no such folder or file list")
    if not files:
        raise ValueError(f"{src}: lists no shape files")
    return files


def split_path_tails(p: Path) -> list[Path]:
    parts = p.parts
    tails = []
    for marker in ("objaverse-processed", "merged_for_training_final"):
        if marker in parts:
            k = parts.index(marker)
            tails += [Path(*parts[k:]), Path(*parts[k + 1:])]
    for source in ("Objaverse", "ShapeNet", "ABO", "3D-FUTURE"):
        if source in parts:
            tails.append(Path(*parts[parts.index(source):]))
    if not p.is_absolute():
        tails.append(p)
    return tails


def resolve_split_paths(entries: list[str], bases) -> list[str]:
    """A split list's paths as they exist here. OpenShape's split files carry the absolute
    paths of its authors' machines (``/mnt/data/objaverse-processed/...``): a path that does
    not exist as written is looked up below each of ``bases`` by its tail from the
    ``objaverse-processed`` / ``merged_for_training_final`` / source-folder component on. The
    prefix that worked is reused for the following entries (no file system lookups for 875k
    paths); a path found nowhere is kept as written and named when its read fails."""
    out, rewrite = [], None  # rewrite = (old prefix, new prefix)
    for entry in entries:
        if rewrite and entry.startswith(rewrite[0]):
            out.append(rewrite[1] + entry[len(rewrite[0]):])
            continue
        p = Path(entry)
        if p.is_file():
            out.append(entry)
            continue
        found = None
        for base in bases:
            for tail in split_path_tails(p):
                if (base / tail).is_file():
                    found = base / tail
                    old = entry[:len(entry) - len(str(tail))]
                    new = str(found)[:len(str(found)) - len(str(tail))]
                    rewrite = (old, new) if entry.endswith(str(tail)) else None
                    break
            if found is not None:
                break
        out.append(str(found) if found is not None else entry)
    return out


# ---------------------------------------------------------------------------------- dataset

def _torch():
    import torch
    return torch


class OpenShapeTriplets:
    """A torch Dataset over OpenShape per-shape files, reading one file per item.

    Item ``i`` -> dict with ``points`` (num_points, 6) float32 tensor (subsampled and augmented),
    ``image_feat`` (D,) of a random view (or, with ``thumbnail_prob``, the thumbnail),
    ``text_feat`` (D,) of a random text entry (zeros when the shape has none), ``has_text``
    bool, ``index`` and ``name``. The randomness of item ``i`` depends only on
    (seed, epoch, i), so results do not depend on the number of DataLoader workers; call
    :meth:`set_epoch` each epoch for fresh draws. ``augment=False`` gives the evaluation
    transform (swap + normalize only, fixed first view, first text entry).
    """

    def __init__(self, src, num_points: int = 10000, augment: bool = True, up_swap: bool = True,
                 normalize: bool = True, rotate: bool = True, rgb_drop_prob: float = 0.5,
                 rgb_drop_value: float = 0.4, thumbnail_prob: float = 0.0,
                 text_version: str = "prompt_avg", seed: int = 0):
        if text_version not in TEXT_VERSIONS:
            raise ValueError(f"text_version must be one of {TEXT_VERSIONS}, got {text_version!r}")
        if int(num_points) < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        for n, p in (("rgb_drop_prob", rgb_drop_prob), ("thumbnail_prob", thumbnail_prob)):
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"{n} must lie in [0, 1], got {p}")
        self.files = list_openshape_files(src)
        self.num_points = int(num_points)
        self.augment = augment
        self.transform = {"up_swap": up_swap, "normalize": normalize,
                          "rotate": rotate and augment,
                          "rgb_drop_prob": rgb_drop_prob if augment else 0.0,
                          "rgb_drop_value": rgb_drop_value}
        self.thumbnail_prob = float(thumbnail_prob) if augment else 0.0
        self.text_version = text_version
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, int(index)))

    def __getitem__(self, index: int) -> dict:
        rec = read_openshape_npy(self.files[index], self.text_version)
        return make_item(rec.xyz, rec.rgb, rec.image_feat, rec.thumbnail_feat, rec.text_feats,
                         index, rec.name, self.rng(index), self.num_points, self.augment,
                         self.transform, self.thumbnail_prob)


def make_item(xyz, rgb, image_feat, thumbnail_feat, text_feats, index: int, name: str,
              rng: np.random.Generator, num_points: int, augment: bool, transform: dict,
              thumbnail_prob: float, generator=None, sampling: str = "random") -> dict:
    """One training item from arrays (shared by the per-file and the packed datasets, and the
    streamed batches).

    The points: ``num_points`` of them (:func:`mmmixlab.augment.subsample`: a random subset or
    FPS; the first ones, in order, for evaluation), y/z swap and unit sphere on what was kept,
    then :func:`mmmixlab.augment.augment_clouds` when ``augment``: the same two functions as
    the in-memory batches, drawn from ``generator`` (default: one seeded from ``rng``). The
    view and the caption are drawn from ``rng``. ``text_feats`` (T, D) holds only the shape's
    real entries (T may be 0).
    """
    torch = _torch()
    from ..augment import augment_clouds, subsample

    if generator is None:
        generator = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
    pts = torch.from_numpy(np.concatenate([np.asarray(xyz, np.float32),
                                           np.asarray(rgb, np.float32)], axis=1))
    n = pts.shape[0]
    if n == 0:
        raise ValueError("cannot subsample an empty cloud")
    if augment or n < num_points or sampling == "fps":
        pts = subsample(pts[None], num_points, sampling, generator)[0]
    elif n > num_points:
        pts = pts[:num_points]
    xyz = pts[:, :3].numpy()
    if transform.get("up_swap", True):
        xyz = swap_yz(xyz)
    if transform.get("normalize", True):
        xyz = normalize_unit_sphere(xyz)
    pts = torch.cat([torch.from_numpy(np.ascontiguousarray(xyz, dtype=np.float32)), pts[:, 3:]],
                    dim=1)
    if augment:
        pts = augment_clouds(pts[None], generator, transform.get("rgb_drop_prob", 0.5),
                             rotate=transform.get("rotate", True),
                             fill=transform.get("rgb_drop_value", 0.4))[0]
    if augment and thumbnail_feat is not None and rng.random() < thumbnail_prob:
        img = thumbnail_feat
    else:
        img = image_feat[rng.integers(len(image_feat)) if augment else 0]
    dim = image_feat.shape[-1]
    has_text = len(text_feats) > 0
    if has_text:
        txt = text_feats[rng.integers(len(text_feats)) if augment else 0]
    else:
        txt = np.zeros(dim, np.float32)
    return {"points": pts.contiguous(),
            "image_feat": torch.from_numpy(np.asarray(img, dtype=np.float32).copy()),
            "text_feat": torch.from_numpy(np.asarray(txt, dtype=np.float32).copy()),
            "has_text": torch.tensor(bool(has_text)),
            "index": int(index), "name": name}


def default_collate(items: Sequence[dict]) -> dict:
    """Stack a list of items into a batch (``torch.utils.data.default_collate`` does the same;
    kept here so the batch layout is documented in one place)."""
    torch = _torch()
    return {"points": torch.stack([it["points"] for it in items]),
            "image_feat": torch.stack([it["image_feat"] for it in items]),
            "text_feat": torch.stack([it["text_feat"] for it in items]),
            "has_text": torch.stack([it["has_text"] for it in items]),
            "index": torch.tensor([it["index"] for it in items]),
            "name": [it["name"] for it in items]}
