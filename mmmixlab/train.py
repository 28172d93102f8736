"""One trainer for every variant of the paper's ablations.

Variants (``TrainConfig.variant``) and the phases they run:

==============  ====================================================================
``baseline``    OpenShape: E(P) aligned with I and T, no mixing.
``fm``          stage 1 only: feature mixing, eq. 5.
``im``          input mixing only: E(mix(P1, P2)) aligned with mixed I and T features.
``mm-mixing``   stage 1 (encoder A, eq. 5), then stage 2 (a NEW encoder B fed mixed
                clouds, eq. 6) with the frozen A giving the point targets m^P.
``one-stage``   A and B trained simultaneously, each with its own loss (B's point
                targets from A, detached: the paper trains both "independently ...
                without shared weights").
==============  ====================================================================

``baseline-2x`` is the baseline trained twice as long (the control row of the ablations);
``one-stage-matched`` is one-stage with B trained as many epochs as two-stage B (Table 4's
epoch control).

Epochs per variant follow ``TrainConfig.budget`` (:func:`plan_phases`): ``per-stage`` (default,
the paper's reading: each stage a full schedule, so mm-mixing's B trains as long as the
baseline) or ``total`` (every variant ``epochs_stage1 + epochs_stage2`` epochs). The encoder
that is evaluated is the last one trained (B for the two-encoder variants).

Mixing details: one lam per pair, shared by all modalities; in stage 2 (and ``im``) the
feature mix uses the input mix's exact lam (floor(lam*N)/N). A mixed text target exists only
where both partners have a caption; rows without one still serve as negatives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed as dist_utils
from . import progress as progress_out
from .batches import Batch, TripletBatches, check_batch
from .checks import values_checked
from .checkpoints import (
    encoders_of_state,
    final_name,
    numpy_rng_from_tensors,
    numpy_rng_to_tensors,
    read_run_state,
)
from .config import RunConfig
from .device import autocast_dtype, precision_name, resolve_device, retain_freed_memory
from .encoders import create_point_encoder, set_fused_attention, set_fused_tokenizer
from .encoders.common import PatchIndex
from .fileio import atomic_path
from .losses import LogitScale
from .mixing import input_mix, pair_indices, sample_lambda
from .objectives import (Baseline, FeatureMixing, InputMixing, Joint, Phase, Stage2, StepContext,
                         StepPlan)
from .runlog import RunLog

CHECKPOINT_NAME = "last.pt"


# Learned embeddings that are not weights of a layer: no weight decay (as BERT/ViT/Point-BERT)
NO_DECAY_NAMES = ("cls_token", "cls_pos")


def _no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, norms and the class token/position embeddings; every layer weight (tokenizer and
    positional MLPs included) is decayed."""
    return param.dim() < 2 or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES


def plan_phases(variant: str, epochs1: int, epochs2: int, budget: str = "per-stage"
                ) -> list[Phase]:
    """The phases of a variant and their epochs under a budget (``TrainConfig.budget``).

    ``per-stage`` (the paper: "both 3D encoders are trained independently for the duration of
    one stage"): one stage is ``epochs1`` epochs; baseline, fm and im train one stage,
    mm-mixing stage 1 then stage 2 (``epochs2``), one-stage both encoders together for
    ``epochs1 + epochs2``, and ``baseline-2x`` the baseline for as long (the control for "more
    training does not close the gap"). ``total``: every variant trains ``epochs1 + epochs2``
    epochs (``baseline-2x`` twice that).
    """
    total = epochs1 + epochs2
    one = epochs1 if budget == "per-stage" else total
    return {
        "baseline": lambda: [Baseline(one)],
        "baseline-2x": lambda: [Baseline(2 * one if budget == "total" else total)],
        "fm": lambda: [FeatureMixing(one)],
        "im": lambda: [InputMixing(one)],
        "mm-mixing": lambda: [FeatureMixing(epochs1), Stage2(epochs2)],
        "one-stage": lambda: [Joint(total)],
        # Table 4's control: B trains as many epochs as two-stage B (the paper's one-stage row
        # trains it epochs1 + epochs2)
        "one-stage-matched": lambda: [Joint(epochs2)],
    }[variant]()


@dataclass
class TrainResult:
    encoders: dict                   # "A" (and "B") -> nn.Module
    logit_scales: dict               # encoder name -> LogitScale
    history: list = field(default_factory=list)   # one dict per epoch
    seconds: float = 0.0
    embed_dim: int = 0
    unreadable: dict = field(default_factory=dict)  # streamed data: index -> {path, reason}
    unsaved: tuple = ()              # encoders final.pt leaves out (a stage-1 A of another backbone)
    precision: str = "fp32"          # what the steps computed in (device.precision_name)

    @property
    def final_encoder(self) -> nn.Module:
        return final_encoder(self.encoders)


