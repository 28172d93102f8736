"""A finished run on the paper's benchmarks, on a labelled folder, or on a user's own files.

* :func:`evaluate_benchmark`: one benchmark as released (anything
  :func:`mmmixlab.data.load_benchmark` reads) -> Table 1's zero-shot top-1/3/5 and mean class
  accuracy, Table 2's linear probe (fit on the benchmark's train split, reported on its test
  split, as peers measure it), and recall@1/5/10: PC->PC (same class) always, image->PC and
  text->PC (same shape) where the files carry those features (Objaverse-LVIS).
* :func:`evaluate_folder`: the same on a labelled triplet folder (``import-meshes`` output).

Class-name features come from a file (:mod:`mmmixlab.class_features`) or from the run's frozen
text encoder with the prompt templates (ULIP's 64 for the benchmarks). A user's own files:
:mod:`mmmixlab.classify`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .config import RunConfig
from .data.benchmarks import BENCHMARKS, SCANOBJECTNN_VARIANTS
from .data.benchmarks.common import _canon
from .class_features import load_class_features
from .evaluate import encode_points, linear_probe, recall_at_k, zero_shot

__all__ = ["BenchmarkSpec", "RunModel", "evaluate_benchmark", "evaluate_folder",
           "parse_benchmark", "parse_named_file", "results_text", "write_result"]

_VARIANTS = tuple(SCANOBJECTNN_VARIANTS) + ("openshape", "hdf5", "normal_resampled")


@dataclass
class BenchmarkSpec:
    name: str                 # modelnet40 | scanobjectnn | objaverse_lvis
    path: Path
    variant: Optional[str] = None

    @property
    def label(self) -> str:
        """``name[-variant]``: the key of its result and its JSON file's stem."""
        return self.name if not self.variant else f"{self.name}-{self.variant}"


