"""SynthShapes: the project's embedded procedural world of coloured 3D shapes.

16 categories modelled on ModelNet40 / ScanObjectNN classes, each built from primitives sampled
on the surface (see :mod:`mmmixlab.data.shapes`, the builders in :mod:`mmmixlab.data.categories`).
Some pairs overlap on purpose (``CONFUSABLE_PAIRS``: table/desk, cup/vase, plant/flower_pot,
cabinet/bookshelf).

Conventions: z is up, objects face -y; every cloud is centred on its centroid and scaled into
the unit sphere; rgb lies in [0, 1].

Splits: ``train`` and ``test`` hold clean, coloured full clouds; ``scan`` holds ScanObjectNN-like
clouds (:func:`make_scan`: single-view partial, noisy, background clutter, random rotation
about z, no colour: rgb = 0.4). Images are always rendered from the clean full cloud and the
captions come from the instance's attributes. Every instance has its own random stream, seeded
from (seed, split, category, index), so one shape can be regenerated on its own and splits
never share instances.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .captions import make_captions
from .primitives import normalize_cloud, sample_parts
from .prompts import display_name
from .render import camera_basis, render_views, visible_mask
from .shapes import CATEGORIES, CONFUSABLE_PAIRS, build_parts, category_index
from .triplets import TripletSet, load_triplets, write_triplets

__all__ = [
    "CATEGORIES",
    "CONFUSABLE_PAIRS",
    "SPLITS",
    "SynthConfig",
    "build_world",
    "display_name",
    "generate_shape",
    "generate_split",
    "instance_rng",
    "load_world",
    "make_scan",
]

SPLITS = ("train", "test", "scan")
SYNTH_VERSION = 1          # bump when the generator changes: invalidates cached worlds
RENDER_POINTS = 4096       # density of the clean cloud the images are rendered from
MIN_POINTS, MAX_POINTS = 16, 10000
SCAN_GREY = 0.4            # OpenShape's constant colour for ScanObjectNN clouds


def _check_num_points(num_points) -> int:
    n = int(num_points)
    if n != num_points or not MIN_POINTS <= n <= MAX_POINTS:
        raise ValueError(f"num_points must be an integer in [{MIN_POINTS}, {MAX_POINTS}], "
                         f"got {num_points!r}")
    return n


@dataclass
class SynthConfig:
    seed: int = 0
    categories: tuple[str, ...] = CATEGORIES
    train_per_class: int = 40
    # 70 per class (1,120 shapes): a top-1's standard error is at most 1.5 points, enough to
    # resolve the paper's 1-10 point effects (world version 2; version 1 had 12 per class)
    test_per_class: int = 70
    scan_per_class: int = 70
    num_points: int = 2048
    views: int = 2
    image_size: int = 64
    captions_per_shape: int = 3

    def __post_init__(self):
        self.categories = tuple(self.categories)
        if not self.categories:
            raise ValueError("categories is empty")
        for c in self.categories:
            category_index(c)
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"categories has duplicates: {self.categories}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        for k in ("train_per_class", "test_per_class", "scan_per_class"):
            v = getattr(self, k)
            if int(v) != v or v < 0:
                raise ValueError(f"{k} must be a non-negative integer, got {v!r}")
        _check_num_points(self.num_points)
        if int(self.views) < 1:
            raise ValueError(f"views must be >= 1, got {self.views!r}")
        if not 16 <= int(self.image_size) <= 1024:
            raise ValueError(f"image_size must lie in [16, 1024], got {self.image_size!r}")
        if int(self.captions_per_shape) < 1:
            raise ValueError(f"captions_per_shape must be >= 1, got {self.captions_per_shape!r}")

    def per_class(self, split: str) -> int:
        _check_split(split)
        return int(getattr(self, f"{split}_per_class"))

    def key(self) -> str:
        """Short stable hash of the config and generator version (for cache folder names)."""
        d = asdict(self)
        d["categories"] = list(d["categories"])
        d["_version"] = SYNTH_VERSION
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def instance_rng(seed: int, split: str, category: str, index: int) -> np.random.Generator:
    """The random stream of one instance: independent of which other shapes are generated."""
    ss = np.random.SeedSequence([int(seed), SPLITS.index(_check_split(split)),
                                 category_index(category), int(index), 0x5EED])
    return np.random.default_rng(ss)


def generate_shape(category: str, rng: np.random.Generator,
                   num_points: int = 2048) -> tuple[np.ndarray, dict]:
    """One clean coloured instance: (points (P, 6) float32, attributes).

    xyz is centred and inside the unit sphere (z up, front towards -y), rgb in [0, 1].
    attributes: category, color, colors, material, parts (caption phrases), size, num_parts.
    """
    n = _check_num_points(num_points)
    parts, attrs = build_parts(category, rng)
    return normalize_cloud(sample_parts(parts, n, rng)), attrs


def make_scan(points: np.ndarray, rng: np.random.Generator, num_points: int | None = None,
              noise: float = 0.01, clutter: float = 0.15, rotate: bool = True,
              return_info: bool = False):
    """A ScanObjectNN-like cloud from a clean one.

    1. keep the points seen from a random viewpoint (z-buffer visibility; azimuth uniform,
       elevation 10-50 degrees): a single-view, partial cloud;
    2. add background clutter, ``clutter`` of the output points: a partial floor patch under the
       object on the camera side and a few blobs of points around it;
    3. resample to exactly ``num_points`` (default: as many as given) and add gaussian sensor
       noise (sigma ``noise``, in units of the object radius);
    4. rotate randomly about z (if ``rotate``), set rgb to 0.4 and renormalize to the unit sphere.
    Returns (P, 6) float32, plus an info dict if ``return_info``.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] not in (3, 6) or pts.shape[0] < MIN_POINTS:
        raise ValueError(f"points must have shape (P, 6) or (P, 3) with P >= {MIN_POINTS}, "
                         f"got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points contains NaN or inf values")
    n_out = _check_num_points(len(pts) if num_points is None else num_points)
    if not 0.0 <= clutter < 0.9:
        raise ValueError(f"clutter must lie in [0, 0.9), got {clutter!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    xyz = pts[:, :3] - pts[:, :3].mean(axis=0)
    r = np.sqrt((xyz ** 2).sum(axis=1)).max()
    xyz = xyz / max(r, 1e-12)

    az = float(rng.uniform(0.0, 360.0))
    el = float(rng.uniform(10.0, 50.0))
    vis = visible_mask(xyz, az, el)
    obj = xyz[vis]

    n_clutter = round(clutter * n_out)
    n_obj = n_out - n_clutter
    idx = rng.choice(len(obj), size=n_obj, replace=n_obj > len(obj))
    chunks = [obj[idx]]
    if n_clutter:
        toward = camera_basis(az, el)[2]
        toward = toward[:2] / max(np.linalg.norm(toward[:2]), 1e-9)
        n_floor = round(n_clutter * rng.uniform(0.5, 0.75))
        n_blobs = n_clutter - n_floor
        # floor patch: a disk sector around the object's foot, on the camera side
        z0 = xyz[:, 2].min() - 0.01
        ang0 = math.atan2(toward[1], toward[0])
        half = math.radians(rng.uniform(70.0, 130.0))
        ang = ang0 + rng.uniform(-half, half, n_floor)
        rad = np.sqrt(rng.uniform(0.0, 1.0, n_floor)) * rng.uniform(0.8, 1.1)
        floor = np.stack([rad * np.cos(ang), rad * np.sin(ang), np.full(n_floor, z0)], axis=1)
        chunks.append(floor)
        # blobs: small gaussian clusters near the object (neighbouring stuff on a shelf/floor)
        k = int(rng.integers(2, 5))
        which = rng.integers(0, k, n_blobs)
        ba = ang0 + rng.uniform(-2.0, 2.0, k)
        br = rng.uniform(0.55, 0.95, k)
        centres = np.stack([br * np.cos(ba), br * np.sin(ba),
                            z0 + rng.uniform(0.02, 0.4, k)], axis=1)
        sig = rng.uniform(0.03, 0.08, k)
        chunks.append(centres[which] + rng.normal(size=(n_blobs, 3)) * sig[which, None])
    cloud = np.concatenate(chunks, axis=0)
    cloud = cloud[rng.permutation(len(cloud))]
    if noise > 0:
        cloud = cloud + rng.normal(scale=noise, size=cloud.shape)
    theta = float(rng.uniform(0.0, 2 * math.pi)) if rotate else 0.0
    c, s = math.cos(theta), math.sin(theta)
    cloud = cloud @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]).T
    out = np.concatenate([cloud, np.full((n_out, 3), SCAN_GREY)], axis=1)
    out = normalize_cloud(out)
    out[:, 3:] = np.float32(SCAN_GREY)
    if return_info:
        return out, {"azimuth": az, "elevation": el, "visible_fraction": float(vis.mean()),
                     "clutter_points": n_clutter, "rotation": theta}
    return out