def _same_architecture(a: nn.Module, b: nn.Module) -> bool:
    return type(a) is type(b) and dataclasses.asdict(a.config) == dataclasses.asdict(b.config)


def final_encoder(encoders: dict) -> nn.Module:
    """The encoder a run is judged by: the last one trained (B for two-encoder variants)."""
    return encoders["B"] if "B" in encoders else encoders["A"]


class Trainer(StepContext):
    """Runs the phases of a variant (:mod:`mmmixlab.objectives`' phase objects: what each step
    feeds the encoders and its loss); here: optimisation, schedules, checkpoints, the loop.

    Checkpoints (``out_dir/checkpoints/last.pt``, written atomically) after each epoch and every
    ``checkpoint_every`` steps hold the encoders, optimizer, scheduler, AMP scaler, logit scales,
    every RNG state and the position in the epoch, so ``fit(resume=True)`` continues a killed run
    and ends with the same weights as an uninterrupted one. Per-step metrics go to
    ``out_dir/log.jsonl`` (and TensorBoard when installed), written by :mod:`mmmixlab.runlog`.
    Under ``torchrun`` the encoders are wrapped in DDP and losses are computed on the global
    batch (see ``distributed``); only rank 0 writes files or shows progress.
    """

    def __init__(self, cfg: RunConfig, batches: TripletBatches, embed_dim: int,
                 out_dir: Optional[os.PathLike] = None,
                 evaluate: Optional[Callable[[nn.Module], dict]] = None, progress: bool = True):
        self.cfg = cfg.validate()
        self.batches = batches
        self.embed_dim = embed_dim
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.evaluate = evaluate
        self.main = dist_utils.is_main_process()
        self.progress = progress and self.main
        tc = cfg.train
        if tc.deterministic:
            enable_determinism()
        self.device = resolve_device(tc.device)
        if self.device.type == "cuda" and self.device.index is None and dist_utils.is_distributed():
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.phases = plan_phases(tc.variant, tc.epochs_stage1, tc.epochs_stage2, tc.budget)
        if sum(p.epochs for p in self.phases) < 1:
            raise ValueError("the run has zero epochs: set epochs_stage1/epochs_stage2")
        if len(batches) < 1:
            raise ValueError("the training set is smaller than one (global) batch")
        data_dim = getattr(batches, "dim", embed_dim)
        if data_dim != embed_dim:
            raise ValueError(f"feature widths differ: the data's image/text features are "
                             f"{data_dim}-d, the 3D encoder's output is {embed_dim}-d")
        torch.manual_seed(tc.seed)
        names = sorted({n for p in self.phases for n in p.trains})
        self.encoders = {n: self._new_encoder() for n in names}
        # auto on a CPU: bf16 only where it was measured to pay (device.autocast_dtype)
        self.amp_dtype = autocast_dtype(tc.amp, self.device, cpu_bf16_pays=all(
            getattr(e, "cpu_autocast_pays", False) for e in self.encoders.values()))
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.logit_scales = {n: LogitScale(tc.init_temperature).to(self.device) for n in names}
        self.unsaved: set = set()
        if tc.stage1_checkpoint:
            self._use_stage1_checkpoint(Path(tc.stage1_checkpoint))
        if tc.init_from:
            self._init_from(Path(tc.init_from))
        self.forward_modules = dict(self.encoders)
        if dist_utils.world_size() > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_modules = {n: DDP(e, device_ids=ids) for n, e in self.encoders.items()}
        # Shared stream: epoch order, identical on every rank. Local stream: subsampling,
        # augmentation and mixing, different per rank.
        self.generator = torch.Generator().manual_seed(tc.seed)
        self.local_generator = torch.Generator().manual_seed(
            tc.seed * 1_000_003 + 7919 * (dist_utils.rank() + 1))
        self.history: list = []
        streams = getattr(self, "_stage1_streams", {})
        if "path" in streams:  # stage 2 continues the streams of the stage 1 it starts from
            self.generator.set_state(streams["generator"])
            self.local_generator.set_state(streams["local"])
            self.history = list(streams["history"])
            if streams["scale_A"] is not None:
                self.logit_scales["A"].load_state_dict(streams["scale_A"])
        self.runlog = RunLog(self.out_dir, main=self.main, progress=self.progress)

    def _record_source(self, path: Path, record_name: str, what: str) -> str:
        """sha1 of a file this run starts from, recorded in ``out_dir/record_name``; a resumed
        run refuses a file that changed since it started."""
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if self.out_dir is not None and self.main:
            record = self.out_dir / record_name
            if record.exists():
                before = json.loads(record.read_text())
                if before.get("sha1") != digest:
                    raise ValueError(f"refusing to continue: the {what} {path} changed since "
                                     f"this run started (recorded in {record})")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({"path": str(path.resolve()), "sha1": digest}))
        return digest

    def _read_source(self, path: Path, what: str):
        """(config, encoder, file) of the judged encoder of a run folder or file. Building it
        leaves torch's global random stream where it was (the run's own draws do not shift)."""
        rng = torch.get_rng_state()
        try:
            return self._read_source_unseeded(path, what)
        finally:
            torch.set_rng_state(rng)

    def _read_source_unseeded(self, path: Path, what: str):
        try:
            state, file = read_run_state(path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{what} not found: {err}") from err
        if int(state["embed_dim"]) != self.embed_dim:
            raise ValueError(f"{what} {file} outputs {state['embed_dim']}-d features, this run's "
                             f"frozen features are {self.embed_dim}-d")
        src_cfg, encs = encoders_of_state(state, file, names=[final_name(state["encoders"])]
                                          if what != "stage-1 checkpoint" else ["A"])
        if src_cfg.data.in_channels != self.cfg.data.in_channels:
            raise ValueError(f"{what} {file} reads {src_cfg.data.in_channels}-channel clouds, "
                             f"this run feeds {self.cfg.data.in_channels} (data.in_channels)")
        return src_cfg, next(iter(encs.values())), file

    def _use_stage1_checkpoint(self, path: Path) -> None:
        """Take encoder A from a finished run (its folder, ``final.pt`` or
        ``encoders.safetensors``; an imported release too) and run stage 2 only. A keeps the
        architecture the file was made with (it only gives stage 2's point targets), so a
        released OpenShape encoder can be the stage-1 model of a stage 2 of another backbone.
        The run folder records the file and its hash in ``stage1.json``."""
        if self.cfg.train.variant != "mm-mixing":
            raise ValueError("train.stage1_checkpoint applies to the mm-mixing variant only")
        try:
            _, encoder, file = self._read_source(path, "stage-1 checkpoint")
        except KeyError as err:
            raise ValueError(f"{path} holds no stage-1 encoder A: {err}") from err
        self._record_source(file, "stage1.json", "stage-1 checkpoint")
        if not _same_architecture(self.encoders["A"], encoder):
            # final.pt describes its encoders by this run's config: an A of another backbone
            # is not written there (stage1.json names the file it came from)
            self.unsaved.add("A")
        self.encoders["A"] = encoder.to(self.device)
        stage1 = next(p for p in self.phases if isinstance(p, FeatureMixing))
        self.phases = [p for p in self.phases if isinstance(p, Stage2)]
        self._stage1_streams = self._stage1_end_state(file, stage1.epochs)
        record = self.out_dir / "stage1.json" if self.out_dir is not None else None
        if record is not None and self.main:
            info = json.loads(record.read_text())
            info["streams"] = (f"continued from {self._stage1_streams['path']}: stage 2 runs as "
                               f"in a full run" if "path" in self._stage1_streams
                               else f"fresh ({self._stage1_streams['why']})")
            record.write_text(json.dumps(info))

    def _stage1_end_state(self, file: Path, epochs: int) -> dict:
        """Where a full run's random streams stand when its stage 2 begins, when ``file``'s run
        folder holds it: the ``checkpoints/last.pt`` a finished ``fm`` run (or ``mm-mixing``
        after stage 1) wrote at its phase boundary, for a config that agrees with this one on
        everything stage 1 reads. Then stage 2 from that run equals stage 2 of a full run, bit
        for bit (``ablate`` reuses an ``fm`` run so). ``{"why"}`` when it cannot."""
        ck = file.parent / "checkpoints" / CHECKPOINT_NAME
        if not ck.is_file():
            return {"why": f"no {ck}"}
        try:
            state = torch.load(ck, map_location="cpu", weights_only=True)
            src = RunConfig.from_dict(state["config"])
        except Exception as err:  # noqa: BLE001 (an unreadable checkpoint: start fresh)
            return {"why": f"{ck} unreadable ({type(err).__name__})"}
        phases = plan_phases(src.train.variant, src.train.epochs_stage1, src.train.epochs_stage2,
                             src.train.budget)
        done = [p for p in phases[:state.get("phase", 0)]]
        diff = _config_diff(src.to_dict(), self.cfg.to_dict(),
                            ignore=RESUME_MAY_CHANGE + STAGE2_ONLY)
        if diff:
            return {"why": f"its config differs in what stage 1 reads: {diff[:3]}"}
        if not (done and isinstance(done[-1], FeatureMixing) and done[-1].epochs == epochs
                and state.get("epoch") == 0 and state.get("step_in_epoch") == 0):
            return {"why": f"{ck} is not the end of a {epochs}-epoch stage 1"}
        if state.get("world_size", 1) != dist_utils.world_size():
            return {"why": "written by another number of ranks"}
        return {"path": str(ck), "generator": state["generator"],
                "local": state["local_generators"][dist_utils.rank()],
                "history": state.get("history", []),
                "scale_A": state.get("logit_scales", {}).get("A")}

    def _init_from(self, path: Path) -> None:
        """Fine-tuning: every encoder this run trains starts from the judged encoder of the run
        at ``path`` (same encoder and sizes; recorded in ``init.json``)."""
        src_cfg, encoder, file = self._read_source(path, "train.init_from")
        trains = {n for p in self.phases for n in p.trains}
        for name in sorted(trains):
            mine = self.encoders[name]
            if not _same_architecture(mine, encoder):
                raise ValueError(
                    f"train.init_from {file}: it holds {src_cfg.train.encoder} with "
                    f"{json.dumps(src_cfg.train.encoder_overrides, sort_keys=True)}, this run "
                    f"trains {self.cfg.train.encoder} with "
                    f"{json.dumps(self.cfg.train.encoder_overrides, sort_keys=True)}: set "
                    f"--encoder {src_cfg.train.encoder} --set train.encoder_overrides='"
                    f"{json.dumps(src_cfg.train.encoder_overrides, sort_keys=True)}'")
            mine.load_state_dict(encoder.state_dict())
        self._record_source(file, "init.json", "train.init_from run")

    def _new_encoder(self) -> nn.Module:
        tc = self.cfg.train
        enc = create_point_encoder(tc.encoder, out_dim=self.embed_dim,
                                   in_channels=self.cfg.data.in_channels, **tc.encoder_overrides)
        set_fused_tokenizer(enc, tc.fused_tokenizer)
        set_fused_attention(enc, tc.fused_attention)
        if tc.grad_cache_chunk and getattr(enc, "mixes_batch", False):
            # chunked forward passes would normalise over chunks, not the batch: another model
            raise ValueError(f"gradient caching (train.grad_cache_chunk={tc.grad_cache_chunk}) "
                             f"needs an encoder whose clouds are independent of each other; "
                             f"{tc.encoder} normalises over the batch (norm='batch'): set "
                             f"train.encoder_overrides norm='layer' or grad_cache_chunk=0")
        return enc.to(self.device)

    # -- optimisation -------------------------------------------------------------------------
    def _optimizer(self, phase: Phase):
        tc = self.cfg.train
        decay, no_decay = [], []
        for n in phase.trains:
            for pname, p in self.encoders[n].named_parameters():
                (no_decay if _no_weight_decay(pname, p) else decay).append(p)
            no_decay.append(self.logit_scales[n].log_scale)
        # foreach: the same updates bit for bit as the per-tensor loop (CPU's default), in
        # fewer kernel calls (6.3 -> 4.1 ms a step for pointbert-tiny on one core)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr,
                                foreach=True)
        total = phase.epochs * len(self.batches)
        warm = tc.warmup_steps

        def factor(step):
            w = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
            if tc.schedule == "cosine":
                return w * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
            if tc.schedule == "exponential":
                return w * tc.exp_decay ** step
            return w

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)

    # -- what a phase asks of its trainer (objectives.StepContext) ----------------------------
    @property
    def mix(self):
        return self.cfg.mix

    def gather(self, x):
        return dist_utils.gather(x)

    def encode(self, name: str, points: torch.Tensor, plan: Optional[StepPlan] = None
               ) -> torch.Tensor:
        """Encoder ``name``'s features of ``points`` (normalised before mixing, by default)
        under the step's precision. With ``plan``, the step's :class:`StepPlan`, and ``points``
        its unmixed clouds or its input for ``name``, the unmixed clouds' patches are cut once
        a step and shared by every pass that reads them (``train.share_patches``)."""
        return self._encode(name, points, self.patch_index(name, points, plan))

    def _encode(self, name: str, points: torch.Tensor, patches=None) -> torch.Tensor:
        # values_checked: check_batch scanned the batch on the CPU; the encoders' own scan
        # would be a host sync per forward on an accelerator (shapes are still checked)
        kwargs = {} if patches is None else {"patches": patches}
        with torch.autocast(self.device.type, dtype=self.amp_dtype,
                            enabled=self.amp_dtype is not None), values_checked():
            feats = self.forward_modules[name](points, **kwargs)
        feats = feats.float()
        return F.normalize(feats, dim=-1) if self.cfg.mix.normalize_before_mix else feats

    def patch_index(self, name: str, points: torch.Tensor, plan: Optional[StepPlan]
                    ) -> Optional[PatchIndex]:
        """Where encoder ``name`` cuts ``points`` into patches, with the rows that are the
        plan's unmixed clouds taken from the plan's memo (cut once a step per
        ``patch_key``); None (the encoder cuts them itself) without a plan, for an encoder
        without patches or with a random FPS start, for clouds that are not the plan's, or
        with ``train.share_patches`` off."""
        enc = self.encoders[name]
        key = getattr(enc, "patch_key", None)
        if plan is None or key is None or not self.cfg.train.share_patches:
            return None
        if points is plan.points:
            start = 0
        elif points is plan.inputs.get(name) and plan.unmixed_from.get(name) is not None:
            start = plan.unmixed_from[name]
        else:
            return None
        if points.shape[0] - start != plan.points.shape[0]:
            raise ValueError(f"plan input {name!r} has {points.shape[0]} clouds; its unmixed "
                             f"rows from {start} should be the batch's {plan.points.shape[0]}")
        with torch.no_grad():
            shared = plan.patch_memo.get(key)
            if shared is None:
                shared = plan.patch_memo[key] = enc.patch_index(plan.points)
            return shared if start == 0 else PatchIndex.cat([enc.patch_index(points[:start]),
                                                             shared])

    def draw_mixing(self, b: int):
        mc, g = self.cfg.mix, self.local_generator
        partner = pair_indices(b, mc.pairing, generator=g)
        lam = sample_lambda(mc.beta, b, generator=g)
        if float(torch.rand((), generator=g)) >= mc.mix_prob:
            lam = torch.ones(b)  # this batch is left unmixed
        return partner.to(self.device), lam.to(self.device)

    def input_mix(self, p1, p2, lam):
        return input_mix(p1, p2, lam, self.cfg.mix.input_variant,
                         generator=self.local_generator, check=False)  # check_batch did

    # -- losses -------------------------------------------------------------------------------
    def _plan(self, phase: Phase, batch: Batch):
        """The step's :class:`StepPlan` (the inputs each trained encoder sees) and the loss as
        a function of their features (the phase's :meth:`~mmmixlab.objectives.Phase.loss`).
        Split this way so gradient caching can run the encoders in chunks.

        Pairs are formed within each rank's batch (mixing needs no cross-rank exchange of
        clouds); the mixed features are then gathered so every loss is over the global batch.
        """
        plan = phase.plan(batch, self)
        scales = {n: s() for n, s in self.logit_scales.items()}
        return plan, lambda feats: phase.loss(plan, feats, scales, self)

    def compute_loss(self, phase_name: str, batch: Batch) -> tuple[torch.Tensor, dict]:
        """The loss of one batch in the named phase (no backward, no optimizer step); for
        benchmarks and notebooks that want to look inside a step."""
        phase = next((p for p in self.phases if p.name == phase_name), None)
        if phase is None:
            raise ValueError(f"variant {self.cfg.train.variant!r} has no phase {phase_name!r}; "
                             f"it has {[p.name for p in self.phases]}")
        plan, step_loss = self._plan(phase, check_batch(batch).to(self.device))
        return step_loss({n: self.encode(n, x, plan) for n, x in plan.inputs.items()})

    def _forward_backward(self, phase: Phase, batch: Batch):
        """Loss and gradients of one step; with ``grad_cache_chunk`` > 0 the encoders run in
        chunks (gradient caching: features first without a graph, the loss's gradient with
        respect to them, then each chunk re-encoded and back-propagated with its slice of that
        gradient), which gives the same gradients as the whole batch with a chunk's memory."""
        plan, step_loss = self._plan(phase, batch)
        inputs, chunk = plan.inputs, self.cfg.train.grad_cache_chunk
        if not chunk:
            loss, terms = step_loss({n: self.encode(n, x, plan) for n, x in inputs.items()})
            self.scaler.scale(loss).backward()
            return loss, terms
        # the patches are cut once and reused by both passes over each chunk
        pieces = {n: list(zip(x.split(chunk), _split_patches(self.patch_index(n, x, plan),
                                                             chunk, len(x))))
                  for n, x in inputs.items()}
        with torch.no_grad():
            cached = {n: torch.cat([self._encode(n, c, p) for c, p in ps])
                      for n, ps in pieces.items()}
        leaves = {n: f.detach().requires_grad_(True) for n, f in cached.items()}
        loss, terms = step_loss(leaves)
        self.scaler.scale(loss).backward()
        for n, ps in pieces.items():
            grads = leaves[n].grad.split(chunk)
            module = self.forward_modules[n]
            for i, ((c, p), g) in enumerate(zip(ps, grads)):
                sync = i == len(ps) - 1 or not hasattr(module, "no_sync")
                ctx = contextlib.nullcontext() if sync else module.no_sync()
                with ctx:
                    self._encode(n, c, p).backward(g)
        return loss, terms

    # -- checkpoints --------------------------------------------------------------------------
    def _checkpoint_path(self) -> Optional[Path]:
        return None if self.out_dir is None else self.out_dir / "checkpoints" / CHECKPOINT_NAME

    def _save(self, *, phase_idx: int, epoch: int, step_in_epoch: int, global_step: int,
              order=None, opt=None, sched=None, partial=None):
        """A checkpoint of the position (phase, epoch, step in it; the epoch's ``order`` when
        mid-epoch), the optimizer and scheduler (None at a phase boundary, where the next phase
        starts fresh ones), and ``partial`` epoch sums."""
        local_states = dist_utils.gather_objects(self.local_generator.get_state())
        path = self._checkpoint_path()
        if path is None or not self.main:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "config": self.cfg.to_dict(), "phase": phase_idx, "epoch": epoch,
            "step_in_epoch": step_in_epoch, "global_step": global_step, "order": order,
            "partial_epoch": partial, "world_size": dist_utils.world_size(),
            "encoders": {n: e.state_dict() for n, e in self.encoders.items()},
            "logit_scales": {n: s.state_dict() for n, s in self.logit_scales.items()},
            # At a phase boundary the next phase starts a fresh optimizer over other params.
            "optimizer": opt.state_dict() if opt is not None else None,
            "scheduler": sched.state_dict() if sched is not None else None,
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(), "local_generators": local_states,
            "torch_rng": torch.get_rng_state(), "numpy_rng": numpy_rng_to_tensors(),
            "python_rng": random.getstate(), "history": self.history,
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def _load(self):
        path = self._checkpoint_path()
        if path is None or not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"checkpoint {path} is corrupt, unreadable, or holds objects the "
                             f"safe loader (weights_only=True) refuses; a checkpoint written "
                             f"before this version cannot resume: start the run again "
                             f"({type(err).__name__}: {str(err)[:300]})") from err
        saved = RunConfig.from_dict(state["config"]).to_dict()
        diff = _config_diff(saved, self.cfg.to_dict(), ignore=RESUME_MAY_CHANGE)
        if diff:
            raise ValueError(f"refusing to resume from {path}: the config differs in {diff}")
        if state.get("world_size", 1) != dist_utils.world_size():
            raise ValueError(f"refusing to resume from {path}: it was written by "
                             f"{state.get('world_size', 1)} rank(s), this run has "
                             f"{dist_utils.world_size()} (the batch stream would differ)")
        for n, sd in state["encoders"].items():
            self.encoders[n].load_state_dict(sd)
        for n, sd in state["logit_scales"].items():
            self.logit_scales[n].load_state_dict(sd)
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        self.local_generator.set_state(state["local_generators"][dist_utils.rank()])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(numpy_rng_from_tensors(state["numpy_rng"]))
        random.setstate(state["python_rng"])
        self.history = state["history"]
        return state

    @staticmethod
    def _raise_if_nonfinite(flag, phase, epoch, first, last):
        """The deferred loss check of an accelerator (one sync per log point / checkpoint):
        raised before anything is written, so the last checkpoint stays clean."""
        if bool(flag):
            raise FloatingPointError(f"non-finite loss at {phase.name} epoch {epoch + 1}, "
                                     f"between steps {first} and {last} of the epoch")

    # -- main loop ----------------------------------------------------------------------------
    def enter_phase(self, phase: Phase) -> Phase:
        """Train mode and gradients for the encoders (and logit scales) ``phase`` trains; the
        others frozen in eval mode (stage 2's encoder A gives targets)."""
        for n in self.encoders:
            self.encoders[n].train(n in phase.trains)
            self.encoders[n].requires_grad_(n in phase.trains)
            self.logit_scales[n].requires_grad_(n in phase.trains)
        return phase

    def fit(self, resume: bool = False, on_epoch: Optional[Callable[[dict], None]] = None,
            on_step: Optional[Callable[[dict], None]] = None) -> TrainResult:
        """Run every phase. ``on_epoch(record)`` after each epoch (loss terms, temperature,
        zero-shot where evaluated); ``on_step(record)`` at each log point (every
        ``train.log_every`` steps: ``phase``, ``x`` = epochs done so far as a fraction, ``loss``,
        ``temperature``), for live curves from the first steps."""
        self._on_step = on_step
        tc = self.cfg.train
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        if tc.retain_freed_memory:
            retain_freed_memory(self.device)
        start = time.perf_counter()
        state = self._load() if resume else None
        global_step = state["global_step"] if state else 0
        self.runlog.open(global_step)
        try:
            for phase_idx, phase in enumerate(self.phases):
                if state and phase_idx < state["phase"]:
                    continue
                self.enter_phase(phase)
                opt, sched = self._optimizer(phase)
                first_epoch, skip, partial = 0, 0, None
                if state and phase_idx == state["phase"]:
                    if state["optimizer"] is not None:
                        opt.load_state_dict(state["optimizer"])
                        sched.load_state_dict(state["scheduler"])
                    first_epoch, skip = state["epoch"], state["step_in_epoch"]
                    partial = state.get("partial_epoch")
                fresh = first_epoch == 0 and skip == 0
                if phase.copies_stage1_init and fresh and tc.stage2_init == "stage1":
                    self.encoders["B"].load_state_dict(self.encoders["A"].state_dict())
                for epoch in range(first_epoch, phase.epochs):
                    order = state["order"] if (state and skip) else self.batches.epoch_order(
                        self.generator)
                    state = None
                    self._run_epoch(phase, phase_idx, epoch, order, skip, opt, sched,
                                    global_step, on_epoch, partial)
                    global_step += len(self.batches) - skip
                    skip, partial = 0, None
        finally:
            self.runlog.close()
        for enc in self.encoders.values():
            enc.eval()
        seconds = time.perf_counter() - start
        return TrainResult(self.encoders, self.logit_scales, self.history, seconds,
                           self.embed_dim, dict(getattr(self.batches, "bad", {})),
                           tuple(sorted(self.unsaved)), precision_name(self.amp_dtype))

    def _run_epoch(self, phase, phase_idx, epoch, order, skip, opt, sched, global_step,
                   on_epoch, partial=None):
        tc = self.cfg.train
        # Epoch sums stay on the device (float64: the same numbers as summing Python floats, so
        # a resumed epoch adds up exactly as an uninterrupted one); read at log points only.
        sums: dict = {k: torch.tensor(v, dtype=torch.float64, device=self.device)
                      for k, v in (partial or {}).get("sums", {}).items()}
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        checked = skip  # steps up to here have been checked
        seconds = (partial or {}).get("seconds", 0.0)
        # a bar in a terminal or notebook; in a log, the epoch's line below is enough
        show_bar = self.progress and progress_out.interactive()
        bar = progress_out.bar(self.batches.iterate(order, self.local_generator, start=skip),
                               total=len(self.batches) - skip, disable=not show_bar,
                               leave=False, desc=f"{phase.name} {epoch + 1}/{phase.epochs}")
        step = skip
        samples = self.batches.batch_size * dist_utils.world_size()
        data_seconds, skipped = (partial or {}).get("data_seconds", 0.0), 0
        # clipped every step: all of them as one vector, or each encoder's (with its logit
        # scale) on its own (train.clip_per_encoder; one group unless the phase trains two)
        groups = ([[p for p in self.encoders[n].parameters()] + [self.logit_scales[n].log_scale]
                   for n in phase.trains] if tc.clip_per_encoder
                  else [[p for g in opt.param_groups for p in g["params"]]])
        batches = iter(bar)
        while True:
            t_wait = time.perf_counter()
            batch = next(batches, None)  # time blocked here = time the loader kept us waiting
            if batch is None:
                break
            t0 = time.perf_counter()
            data_seconds += t0 - t_wait
            for bad in batch.skipped:
                skipped += 1
                self.runlog.unreadable_shape(bad, phase.name, epoch + 1,
                                             global_step + step - skip + 1,
                                             len(getattr(self.batches, "bad", {})))
            check_batch(batch)  # once, on the CPU: the losses skip their own scans (syncs)
            batch = batch.to(self.device)
            opt.zero_grad(set_to_none=True)
            loss, terms = self._forward_backward(phase, batch)
            if self.device.type == "cpu":  # free here: stop before the step is applied
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at {phase.name} "
                                             f"epoch {epoch + 1} step {step + 1}")
            else:  # no host sync per step: checked at the next log point or checkpoint
                nonfinite |= ~torch.isfinite(loss.detach())
            self.scaler.unscale_(opt)
            if tc.grad_clip > 0:
                for params in groups:
                    nn.utils.clip_grad_norm_(params, tc.grad_clip)
            self.scaler.step(opt)
            self.scaler.update()
            sched.step()
            step += 1
            dt = time.perf_counter() - t0
            seconds += dt
            for k, v in terms.items():
                sums[k] = sums[k] + v.detach().double() if k in sums else v.detach().double()
            scale = self.logit_scales[phase.evaluated]
            done = global_step + step - skip
            logging_now = tc.log_every and done % tc.log_every == 0
            saving_now = tc.checkpoint_every and done % tc.checkpoint_every == 0 \
                and step < len(self.batches)
            if (logging_now or saving_now) and self.device.type != "cpu":
                self._raise_if_nonfinite(nonfinite, phase, epoch, checked + 1, step)
                checked = step
            if logging_now:
                self.runlog.step(done, phase.name, epoch + 1, terms, float(scale().detach()),
                                 sched.get_last_lr()[0], samples / dt, t0 - t_wait)
                if getattr(self, "_on_step", None) is not None and self.main:
                    self._on_step({"phase": phase.name, "epoch": epoch + 1,
                                   "x": len(self.history) + step / len(self.batches),
                                   "loss": float(loss.detach()),
                                   "temperature": scale.temperature})
            if show_bar:  # .item() waits for the device: only when someone watches
                bar.set_postfix(loss=f"{loss.item():.3f}", T=f"{scale.temperature:.4f}")
            if saving_now:
                self._save(phase_idx=phase_idx, epoch=epoch, step_in_epoch=step,
                           global_step=done, order=order, opt=opt, sched=sched,
                           partial={"sums": {k: float(v) for k, v in sums.items()},
                                    "seconds": seconds, "data_seconds": data_seconds})
        if self.device.type != "cpu":
            self._raise_if_nonfinite(nonfinite, phase, epoch, checked + 1, step)
        sums = {k: float(v) for k, v in sums.items()}
        n = len(self.batches)
        record = {"phase": phase.name, "epoch": epoch + 1, **{k: v / n for k, v in sums.items()},
                  "temperature": self.logit_scales[phase.evaluated].temperature,
                  "lr": sched.get_last_lr()[0], "seconds": seconds,
                  "data_seconds": data_seconds}
        if skipped:
            record["unreadable_shapes"] = skipped
        if self.device.type == "cuda":
            record["max_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        last_epoch = epoch + 1 == phase.epochs
        if self.evaluate is not None and self.main and tc.eval_every and (
                (epoch + 1) % tc.eval_every == 0 or last_epoch):
            record.update(self.evaluate(self.encoders[phase.evaluated]))
            self.encoders[phase.evaluated].train()
        self.history.append(record)
        done = global_step + len(self.batches) - skip
        self.runlog.epoch(done, record, phase.epochs)
        if on_epoch is not None:
            on_epoch(record)
        if last_epoch:
            self._save(phase_idx=phase_idx + 1, epoch=0, step_in_epoch=0, global_step=done)
        else:
            self._save(phase_idx=phase_idx, epoch=epoch + 1, step_in_epoch=0, global_step=done,
                       opt=opt, sched=sched)


def _split_patches(index: Optional[PatchIndex], chunk: int, rows: int) -> list:
    """``index`` in the chunks ``points.split(chunk)`` makes (Nones without an index)."""
    return index.split(chunk) if index is not None else [None] * -(-rows // chunk)


# Settings that may change between a run and its resumption: where and how fast it runs, and
# how often it writes, but nothing that changes the computation.
RESUME_MAY_CHANGE = ("train.device", "train.num_threads", "train.retain_freed_memory",
                     "train.share_patches",
                     "train.checkpoint_every", "train.eval_every", "train.log_every",
                     "data.num_workers", "data.prefetch_factor", "data.max_bad_share")
# What only stage 2 reads (or names the run): an fm run and an mm-mixing run that agree on all
# the rest share their stage 1 bit for bit
STAGE2_ONLY = ("train.variant", "train.epochs_stage2", "train.stage1_checkpoint",
               "train.stage2_init", "train.init_from", "mix.input_variant", "train.budget")


def enable_determinism() -> None:
    """Deterministic kernels everywhere (errors where an op has none) and no cuDNN autotune."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def _config_diff(a: dict, b: dict, ignore=(), prefix="") -> list:
    out = []
    for k in sorted(set(a) | set(b)):
        name = f"{prefix}{k}"
        if name in ignore:
            continue
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _config_diff(a[k], b[k], ignore, name + ".")
        elif a.get(k) != b.get(k):
            out.append(f"{name}: {a.get(k)!r} -> {b.get(k)!r}")
    return out
