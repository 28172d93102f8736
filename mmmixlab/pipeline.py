"""The end-to-end steps the CLI and the notebooks share: prepare a world (triplets, frozen
encoders, cached features), train a variant, evaluate it, write ``metrics.json``."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from . import distributed as dist_utils
from .batches import TripletBatches
from .checkpoints import encoders_of_state, final_name, read_run_state, save_final
from .clip import FrozenCLIP, cached_features, load_frozen_clip, resolve_cache_dir
from .config import RunConfig
from .data import PROMPT_TEMPLATES, SynthConfig, build_world, display_name, load_triplets
from .device import resolve_device, retain_freed_memory
from .evaluate import encode_points, linear_probe_cv, retrieval, zero_shot
from .fileio import write_json
from .streaming import StreamBatches, detect_data_format, open_shape_source
from .train import Trainer, TrainResult

SPLITS = ("train", "test", "scan")


@dataclass
class World:
    """Everything a run needs besides the 3D encoder: triplets per split, the frozen
    encoders, their cached features and the category text features.

    A world streamed from disk (a packed store or OpenShape's files) has ``train_source`` and
    none of the rest: its features come from the files, no CLIP model is loaded, and it is
    evaluated on benchmarks (``mmmixlab eval --benchmark``), not on splits of its own.
    """

    key: str
    root: Path
    splits: dict
    features: dict
    clip: Optional[FrozenCLIP]
    class_names: list
    class_feats: Optional[torch.Tensor]
    seconds: dict = field(default_factory=dict)
    train_source: object = None       # streaming.PackedSource | OpenShapeSource
    data_format: str = "triplets"

    @property
    def eval_splits(self) -> list:
        return [s for s in ("test", "scan") if s in self.splits]

    @property
    def dim(self) -> int:
        """The width of the frozen features, which the 3D encoder's output must match."""
        if self.train_source is not None:
            return int(self.train_source.dim)
        return int(self.class_feats.shape[1])


def synth_config(cfg: RunConfig) -> SynthConfig:
    d = cfg.data
    return SynthConfig(seed=d.synth_seed, train_per_class=d.synth_train_per_class,
                       test_per_class=d.synth_test_per_class,
                       scan_per_class=d.synth_scan_per_class, num_points=d.synth_points)


def prepare_world(cfg: RunConfig, progress: bool = True) -> World:
    """Generate or load the triplets, load or pre-train the frozen encoders, and compute or
    load their cached features. Each expensive step is cached under ``cfg.cache_dir``."""
    cfg.validate()
    if is_streamed(cfg):
        return stream_world(cfg)
    cache = resolve_cache_dir(cfg.cache_dir)
    seconds = {}
    t = time.perf_counter()
    if cfg.data.root is None:
        synth = synth_config(cfg)
        world_key = f"synth-{synth.key()}"
        paths = build_world(synth, cache / "worlds" / world_key)
    else:
        root = Path(cfg.data.root).expanduser()
        paths = {s: root / s for s in SPLITS if (root / s / "manifest.json").exists()}
        if "train" not in paths:
            raise FileNotFoundError(f"no triplet dataset at {root / 'train'} (expected "
                                    f"{root}/train/manifest.json, and test/ or scan/ beside it)")
        digest = hashlib.sha1()
        for s in sorted(paths):
            digest.update((paths[s] / "manifest.json").read_bytes())
        world_key = f"data-{digest.hexdigest()[:12]}"
    splits = {s: load_triplets(p) for s, p in paths.items()}
    seconds["data"] = time.perf_counter() - t

    t = time.perf_counter()
    device = resolve_device(cfg.train.device)
    if cfg.train.retain_freed_memory:
        retain_freed_memory(device)  # the tiny CLIP's pre-training allocates like a training step
    clip = load_frozen_clip(cfg.clip, device=device, cache_dir=cache, train_set=splits["train"],
                            world_key=world_key, seed=cfg.data.synth_seed, progress=progress)
    seconds["clip"] = time.perf_counter() - t

    t = time.perf_counter()
    features = {s: cached_features(clip, ts, cache / "features" / world_key / clip.key / f"{s}.pt",
                                   batch_size=cfg.clip.batch_size, progress=progress)
                for s, ts in splits.items()}
    class_names = list(splits["train"].class_names or [])
    if not class_names:
        raise ValueError(f"the train split at {paths['train']} has no class_names; zero-shot "
                         "evaluation needs them")
    class_feats = clip.class_features([display_name(c) for c in class_names], PROMPT_TEMPLATES)
    seconds["features"] = time.perf_counter() - t
    return World(world_key, Path(paths["train"]).parent, splits, features, clip, class_names,
                 class_feats, seconds)


def is_streamed(cfg: RunConfig) -> bool:
    """Whether ``cfg``'s data is streamed from disk (a packed store or OpenShape's files, with
    features from the files) rather than held in memory (the embedded world, a triplet
    folder)."""
    root = cfg.data.root
    return root is not None and (bool(cfg.data.split) or detect_data_format(root) != "triplets")


def stream_world(cfg: RunConfig) -> World:
    """A world over a packed store or OpenShape's files: the source is opened (and checked),
    nothing is loaded."""
    t = time.perf_counter()
    source = open_shape_source(cfg.data.root, cfg.data.split)
    digest = hashlib.sha1(json.dumps(source.info(), sort_keys=True).encode()).hexdigest()[:12]
    return World(f"{source.kind}-{digest}", Path(cfg.data.root), {}, {}, None, [], None,
                 {"data": time.perf_counter() - t}, train_source=source,
                 data_format=source.kind)


def training_batches(cfg: RunConfig, world: World):
    d = cfg.data
    ranks = dist_utils.world_size()
    if world.train_source is not None:
        pin = resolve_device(cfg.train.device).type == "cuda"
        return StreamBatches(world.train_source, num_points=d.num_points,
                             in_channels=d.in_channels, batch_size=cfg.train.batch_size,
                             augment=d.augment, rgb_dropout=d.rgb_dropout, seed=cfg.train.seed,
                             rank=dist_utils.rank(), world_size=ranks,
                             num_workers=d.num_workers, pin_memory=pin,
                             prefetch_factor=d.prefetch_factor, max_bad_share=d.max_bad_share,
                             sampling=d.sampling)
    train = world.splits["train"]
    return TripletBatches(np.asarray(train.points), world.features["train"],
                          num_points=d.num_points, in_channels=d.in_channels,
                          batch_size=min(cfg.train.batch_size, len(train) // ranks),
                          augment=d.augment, rgb_dropout=d.rgb_dropout,
                          rank=dist_utils.rank(), world_size=ranks, sampling=d.sampling)


def point_features(encoder, world: World, cfg: RunConfig, splits=None) -> dict:
    """Unit 3D features ``{split: (S, D)}`` of ``splits`` (default: every split)."""
    return {s: encode_points(encoder, world.splits[s].points, cfg.data.num_points,
                             cfg.data.in_channels) for s in (splits or world.splits)}


def evaluate_encoder(encoder, world: World, cfg: RunConfig, feats: Optional[dict] = None,
                     keep_predictions: bool = False) -> dict:
    """Zero-shot (top-1/3/5, per class), linear probe and retrieval on every eval split."""
    # the evaluated splits only: the train split's features enter no metric (a fifth of the
    # tiny world's encoding time per run)
    feats = feats or point_features(encoder, world, cfg, splits=world.eval_splits)
    out = {"zero_shot": {}, "linear_probe": {}, "chance": {},
           "num_classes": len(world.class_names),
           "num_shapes": {s: len(world.splits[s]) for s in world.eval_splits}}
    for s in world.eval_splits:
        zs = zero_shot(feats[s], world.class_feats, world.splits[s].labels,
                       class_names=world.class_names)
        if not keep_predictions:
            zs.pop("predictions")
        out["zero_shot"][s] = zs
        out["chance"][s] = 1.0 / len(world.class_names)
    # A split is probed by cross-validation within itself, as peers probe ModelNet40 and
    # ScanObjectNN with their own train sets: the pre-training set is another domain.
    for s in world.eval_splits:
        out["linear_probe"][s] = linear_probe_cv(feats[s], world.splits[s].labels,
                                                 seed=cfg.train.seed)
    test = "test" if "test" in world.splits else world.eval_splits[0]
    f = world.features[test]
    first_caption = f.text[:, 0]
    out["retrieval"] = retrieval(feats[test], f.image[:, 0], first_caption,
                                 world.splits[test].labels)
    return out


def zero_shot_callback(world: World, cfg: RunConfig):
    """Per-epoch zero-shot top-1 on each eval split, for the training curves."""
    def evaluate(encoder) -> dict:
        out = {}
        for s in world.eval_splits:
            feats = encode_points(encoder, world.splits[s].points, cfg.data.num_points,
                                  cfg.data.in_channels)
            out[f"zero_shot_{s}_top1"] = zero_shot(feats, world.class_feats,
                                                   world.splits[s].labels)["top1"]
        return out
    return evaluate


def train_variant(cfg: RunConfig, world: World, out_dir=None, resume: bool = False,
                  progress: bool = True, on_epoch=None, on_step=None) -> TrainResult:
    evaluate = zero_shot_callback(world, cfg) if world.eval_splits else None
    trainer = Trainer(cfg, training_batches(cfg, world), embed_dim=world.dim,
                      out_dir=out_dir, evaluate=evaluate, progress=progress)
    return trainer.fit(resume=resume, on_epoch=on_epoch, on_step=on_step)


def frozen_encoder_quality(world: World) -> dict:
    """How much class structure the frozen encoders carry: zero-shot accuracy of the test
    split's own captions and renders against the category prompts."""
    out = {}
    split = "test" if "test" in world.splits else "train"
    f, labels = world.features[split], world.splits[split].labels
    out["caption_top1"] = zero_shot(f.text[:, 0], world.class_feats, labels)["top1"]
    out["image_top1"] = zero_shot(f.image[:, 0], world.class_feats, labels)["top1"]
    out["digest"] = frozen_features_digest(world)
    return out


def frozen_features_digest(world: World) -> str:
    """sha1 of the frozen encoders' outputs on this world (class prompts and the test split's
    image and text features): runs compared side by side must share it. The config alone does
    not decide it: the frozen encoders live in a cache that may have been built elsewhere."""
    split = "test" if "test" in world.splits else "train"
    h = hashlib.sha1()
    for t in (world.class_feats, world.features[split].image, world.features[split].text):
        h.update(torch.as_tensor(t).detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run(cfg: RunConfig, out_dir, resume: bool = False, progress: bool = True,
        world: Optional[World] = None, on_epoch=None, on_step=None) -> dict:
    """Prepare, train, evaluate; write ``final.pt`` and ``metrics.json`` into ``out_dir``.

    Under ``torchrun`` every rank trains on its share of each global batch; rank 0 builds the
    caches first (the others wait), and alone writes files and evaluates (others return {}).
    """
    out_dir = Path(out_dir)
    main = dist_utils.is_main_process()
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(cfg.to_json())
    if world is None:
        if dist_utils.is_distributed() and not main:
            torch.distributed.barrier()  # wait for rank 0 to build or load the caches
        world = prepare_world(cfg, progress=progress and main)
        if dist_utils.is_distributed() and main:
            torch.distributed.barrier()
    result = train_variant(cfg, world, out_dir, resume=resume, progress=progress,
                           on_epoch=on_epoch, on_step=on_step)
    if not main:
        return {}
    save_final(result, cfg, out_dir / "final.pt")
    t = time.perf_counter()
    if world.eval_splits:
        metrics = evaluate_encoder(result.final_encoder, world, cfg)
        metrics["frozen_encoders"] = frozen_encoder_quality(world)
    else:  # streamed data: evaluated on benchmarks by `mmmixlab eval --benchmark`
        metrics = {"zero_shot": {}, "linear_probe": {}, "retrieval": {}, "chance": {}}
    if world.train_source is not None:
        metrics["data"] = dict(world.train_source.info(), unreadable_shapes=sorted(
            {v["path"] for v in result.unreadable.values()}) if result.unreadable else [])
    seconds = dict(world.seconds, train=result.seconds, eval=time.perf_counter() - t)
    metrics.update(seconds=seconds, history=result.history, config=cfg.to_dict(),
                   world=world.key, ranks=dist_utils.world_size(), precision=result.precision)
    write_json(metrics, out_dir / "metrics.json")
    return metrics




def run_task(world: World, cfg: dict, out_dir, progress: bool = False) -> dict:
    """:func:`run` of a config dict on a prepared world: a :mod:`~mmmixlab.run_pool` task."""
    return run(RunConfig.from_dict(cfg), out_dir, progress=progress, world=world)


def load_run(run_dir, device="cpu", with_extra: bool = False):
    """(config, encoders) of a finished run (plus ``{"embed_dim", "logit_scale"}`` with
    ``with_extra``) from its folder's ``final.pt`` or ``encoders.safetensors``, or either
    file. Read with ``weights_only=True`` / safetensors: a crafted file cannot run code; a
    malformed one gets an error naming the file and what is wrong."""
    state, path = read_run_state(run_dir)
    cfg, encoders = encoders_of_state(state, path)
    encoders = {n: e.to(device) for n, e in encoders.items()}
    if not with_extra:
        return cfg, encoders
    scale = state.get("logit_scales", {}).get(final_name(encoders), {}).get("log_scale")
    extra = {"embed_dim": int(state["embed_dim"]),
             "logit_scale": float(scale.exp().clamp(max=100)) if scale is not None else 1 / 0.07}
    return cfg, encoders, extra


def load_encoder(run, device="cpu") -> torch.nn.Module:
    """The 3D encoder of any run folder (trained here, or made by ``mmmixlab import-checkpoint``
    from a released checkpoint) as a ``torch.nn.Module`` in eval mode: ``(B, N, C)`` clouds
    already in the run's input convention (``C = data.in_channels``: normalised xyz + rgb;
    z up; see the run's ``config.json``) -> ``(B, D)`` features (not normalised)."""
    state, path = read_run_state(run)
    names = [final_name(state["encoders"])] if state.get("encoders") else None
    _, encoders = encoders_of_state(state, path, names=names)
    return next(iter(encoders.values())).to(device).eval()


def summarize(metrics: dict) -> str:
    """A few-line human summary of a metrics dict."""
    from .stats import binomial_se

    lines = []
    for s, zs in metrics["zero_shot"].items():
        n = metrics.get("num_shapes", {}).get(s)
        se = f" ± {binomial_se(zs['top1'], n):.3f} (SE, {n} shapes)" if n else ""
        lines.append(f"zero-shot {s:5s} top1 {zs['top1']:.3f}{se} top3 {zs['top3']:.3f} top5 "
                     f"{zs['top5']:.3f} (chance {metrics['chance'][s]:.3f})")
    for s, lp in metrics["linear_probe"].items():
        lines.append(f"linear probe {s:5s} accuracy {lp['accuracy']:.3f}")
    for k, r in metrics["retrieval"].items():
        lines.append(f"retrieval {k:7s} " + " ".join(f"{m} {v:.3f}" for m, v in r.items()))
    if "seconds" in metrics:
        lines.append("seconds " + " ".join(f"{k} {v:.1f}" for k, v in metrics["seconds"].items()))
    return "\n".join(lines)