def _split_instances(cfg: SynthConfig, split: str):
    n = cfg.per_class(split)
    for label, cat in enumerate(cfg.categories):
        for i in range(n):
            yield label, cat, i


def generate_split(cfg: SynthConfig, split: str) -> TripletSet:
    """All instances of one split as a :class:`TripletSet` (deterministic from cfg)."""
    _check_split(split)
    t0 = time.perf_counter()
    items = list(_split_instances(cfg, split))
    S, P, K, H = len(items), cfg.num_points, int(cfg.views), int(cfg.image_size)
    points = np.empty((S, P, 6), dtype=np.float32)
    images = np.empty((S, K, H, H, 3), dtype=np.uint8)
    captions, names, labels, attributes = [], [], np.empty(S, dtype=np.int64), []
    for j, (label, cat, i) in enumerate(items):
        rng = instance_rng(cfg.seed, split, cat, i)
        parts, attrs = build_parts(cat, rng)
        clean = normalize_cloud(sample_parts(parts, P, rng))  # == generate_shape with this rng
        dense = clean if P >= RENDER_POINTS else normalize_cloud(
            sample_parts(parts, RENDER_POINTS, rng))
        if split == "scan":
            # a denser source: only ~10-40% of it survives the visibility test
            src = normalize_cloud(sample_parts(parts, min(4 * P, 40000), rng))
            points[j] = make_scan(src, rng, num_points=P)
        else:
            points[j] = clean
        images[j] = render_views(dense, num_views=K, image_size=H)
        captions.append(make_captions(cat, attrs, cfg.captions_per_shape, rng))
        names.append(f"synth-{split}-{cat}-{i:04d}")
        labels[j] = label
        attributes.append(attrs)
    info = {"generator": "SynthShapes", "version": SYNTH_VERSION, "synth_key": cfg.key(),
            "split": split, "config": {**asdict(cfg), "categories": list(cfg.categories)},
            "up_axis": "z", "front": "-y", "render_points": RENDER_POINTS,
            "display_names": [display_name(c) for c in cfg.categories],
            "attributes": attributes, "seconds": round(time.perf_counter() - t0, 3)}
    return TripletSet(points=points, images=images, captions=captions, names=names,
                      labels=labels, class_names=list(cfg.categories), info=info)


