"""What a training step does to a stored cloud, for every data path: which points it keeps
(:func:`subsample`) and OpenShape's augmentation (:func:`augment_clouds`).

Both the in-memory batches (:class:`mmmixlab.batches.TripletBatches`) and the streamed ones
(:class:`mmmixlab.streaming.StreamBatches`, and the per-item datasets of
:mod:`mmmixlab.data.openshape` / :mod:`mmmixlab.data.packed`) call these two functions, with a
``torch.Generator`` as the only source of randomness, so the same cloud and the same generator
state give the same training cloud on either path (``tests/test_augment.py``). The streamed
path seeds one generator per shape and epoch (:func:`shape_generator`), the in-memory path
draws from its stream of batches.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

__all__ = ["SAMPLINGS", "augment_clouds", "check_sampling", "shape_generator", "subsample"]

# How the points of a step are chosen: a uniform random subset (OpenShape: no FPS start bias)
# or farthest point sampling from a random start (the paper's FPS, for any phase).
SAMPLINGS = ("random", "fps")


def check_sampling(name: str) -> str:
    if name not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {name!r}")
    return name


def subsample(clouds: torch.Tensor, num_points: int, sampling: str,
              generator: Optional[torch.Generator]) -> torch.Tensor:
    """``num_points`` points of each (B, P, C) cloud: a random subset, or FPS from a random
    start. A cloud with fewer points keeps all of them plus random repeats."""
    # not at import time: config imports this module, and ops loads numba
    from .ops import argsort_rows, farthest_point_sample

    check_sampling(sampling)
    b, p, c = clouds.shape
    if p < num_points:  # short clouds (streamed files): every point, then repeats
        extra = torch.randint(p, (b, num_points - p), generator=generator)
        keep = torch.cat([argsort_rows(torch.rand(b, p, generator=generator)), extra], dim=1)
    elif sampling == "fps":
        start = torch.randint(p, (b,), generator=generator)
        keep = farthest_point_sample(clouds[..., :3], num_points, start_index=start)
    else:
        keep = argsort_rows(torch.rand(b, p, generator=generator))[:, :num_points]
    return torch.gather(clouds, 1, keep.unsqueeze(-1).expand(-1, -1, c))


def augment_clouds(clouds: torch.Tensor, generator: Optional[torch.Generator],
                   rgb_dropout: float = 0.5, rotate: bool = True, fill: float = 0.4
                   ) -> torch.Tensor:
    """OpenShape's augmentations of (B, P, 6) z-up clouds: a random rotation about the up axis
    (``rotate``), scale jitter in [0.9, 1.1], and with probability ``rgb_dropout`` the colour
    replaced by ``fill`` = 0.4 (so colourless scans, which loaders fill with 0.4, are not out
    of domain). The draws are the same whatever the switches, so they never shift a stream."""
    b = clouds.shape[0]
    theta = torch.rand(b, generator=generator) * 2 * math.pi
    if not rotate:
        theta = torch.zeros_like(theta)
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(b, 3, 3)
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
    scale = 0.9 + 0.2 * torch.rand(b, 1, 1, generator=generator)
    xyz = torch.bmm(clouds[..., :3], rot.transpose(1, 2)) * scale
    drop = torch.rand(b, generator=generator) < rgb_dropout
    rgb = torch.where(drop.view(b, 1, 1), torch.full_like(clouds[..., 3:], fill), clouds[..., 3:])
    return torch.cat([xyz, rgb], dim=-1)


def shape_generator(*key: int) -> torch.Generator:
    """A generator whose stream depends only on ``key`` (e.g. seed, epoch, shape): what one
    shape's draws come from on the streamed path, in any worker process or rank."""
    import hashlib

    digest = hashlib.sha1(",".join(str(int(k)) for k in key).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
