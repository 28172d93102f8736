"""FPS: mmmixlab's batched farthest point sampling vs open3d's legacy FPS (same indices).

Same clouds (float32 points; open3d gets them as float64, which is what our kernel computes
in), the same random start point per cloud, and identical selections required on every timed
configuration: open3d returns the selected *points* in index order, so each of its clouds is
compared exactly with ``points[sorted(unique(our indices))]``.

Timed side by side, per configuration (clouds of N points, M samples, batch B):

* ``ours``: ``mmmixlab.ops.farthest_point_sample`` (the numba kernel on CPU, parallel over the
  batch), including its float32 -> float64 conversion;
* ``reference``: ``farthest_point_sample_reference``, the batched PyTorch loop (the GPU path),
  timed against open3d in a second, shorter pass; left out where it would take minutes;
* ``open3d``: a Python loop over the batch calling ``farthest_point_down_sample`` on
  prebuilt ``PointCloud`` objects (building them is not timed: the most favourable reading
  for open3d).

Speed-up = open3d time / ours (> 1: ours is faster). On CUDA it also reports the time per
batch at B=200, N=10k, M=384 (the paper-size tokenizer), checked against the CPU indices.

    python -m benchmarks.fps [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import numpy as np
import torch

from mmmixlab.ops import HAVE_NUMBA, farthest_point_sample, farthest_point_sample_reference

from .common import interleaved, log, ratio, standalone, table

SIZES = ((1000, 256), (10000, 512), (10000, 2048))
BATCHES = (1, 32, 200)
HEADLINE = (32, 10000, 512)          # fps.speedup_vs_open3d in the results file
PAPER_TOKENIZER = (200, 10000, 384)  # B, N, M of the paper-size Point-BERT tokenizer


def make_clouds(b: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, 3) float32 points uniform in the unit ball, and (B,) random start indices."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 3, generator=g)
    x = x / x.norm(dim=-1, keepdim=True) * torch.rand(b, n, 1, generator=g).pow(1 / 3)
    start = torch.randint(n, (b,), generator=g)
    return x.contiguous(), start


def open3d_clouds(x: torch.Tensor):
    import open3d as o3d
    return [o3d.geometry.PointCloud(o3d.utility.Vector3dVector(c.double().numpy())) for c in x]


def open3d_fps(clouds, m: int, start: torch.Tensor):
    return [pc.farthest_point_down_sample(m, int(s)) for pc, s in zip(clouds, start.tolist())]


def check_identical(x: torch.Tensor, idx: torch.Tensor, o3d_out) -> bool:
    """Every cloud: open3d's selected points == our picks, sorted by index (exact floats)."""
    pts = x.double().numpy()
    for b, down in enumerate(o3d_out):
        ours = pts[b][np.unique(idx[b].numpy())]  # np.unique sorts
        if not np.array_equal(np.asarray(down.points), ours):
            return False
    return True


def _reference_plan(b: int, n: int, m: int, quick: bool) -> int:
    """Rounds for the slow PyTorch reference: 0 where one call would take minutes here."""
    work = b * n * m  # float64 element-steps; ~2-10 ns each on 2 shared cores
    if work > (1.1e8 if quick else 2e8):
        return 0
    return 1 if work > 1e8 else 3


