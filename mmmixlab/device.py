"""Where a run computes: the device and the precision it supports. Device-agnostic code asks
here instead of calling ``.cuda()``; CPU is first class (always fp32)."""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["autocast_dtype", "resolve_device"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then MPS, then CPU; anything else as ``torch.device`` reads it."""
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
