"""Random training inputs and trainers for the step benchmarks (no world, no CLIP needed).

Clouds are uniform in the unit ball with random colours; image and text features are random
unit vectors (two views and two captions per shape, some shapes without a caption, as in real
data). The features' values do not change the cost of a step, only their width does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from mmmixlab.batches import Batch, TripletBatches
from mmmixlab.clip import TripletFeatures
from mmmixlab.config import preset
from mmmixlab.device import retain_freed_memory
from mmmixlab.train import Trainer

# encoder name -> (preset, feature width): the tiny CLIP's 64-d, OpenShape's 1280-d bigG.
ENCODERS = {"pointbert-tiny": ("tiny", 64), "pointbert": ("paper", 1280),
            "openshape-pointbert-tiny": ("tiny", 64), "openshape-pointbert": ("paper", 1280),
            "sparseconv-tiny": ("tiny", 64), "sparseconv": ("paper", 1280)}


def random_batches(batch: int, num_points: int, embed_dim: int, seed: int = 0,
                   in_channels: int = 6) -> TripletBatches:
    g = torch.Generator().manual_seed(seed)
    xyz = torch.randn(batch, num_points, 3, generator=g)
    xyz = xyz / xyz.norm(dim=-1, keepdim=True) * torch.rand(batch, num_points, 1,
                                                             generator=g).pow(1 / 3)
    points = torch.cat([xyz, torch.rand(batch, num_points, 3, generator=g)], dim=-1)
    image = F.normalize(torch.randn(batch, 2, embed_dim, generator=g), dim=-1)
    text = F.normalize(torch.randn(batch, 2, embed_dim, generator=g), dim=-1)
    mask = torch.ones(batch, 2, dtype=torch.bool)
    mask[::7] = False  # every 7th shape has no caption
    text = text * mask.unsqueeze(-1)
    feats = TripletFeatures(image=image, text=text, text_mask=mask)
    return TripletBatches(points.numpy(), feats, num_points=num_points, in_channels=in_channels,
                          batch_size=batch)


@dataclass
class Workload:
    trainer: Trainer
    batch: Batch
    encoder: str
    batch_size: int
    num_points: int
    embed_dim: int


def make_workload(encoder: str, batch: int, num_points: int, device: torch.device,
                  seed: int = 0, amp: str = "off", variant: str = "mm-mixing",
                  retain_memory: bool = True, huge_pages: bool = True,
                  **mix_overrides) -> Workload:
    """A Trainer (variant ``variant``) for ``encoder`` and one fixed batch on ``device``.

    ``mix_overrides`` set ``mix.*`` fields, e.g. ``mix_prob=0.0``, ``align_unmixed=False``.
    The trainer's seed is fixed, so two workloads built with the same arguments start from
    identical encoder weights. ``retain_memory``: on a CPU, glibc keeps freed memory as
    ``Trainer.fit`` has it do (``train.retain_freed_memory``; process-wide once set), its heap
    on huge pages unless ``huge_pages`` is False (``device.retain_freed_memory``).
    """
    preset_name, embed_dim = ENCODERS[encoder]
    updates = {"train.variant": variant, "train.encoder": encoder,
               "train.batch_size": batch, "train.device": str(device), "train.amp": amp,
               "train.seed": seed, "data.num_points": num_points, "train.warmup_steps": 0}
    updates.update({f"mix.{k}": v for k, v in mix_overrides.items()})
    cfg = preset(preset_name).replace(**updates)
    if retain_memory:
        # as Trainer.fit does: steps are timed as a run has them
        retain_freed_memory(device, huge_pages)
    batches = random_batches(batch, num_points, embed_dim, seed=seed)
    trainer = Trainer(cfg, batches, embed_dim=embed_dim, progress=False)
    b = batches.make_batch(torch.arange(batch), torch.Generator().manual_seed(seed + 1))
    return Workload(trainer, b.to(device), encoder, batch, num_points, embed_dim)


def enter_phase(trainer: Trainer, phase_name: str):
    """The named phase entered as ``Trainer.fit`` enters it (``Trainer.enter_phase``)."""
    return trainer.enter_phase(next(p for p in trainer.phases if p.name == phase_name))


def autocast(trainer: Trainer):
    return torch.autocast(trainer.device.type, dtype=trainer.amp_dtype,
                          enabled=trainer.amp_dtype is not None)


def zero_grads(trainer: Trainer, names=("A", "B")) -> None:
    for n in names:
        if n in trainer.encoders:
            for p in trainer.encoders[n].parameters():
                p.grad = None
            trainer.logit_scales[n].log_scale.grad = None


def summarize_device(device: torch.device, amp_dtype: Optional[torch.dtype]) -> str:
    return f"{device.type}" + (f" autocast {str(amp_dtype).replace('torch.', '')}"
                               if amp_dtype is not None else " fp32")
