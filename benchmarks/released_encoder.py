"""The released-size encoders side by side: OpenShape's point-patch transformer
(``openshape-pointbert``, the G14 size the checkpoints have) and this project's paper-size
variant (``pointbert``), forward passes in eval mode at 10,000 points per cloud, interleaved
in one process (clouds/s, and their ratio). On CUDA, also bf16 autocast against fp32 for the
release-size network (cosine of the features and the largest relative difference).

    python -m benchmarks.released_encoder                      # CPU: batch 4, 3 rounds
    python -m benchmarks.released_encoder --device cuda        # batch 64, bf16 vs fp32 too

Random weights: the cost of a forward does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import time

import mmmixlab  # noqa: F401  (before torch: the OpenMP wait policy)
import torch
import torch.nn.functional as F

from mmmixlab.encoders import count_parameters, create_point_encoder


def clouds(b: int, n: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    xyz = F.normalize(torch.randn(b, n, 3, generator=g), dim=-1) * torch.rand(b, n, 1,
                                                                              generator=g)
    return torch.cat([xyz, torch.rand(b, n, 3, generator=g)], -1).to(device)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(device="cpu", quick: bool = False, batch: int | None = None, points: int = 10000,
        rounds: int | None = None) -> dict:
    device = torch.device(device)
    batch = batch or (64 if device.type == "cuda" else (2 if quick else 4))
    rounds = rounds or (2 if quick else 3)
    x = clouds(batch, points, device)
    torch.manual_seed(0)
    models = {name: create_point_encoder(name, 1280).to(device).eval()
              for name in ("openshape-pointbert", "pointbert")}
    times = {name: [] for name in models}
    with torch.no_grad():
        for m in models.values():  # warm-up (numba compile, cuDNN/cuBLAS autotune)
            m(x[:2])
        for _ in range(rounds):
            for name, m in models.items():  # interleaved: both see the same machine state
                sync(device)
                t = time.perf_counter()
                m(x)
                sync(device)
                times[name].append(time.perf_counter() - t)
    out = {"device": str(device), "batch": batch, "points": points,
           "threads": torch.get_num_threads()}
    for name, ts in times.items():
        best = min(ts)
        out[name] = {"parameters": count_parameters(models[name]),
                     "clouds_per_s": batch / best, "seconds_min": best,
                     "seconds_median": sorted(ts)[len(ts) // 2]}
    out["openshape_over_pointbert_time"] = (out["openshape-pointbert"]["seconds_min"]
                                            / out["pointbert"]["seconds_min"])
    if device.type == "cuda":
        m = models["openshape-pointbert"]
        with torch.no_grad():
            f32 = m(x).float()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                bf = m(x).float()
            sync(device)
            t = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                m(x)
            sync(device)
            out["openshape-pointbert"]["bf16_clouds_per_s"] = batch / (time.perf_counter() - t)
        out["bf16_vs_fp32"] = {
            "min_cosine": float(F.cosine_similarity(f32, bf, dim=-1).min()),
            "max_rel_diff": float(((f32 - bf).norm(dim=-1) / f32.norm(dim=-1)).max())}
        out["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return out


def report(res: dict) -> str:
    lines = [f"{res['device']}, batch {res['batch']} x {res['points']} points, "
             f"{res['threads']} threads, eval forward"]
    for name in ("openshape-pointbert", "pointbert"):
        r = res[name]
        lines.append(f"  {name:20s} {r['parameters']:>11,d} params  {r['clouds_per_s']:8.2f} "
                     f"clouds/s (min of rounds)")
    lines.append(f"  time openshape-pointbert / pointbert: {res['openshape_over_pointbert_time']:.2f}")
    if "bf16_vs_fp32" in res:
        lines.append(f"  bf16 vs fp32: {res['bf16_vs_fp32']}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int)
    p.add_argument("--points", type=int, default=10000)
    p.add_argument("--rounds", type=int)
    args = p.parse_args(argv)
    res = run(args.device, batch=args.batch, points=args.points, rounds=args.rounds)
    print(report(res))
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
