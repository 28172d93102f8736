"""Compiled CPU kernels, built on first use (:func:`compiled`): the fused ``pointbert-tiny``
tokenizer (``tokenizer.cpp``) and short-sequence attention from a packed qkv projection
(``attention.cpp``); ``bindings.cpp`` names them for Python.

Why C++: the tiny tokenizer's layers are 6/16/32 channels wide over 131,072 points a batch of 64
clouds, so torch runs them as narrow products and norms that each stream a (points, width)
tensor through memory, and numba cannot keep a point's 32 accumulators in registers. One patch
at a time in C++ (GCC/Clang vector extensions, 16 float lanes) keeps the patch in L1, and the
backward recomputes only the rows the max-pools chose: forward and backward of 64 clouds took
25.6 ms against 50.3 ms for torch's ops under bf16 autocast (68.6 ms in float32) on one
Sapphire Rapids core, in float32. The tiny presets' attention (65 tokens, heads of 32 or 64)
is the same story: one (cloud, head) slice in L1, read from and written to the projections'
layouts with no permute, cast or copy around it (8.9 against 12.4 ms for 64 clouds). Whole
training steps with both: 0.69-0.71 of torch's ops (``benchmarks/compiled_kernels.py``,
``benchmarks/RESULTS.md``).

The kernels include ATen only and ``bindings.cpp`` torch's Python headers (``torch/extension.h``
in each tripled the build time).
The extension is compiled with torch's extension loader (a C++ compiler and ninja; ``make
install`` brings both) into the mmmixlab cache, under a name that digests the sources, the flags,
torch's version and this CPU's instruction sets (it is built with ``-march=native``, so a cache
shared with another CPU is not reused). It takes ~22 s on 2 cores once per machine; later
processes load it in well under a second; concurrent processes wait for one build. Without a
compiler, or with ``MMMIXLAB_NATIVE=0``, :func:`compiled` returns None and torch's ops run the
tokenizer and the attention (one warning names the reason).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import sys
import threading
import warnings
from pathlib import Path

SOURCES = tuple(Path(__file__).with_name(f) for f in ("tokenizer.cpp", "attention.cpp",
                                                     "bindings.cpp"))
HEADERS = (Path(__file__).with_name("vec.h"),)
CFLAGS = ["-O3", "-march=native"]

_lock = threading.Lock()
_state: dict = {}


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def build_key() -> str:
    """What the compiled module depends on: sources and headers, flags, torch, Python, CPU."""
    import torch

    h = hashlib.sha1()
    for part in (*(f.read_bytes() for f in SOURCES + HEADERS), " ".join(CFLAGS).encode(),
                 torch.__version__.encode(), sys.version.encode(), platform.machine().encode(),
                 _cpu_flags().encode()):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:12]


def _ninja_on_path() -> None:
    # torch's loader runs `ninja` from the PATH; the pip wheel puts it next to the interpreter
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _build():
    from ..clip import resolve_cache_dir

    # its import warns "No CUDA runtime is found" on every CPU machine with a CUDA_HOME: noise
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load
    finally:
        quiet.setLevel(level)

    if os.environ.get("MMMIXLAB_NATIVE", "1") == "0":
        raise RuntimeError("disabled by MMMIXLAB_NATIVE=0")
    if platform.system() != "Linux":
        raise RuntimeError(f"built on Linux only (this is {platform.system()})")
    key = build_key()
    build_dir = resolve_cache_dir(None) / "native" / key
    build_dir.mkdir(parents=True, exist_ok=True)
    _ninja_on_path()
    return load(name=f"mmmixlab_native_{key}", sources=[str(f) for f in SOURCES],
                extra_cflags=CFLAGS, build_directory=str(build_dir), verbose=False)


def compiled():
    """The compiled module (``tokenizer_forward``, ``tokenizer_backward``, ``attention_forward``,
    ``attention_backward``), or None when it cannot be built here (the first failure is warned
    about once, with its reason)."""
    if "module" not in _state:
        with _lock:
            if "module" not in _state:
                try:
                    _state["module"], _state["error"] = _build(), None
                except Exception as err:  # noqa: BLE001 (no compiler or ninja, a failed build: fall back)
                    _state["module"], _state["error"] = None, f"{type(err).__name__}: {err}"
                    if os.environ.get("MMMIXLAB_NATIVE", "1") != "0":
                        warnings.warn("mmmixlab: the compiled CPU kernels could not be built, so "
                                      "torch's ops run the tokenizer and the attention (slower, "
                                      "same function): "
                                      + _state["error"][:500], RuntimeWarning, stacklevel=2)
    return _state["module"]


def native_error() -> str | None:
    """Why :func:`compiled` returned None (after a call), else None."""
    return _state.get("error")
