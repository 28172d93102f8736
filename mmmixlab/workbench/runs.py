"""The notebooks' one config and one cache: :func:`notebook_config` from the parameters cell,
runs trained once and reused (:func:`get_run`, :func:`get_runs`), their features.

Every notebook builds its config from the same parameters, so they all hit the same cache
entries: the world, the frozen encoders and their features live under ``cache``
(``pipeline.prepare_world`` caches them), finished runs under
``cache/runs/<variant>-s<seed>-<hash>``, where the hash covers every config field that
changes a result. Smoke mode (``smoke=True``, from ``MMMIXLAB_SMOKE=1``) shrinks the world, the
frozen-encoder pre-training and the epochs so the whole series runs in CI.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import pipeline
from ..clip import resolve_cache_dir
from ..config import RunConfig, preset
from ..device import resolve_device
from ..train import RESUME_MAY_CHANGE, final_encoder


# What MMMIXLAB_SMOKE=1 changes: 64 train shapes, 1+1 epochs, a few steps of CLIP pre-training
# (and, for Point-BERT backbones, 16 patches of 16 points).
SMOKE_OVERRIDES = {
    "data.synth_train_per_class": 4, "data.synth_test_per_class": 4,
    "data.synth_scan_per_class": 4, "data.synth_points": 512, "data.num_points": 256,
    "clip.tiny_steps": 30, "clip.tiny_batch_size": 32,
    "train.epochs_stage1": 1, "train.epochs_stage2": 1, "train.batch_size": 16,
    "train.warmup_steps": 2,
}
# Fields that do not change what a run learns (the trainer's list): left out of the cache key.
# eval_every stays in: it decides whether the cached history has the per-epoch curves.
_NOT_IN_KEY = {tuple(name.split(".")) for name in RESUME_MAY_CHANGE
               if name != "train.eval_every"} | {("cache_dir", None)}
_WORLDS: dict = {}


def notebook_config(data_root: str | None = None, clip: str = "synth-tiny",
                    backbone: str = "pointbert-tiny", epochs: Sequence[int] = (15, 15),
                    batch_size: int = 64, device: str = "auto", cache: str | None = None,
                    seed: int = 0, smoke: bool = False, **overrides) -> RunConfig:
    """The series' config from the notebook parameters (``tiny`` preset underneath).

    ``clip`` is ``synth-tiny``, ``MODEL/TAG`` (``ViT-B-32/openai``) or ``MODEL//path.pt``.
    Per-epoch zero-shot evaluation is on (``train.eval_every=1``) for the training curves.
    ``smoke`` applies :data:`SMOKE_OVERRIDES` after everything else; ``overrides`` are dotted
    config fields (``**{"mix.beta": 0.4}``).
    """
    if data_root is not None and not Path(data_root).expanduser().exists():
        raise FileNotFoundError(f"DATA_ROOT {data_root!r} does not exist (a triplet folder, a "
                                f"packed store or OpenShape's files; None: the embedded world)")
    model, sep, pretrained = clip.partition("/")
    cache = str(resolve_cache_dir(str(Path(cache).expanduser()) if cache else None))
    updates = {"data.root": None if data_root is None else str(Path(data_root).expanduser()),
               "clip.model": model, "clip.pretrained": pretrained if sep else None,
               "train.encoder": backbone, "train.epochs_stage1": int(epochs[0]),
               "train.epochs_stage2": int(epochs[1]), "train.batch_size": int(batch_size),
               "train.device": device, "train.seed": int(seed), "train.eval_every": 1,
               "cache_dir": cache, **overrides}
    if smoke:
        updates.update(SMOKE_OVERRIDES)
        if backbone.startswith("pointbert"):
            updates["train.encoder_overrides"] = {"num_groups": 16, "group_size": 16}
        elif backbone.startswith("openshape-pointbert"):  # smoke clouds have 256 points
            updates["train.encoder_overrides"] = {"num_patches": 16, "patch_points": 16}
        print(SMOKE_NOTE)
    return preset("tiny").replace(**updates).validate()


def _smoke_note() -> str:
    from ..data import SynthConfig

    o = SMOKE_OVERRIDES
    shapes = o["data.synth_train_per_class"] * len(SynthConfig().categories)
    return (f"smoke mode (MMMIXLAB_SMOKE=1): {shapes} training shapes, "
            f"{o['train.epochs_stage1']}+{o['train.epochs_stage2']} epochs, "
            f"{o['clip.tiny_steps']} steps of frozen-encoder pre-training; models sit near "
            f"chance and baseline and MM-Mixing may be identical: that is expected here, unset "
            f"MMMIXLAB_SMOKE for real numbers")


SMOKE_NOTE = _smoke_note()  # derived from SMOKE_OVERRIDES, so the two cannot drift apart


def config_key(cfg: RunConfig) -> str:
    """A short hash of every config field that changes a result (not device or cache)."""
    d = cfg.to_dict()
    for section, name in _NOT_IN_KEY:
        if name is None:
            d.pop(section, None)
        else:
            d[section].pop(name, None)
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def get_world(cfg: RunConfig, progress: bool = True) -> pipeline.World:
    """``pipeline.prepare_world``, memoized in this process (its steps are cached on disk)."""
    key = json.dumps([cfg.to_dict()["data"], cfg.to_dict()["clip"], cfg.cache_dir,
                      cfg.train.device], sort_keys=True)
    if key not in _WORLDS:
        _WORLDS[key] = pipeline.prepare_world(cfg, progress=progress)
    return _WORLDS[key]


@dataclass
class Run:
    """A finished run: its folder, config, ``metrics.json`` and trained encoders."""

    path: Path
    cfg: RunConfig
    metrics: dict
    encoders: dict

    @property
    def encoder(self) -> torch.nn.Module:
        """The encoder that is evaluated: B for two-encoder variants, else A."""
        return final_encoder(self.encoders)

    @property
    def history(self) -> list:
        return self.metrics.get("history", [])


def run_dir(cfg: RunConfig) -> Path:
    """Where the run of ``cfg`` lives in the cache."""
    root = resolve_cache_dir(cfg.cache_dir) / "runs"
    return root / f"{cfg.train.variant}-s{cfg.train.seed}-{config_key(cfg)}"


def get_run(cfg: RunConfig, variant: str | None = None,
            on_epoch: Callable[[dict], None] | None = None, progress: bool | None = None,
            retrain: bool = False, **overrides) -> Run:
    """Train ``variant`` once (then reuse it): ``final.pt`` + ``metrics.json`` in the cache.

    ``on_epoch(record)`` is called after every epoch while training (live curves; its
    ``step(record)`` method, when it has one, at every logged step too); progress
    bars and per-epoch log lines are shown only without it (``progress=None``). An interrupted
    run resumes from its last checkpoint; ``retrain=True`` deletes the cached run first.
    ``overrides`` are dotted config fields.
    """
    progress = on_epoch is None if progress is None else progress
    updates = dict(overrides)
    if variant is not None:
        updates["train.variant"] = variant
    cfg = cfg.replace(**updates).validate() if updates else cfg
    path = run_dir(cfg)
    if retrain and path.exists():
        shutil.rmtree(path)
    if not ((path / "final.pt").exists() and (path / "metrics.json").exists()):
        pipeline.run(cfg, path, resume=True, progress=progress,
                     world=get_world(cfg, progress), on_epoch=on_epoch,
                     on_step=getattr(on_epoch, "step", None))
    _, encoders = pipeline.load_run(path, device=resolve_device(cfg.train.device))
    metrics = json.loads((path / "metrics.json").read_text())
    return Run(path, cfg, metrics, encoders)


def get_runs(cfg: RunConfig, variants: Sequence[str] = ("baseline", "mm-mixing"),
             live: bool = True, retrain: bool = False) -> dict:
    """:func:`get_run` for several variants, ``{variant: Run}``. With ``live``, each run gets a
    :class:`~mmmixlab.viz.LiveCurves` figure (shown in the notebook) that follows its training,
    or draws its stored history when it comes from the cache."""
    from ..viz import LiveCurves

    runs = {}
    for variant in variants:
        curves = LiveCurves(f"{variant}: loss, temperature, zero-shot top-1") if live else None
        if curves is not None:
            _display(curves)
        runs[variant] = get_run(cfg, variant, on_epoch=curves, retrain=retrain)
        if curves is not None:
            curves.show_history(runs[variant].history)
    return runs


def _display(obj) -> None:
    try:
        from IPython.display import display
    except ImportError:
        return
    display(obj)


def run_point_features(run: Run, world: pipeline.World) -> dict:
    """Unit 3D features of every split, ``{split: (S, D)}``, cached beside the run."""
    path = run.path / "point_features.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    feats = pipeline.point_features(run.encoder, world, run.cfg)
    torch.save(feats, path)
    return feats


def evaluate(run: Run, world: pipeline.World, encoder: str = "A") -> dict:
    """Metrics of one of a run's encoders (``"A"``: after stage 1), cached beside the run."""
    path = run.path / f"metrics_{encoder}.json"
    if not path.exists():
        pipeline.write_json(pipeline.evaluate_encoder(run.encoders[encoder], world, run.cfg),
                            path)
    return json.loads(path.read_text())
