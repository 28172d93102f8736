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

Every variant gets the same number of epochs in total (``epochs_stage1 + epochs_stage2``), so
the ablation compares methods at equal training cost (the paper's Table 4 rule). The encoder
that is evaluated is the last one trained (B for the two-encoder variants).

Mixing details: one lam per pair, shared by all modalities; in stage 2 (and ``im``) the
feature mix uses the input mix's exact lam (floor(lam*N)/N). A mixed text target exists only
where both partners have a caption; rows without one still serve as negatives.
"""

from __future__ import annotations

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
from tqdm.auto import tqdm

from .batches import Batch, TripletBatches
from .config import RunConfig
from .encoders import create_point_encoder
from .losses import LogitScale, stage1_loss, stage2_loss
from .mixing import feature_mix, input_mix, pair_indices, sample_lambda

CHECKPOINT_NAME = "last.pt"


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def autocast_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``amp`` on ``device``, or None for fp32. CPU always runs fp32."""
    if amp == "off" or device.type != "cuda":
        return None
    if amp in ("auto", "bf16"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else (
            torch.float16 if amp == "auto" else None)
    return torch.float16


@dataclass
class Phase:
    name: str            # "baseline" | "stage1" | "im" | "stage2" | "joint"
    epochs: int
    trains: tuple        # names of the encoders this phase updates


def plan_phases(variant: str, epochs1: int, epochs2: int) -> list[Phase]:
    total = epochs1 + epochs2
    return {
        "baseline": [Phase("baseline", total, ("A",))],
        "fm": [Phase("stage1", total, ("A",))],
        "im": [Phase("im", total, ("A",))],
        "mm-mixing": [Phase("stage1", epochs1, ("A",)), Phase("stage2", epochs2, ("B",))],
        "one-stage": [Phase("joint", total, ("A", "B"))],
    }[variant]


@dataclass
class TrainResult:
    encoders: dict                   # "A" (and "B") -> nn.Module
    logit_scales: dict               # encoder name -> LogitScale
    history: list = field(default_factory=list)   # one dict per epoch
    seconds: float = 0.0
    embed_dim: int = 0

    @property
    def final_encoder(self) -> nn.Module:
        return self.encoders["B"] if "B" in self.encoders else self.encoders["A"]


class Trainer:
    """Runs the phases of a variant; checkpoints after each epoch and every
    ``checkpoint_every`` steps into ``out_dir/checkpoints/last.pt``."""

    def __init__(self, cfg: RunConfig, batches: TripletBatches, embed_dim: int,
                 out_dir: Optional[os.PathLike] = None,
                 evaluate: Optional[Callable[[nn.Module], dict]] = None, progress: bool = True):
        self.cfg = cfg.validate()
        self.batches = batches
        self.embed_dim = embed_dim
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.evaluate = evaluate
        self.progress = progress
        tc = cfg.train
        self.device = resolve_device(tc.device)
        self.amp_dtype = autocast_dtype(tc.amp, self.device)
        self.phases = plan_phases(tc.variant, tc.epochs_stage1, tc.epochs_stage2)
        if sum(p.epochs for p in self.phases) < 1:
            raise ValueError("the run has zero epochs: set epochs_stage1/epochs_stage2")
        torch.manual_seed(tc.seed)
        names = sorted({n for p in self.phases for n in p.trains})
        self.encoders = {n: self._new_encoder() for n in names}
        self.logit_scales = {n: LogitScale(tc.init_temperature).to(self.device) for n in names}
        self.generator = torch.Generator().manual_seed(tc.seed)
        self.history: list = []

    def _new_encoder(self) -> nn.Module:
        tc = self.cfg.train
        enc = create_point_encoder(tc.encoder, out_dim=self.embed_dim,
                                   in_channels=self.cfg.data.in_channels, **tc.encoder_overrides)
        return enc.to(self.device)

    # -- optimisation -------------------------------------------------------------------------
    def _optimizer(self, phase: Phase):
        tc = self.cfg.train
        decay, no_decay = [], []
        for n in phase.trains:
            for pname, p in self.encoders[n].named_parameters():
                (no_decay if p.dim() < 2 or "token" in pname or "pos" in pname else decay).append(p)
            no_decay.append(self.logit_scales[n].log_scale)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr)
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

    # -- losses -------------------------------------------------------------------------------
    def _encode(self, name: str, points: torch.Tensor) -> torch.Tensor:
        feats = self.encoders[name](points).float()
        return F.normalize(feats, dim=-1) if self.cfg.mix.normalize_before_mix else feats

    def _mixing(self, b: int):
        mc, g = self.cfg.mix, self.generator
        partner = pair_indices(b, mc.pairing, generator=g)
        lam = sample_lambda(mc.beta, b, generator=g)
        if float(torch.rand((), generator=g)) >= mc.mix_prob:
            lam = torch.ones(b)  # this batch is left unmixed
        return partner.to(self.device), lam.to(self.device)

    def _phase_loss(self, phase: Phase, batch: Batch) -> tuple[torch.Tensor, dict]:
        mc = self.cfg.mix
        b = batch.points.shape[0]
        img, txt, valid = batch.image, batch.text, batch.text_valid
        s1_mods = tuple(m for m in mc.modalities if m in ("image", "text")) or ("image",)
        terms = {}

        if phase.name == "baseline":
            f = self._encode("A", batch.points)
            scale = self.logit_scales["A"]()
            loss = stage1_loss(f, img, txt, scale, s1_mods, valid)
            return loss, {"loss": loss}

        partner, lam = self._mixing(b)
        mixed_valid = valid & valid[partner]

        def mix(x, ratio):
            return feature_mix(x, x[partner], ratio)

        if phase.name in ("stage1", "joint"):
            f = self._encode("A", batch.points)
            scale = self.logit_scales["A"]()
            loss = stage1_loss(mix(f, lam), mix(img, lam), mix(txt, lam), scale, s1_mods,
                               mixed_valid)
            if mc.align_unmixed:
                loss = 0.5 * (loss + stage1_loss(f, img, txt, scale, s1_mods, valid))
            terms["loss_stage1"] = loss
            if phase.name == "stage1":
                return loss, {"loss": loss, **terms}
            target_p = f.detach()

        if phase.name in ("im", "stage2", "joint"):
            encoder = "A" if phase.name == "im" else "B"
            im = input_mix(batch.points, batch.points[partner], lam, mc.input_variant,
                           generator=self.generator)
            both = torch.cat([im.points, batch.points]) if mc.align_unmixed else im.points
            f_all = self._encode(encoder, both)
            f_mixed = f_all[:b]
            scale = self.logit_scales[encoder]()
            lam_exact = im.lam
            if phase.name == "im":
                loss = stage1_loss(f_mixed, mix(img, lam_exact), mix(txt, lam_exact), scale,
                                   s1_mods, mixed_valid)
                if mc.align_unmixed:
                    loss = 0.5 * (loss + stage1_loss(f_all[b:], img, txt, scale, s1_mods, valid))
                return loss, {"loss": loss}
            if phase.name == "stage2":
                with torch.no_grad():
                    target_p = self._encode("A", batch.points)
            loss2 = stage2_loss(f_mixed, mix(target_p, lam_exact), mix(img, lam_exact),
                                mix(txt, lam_exact), scale, mc.modalities, mixed_valid)
            if mc.align_unmixed:
                loss2 = 0.5 * (loss2 + stage2_loss(f_all[b:], target_p, img, txt, scale,
                                                   mc.modalities, valid))
            terms["loss_stage2"] = loss2
            total = loss2 if phase.name == "stage2" else terms["loss_stage1"] + loss2
            return total, {"loss": total, **terms}
        raise AssertionError(phase.name)

    def compute_loss(self, phase_name: str, batch: Batch) -> tuple[torch.Tensor, dict]:
        """The loss of one batch in the named phase (no optimizer step); for benchmarks and
        notebooks that want to look inside a step."""
        phase = next((p for p in self.phases if p.name == phase_name), None)
        if phase is None:
            raise ValueError(f"variant {self.cfg.train.variant!r} has no phase {phase_name!r}; "
                             f"it has {[p.name for p in self.phases]}")
        return self._phase_loss(phase, batch.to(self.device))

    # -- checkpoints --------------------------------------------------------------------------
    def _checkpoint_path(self) -> Optional[Path]:
        return None if self.out_dir is None else self.out_dir / "checkpoints" / CHECKPOINT_NAME

    def _save(self, phase_idx, epoch, step_in_epoch, order, opt, sched, global_step):
        path = self._checkpoint_path()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "config": self.cfg.to_dict(), "phase": phase_idx, "epoch": epoch,
            "step_in_epoch": step_in_epoch, "global_step": global_step, "order": order,
            "encoders": {n: e.state_dict() for n, e in self.encoders.items()},
            "logit_scales": {n: s.state_dict() for n, s in self.logit_scales.items()},
            # At a phase boundary the next phase starts a fresh optimizer over other params.
            "optimizer": opt.state_dict() if opt is not None else None,
            "scheduler": sched.state_dict() if sched is not None else None,
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(), "python_rng": random.getstate(),
            "history": self.history,
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def _load(self):
        path = self._checkpoint_path()
        if path is None or not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:
            raise ValueError(f"checkpoint {path} is corrupt or unreadable: {err}") from err
        saved = RunConfig.from_dict(state["config"]).to_dict()
        mine = self.cfg.to_dict()
        diff = _config_diff(saved, mine, ignore=("train.device", "train.num_threads",
                                                 "train.checkpoint_every", "train.eval_every"))
        if diff:
            raise ValueError(f"refusing to resume from {path}: the config differs in {diff}")
        for n, sd in state["encoders"].items():
            self.encoders[n].load_state_dict(sd)
        for n, sd in state["logit_scales"].items():
            self.logit_scales[n].load_state_dict(sd)
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        self.history = state["history"]
        return state

    # -- main loop ----------------------------------------------------------------------------
    def fit(self, resume: bool = False, on_epoch: Optional[Callable[[dict], None]] = None
            ) -> TrainResult:
        tc = self.cfg.train
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        start = time.perf_counter()
        state = self._load() if resume else None
        global_step = state["global_step"] if state else 0
        for phase_idx, phase in enumerate(self.phases):
            if state and phase_idx < state["phase"]:
                continue
            for n in self.encoders:
                self.encoders[n].train(n in phase.trains)
                self.encoders[n].requires_grad_(n in phase.trains)
                self.logit_scales[n].requires_grad_(n in phase.trains)
            opt, sched = self._optimizer(phase)
            first_epoch, skip = 0, 0
            if state and phase_idx == state["phase"] and state["optimizer"] is not None:
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
                first_epoch, skip = state["epoch"], state["step_in_epoch"]
            for epoch in range(first_epoch, phase.epochs):
                order = state["order"] if (state and skip) else self.batches.epoch_order(
                    self.generator)
                state = None
                self._run_epoch(phase, phase_idx, epoch, order, skip, opt, sched, global_step,
                                on_epoch)
                global_step += len(self.batches) - skip
                skip = 0
        for enc in self.encoders.values():
            enc.eval()
        seconds = time.perf_counter() - start
        return TrainResult(self.encoders, self.logit_scales, self.history, seconds, self.embed_dim)

    def _run_epoch(self, phase, phase_idx, epoch, order, skip, opt, sched, global_step,
                   on_epoch):
        tc = self.cfg.train
        sums: dict = {}
        t0 = time.perf_counter()
        bar = tqdm(self.batches.iterate(order, self.generator, start=skip),
                   total=len(self.batches) - skip, disable=not self.progress, leave=False,
                   desc=f"{phase.name} {epoch + 1}/{phase.epochs}")
        step = skip
        for batch in bar:
            batch = batch.to(self.device)
            with torch.autocast(self.device.type, dtype=self.amp_dtype,
                                enabled=self.amp_dtype is not None):
                loss, terms = self._phase_loss(phase, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at {phase.name} epoch "
                                         f"{epoch + 1} step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            params = [p for g in opt.param_groups for p in g["params"]]
            if tc.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, tc.grad_clip)
            opt.step()
            sched.step()
            step += 1
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            temp = self.logit_scales[phase.trains[-1]].temperature
            bar.set_postfix(loss=f"{loss.item():.3f}", T=f"{temp:.4f}")
            if tc.checkpoint_every and (global_step + step - skip) % tc.checkpoint_every == 0 \
                    and step < len(self.batches):
                self._save(phase_idx, epoch, step, order, opt, sched, global_step + step - skip)
        n = max(step - skip, 1)
        record = {"phase": phase.name, "epoch": epoch + 1, **{k: v / n for k, v in sums.items()},
                  "temperature": self.logit_scales[phase.trains[-1]].temperature,
                  "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0}
        last_epoch = epoch + 1 == phase.epochs
        if self.evaluate is not None and tc.eval_every and (
                (epoch + 1) % tc.eval_every == 0 or last_epoch):
            record.update(self.evaluate(self.encoders[phase.trains[-1]]))
            self.encoders[phase.trains[-1]].train()
        self.history.append(record)
        if self.progress:
            tqdm.write(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                   for k, v in record.items()}))
        if on_epoch is not None:
            on_epoch(record)
        done = global_step + len(self.batches) - skip
        if last_epoch:
            self._save(phase_idx + 1, 0, 0, None, None, None, done)
        else:
            self._save(phase_idx, epoch + 1, 0, None, opt, sched, done)


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


def save_final(result: TrainResult, cfg: RunConfig, path: os.PathLike) -> Path:
    """All trained state dicts, logit scales and the config, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"config": cfg.to_dict(), "embed_dim": result.embed_dim,
                "encoders": {n: e.state_dict() for n, e in result.encoders.items()},
                "logit_scales": {n: s.state_dict() for n, s in result.logit_scales.items()},
                "history": result.history}, tmp)
    os.replace(tmp, path)
    return path
