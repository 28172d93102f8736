"""Multi-process training helpers on ``torch.distributed`` (launched by ``torchrun``).

The contrastive losses are computed on the *global* batch: every rank all-gathers the features
of all ranks, keeping the autograd graph of its own rows (``gather_with_grad``), and computes
the full loss. Each rank's local features then receive the gradient of the full loss from every
rank (the backward of all_gather sums them), and DDP averages parameter gradients over ranks:
the result equals the gradient of one process on the concatenated batch (tested with two gloo
processes against one). So numbers do not depend on how a global batch is split across GPUs.

Backend by device: NCCL for CUDA, gloo otherwise. The device of a rank is its LOCAL_RANK on
CUDA (set by torchrun), never a hard-coded index.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
import torch.distributed as dist

from .device import resolve_device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def init_from_env(device: str = "auto") -> torch.device:
    """Join the process group described by torchrun's environment variables, if any.

    Returns this rank's device. Without ``WORLD_SIZE`` > 1 it does nothing and returns the
    device resolved from ``device``.
    """
    base = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return _local_device(base)
    backend = "nccl" if base.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return _local_device(base)


def _local_device(base: torch.device) -> torch.device:
    if base.type == "cuda" and base.index is None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return base


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward gives each rank the summed gradient of its own
    rows (every rank computes the full loss, so each rank's copy of a row gets a gradient)."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # sum over ranks of d(loss_r)/d(all rows)
        start = rank() * ctx.rows
        return grad[start:start + ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0; gradients flow back to every rank.
    Every rank must pass the same number of rows (the trainer's batches are equal)."""
    if not is_distributed() or world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor without a graph (targets, masks) from all ranks."""
    if not is_distributed() or world_size() == 1:
        return x
    is_bool = x.dtype == torch.bool
    y = x.to(torch.uint8) if is_bool else x.contiguous()
    parts = [torch.empty_like(y) for _ in range(world_size())]
    dist.all_gather(parts, y)
    out = torch.cat(parts, dim=0)
    return out.bool() if is_bool else out


def gather(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Gather with gradients when ``x`` needs them, without otherwise."""
    if x is None:
        return None
    return gather_with_grad(x) if x.requires_grad else gather_no_grad(x)


def gather_objects(obj) -> list:
    """One Python object per rank, on every rank."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