def bench_config(b: int, n: int, m: int, quick: bool, seed: int) -> dict:
    """Ours vs open3d alternating; then, where affordable, the reference vs open3d.

    Two passes, not one three-way alternation: the PyTorch reference leaves torch's OpenMP
    workers spinning, which would slow whichever call follows it (see threading_env).
    """
    x, start = make_clouds(b, n, seed)
    clouds = open3d_clouds(x)
    # Per-call cost sets the rounds: many for the small configurations, few for the big ones.
    est = b * n * m * 4e-9
    rounds = 25 if est < 0.05 else 12 if est < 0.5 else 6 if est < 3 else 3
    if quick:
        rounds = max(2, rounds // 3)
    t = interleaved({"ours": lambda: farthest_point_sample(x, m, start),
                     "open3d": lambda: open3d_fps(clouds, m, start)},
                    rounds=rounds, warmup=0, min_rounds=min(rounds, 2 if quick else 3),
                    budget_s=6.0 if quick else 15.0, keep_first=True)
    ours_idx = t["ours"].first_result
    identical = check_identical(x, ours_idx, t["open3d"].first_result)
    row = {"B": b, "N": n, "M": m,
           "ours_ms": t["ours"].summary(), "open3d_ms": t["open3d"].summary(),
           "identical_to_open3d": identical,
           "speedup_vs_open3d": ratio(t["open3d"], t["ours"])}
    ref_rounds = _reference_plan(b, n, m, quick)
    if ref_rounds:
        r = interleaved({"reference": lambda: farthest_point_sample_reference(x, m, start),
                         "open3d": lambda: open3d_fps(clouds, m, start)},
                        rounds=ref_rounds, warmup=0, min_rounds=1, keep_first=True)
        row["reference_ms"] = r["reference"].summary()
        row["reference_identical"] = bool(torch.equal(r["reference"].first_result, ours_idx))
        row["reference_speedup_vs_open3d"] = ratio(r["open3d"], r["reference"])
    else:
        row["reference_ms"] = None
        row["reference_note"] = "skipped: one call would take minutes on this machine"
    if not identical:
        log(f"[fps] MISMATCH with open3d at B={b} N={n} M={m}")
    return row


def bench_cuda(device: torch.device, quick: bool, seed: int = 7) -> dict:
    """ms per batch on the GPU at the paper-size tokenizer (B=200, N=10k, M=384)."""
    b, n, m = PAPER_TOKENIZER
    x, start = make_clouds(b, n, seed)
    xg = x.to(device)
    cpu_idx = farthest_point_sample(x, m, start)
    t = interleaved({"cuda": lambda: farthest_point_sample(xg, m, start)},
                    rounds=5 if quick else 20, warmup=2, device=device, keep_first=True)
    res: dict = {"B": b, "N": n, "M": m, "device_name": torch.cuda.get_device_name(device),
                 "path": "farthest_point_sample_reference (PyTorch loop of M steps)",
                 "ms_per_batch": t["cuda"].summary(),
                 "identical_to_cpu": bool(torch.equal(t["cuda"].first_result.cpu(), cpu_idx))}
    # CPU side of the comparison: open3d on 8 clouds (extrapolated to B) and our numba path.
    clouds = open3d_clouds(x[:8])
    o3d_t = interleaved({"open3d_8": lambda: open3d_fps(clouds, m, start[:8]),
                         "cpu_ours": lambda: farthest_point_sample(x, m, start)},
                        rounds=2 if quick else 4, warmup=0)
    o3d_per_batch = o3d_t["open3d_8"].median * b / 8
    res["open3d_ms_per_batch_extrapolated"] = round(o3d_per_batch * 1e3, 2)
    res["cpu_ours_ms_per_batch"] = o3d_t["cpu_ours"].summary()
    res["speedup_vs_open3d"] = round(o3d_per_batch / t["cuda"].median, 2)
    res["speedup_vs_cpu_ours"] = round(o3d_t["cpu_ours"].median / t["cuda"].median, 2)
    return res


def run(device: torch.device | None = None, quick: bool = False) -> dict:
    device = device if device is not None else torch.device("cpu")
    if not HAVE_NUMBA:
        log("[fps] numba is not installed: 'ours' is the PyTorch reference on CPU")
    # Compile / warm every path once, outside the timed rounds (numba caches to disk).
    x, start = make_clouds(4, 500, 0)
    idx = farthest_point_sample(x, 64, start)
    assert torch.equal(idx, farthest_point_sample_reference(x, 64, start))
    assert check_identical(x, idx, open3d_fps(open3d_clouds(x), 64, start))
    configs = []
    for n, m in SIZES:
        for b in BATCHES:
            log(f"[fps] B={b} N={n} M={m} ...")
            configs.append(bench_config(b, n, m, quick, seed=len(configs) + 1))
    head = next(c for c in configs if (c["B"], c["N"], c["M"]) == HEADLINE)
    res = {"speedup_vs_open3d": head["speedup_vs_open3d"]["of_medians"],
           "speedup_vs_open3d_paired": head["speedup_vs_open3d"]["paired"],
           "headline_config": dict(zip("BNM", HEADLINE)),
           "all_identical_to_open3d": all(c["identical_to_open3d"] for c in configs),
           "numba": HAVE_NUMBA, "configs": configs,
           "open3d_timing": "loop over the batch, PointCloud objects prebuilt (not timed)",
           "clouds": "uniform in the unit ball, float32, random start index per cloud"}
    if device.type == "cuda":
        log("[fps] CUDA, paper-size tokenizer ...")
        res["cuda"] = bench_cuda(device, quick)
    else:
        res["cuda"] = "not measured (no GPU in this run)"
    return res


def report(res: dict) -> str:
    rows = []
    for c in res["configs"]:
        ref = c.get("reference_ms")
        rows.append([c["B"], f"{c['N']}->{c['M']}", c["ours_ms"]["median"],
                     ref["median"] if ref else None, c["open3d_ms"]["median"],
                     c["speedup_vs_open3d"]["of_medians"], c["speedup_vs_open3d"]["paired"],
                     c["reference_speedup_vs_open3d"]["of_medians"] if ref else None,
                     "yes" if c["identical_to_open3d"] else "NO", c["ours_ms"]["rounds"]])
    out = ["FPS: time per batch (ms, median), speed-up = open3d / ours",
           table(rows, ["B", "N->M", "ours ms", "torch-ref ms", "open3d ms", "speedup",
                        "paired", "ref speedup", "identical", "rounds"])]
    if isinstance(res.get("cuda"), dict):
        c = res["cuda"]
        out.append(f"CUDA ({c['device_name']}) B={c['B']} N={c['N']} M={c['M']}: "
                   f"{c['ms_per_batch']['median']} ms per batch (identical to CPU: "
                   f"{c['identical_to_cpu']}); vs open3d (extrapolated) "
                   f"{c['speedup_vs_open3d']}x, vs CPU numba {c['speedup_vs_cpu_ours']}x")
    else:
        out.append(f"CUDA: {res.get('cuda')}")
    return "\n".join(out)


if __name__ == "__main__":
    standalone("fps", run, report)

