"""Training batches streamed from disk: OpenShape's per-shape files or a packed store.

:class:`StreamBatches` has the interface of :class:`mmmixlab.batches.TripletBatches` (what the
trainer iterates), but holds no clouds: a ``torch.utils.data.DataLoader`` with workers, pinned
memory and prefetch reads each batch from a :class:`ShapeSource`:

* :class:`PackedSource`, a store made by ``mmmixlab pack``, read row by row with positional
  reads (``os.pread``); nothing is memory-mapped into the process, so its resident memory does
  not grow with the store (the page cache, which the kernel can drop, does the caching);
* :class:`OpenShapeSource`, OpenShape's release as downloaded
  (``merged_for_training_final/<source>/*.npy``, optionally restricted to a split list), one
  pickled dict per shape read with the restricted unpickler of :mod:`mmmixlab.safe_pickle`.

Image and text features come from the files (OpenShape's precomputed ViT-bigG-14 features), so
no CLIP model is loaded for training: per step one random view and one random text entry per
shape, L2-normalized; a shape without text gets a zero text feature and ``text_valid=False``.

Sharding and determinism. The epoch order is one permutation shared by every rank; global batch
``b`` is ``order[b*B*W:(b+1)*B*W]`` and rank ``r`` reads its ``r``-th slice of ``B`` shapes, so
ranks are disjoint and an epoch covers each shape once (less the remainder of a last partial
global batch). The randomness of a shape (subset of points, rotation, rgb drop, view, text) is
drawn from ``default_rng([seed, epoch_key, shape index])``, where ``epoch_key`` is a digest of
the epoch's order. It depends on nothing else: not the rank, the batch, the worker, nor where a
resumed run restarted, so a resumed run reads bit-equal batches and 2 ranks x B read exactly the
shapes and draws of 1 rank x 2B.

Unreadable shapes. A shape file that fails to read is named and replaced by the next readable
shape (so every rank keeps its batch size); each is reported on the batch (``Batch.skipped``)
for the trainer's log, and more than ``max_bad_share`` of the source stops the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .augment import check_sampling, shape_generator
from .batches import Batch, rank_slice
from .data.openshape import read_split_entries, resolve_split_paths

__all__ = ["OpenShapeSource", "PackedSource", "StreamBatches", "detect_data_format",
           "open_shape_source", "DATA_FORMATS"]

DATA_FORMATS = ("triplets", "packed", "openshape")


# ---------------------------------------------------------------------------------- detection

def detect_data_format(path) -> str:
    """Which training-data format lives at ``path``: ``triplets`` (the project's triplet folder:
    ``train/manifest.json``), ``packed`` (a store from ``mmmixlab pack``) or ``openshape``
    (per-shape ``.npy`` dicts in the folder or one level below, or a split ``.json`` / text list
    of such files). Anything else: FileNotFoundError listing what was looked for."""
    from .data.packed import FORMAT as PACKED_FORMAT

    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"--data {root}: no such folder or file")
    if root.is_dir():
        if (root / "train" / "manifest.json").is_file():
            return "triplets"
        man = root / "manifest.json"
        if man.is_file():
            try:
                tag = json.loads(man.read_text(encoding="utf-8")).get("format")
            except (ValueError, UnicodeDecodeError, AttributeError):
                tag = None
            if tag == PACKED_FORMAT:
                return "packed"
        if training_folder(root) is not None:
            return "openshape"
    elif root.suffix in (".json", ".txt"):
        return "openshape"
    raise FileNotFoundError(
        f"--data {root} is none of the training formats; looked for: a triplet folder "
        f"({root}/train/manifest.json), a packed store ({root}/manifest.json with format "
        f"{PACKED_FORMAT!r}, made by `mmmixlab pack`), or OpenShape's per-shape files "
        f"({root}/*.npy or {root}/<source>/*.npy as in merged_for_training_final/, or a split "
        f".json / text file listing them)")


# ---------------------------------------------------------------------------------- sources

class _PathList:
    """Many file paths in two flat arrays (bytes + offsets): ~1 byte a character instead of a
    Python object per path (875k paths in tens of MB)."""

    def __init__(self, paths):
        encoded = [str(p).encode("utf-8") for p in paths]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])
        self._blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self._blob[self._offsets[i]:self._offsets[i + 1]].tobytes().decode("utf-8")


def training_folder(root: Path):
    """The folder of OpenShape's training shapes at or below ``root``: the release's
    ``objaverse-processed/merged_for_training_final`` when ``root`` is OpenShape's top folder
    (whose ``meta_data/`` holds evaluation files, not shapes) or the folder above it, else
    ``root`` itself when it holds ``*.npy`` files at most two levels down; None otherwise."""
    for sub in ("objaverse-processed/merged_for_training_final", "merged_for_training_final"):
        if (root / sub).is_dir():
            return root / sub
    if any(root.glob("*.npy")) or any(root.glob("*/*.npy")) or any(root.glob("*/*/*.npy")):
        return root
    return None


def _walk_npy(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".npy"))
    return out


class OpenShapeSource:
    """OpenShape's per-shape ``.npy`` dicts (see :mod:`mmmixlab.data.openshape`)."""

    kind = "openshape"

    def __init__(self, root, split=None, text_version: str = "prompt_avg"):
        root = Path(root).expanduser()
        listing = Path(split).expanduser() if split else (root if root.is_file() else None)
        if listing is not None:
            if not listing.is_file():
                raise FileNotFoundError(f"split list {listing} not found")
            entries = read_split_entries(listing)
            bases = [root if root.is_dir() else listing.parent, listing.parent,
                     *listing.parents[:3]]
            paths = resolve_split_paths(entries, bases)
        else:
            folder = training_folder(root) or root
            paths = _walk_npy(folder)
            if not paths:
                raise FileNotFoundError(f"{root}: holds no .npy shape files")
        self.root, self.split = root, str(listing) if listing is not None else None
        self.text_version = text_version
        self.paths = _PathList(paths)
        first = self._first_readable()
        self.dim = int(first.image_feat.shape[1])
        self.points_per_shape = int(first.xyz.shape[0])

    def _first_readable(self):
        from .data.openshape import read_openshape_npy

        errors = []
        for i in range(min(len(self), 20)):
            try:
                return read_openshape_npy(self.paths[i], self.text_version)
            except (OSError, ValueError) as e:
                errors.append(str(e))
        raise ValueError(f"{self.root}: none of the first {len(errors)} shape files could be "
                         f"read: " + "; ".join(errors[:3]))

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, i: int) -> str:
        return self.paths[i]

    def read(self, i: int) -> dict:
        from .data.openshape import read_openshape_npy

        rec = read_openshape_npy(self.paths[i], self.text_version)
        if rec.image_feat.shape[1] != self.dim:
            raise ValueError(f"{self.paths[i]}: features of width {rec.image_feat.shape[1]}, "
                             f"the dataset's are {self.dim}")
        return {"xyz": rec.xyz, "rgb": rec.rgb, "image_feat": rec.image_feat,
                "text_feats": rec.text_feats}

    def info(self) -> dict:
        return {"format": self.kind, "root": str(self.root), "split": self.split,
                "num_shapes": len(self), "dim": self.dim,
                "points_per_shape": self.points_per_shape}