def build_world(cfg: SynthConfig | None = None, root: str | Path = ".cache/mmmixlab/synth",
                splits=SPLITS) -> dict[str, Path]:
    """Write (or reuse) root/<split> for each split; returns {split: path}.

    A split folder is reused when its manifest records the same ``cfg.key()``.
    """
    cfg = SynthConfig() if cfg is None else cfg
    root = Path(root)
    out, missing = {}, []
    for split in splits:
        _check_split(split)
        path = root / split
        man = path / "manifest.json"
        if man.is_file():
            try:
                key = json.loads(man.read_text()).get("info", {}).get("synth_key")
            except (OSError, ValueError):
                key = None
            if key == cfg.key():
                out[split] = path
                continue
        missing.append(split)
    # Each split is drawn from its own seed, so they can be generated side by side: on a cold
    # start the largest split alone sets the time (a third off the demo's data step here)
    from ..run_pool import available_cores
    workers = min(len(missing), available_cores())
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        largest_first = sorted(missing, key=lambda s: -_split_size(cfg, s))
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = {s: pool.submit(_write_split, cfg, s, root / s) for s in largest_first}
            for s in missing:
                out[s] = done[s].result()
    else:
        for s in missing:
            out[s] = _write_split(cfg, s, root / s)
    return {s: out[s] for s in splits}


def _split_size(cfg: SynthConfig, split: str) -> int:
    return {"train": cfg.train_per_class, "test": cfg.test_per_class,
            "scan": cfg.scan_per_class}[split]


def _write_split(cfg: SynthConfig, split: str, path: Path) -> Path:
    return write_triplets(generate_split(cfg, split), path)


def load_world(cfg: SynthConfig | None = None, root: str | Path = ".cache/mmmixlab/synth",
               splits=SPLITS, mmap: bool = True) -> dict[str, TripletSet]:
    """:func:`build_world` then :func:`load_triplets` of every split."""
    paths = build_world(cfg, root, splits)
    return {k: load_triplets(p, mmap=mmap) for k, p in paths.items()}