def _benchmark_name(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = {"lvis": "objaverse_lvis", "objaverse": "objaverse_lvis", "scan": "scanobjectnn",
           "mn40": "modelnet40"}.get(key, key)
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    return key


def parse_benchmark(text: str) -> BenchmarkSpec:
    """``NAME=PATH`` or ``NAME=PATH:VARIANT`` (``scanobjectnn=/data/h5_files:obj_bg``)."""
    name, eq, rest = text.partition("=")
    if not eq or not rest:
        raise ValueError(f"--benchmark expects NAME=PATH[:VARIANT], got {text!r}")
    path, variant = rest, None
    head, colon, tail = rest.rpartition(":")
    if colon and tail in _VARIANTS:
        path, variant = head, tail
    elif colon and "/" not in tail and tail and not Path(rest).exists():
        raise ValueError(f"--benchmark {text!r}: unknown variant {tail!r}; choose one of "
                         f"{', '.join(_VARIANTS)}")
    return BenchmarkSpec(_benchmark_name(name), Path(path).expanduser(), variant)


def parse_named_file(text: str, flag: str = "--class-features") -> tuple[str, Path]:
    name, eq, path = text.partition("=")
    if not eq or not name or not path:
        raise ValueError(f"{flag} expects NAME=FILE, got {text!r}")
    return name.strip(), Path(path).expanduser()


# ---------------------------------------------------------------------------------- the run

@dataclass
class RunModel:
    """What evaluation needs of a finished run: its config, final encoder, and (on demand)
    its frozen text encoder and the class features it was trained with."""

    run_dir: Path
    cfg: RunConfig
    encoder: torch.nn.Module
    embed_dim: int
    logit_scale: float = 1 / 0.07
    _world: object = field(default=None, repr=False)
    _clip: object = field(default=None, repr=False)

    @classmethod
    def load(cls, run_dir, device: str = "cpu") -> "RunModel":
        from .pipeline import load_run
        from .train import final_encoder

        cfg, encoders, extra = load_run(run_dir, device=device, with_extra=True)
        cfg = cfg.replace(**{"train.device": str(device)})
        run_dir = Path(run_dir)
        return cls(run_dir if run_dir.is_dir() else run_dir.parent, cfg, final_encoder(encoders), extra["embed_dim"],
                   extra.get("logit_scale", 1 / 0.07))

    @property
    def num_points(self) -> int:
        return self.cfg.data.num_points

    @property
    def in_channels(self) -> int:
        return self.cfg.data.in_channels

    def encode(self, points) -> torch.Tensor:
        return encode_points(self.encoder, points, self.num_points, self.in_channels)

    def world(self):
        """The run's own world when it was trained in memory (synth or a triplet folder)."""
        from .pipeline import is_streamed, prepare_world

        if self._world is None:
            if is_streamed(self.cfg):
                return None
            self._world = prepare_world(self.cfg, progress=False)
        return self._world

    def text_encoder(self, need: str):
        """The run's frozen text encoder; ``need`` says what for, in the error when it cannot
        be had (a run on streamed features has only the files' features)."""
        if self._clip is None:
            world = self.world()
            if world is not None:
                self._clip = world.clip
            else:
                from .clip import load_frozen_clip

                try:
                    self._clip = load_frozen_clip(self.cfg.clip, device=self.cfg.train.device,
                                                  cache_dir=self.cfg.cache_dir, progress=False)
                except (ValueError, FileNotFoundError, RuntimeError, OSError) as err:
                    raise ValueError(
                        f"{need}: the run's frozen text encoder ({self.cfg.clip.spec}) cannot "
                        f"be loaded ({err}); pass class features with --class-features "
                        f"NAME=FILE (e.g. OpenShape's meta_data/.../cat_name_pt_feat.npy)"
                    ) from err
        return self._clip

    def class_features(self, class_names: Sequence[str], templates: Sequence[str],
                       need: str) -> torch.Tensor:
        from .data import display_name

        clip = self.text_encoder(need)
        feats = clip.class_features([display_name(c) for c in class_names], templates)
        if feats.shape[1] != self.embed_dim:
            raise ValueError(f"{need}: the text encoder's class features are "
                             f"{feats.shape[1]}-d, the run's 3D encoder outputs "
                             f"{self.embed_dim}-d features")
        return feats


# ---------------------------------------------------------------------------------- benchmarks

@dataclass
class EvalResult:
    metrics: dict
    point_feats: torch.Tensor
    class_feats: torch.Tensor
    labels: np.ndarray
    class_names: list
    dataset: object = None


def _retrieval(point_feats, labels, image=None, text=None) -> dict:
    """pc2pc (same class, self excluded) and, where given as {index: feature}, img2pc / text2pc
    (same shape) over the whole gallery."""
    n = point_feats.shape[0]
    out = {"pc2pc": recall_at_k(point_feats, point_feats, labels, labels,
                                       exclude_self=True)}
    for name, table in (("img2pc", image), ("text2pc", text)):
        if table:
            idx = np.array(sorted(table))
            queries = torch.from_numpy(np.stack([table[i] for i in idx]).astype(np.float32))
            out[name] = recall_at_k(queries, point_feats, idx, np.arange(n))
            out[name]["queries"] = len(idx)
    return out


def _zero_shot(point_feats, class_feats, labels, class_names) -> dict:
    zs = zero_shot(point_feats, class_feats, labels, class_names=class_names)
    zs.pop("predictions")
    return zs


def evaluate_benchmark(model: RunModel, spec: BenchmarkSpec, class_features=None,
                       linear_probe_split: bool = False, keep: bool = False) -> EvalResult:
    """One benchmark: zero-shot, optional linear probe (train split -> test split), retrieval."""
    from .data import load_benchmark

    t0 = time.perf_counter()
    rgb = 0.4 if model.in_channels == 6 else None  # OpenShape's grey for colourless sets
    ds = load_benchmark(spec.name, spec.path, "test", spec.variant, rgb_fill=rgb)
    variant = spec.variant or ds.info.get("variant") or None
    if class_features is not None:
        class_feats = load_class_features(class_features, ds.class_names, model.embed_dim,
                                          f"{spec.label} ({spec.path})")
        source = f"file {class_features}"
    else:
        class_feats = model.class_features(ds.class_names, ds.prompt_templates,
                                           f"zero-shot on {spec.label}")
        source = f"text encoder {model.cfg.clip.spec}, {len(ds.prompt_templates)} templates"
    feats = model.encode(ds.points)
    metrics = {"benchmark": spec.name, "variant": variant, "path": str(spec.path),
               "num_shapes": len(ds), "num_classes": ds.num_classes,
               "chance": 1.0 / ds.num_classes, "class_features": source,
               "zero_shot": _zero_shot(feats, class_feats, ds.labels, ds.class_names)}
    if linear_probe_split:
        try:
            train = load_benchmark(spec.name, spec.path, "train", spec.variant, rgb_fill=rgb)
        except (FileNotFoundError, ValueError) as err:
            metrics["linear_probe"] = {"skipped": f"no train split to fit on: {err}"}
        else:
            probe = linear_probe(model.encode(train.points).numpy(), train.labels,
                                 {"test": (feats.numpy(), ds.labels)}, seed=model.cfg.train.seed)
            metrics["linear_probe"] = {"accuracy": probe["test"]["accuracy"],
                                       "train_shapes": len(train), "test_shapes": len(ds)}
    modal = ds.modal or {}
    metrics["retrieval"] = _retrieval(feats, ds.labels, modal.get("image"), modal.get("text"))
    metrics["seconds"] = time.perf_counter() - t0
    return EvalResult(metrics, feats, class_feats, ds.labels, list(ds.class_names),
                      ds if keep else None)


def evaluate_folder(model: RunModel, folder, class_features=None, keep: bool = False
                    ) -> EvalResult:
    """Zero-shot (and retrieval) on a labelled triplet folder, e.g. ``import-meshes`` output.

    Class features: from ``class_features`` (a file) if given; else, for names the run was
    trained with, its own class features; others encoded with the run's text encoder."""
    from .data import PROMPT_TEMPLATES, load_triplets

    t0 = time.perf_counter()
    folder = Path(folder).expanduser()
    split_dir = folder if (folder / "manifest.json").is_file() else folder / "test"
    if not (split_dir / "manifest.json").is_file():
        raise FileNotFoundError(f"{folder}: not a triplet folder (no manifest.json, nor "
                                f"test/manifest.json)")
    ts = load_triplets(split_dir)
    if not ts.class_names or ts.labels is None:
        raise ValueError(f"{split_dir}: the folder has no class labels (import-meshes labels "
                         f"shapes by the subfolder they sit in: SRC/<class>/<file>)")
    labels = np.asarray(ts.labels)
    keep_rows = np.flatnonzero(labels >= 0)
    if len(keep_rows) == 0:
        raise ValueError(f"{split_dir}: no labelled shapes")
    names = list(ts.class_names)
    need = f"zero-shot on {folder.name}"
    if class_features is not None:
        class_feats = load_class_features(class_features, names, model.embed_dim, folder.name)
        source = f"file {class_features}"
    else:
        world = model.world()
        known = {_canon(c): i for i, c in enumerate(world.class_names)} if world else {}
        rows, matched = [], 0
        missing = [c for c in names if _canon(c) not in known]
        encoded = (dict(zip(missing, model.class_features(missing, PROMPT_TEMPLATES, need)))
                   if missing else {})
        for c in names:
            if _canon(c) in known:
                rows.append(world.class_feats[known[_canon(c)]])
                matched += 1
            else:
                rows.append(encoded[c])
        class_feats = torch.stack(rows)
        source = (f"{matched} of {len(names)} classes matched by name to the run's class "
                  f"features, {len(names) - matched} encoded by {model.cfg.clip.spec}")
    points = np.asarray(ts.points)[keep_rows]
    feats = model.encode(points)
    lab = labels[keep_rows]
    image, text, note = _folder_queries(model, ts.select(keep_rows))
    metrics = {"benchmark": folder.name, "variant": None, "path": str(split_dir),
               "num_shapes": int(len(keep_rows)), "num_classes": len(names),
               "unlabelled_shapes_left_out": int(len(labels) - len(keep_rows)),
               "chance": 1.0 / len(names), "class_features": source,
               "zero_shot": _zero_shot(feats, class_feats, lab, names),
               "retrieval": _retrieval(feats, lab, image, text)}
    if note:
        metrics["retrieval_note"] = note
    metrics["seconds"] = time.perf_counter() - t0
    return EvalResult(metrics, feats, class_feats, lab, names, ts if keep else None)


def _folder_queries(model: RunModel, triplets):
    """Image->PC and text->PC queries of a triplet folder: its first render and first caption
    per shape, encoded by the run's frozen encoders (``({i: f}, {i: f}, note)``); a run whose
    encoders cannot be loaded (trained on streamed features) gets PC->PC only, with the reason."""
    from .clip import compute_features

    try:
        clip = model.text_encoder("retrieval on a folder")
    except ValueError as err:
        return None, None, f"image/text retrieval skipped: {err}"
    f = compute_features(clip, triplets)
    if f.image.shape[-1] != model.embed_dim:
        return None, None, (f"image/text retrieval skipped: the frozen encoders give "
                            f"{f.image.shape[-1]}-d features, the 3D encoder {model.embed_dim}-d")
    image = {i: f.image[i, 0].numpy() for i in range(len(triplets))}
    text = {i: f.text[i, 0].numpy() for i in range(len(triplets)) if bool(f.text_mask[i, 0])}
    return image, text, None


def write_result(model: RunModel, result: EvalResult, name: str) -> Path:
    from .pipeline import write_json

    out = model.run_dir / "eval" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(dict(result.metrics, run=str(model.run_dir), config=model.cfg.to_dict()), out)
    return out


def results_text(results: dict) -> str:
    """Table 1's shape: one row per benchmark, zero-shot top-1/3/5 and mean class accuracy in
    %, then the linear probe and retrieval R@1 where measured."""
    head = (f"{'benchmark':28s} {'shapes':>7s} {'classes':>7s} {'top1':>6s} {'top3':>6s} "
            f"{'top5':>6s} {'mAcc':>6s} {'probe':>6s} {'pc2pc@1':>8s} {'img2pc@1':>8s} "
            f"{'txt2pc@1':>8s}")
    lines = [head, "-" * len(head)]

    def pct(v):
        return f"{100 * v:6.1f}" if isinstance(v, (int, float)) else f"{'-':>6s}"

    for label, m in results.items():
        zs, lp, r = m["zero_shot"], m.get("linear_probe") or {}, m.get("retrieval") or {}
        lines.append(
            f"{label:28s} {m['num_shapes']:7d} {m['num_classes']:7d} {pct(zs['top1'])} "
            f"{pct(zs['top3'])} {pct(zs['top5'])} {pct(zs['mean_class_accuracy'])} "
            f"{pct(lp.get('accuracy'))} "
            + " ".join(f"{pct(r.get(k, {}).get('R@1')):>8s}" for k in ("pc2pc", "img2pc",
                                                                      "text2pc")))
    return "\n".join(lines)
