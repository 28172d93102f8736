"""Proposed changes, measured against the library as it is (nothing here is used by mmmixlab).

``fps_numpy_io``: ``farthest_point_sample`` with its input check and float64 conversion done in
numpy instead of torch, and the kernel compiled without ``parallel=True`` for a single cloud.
Why: on a CPU shared with other work, every torch op large enough to use torch's OpenMP pool
pays a fork/join whose workers may be descheduled (several ms per op on the 2-core VM these
benchmarks were written on), and the library's wrapper runs two such ops
(``torch.isfinite(...).all()``, ``.to(float64)``) right before the kernel; numba's parallel
launch for one cloud pays the same. numpy's ops are single-threaded. Same kernel, same indices.

Measured side by side, each call right after a torch op (as inside the encoder, where the
input check precedes FPS):

* FPS alone at the tiny encoder's size (B=64, 1024 -> 64), B=1 (1k -> 256) and the headline
  (B=32, 10k -> 512), library vs candidate vs open3d;
* a whole tiny stage-2 step with mixing, with ``mmmixlab.ops.farthest_point_sample`` swapped
  for the candidate on alternate calls.

    python -m benchmarks.candidates
"""

from __future__ import annotations

import numpy as np
import torch

from mmmixlab import ops

from .common import interleaved, log, ratio, standalone, table
from .fps import make_clouds, open3d_clouds, open3d_fps

_serial_kernel = None


def fps_numpy_io(xyz: torch.Tensor, num_samples: int, start_index=0) -> torch.Tensor:
    """Candidate for ``ops.farthest_point_sample`` on CPU (same arguments, same result)."""
    global _serial_kernel
    if xyz.device.type != "cpu" or not ops.HAVE_NUMBA:
        return ops.farthest_point_sample(xyz, num_samples, start_index)
    if not isinstance(xyz, torch.Tensor) or xyz.dim() != 3 or xyz.shape[-1] != 3:
        return ops.farthest_point_sample(xyz, num_samples, start_index)  # its errors
    a = xyz.detach().numpy()
    if not np.isfinite(a).all():
        return ops.farthest_point_sample(xyz, num_samples, start_index)  # raises, names clouds
    b, n, _ = a.shape
    if isinstance(start_index, torch.Tensor):
        start = start_index.detach().to("cpu", torch.int64).reshape(-1).numpy()
        start = np.broadcast_to(start, (b,)).copy() if start.size == 1 else start
    else:
        start = np.full(b, int(start_index), dtype=np.int64)
    m = int(num_samples)
    if not (1 <= m <= n) or start.shape != (b,) or start.min() < 0 or start.max() >= n:
        return ops.farthest_point_sample(xyz, num_samples, start_index)  # its errors
    x = np.ascontiguousarray(a.transpose(0, 2, 1), dtype=np.float64)
    if b == 1:
        if _serial_kernel is None:
            from numba import njit
            _serial_kernel = njit(cache=True)(ops._fps_kernel.py_func)
        idx = _serial_kernel(x, start, m)
    else:
        idx = ops._fps_kernel(x, start, m)
    return torch.from_numpy(idx)


def _after_torch_op(fn, work: torch.Tensor):
    def call():
        torch.isfinite(work).all()  # what check_points does before FPS in the encoder
        return fn()
    return call


def bench_fps(quick: bool) -> list:
    work = torch.rand(64, 1024, 6)
    rows = []
    for b, n, m in ((64, 1024, 64), (1, 1000, 256), (32, 10000, 512)):
        x, start = make_clouds(b, n, 11)
        clouds = open3d_clouds(x)
        lib = ops.farthest_point_sample(x, m, start)
        assert torch.equal(fps_numpy_io(x, m, start), lib), "candidate changed the indices"
        small = b * n * m < 1e8
        t = interleaved({"library": _after_torch_op(lambda: ops.farthest_point_sample(x, m, start),
                                                    work),
                         "candidate": _after_torch_op(lambda: fps_numpy_io(x, m, start), work),
                         "open3d": _after_torch_op(lambda: open3d_fps(clouds, m, start), work),
                         "torch_op_alone": _after_torch_op(lambda: None, work)},
                        rounds=(8 if quick else 20) if small else (3 if quick else 6), warmup=1,
                        budget_s=10 if quick else 15)
        op = t["torch_op_alone"].median
        rows.append({"B": b, "N": n, "M": m, "identical": True,
                     "ms_including_torch_op": {k: v.summary() for k, v in t.items()},
                     "fps_ms": {k: round((t[k].median - op) * 1e3, 3)
                                for k in ("library", "candidate", "open3d")},
                     "library_over_candidate": ratio(t["library"], t["candidate"])})
    return rows


def bench_step(quick: bool) -> dict:
    from .mixing_overhead import _mix_step
    from .workloads import enter_phase, make_workload

    wl = make_workload("pointbert-tiny", 64, 1024, torch.device("cpu"), align_unmixed=False)
    enter_phase(wl.trainer, "stage2")
    step = _mix_step(wl.trainer, wl.batch)
    original = ops.farthest_point_sample

    def with_candidate():
        ops.farthest_point_sample = fps_numpy_io
        try:
            step()
        finally:
            ops.farthest_point_sample = original

    t = interleaved({"library": step, "candidate": with_candidate}, rounds=6 if quick else 12,
                    warmup=1, budget_s=30 if quick else 35)
    return {"case": "tiny stage-2 step with mixing, 64 x 1024, CPU",
            "step_ms": {k: v.summary() for k, v in t.items()},
            "library_over_candidate": ratio(t["library"], t["candidate"])}


def run(device: torch.device | None = None, quick: bool = False) -> dict:
    log("[candidates] fps_numpy_io: FPS alone ...")
    fps_rows = bench_fps(quick)
    log("[candidates] fps_numpy_io: tiny stage-2 step ...")
    return {"fps_numpy_io": {"fps": fps_rows, "step": bench_step(quick),
                             "what": "FPS input check/conversion in numpy; serial kernel for B=1"}}


def report(res: dict) -> str:
    c = res["fps_numpy_io"]
    rows = [[r["B"], f"{r['N']}->{r['M']}", r["fps_ms"]["library"], r["fps_ms"]["candidate"],
             r["fps_ms"]["open3d"], r["library_over_candidate"]["paired"]] for r in c["fps"]]
    s = c["step"]
    return "\n".join([
        "Candidate fps_numpy_io (FPS ms after a torch op, torch op time subtracted)",
        table(rows, ["B", "N->M", "library ms", "candidate ms", "open3d ms", "library/cand."]),
        f"  {s['case']}: library {s['step_ms']['library']['median']} ms, candidate "
        f"{s['step_ms']['candidate']['median']} ms, ratio "
        f"{s['library_over_candidate']['paired']}"])


if __name__ == "__main__":
    standalone("candidates", run, report)