class _NpyRows:
    """Row reads of a 2+-D ``.npy`` file by ``os.pread`` (no memory map held)."""

    def __init__(self, path: Path):
        from .safe_pickle import read_npy_header

        with open(path, "rb") as f:
            dtype, shape, fortran = read_npy_header(f, str(path))
            self.offset = f.tell()
        if fortran or dtype.hasobject:
            raise ValueError(f"{path}: expected a C-ordered numeric array")
        self.path, self.dtype, self.shape = path, dtype, shape
        self.row_shape = tuple(shape[1:])
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * dtype.itemsize
        self._fd, self._pid = None, None

    def __getstate__(self):
        return dict(self.__dict__, _fd=None, _pid=None)

    def row(self, i: int) -> np.ndarray:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        buf = os.pread(self._fd, self.row_bytes, self.offset + int(i) * self.row_bytes)
        if len(buf) != self.row_bytes:
            raise ValueError(f"{self.path}: row {i} is truncated ({len(buf)} of "
                             f"{self.row_bytes} bytes)")
        return np.frombuffer(buf, dtype=self.dtype).reshape(self.row_shape)


class PackedSource:
    """A packed store (``mmmixlab pack``; layout in :mod:`mmmixlab.data.packed`)."""

    kind = "packed"

    def __init__(self, root):
        from .data.packed import PackedTriplets

        store = PackedTriplets(root)  # checks the manifest and every array's shape
        self.root, self.manifest = Path(root), store.manifest
        self._store = store
        self._rows = {k: _NpyRows(self.root / f"{k}.npy")
                      for k in ("points", "image_feat", "text_feat", "text_mask")}
        self.dim = int(self.manifest["dim"])
        self.points_per_shape = int(self.manifest["points_per_shape"])

    def __getstate__(self):
        return dict(self.__dict__, _store=None)

    def __len__(self) -> int:
        return int(self.manifest["num_shapes"])

    def describe(self, i: int) -> str:
        try:
            return f"{self.root} row {i} ({self._store.entry(i)['path']})"
        except Exception:  # noqa: BLE001 (naming the row is enough)
            return f"{self.root} row {i}"

    def read(self, i: int) -> dict:
        pts = self._rows["points"].row(i).astype(np.float32)
        if not np.isfinite(pts).all():
            raise ValueError(f"{self.root} row {i}: points hold NaN or inf")
        mask = self._rows["text_mask"].row(i).astype(bool)
        return {"xyz": pts[:, :3], "rgb": np.clip(pts[:, 3:], 0.0, 1.0),
                "image_feat": self._rows["image_feat"].row(i).astype(np.float32),
                "text_feats": self._rows["text_feat"].row(i)[mask].astype(np.float32)}

    def info(self) -> dict:
        return {"format": self.kind, "root": str(self.root), "num_shapes": len(self),
                "dim": self.dim, "points_per_shape": self.points_per_shape,
                "skipped_when_packed": len(self.manifest.get("skipped", []))}


