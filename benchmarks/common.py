"""Shared benchmark helpers: machine description, an interleaved timer, peak-memory probes.

Timing rule: variants that are compared run alternately in one process (A B C, B C A, ...),
so a burst of load from another job slows all of them alike; each variant's median over the
rounds is reported, and ratios come both as a ratio of medians and as the median of the
per-round (paired) ratios, which is the more robust of the two on a shared machine.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; on
CPU the process's resident-set high-water mark (``VmHWM``), reset before each measured step by
writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0), so one process can report a peak per
phase without tracemalloc (which would slow every allocation). Where that reset is unavailable
the lifetime peak from ``resource.getrusage`` is reported and marked as such.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from mmmixlab.fileio import atomic_write

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
MIB = float(1 << 20)

# numba probes TBB on its first parallel launch and warns about an old TBB, then uses OpenMP.
warnings.filterwarnings("ignore", message=".*TBB threading layer.*")


# ----------------------------------------------------------------------------- device / machine

def resolve_device(name: Optional[str]) -> torch.device:
    """``None``/"auto": cuda when available, else cpu. "cuda" without a GPU is an error."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device here")
    if dev.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu or cuda, got {name!r}")
    return dev


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def device_slug(device: torch.device) -> str:
    """"cpu", or the GPU name as a file-name slug (``nvidia-h100-80gb-hbm3``)."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_DIR, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(module: str) -> Optional[str]:
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", "?")
    except Exception:  # noqa: BLE001 - a missing optional package is just reported as absent
        return None


def machine_info(device: torch.device) -> dict:
    """Where a benchmark ran: platform, CPU, cores, load, package versions, device."""
    info = {
        "date": _dt.date.today().isoformat(),
        "commit": git_commit(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "numba": _version("numba"),
        "open3d": _version("open3d"),
        "open_clip": _version("open_clip"),
        "numpy": _version("numpy"),
        "device": str(device),
        "device_name": device_name(device),
    }
    try:
        import numba
        info["numba_threads"] = numba.get_num_threads()
    except Exception:  # noqa: BLE001
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu_memory_gib"] = round(props.total_memory / (1 << 30), 1)
        info["cuda"] = torch.version.cuda
    return info


def machine_line(info: dict) -> str:
    s = (f"{info['device_name']} | {info['cpu_model']}, {info['cpu_affinity']} cores usable, "
         f"load {info['load_average_1m']} | {info['platform']} | torch {info['torch']}, "
         f"numba {info['numba']}, open3d {info['open3d']} | commit {info['commit']}")
    return s


# ----------------------------------------------------------------------------- timing

def sync(device: Optional[torch.device]) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds per call of one variant, one entry per round it took part in."""

    times: list = field(default_factory=list)
    first_result: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def n(self) -> int:
        return len(self.times)

    def summary(self, scale: float = 1e3) -> dict:
        """Median / min / max in ms (``scale`` 1e3) and the number of rounds."""
        if not self.times:
            return {"median": None, "min": None, "max": None, "rounds": 0}
        return {"median": round(self.median * scale, 3), "min": round(min(self.times) * scale, 3),
                "max": round(max(self.times) * scale, 3), "rounds": self.n}


def interleaved(fns: dict, *, rounds: int, warmup: int = 1, min_rounds: int = 2,
                budget_s: Optional[float] = None, max_rounds: Optional[dict] = None,
                device: Optional[torch.device] = None, keep_first: bool = False,
                before_each: Optional[Callable[[str], None]] = None,
                after_each: Optional[Callable[[str], None]] = None,
                clock: Callable[[], float] = time.perf_counter) -> dict:
    """Time ``fns`` (name -> zero-argument callable) alternately; returns name -> :class:`Timing`.

    Every round calls each function once, in an order rotated by one each round, so no variant
    always runs right after the same neighbour. ``warmup`` untimed rounds come first.
    Stops after ``rounds`` timed rounds, or earlier once ``budget_s`` seconds of timed rounds
    have passed and at least ``min_rounds`` were done. ``max_rounds`` caps single variants (a
    slow reference can drop out after a few rounds while the others go on). ``keep_first``
    keeps the first timed call's return value (to verify results without an extra run).
    ``before_each``/``after_each`` run outside the timed region (peak-memory probes).
    ``clock``: wall time by default; ``time.process_time`` counts the CPU time of every thread
    of the process (work a helper thread does on an idle core, which wall time hides).
    """
    names = list(fns)
    caps = {n: (max_rounds or {}).get(n, rounds) for n in names}
    out = {n: Timing() for n in names}
    for _ in range(warmup):
        for n in names:
            if caps[n] > 0:
                fns[n]()
        sync(device)
    start = time.perf_counter()
    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            if out[n].n >= caps[n]:
                continue
            if before_each is not None:
                before_each(n)
            sync(device)
            t0 = clock()
            res = fns[n]()
            sync(device)
            out[n].times.append(clock() - t0)
            if after_each is not None:
                after_each(n)
            if keep_first and out[n].n == 1:
                out[n].first_result = res
        if budget_s is not None and r + 1 >= min_rounds and \
                time.perf_counter() - start > budget_s:
            break
    return out


