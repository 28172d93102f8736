"""Dataclass configs and the two presets (``tiny`` for a laptop CPU, ``paper`` for a GPU).

Every choice the paper leaves open (beta, pairing, mixing probability, whether unmixed pairs
are aligned too, epochs per stage) is a field here with its default and the reason for it.
A run's config is saved next to its results, so a number can always be traced to its settings.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import asdict, dataclass, field
from typing import Optional

from .augment import SAMPLINGS
from .checks import check_choice
from .data.synth import SynthConfig
from .losses import MODALITIES
from .mixing import INPUT_MIX_VARIANTS, PAIRINGS

_SYNTH = SynthConfig()

VARIANTS = ("baseline", "fm", "im", "mm-mixing", "one-stage", "one-stage-matched", "baseline-2x")
BUDGETS = ("per-stage", "total")


@dataclass
class DataConfig:
    """Where triplets come from and how clouds are fed to the 3D encoder.

    ``root=None`` means the embedded SynthShapes world, generated from ``synth_seed``. Otherwise
    ``root`` is a triplet folder (held in memory), a packed store or OpenShape's per-shape files
    (both streamed from disk by ``num_workers`` DataLoader processes; see
    :mod:`mmmixlab.streaming`), detected from what is on disk.
    """

    root: Optional[str] = None
    split: Optional[str] = None   # OpenShape split list (meta_data/split/*.json) restricting root
    num_workers: int = 2          # streamed data: DataLoader worker processes (0 = in process)
    prefetch_factor: int = 4      # streamed data: batches each worker reads ahead
    max_bad_share: float = 0.01   # streamed data: more unreadable shapes than this stops the run
    # the embedded world's size, defaults from SynthConfig (the one place they are set)
    synth_seed: int = _SYNTH.seed
    synth_train_per_class: int = _SYNTH.train_per_class
    synth_test_per_class: int = _SYNTH.test_per_class
    synth_scan_per_class: int = _SYNTH.scan_per_class
    synth_points: int = _SYNTH.num_points
    num_points: int = 1024        # points per cloud fed to the encoder (random subset per step)
    in_channels: int = 6          # 6 = xyz + rgb, 3 = xyz only
    augment: bool = True          # rotation about the up axis + scale jitter (OpenShape habit)
    sampling: str = "random"      # points per step: "random" subset (OpenShape) or "fps"
    rgb_dropout: float = 0.5      # P(rgb replaced by 0.4), so colourless scans stay in-domain
    # How `classify` turns a user's y-up file to z-up: "rotate" (x, -z, y), this project's mesh
    # importer, or "swap" (x, z, y), OpenShape's column swap (a mirror image), which imported
    # OpenShape / MM-Mixing weights expect. Benchmarks and OpenShape's files always get the swap.
    up_convention: str = "rotate"


@dataclass
class ClipConfig:
    """The frozen image/text FM-encoders.

    ``model="synth-tiny"`` pre-trains (once, then cached) a tiny open_clip model on the
    SynthShapes renders and captions. Anything else is an open_clip model name with
    ``pretrained`` a tag (``"openai"``, ``"laion2b_s39b_b160k"``) or a local checkpoint path.
    """

    model: str = "synth-tiny"
    pretrained: Optional[str] = None
    tiny_width: int = 64
    tiny_embed_dim: int = 64
    tiny_steps: int = 500
    tiny_batch_size: int = 128
    tiny_lr: float = 2e-3
    tiny_prompt_share: float = 0.5   # share of category prompts among the training texts
    batch_size: int = 256         # feature-extraction batch

    @property
    def spec(self) -> str:
        return self.model if self.pretrained is None else f"{self.model}/{self.pretrained}"


@dataclass
class MixConfig:
    """Mixing settings (paper silent on all of them; defaults documented here).

    beta=1.0: Beta(1,1) is uniform, PointCutMix's default.
    pairing="shuffle": each row mixed with a random row of the same batch (mixup's rule).
    mix_prob=1.0: every batch is mixed. The paper states no mixing probability; PointCutMix,
    whose input mixing it follows, mixes with probability 0.5 (``mix.mix_prob=0.5``). With 1.0,
    Beta(1, 1) and no unmixed terms, an encoder never sees a clean cloud.
    align_unmixed=True: the unmixed triplets are aligned as well (their terms averaged with the
    mixed ones); zero-shot evaluation sees unmixed clouds, and without this the encoder only
    ever meets unmixed inputs at lam in {0, 1}, which Beta(1,1) almost never draws.
    input_variant="knn": PointCutMix-K, a contiguous patch, the more realistic mixed shape.
    normalize_before_mix=True: features are L2-normalized before mixing so lam weighs every
    modality alike (CLIP features are compared as unit vectors).
    modalities / modality_scope (Table 5): the loss terms kept, and where. ``"both"`` (default):
    a term is dropped wherever it occurs (stage 1's image term too for T and T+P), because
    Table 5 ablates "the modality loss functions" of the framework, L_T, L_I and L_P, without
    naming a stage; ``"stage2"``: stage 1 keeps eq. 5 whole and only eq. 6 loses terms.
    """

    beta: float = 1.0
    pairing: str = "shuffle"
    mix_prob: float = 1.0
    align_unmixed: bool = True
    input_variant: str = "knn"
    normalize_before_mix: bool = True
    modalities: tuple = ("image", "text", "point")
    modality_scope: str = "both"


@dataclass
class TrainConfig:
    variant: str = "mm-mixing"
    encoder: str = "pointbert-tiny"
    encoder_overrides: dict = field(default_factory=dict)
    epochs_stage1: int = 15
    epochs_stage2: int = 15
    # "per-stage" (the paper's reading): each stage is a full schedule; baseline, fm and im
    # train epochs_stage1 epochs, mm-mixing epochs_stage1 then epochs_stage2, one-stage and
    # baseline-2x both together. "total": every variant trains epochs_stage1 + epochs_stage2.
    budget: str = "per-stage"
    batch_size: int = 32          # tiny world: 20 steps per epoch; paper preset: 200
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    schedule: str = "cosine"      # "cosine" | "exponential" (OpenShape) | "constant"
    exp_decay: float = 0.9995     # per-step factor for "exponential"
    grad_clip: float = 1.0
    # the joint phase (one-stage) trains two encoders: clip each one's gradient norm on its own
    # (True; the paper trains them "without shared weights") or both as one vector (False, the
    # behaviour the README's one-stage rows were measured with)
    clip_per_encoder: bool = False
    init_temperature: float = 0.07
    device: str = "auto"          # "auto" picks cuda, then mps, then cpu
    # "auto" | "bf16" | "fp16" | "off"; auto: bf16 on CUDA, fp32 on CPU (bf16 there on
    # request, on a CPU with native bf16 only)
    amp: str = "auto"
    seed: int = 0
    checkpoint_every: int = 0     # steps; 0 = at the end of each epoch only
    eval_every: int = 0           # epochs; 0 = only at the end
    num_threads: int = 0          # torch CPU threads; 0 = leave torch's default
    # on a CPU, glibc keeps freed memory for reuse instead of returning it to the OS and
    # zero-filling it again on the next step (device.retain_freed_memory: 10-20% of a step,
    # the same numbers), the heap advised for transparent huge pages (1-4% more); process-wide
    # once set
    retain_freed_memory: bool = True
    grad_cache_chunk: int = 0     # >0: gradient caching, encoder run in chunks of this size
    # the unmixed clouds' patches (FPS + grouping) computed once a step for every encoder and
    # pass that reads them (A's targets and B's unmixed rows in stage 2; A and B in one-stage):
    # the same indices, the same numbers bit for bit (encoders.common.PatchIndex)
    share_patches: bool = True
    # pointbert-tiny's tokenizer in one compiled pass per patch on the CPU (mmmixlab.native,
    # built on first use where a C++ compiler is found), in float32 whatever train.amp; other
    # numbers (float32 rounding, not bf16's), zero-shot within seed noise (benchmarks/RESULTS.md)
    fused_tokenizer: bool = True
    # the transformers' attention from the packed qkv in one compiled pass per (cloud, head) on
    # the CPU (mmmixlab.native; 1-128 tokens, heads of 16, 32 or 64), in float32 as torch's
    # kernel computes it under autocast here: the same function to float32 rounding. With both,
    # steps at 0.69-0.71 of torch's ops on one Sapphire Rapids core (benchmarks/RESULTS.md)
    fused_attention: bool = True
    deterministic: bool = False   # deterministic kernels (slower on GPU; CPU is already)
    log_every: int = 1            # steps between log.jsonl lines (0 = epochs only)
    stage2_init: str = "scratch"  # "scratch": a new encoder, as the paper; "stage1": copy A
    stage1_checkpoint: Optional[str] = None  # mm-mixing: take A from this final.pt, run stage 2
    # fine-tune: every encoder this run trains starts from this run's final encoder (a run
    # folder, trained or made by `mmmixlab import-checkpoint`; same encoder and sizes)
    init_from: Optional[str] = None


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cache_dir: Optional[str] = None   # None: $MMMIXLAB_CACHE or ~/.cache/mmmixlab

    def __post_init__(self):
        for section in ("data", "clip", "mix", "train"):
            check_field_types(getattr(self, section), section)

    def validate(self) -> "RunConfig":
        check_choice(self.train.variant, VARIANTS, "variant")
        check_choice(self.train.schedule, ("cosine", "exponential", "constant"), "schedule")
        check_choice(self.train.amp, ("auto", "bf16", "fp16", "off"), "amp")
        check_choice(self.train.stage2_init, ("scratch", "stage1"), "stage2_init")
        check_choice(self.train.budget, BUDGETS, "budget")
        check_choice(self.data.sampling, SAMPLINGS, "data.sampling")
        check_choice(self.data.up_convention, ("rotate", "swap"), "data.up_convention")
        check_choice(self.mix.pairing, PAIRINGS, "pairing")
        check_choice(self.mix.input_variant, INPUT_MIX_VARIANTS, "input-mixing variant")
        check_choice(self.mix.modality_scope, ("both", "stage2"), "mix.modality_scope")
        if not self.mix.beta > 0:
            raise ValueError(f"mix.beta must be > 0, got {self.mix.beta}")
        if not 0.0 <= self.mix.mix_prob <= 1.0:
            raise ValueError(f"mix.mix_prob must lie in [0, 1], got {self.mix.mix_prob}")
        if not 0.0 <= self.data.rgb_dropout <= 1.0:
            raise ValueError(f"data.rgb_dropout must lie in [0, 1], got {self.data.rgb_dropout}")
        if not 0.0 <= self.data.max_bad_share <= 1.0:
            raise ValueError(f"data.max_bad_share must lie in [0, 1], got "
                             f"{self.data.max_bad_share}")
        if self.data.num_workers < 0 or self.data.prefetch_factor < 1:
            raise ValueError(f"data.num_workers must be >= 0 and data.prefetch_factor >= 1, got "
                             f"{self.data.num_workers}, {self.data.prefetch_factor}")
        if self.data.in_channels not in (3, 6):
            raise ValueError(f"data.in_channels must be 3 or 6, got {self.data.in_channels}")
        for name in ("epochs_stage1", "epochs_stage2", "num_threads", "checkpoint_every",
                     "eval_every", "log_every", "warmup_steps", "grad_cache_chunk"):
            if getattr(self.train, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self.train, name)}")
        if self.train.variant == "mm-mixing" and self.train.epochs_stage2 < 1:
            raise ValueError("mm-mixing with train.epochs_stage2=0 would evaluate an untrained "
                             "stage-2 encoder B; set epochs_stage2 >= 1 (or use the fm variant "
                             "for stage 1 alone)")
        if self.train.batch_size < 2:
            raise ValueError("train.batch_size must be >= 2: a contrastive batch needs negatives")
        bad = [m for m in self.mix.modalities if m not in MODALITIES]
        if bad or not self.mix.modalities:
            raise ValueError(f"mix.modalities must be a non-empty subset of image/text/point, "
                             f"got {self.mix.modalities}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        kwargs = {}
        sections = {"data": DataConfig, "clip": ClipConfig, "mix": MixConfig,
                    "train": TrainConfig}
        for key, value in d.items():
            if key in sections:
                kwargs[key] = _build(sections[key], value, key)
            elif key == "cache_dir":
                kwargs[key] = value
            else:
                raise ValueError(f"unknown config section {key!r}")
        return cls(**kwargs)

    def replace(self, **dotted) -> "RunConfig":
        """Copy with fields set by dotted name: ``cfg.replace(**{"train.lr": 1e-4})``."""
        d = self.to_dict()
        for name, value in dotted.items():
            section, _, key = name.partition(".")
            if section == "cache_dir" and not key:
                d["cache_dir"] = value
                continue
            if section not in d or not isinstance(d[section], dict) or key not in d[section]:
                raise ValueError(f"unknown config field {name!r}")
            d[section][key] = value
        return RunConfig.from_dict(d)


def check_field_types(obj, section: str) -> None:
    """Every field of a config section holds a value of its declared type; a ValueError names
    the field and the value otherwise (``--set train.lr=abc``). An int is accepted for a
    float field; a bool is never an int or a float here."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, kind = getattr(obj, f.name), hints[f.name]
        args = typing.get_args(kind)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), kind) if optional else kind
        base = typing.get_origin(base) or base
        if value is None and optional:
            continue
        if base is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif base is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif base is tuple:
            ok = isinstance(value, (tuple, list))
        else:
            ok = isinstance(value, base)
        if not ok:
            name = {float: "a number", int: "an int", bool: "a bool", str: "a str",
                    tuple: "a list", dict: "a dict"}.get(base, getattr(base, "__name__", base))
            raise ValueError(f"{section}.{f.name} must be {'None or ' if optional else ''}"
                             f"{name}, got {value!r} ({type(value).__name__})")


