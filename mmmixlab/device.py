"""Where a run computes: the device and the precision it supports. Device-agnostic code asks
here instead of calling ``.cuda()``; CPU is first class (fp32, or bf16 when asked for on a
CPU with native bf16)."""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["autocast_dtype", "cpu_has_bf16", "resolve_device"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then MPS, then CPU; anything else as ``torch.device`` reads it."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """This CPU computes bf16 natively (AVX512-BF16 or AMX, through oneDNN)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


def autocast_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``amp`` on ``device``, or None for fp32.

    CUDA: ``auto``/``bf16`` is bf16 where supported (``auto`` falls back to fp16), ``fp16``
    fp16. CPU: ``auto`` is fp32 (the tiny presets' narrow layers gain nothing from bf16 here,
    ``benchmarks/RESULTS.md``); ``bf16`` is bf16 on a CPU with native bf16 and an error
    elsewhere (emulated bf16 is slower than fp32); ``fp16`` is an error (no CPU autocast for
    it worth having). Other devices: fp32."""
    if amp == "off":
        return None
    if device.type == "cpu":
        if amp == "bf16":
            if not cpu_has_bf16():
                raise ValueError("train.amp=bf16: this CPU has no native bf16 (AVX512-BF16 or "
                                 "AMX); use train.amp=off or auto (fp32)")
            return torch.bfloat16
        if amp == "fp16":
            raise ValueError("train.amp=fp16 is for CUDA; on a CPU use train.amp=bf16 (native "
                             "bf16 only) or off")
        return None
    if device.type != "cuda":
        return None
    if amp in ("auto", "bf16"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else (
            torch.float16 if amp == "auto" else None)
    return torch.float16