def ratio(num: Timing, den: Timing) -> dict:
    """``num / den``: the median of the paired per-round ratios (robust to drift), the ratio of
    medians, and the ratio of minimums (load from other jobs only ever adds time, so the
    fastest round is the closest to the work's own cost)."""
    k = min(num.n, den.n)
    paired = statistics.median(a / b for a, b in zip(num.times[:k], den.times[:k])) if k \
        else float("nan")
    return {"paired": round(paired, 4), "of_medians": round(num.median / den.median, 4),
            "of_mins": round(min(num.times) / min(den.times), 4) if k else float("nan")}


def guarded(label: str, fn: Callable[[], dict], **meta) -> dict:
    """``fn()``, or ``{"label", "error", **meta}`` when it runs out of GPU memory: one case
    that does not fit (the paper-size encoder at batch 200 on a smaller GPU) must not lose the
    other cases' numbers."""
    try:
        return fn()
    except torch.cuda.OutOfMemoryError as err:
        torch.cuda.empty_cache()
        log(f"[{label}] CUDA out of memory: {str(err).splitlines()[0]}")
        return {"label": label, "error": f"CUDA out of memory: {str(err).splitlines()[0]}",
                **meta}


# ----------------------------------------------------------------------------- peak memory

_CLEAR_REFS = "/proc/self/clear_refs"


def _status_kib(field_name: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field_name}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


class PeakMemory:
    """Per-step peak memory: CUDA allocator peak, or the CPU process's resident high-water mark.

    ``reset()`` before a step, ``peak_mib()`` after it. On CPU the value is the whole process's
    resident set (Python, torch, the model, data), not just the step's own allocations;
    ``baseline_mib`` is the resident set when the probe was created, for reference.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_vmhwm_reset"
        if device.type != "cuda" and not self._can_reset():
            self.kind = "cpu_ru_maxrss_lifetime"
        self.baseline_mib = self.current_mib()

    @staticmethod
    def _can_reset() -> bool:
        if _status_kib("VmHWM") is None:
            return False
        try:
            with open(_CLEAR_REFS, "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def current_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / MIB
        rss = _status_kib("VmRSS")
        if rss is not None:
            return rss / 1024.0
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.kind == "cpu_vmhwm_reset":
            with open(_CLEAR_REFS, "w") as f:
                f.write("5")

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / MIB
        if self.kind == "cpu_vmhwm_reset":
            return _status_kib("VmHWM") / 1024.0
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# ----------------------------------------------------------------------------- output

def table(rows: list, headers: list) -> str:
    """A plain fixed-width text table."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h))
              for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join([line, sep, *body])


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != x:  # nan
            return "-"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        return f"{x:.3g}" if abs(x) < 1 else f"{x:.2f}"
    return str(x)


def parse_args(description: str, argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="cuda adds the GPU rows to the CPU ones; auto = cuda when available")
    ap.add_argument("--quick", action="store_true", help="fewer rounds and sizes (smoke run)")
    ap.add_argument("--json", help="also write this benchmark's results to this file")
    return ap.parse_args(argv)


def write_json(obj: dict, path) -> Path:
    return atomic_write(path, json.dumps(obj, indent=1, default=_json_default))


def _json_default(o):
    if isinstance(o, torch.device):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def standalone(name: str, run: Callable[..., dict], report: Callable[[dict], str], argv=None):
    """``python -m benchmarks.<name>``: run one benchmark, print its table and the machine."""
    args = parse_args(f"mmmixlab benchmark: {name}", argv)
    device = resolve_device(args.device)
    info = machine_info(device)
    print(f"[{name}] machine: {machine_line(info)}", flush=True)
    res = run(device=device, quick=args.quick)
    print(report(res))
    print(f"[{name}] load average at the end: {os.getloadavg()[0]:.2f}")
    if args.json:
        write_json({"machine": info, name: res}, args.json)
    return res


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet_stderr():
    """Silence C-level stderr (the profiler's start/stop lines) for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
