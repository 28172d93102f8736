"""Where a run computes: the device and the precision it supports. Device-agnostic code asks
here instead of calling ``.cuda()``; CPU is first class (fp32; bf16 by default on a CPU with
AMX for the encoders where it was measured to pay, or when asked for on a CPU with native
bf16)."""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Optional

import torch

__all__ = ["autocast_dtype", "cpu_has_amx", "cpu_has_bf16", "heap_on_huge_pages",
           "precision_name", "resolve_device", "retain_freed_memory"]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_RETAINED_TOP = 1 << 30   # free memory kept at the heap's top before it goes back to the OS
_MADV_HUGEPAGE = 14       # madvise(2): back the range with transparent huge pages
# address space the heap grows by up front so that later allocations land on huge pages;
# below _RETAINED_TOP, so free() keeps it as the heap's top (virtual until touched)
_HUGE_PAGE_RESERVE = 768 << 20
_retaining = False
_huge_heap = False


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


def cpu_has_amx() -> bool:
    """This CPU has AMX tiles (Intel Sapphire Rapids and later): bf16 matrix products through
    oneDNN at several times the float32 rate."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - other builds
        return False


def autocast_dtype(amp: str, device: torch.device, cpu_bf16_pays: bool = False
                   ) -> Optional[torch.dtype]:
    """The autocast dtype for ``amp`` on ``device``, or None for fp32.

    CUDA: ``auto``/``bf16`` is bf16 where supported (``auto`` falls back to fp16), ``fp16``
    fp16. CPU: ``auto`` is bf16 on a CPU with AMX when ``cpu_bf16_pays`` (the encoder's
    ``cpu_autocast_pays``: the point-patch transformers, whose steps took 0.69-0.86 of their
    float32 time there with zero-shot within seed noise, ``benchmarks/RESULTS.md``), else fp32
    (SparseConv and PointNet gained nothing; CPUs without AMX were not measured); ``bf16`` is
    bf16 on a CPU with native bf16 and an error elsewhere (emulated bf16 is slower than fp32);
    ``fp16`` is an error (no CPU autocast for it worth having); ``off`` is fp32 everywhere.
    Other devices: fp32."""
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
        return torch.bfloat16 if cpu_bf16_pays and cpu_has_amx() else None
    if device.type != "cuda":
        return None
    if amp in ("auto", "bf16"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else (
            torch.float16 if amp == "auto" else None)
    return torch.float16


def precision_name(dtype: Optional[torch.dtype]) -> str:
    """``fp32``, ``bf16`` or ``fp16``: what a run's steps computed in (its metrics say so)."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):  # pragma: no cover - not a glibc system
        return False


def retain_freed_memory(device: Optional[torch.device] = None, huge_pages: bool = True) -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of handing it back to the OS.

    Why: by default glibc serves every allocation above its mmap threshold (at most 32 MB) with
    a fresh ``mmap`` and returns it on ``free``, and trims the heap's free top; each new page
    is then zero-filled by the kernel on first touch. A CPU training step allocates and frees
    the same large activations every step (a ``pointbert-tiny`` step at 32 clouds: 8,000-
    28,000 such page faults, 20-80 ms of system time), so the kernel re-zeroes the same memory
    step after step. With mmap off (``M_MMAP_MAX=0``) and a 1 GiB trim threshold, freed blocks
    stay in the heap and the next step reuses them: 10-20% off a step
    (``benchmarks/RESULTS.md``). The arithmetic is untouched, so the numbers are bit for bit
    the same. The cost: a process keeps up to its peak heap (plus 1 GiB of free top) until
    it exits, as a long training process does anyway.

    With ``huge_pages`` (the default) the heap then grows by 768 MB of address space up front
    (virtual: nothing is touched) and the whole heap is advised for transparent huge pages
    (``madvise(MADV_HUGEPAGE)``), so the activations that later land there are mapped in 2 MB
    pages: the step's passes over its large per-point tensors then miss the TLB far less.
    1-4% off a ``pointbert-tiny`` step on a Sapphire Rapids core where the kernel's THP mode is
    ``madvise`` (``benchmarks/freed_memory.py``, ``benchmarks/RESULTS.md``); the arithmetic is
    again untouched. Where the mode is ``never`` the advice does nothing; memory touched before
    this call stays on 4 KB pages.

    Process-wide and idempotent; called by ``Trainer.fit`` and ``pipeline.prepare_world``
    (which pre-trains the tiny CLIP) on a CPU when ``train.retain_freed_memory`` is on (the
    default). A no-op (returns False) for a ``device`` other than the CPU (None: the CPU) and
    off Linux/glibc."""
    global _retaining, _huge_heap
    if device is not None and torch.device(device).type != "cpu":
        return False
    if _retaining:
        return True
    if not sys.platform.startswith("linux") or not _glibc():
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - a libc without mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _retaining = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _RETAINED_TOP))
    if _retaining and huge_pages:
        _huge_heap = _heap_on_huge_pages(libc)
    return _retaining


def heap_on_huge_pages() -> bool:
    """Whether :func:`retain_freed_memory` advised this process's heap for huge pages."""
    return _huge_heap


def _heap_range() -> tuple | None:
    """``(start, end)`` of the process's brk heap (``[heap]`` in ``/proc/self/maps``)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if line.rstrip().endswith("[heap]"):
                    start, end = line.split()[0].split("-")
                    return int(start, 16), int(end, 16)
    except OSError:  # pragma: no cover - no procfs
        return None
    return None


def _heap_on_huge_pages(libc) -> bool:
    """Grow the (retained) heap by :data:`_HUGE_PAGE_RESERVE` and advise all of it for
    transparent huge pages; False where the libc, the kernel or procfs does not allow it."""
    try:
        malloc, free, madvise = libc.malloc, libc.free, libc.madvise
    except AttributeError:  # pragma: no cover - a libc without them
        return False
    malloc.argtypes, malloc.restype = (ctypes.c_size_t,), ctypes.c_void_p
    free.argtypes, free.restype = (ctypes.c_void_p,), None
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    block = malloc(_HUGE_PAGE_RESERVE)  # mmap is off: the heap's top moves up by this much
    if not block:
        return False
    free(block)                         # below the trim threshold: kept as the heap's top
    heap = _heap_range()
    if heap is None:
        return False
    return madvise(heap[0], heap[1] - heap[0], _MADV_HUGEPAGE) == 0