def open_shape_source(root, split=None):
    """The :class:`PackedSource` or :class:`OpenShapeSource` at ``root`` (see
    :func:`detect_data_format`)."""
    kind = detect_data_format(root) if not split else "openshape"
    if kind == "packed":
        return PackedSource(root)
    if kind == "openshape":
        return OpenShapeSource(root, split)
    raise ValueError(f"{root} is a triplet folder, not a streamed source")


# ---------------------------------------------------------------------------------- batches

def epoch_key(order: torch.Tensor) -> int:
    """A 63-bit identity of an epoch: the digest of its order (restored exactly on resume)."""
    digest = hashlib.sha1(order.to(torch.int64).numpy().tobytes()).digest()
    return struct.unpack("<Q", digest[:8])[0] >> 1


class _BatchReader(torch.utils.data.Dataset):
    """``reader[(indices, epoch_key)]`` -> one collated batch (runs in DataLoader workers)."""

    def __init__(self, source, num_points: int, in_channels: int, augment: bool,
                 rgb_dropout: float, seed: int, up_swap: bool = True, sampling: str = "random"):
        self.source, self.num_points, self.in_channels = source, num_points, in_channels
        self.sampling = sampling
        self.augment, self.seed = augment, seed
        self.transform = {"up_swap": up_swap, "normalize": True, "rotate": augment,
                          "rgb_drop_prob": rgb_dropout if augment else 0.0,
                          "rgb_drop_value": 0.4}

    def _read(self, i: int, skipped: list) -> tuple[int, dict]:
        n = len(self.source)
        for attempt in range(min(n, 64)):
            j = (i + attempt) % n
            try:
                return j, self.source.read(j)
            except Exception as e:  # noqa: BLE001 (a corrupt file raises anything; name it)
                skipped.append({"index": j, "path": self.source.describe(j),
                                "reason": f"{type(e).__name__}: {e}"})
        raise RuntimeError(f"64 consecutive shapes from {self.source.describe(i)} on are "
                           f"unreadable; first: {skipped[0]['reason']}")

    def __getitem__(self, key) -> dict:
        from .data.openshape import make_item

        indices, ekey = key
        points, images, texts, valid, index, skipped = [], [], [], [], [], []
        for i in indices:
            j, rec = self._read(int(i), skipped)
            rng = np.random.default_rng([self.seed, ekey, int(i)])
            item = make_item(rec["xyz"], rec["rgb"], rec["image_feat"], None, rec["text_feats"],
                             j, "", rng, self.num_points, self.augment, self.transform, 0.0,
                             generator=shape_generator(self.seed, ekey, int(i)),
                             sampling=self.sampling)
            points.append(item["points"])
            images.append(item["image_feat"])
            texts.append(item["text_feat"])
            valid.append(bool(item["has_text"]))
            index.append(j)
        return {"points": torch.stack(points)[..., :self.in_channels].contiguous(),
                "image": F.normalize(torch.stack(images), dim=-1),
                "text": F.normalize(torch.stack(texts), dim=-1),  # zero rows stay zero
                "text_valid": torch.tensor(valid), "index": torch.tensor(index),
                "skipped": skipped}


