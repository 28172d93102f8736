"""Random clouds and unit features for trainer tests (no world needed)."""

import torch
import torch.nn.functional as F

from mmmixlab.batches import TripletBatches
from mmmixlab.clip import TripletFeatures
from mmmixlab.config import preset


def toy_batches(n=24, d=16, captions=2, seed=0, missing_text=(3, 7), batch_size=8, **kw):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(n, 128, 6, generator=g)
    points[..., :3] = points[..., :3] * 2 - 1
    image = F.normalize(torch.randn(n, 2, d, generator=g), dim=-1)
    text = F.normalize(torch.randn(n, captions, d, generator=g), dim=-1)
    mask = torch.ones(n, captions, dtype=torch.bool)
    for i in missing_text:
        mask[i] = False
        text[i] = 0
    feats = TripletFeatures(image=image, text=text, text_mask=mask)
    return TripletBatches(points, feats, num_points=64, batch_size=batch_size, **kw)


def toy_cfg(variant, **extra):
    updates = {"train.variant": variant, "train.encoder": "pointnet", "train.epochs_stage1": 1,
               "train.epochs_stage2": 1, "train.batch_size": 8, "train.device": "cpu",
               "train.warmup_steps": 0}
    updates.update(extra)
    return preset("tiny").replace(**updates)