def _build(klass, values: dict, section: str):
    names = {f.name for f in dataclasses.fields(klass)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} in config section {section!r}; "
                         f"valid: {sorted(names)}")
    values = dict(values)
    if "modalities" in values:
        values["modalities"] = tuple(values["modalities"])
    return klass(**values)


PRESETS = ("tiny", "paper", "paper-faithful")

# The paper's own reading of eqs. 5-6 (``--faithful``): only mixed terms, FPS-resampled clouds,
# features normalized after mixing only (inside the loss), not before.
FAITHFUL = {"mix.align_unmixed": False, "mix.normalize_before_mix": False,
            "data.sampling": "fps"}


def faithful(cfg: "RunConfig") -> "RunConfig":
    """``cfg`` with the paper's reading of the mixing losses (:data:`FAITHFUL`)."""
    return cfg.replace(**FAITHFUL)


def preset(name: str = "tiny") -> RunConfig:
    """``tiny``: minutes on a 2-core CPU with the embedded world. ``paper``: the paper's
    backbone (OpenShape's point-patch transformer, ``openshape-pointbert``) with OpenShape's recipe (batch 200, lr 5e-4, exponential decay, 10k points).
    ``paper-faithful``: ``tiny`` with the paper's reading of the losses (:data:`FAITHFUL`)."""
    check_choice(name, PRESETS, "preset")
    if name == "tiny":
        return RunConfig().validate()
    if name == "paper-faithful":
        return faithful(RunConfig()).validate()
    # the paper's backbone: OpenShape's point-patch transformer at the released G14 size
    return RunConfig(
        data=DataConfig(num_points=10000, synth_points=10000, up_convention="swap"),
        clip=ClipConfig(model="ViT-bigG-14", pretrained="laion2b_s39b_b160k"),
        train=TrainConfig(encoder="openshape-pointbert", epochs_stage1=100, epochs_stage2=100,
                          batch_size=200, lr=5e-4, schedule="exponential", warmup_steps=0,
                          weight_decay=0.1, log_every=25),  # a log line reads the device
    ).validate()