class _Keys(torch.utils.data.Sampler):
    """The batch keys of the current epoch; set in the main process before each epoch, so a
    persistent DataLoader's workers serve every epoch."""

    def __init__(self):
        self.keys: list = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class StreamBatches:
    """Batches of (cloud, image feature, text feature) streamed from a :class:`ShapeSource`.

    Same interface as :class:`mmmixlab.batches.TripletBatches`; ``batch_size`` is per rank.
    ``num_workers`` DataLoader processes read ahead (``prefetch_factor`` batches each), into
    pinned memory when ``pin_memory`` (set it for CUDA). The ``generator`` argument of
    :meth:`iterate` is not used: a batch's randomness depends only on ``seed``, the epoch's
    order and the shape (see the module docstring).
    """

    def __init__(self, source, num_points: int = 1024, in_channels: int = 6,
                 batch_size: int = 64, augment: bool = True, rgb_dropout: float = 0.5,
                 seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 2,
                 pin_memory: bool = False, prefetch_factor: int = 4,
                 max_bad_share: float = 0.01, sampling: str = "random"):
        n = len(source)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_size * world_size > n:
            raise ValueError(f"batch_size={batch_size} x {world_size} rank(s) exceeds the "
                             f"dataset size {n}")
        if in_channels not in (3, 6):
            raise ValueError(f"in_channels must be 3 or 6, got {in_channels}")
        if not 0.0 <= max_bad_share <= 1.0:
            raise ValueError(f"max_bad_share must lie in [0, 1], got {max_bad_share}")
        self.source = source
        self.num_points, self.in_channels = int(num_points), int(in_channels)
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        self.prefetch_factor, self.max_bad_share = int(prefetch_factor), float(max_bad_share)
        check_sampling(sampling)
        self.reader = _BatchReader(source, self.num_points, self.in_channels, augment,
                                   rgb_dropout, seed, sampling=sampling)
        self.bad: dict = {}   # index -> {"path", "reason"}, every unreadable shape seen
        self._keys = _Keys()
        self._loader = None

    @property
    def dim(self) -> int:
        """Width of the image/text features in the data."""
        return int(self.source.dim)

    def __len__(self) -> int:
        """Batches per epoch (per rank; the last partial global batch is dropped)."""
        return len(self.source) // (self.batch_size * self.world_size)

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(len(self.source), generator=generator)

    def batch_indices(self, order: torch.Tensor, b: int) -> torch.Tensor:
        """This rank's shapes in global batch ``b`` (:func:`mmmixlab.batches.rank_slice`)."""
        return rank_slice(order, b, self.batch_size, self.rank, self.world_size)

    def _make_loader(self):
        if self._loader is None:
            workers = self.num_workers
            self._loader = torch.utils.data.DataLoader(
                self.reader, batch_size=None, sampler=self._keys, num_workers=workers,
                pin_memory=self.pin_memory, persistent_workers=workers > 0,
                prefetch_factor=self.prefetch_factor if workers > 0 else None)
        return self._loader

    def iterate(self, order: torch.Tensor, generator: Optional[torch.Generator] = None,
                start: int = 0) -> Iterator[Batch]:
        key = epoch_key(order)
        self._keys.keys = [(self.batch_indices(order, b).tolist(), key)
                           for b in range(start, len(self))]
        for raw in self._make_loader():
            skipped = raw.pop("skipped")
            for s in skipped:
                self.bad.setdefault(int(s["index"]), {"path": s["path"], "reason": s["reason"]})
            if len(self.bad) > self.max_bad_share * len(self.source):
                first = next(iter(self.bad.values()))
                raise RuntimeError(
                    f"{len(self.bad)} of {len(self.source)} shapes are unreadable, more than "
                    f"data.max_bad_share={self.max_bad_share:g} of the data (raise it with --set "
                    f"data.max_bad_share=...); first: {first['path']}: {first['reason']}")
            yield _as_batch(raw, skipped)

    def make_batch(self, idx: torch.Tensor, generator=None, epoch: int = 0) -> Batch:
        """One batch of the given shapes (for tests and notebooks), drawn as epoch ``epoch``."""
        raw = self.reader[(torch.as_tensor(idx).tolist(), int(epoch))]
        return _as_batch(raw, raw.pop("skipped"))


def _as_batch(raw: dict, skipped: list) -> Batch:
    return Batch(points=raw["points"], image=raw["image"], text=raw["text"],
                 text_valid=raw["text_valid"], index=raw["index"], skipped=skipped)
