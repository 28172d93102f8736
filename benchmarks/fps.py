"""FPS: mmmixlab's batched farthest point sampling vs open3d's legacy FPS (same indices).

Same clouds (float32 points; open3d gets them as float64, which is what our kernel computes
in), the same random start point per cloud, and identical selections required on every timed
configuration: open3d returns the selected *points* in index order, so each of its clouds is
compared exactly with ``points[sorted(unique(our indices))]``.

Timed side by side, alternating in one process, per configuration (clouds of N points, M
samples, batch B) over the grid B in 1, 8, 32, 256 (256 only for N <= 2,048), N in 512,
1,000, 2,048, 10,000, M in 64, 256, 2,048 (M < N), plus the headline B=32, 10k -> 512:

* ``ours``: ``mmmixlab.ops.farthest_point_sample`` (the numba kernel on CPU), including its
  float32 -> float64 conversion and input checks;
* ``open3d``: a Python loop over the batch calling ``farthest_point_down_sample`` on
  prebuilt ``PointCloud`` objects (building them is not timed: the most favourable reading
  for open3d).

Speed-up = open3d time / ours (> 1: ours is faster), as the ratio of the best rounds (load
from other jobs only adds time), of medians, and the median of per-round ratios. Then where the
time goes: ns per distance update (B*N*M) for both, against floors measured on this CPU once
(numpy's and torch's vectorised min-update of N distances, which is less than one FPS step:
no argmax), and the fixed cost of a call (N=1, M=1). On CUDA it also reports the time per
batch at B=200, N=10k, M=384 (the paper-size tokenizer), checked against the CPU indices.

    python -m benchmarks.fps [--device cpu|cuda] [--quick]

``--refs`` runs the issue-23 comparison instead (:func:`run_refs`): ours vs the fastest exact
FPS packages on PyPI, ``torch-quickfps`` (bucket FPS, a torch op) and ``fpsample`` (its
kd-line bucket FPS), both optional (``pip install -e .[bench]``; a missing one shows as "not
installed"), over B in 1, 8, 32, 256, N in 512, 2,048, 10,000, 50,000, M in 64, 256, 1,024,
4,096 (M < N):

    python -m benchmarks.fps --refs [--quick]
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from mmmixlab.ops import HAVE_NUMBA, farthest_point_sample, farthest_point_sample_reference

from .common import interleaved, log, ratio, standalone, table

BATCHES = (1, 8, 32, 256)
POINTS = (512, 1000, 2048, 10000)
SAMPLES = (64, 256, 2048)
MAX_N_AT_B256 = 2048                 # B=256 x 10k clouds would take ~5 s per open3d call
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


def grid(quick: bool = False) -> list:
    """(B, N, M) of the issue's grid, plus the headline; --quick keeps B in 1 and 32."""
    out = []
    for n in POINTS:
        for m in SAMPLES:
            if m >= n:
                continue
            for b in BATCHES:
                if (b == 256 and n > MAX_N_AT_B256) or (quick and b not in (1, 32)):
                    continue
                out.append((b, n, m))
    if HEADLINE not in out:
        out.append(HEADLINE)
    return out


def bench_config(b: int, n: int, m: int, quick: bool, seed: int) -> dict:
    """Ours vs open3d alternating, best of up to 25 rounds (fewer for the big ones)."""
    x, start = make_clouds(b, n, seed)
    clouds = open3d_clouds(x)
    est = b * n * m * 1.1e-9  # open3d's time per call, about
    rounds = 25 if est < 0.02 else 15 if est < 0.2 else 7 if est < 1 else 3
    if quick:
        rounds = max(3, rounds // 3)
    t = interleaved({"ours": lambda: farthest_point_sample(x, m, start),
                     "open3d": lambda: open3d_fps(clouds, m, start)},
                    rounds=rounds, warmup=1, min_rounds=3,
                    budget_s=3.0 if quick else 8.0, keep_first=True)
    identical = check_identical(x, t["ours"].first_result, t["open3d"].first_result)
    updates = b * n * m
    row = {"B": b, "N": n, "M": m,
           "ours_ms": t["ours"].summary(), "open3d_ms": t["open3d"].summary(),
           "identical_to_open3d": identical,
           "speedup_vs_open3d": ratio(t["open3d"], t["ours"]),
           "ns_per_update": {"ours": round(min(t["ours"].times) / updates * 1e9, 3),
                             "open3d": round(min(t["open3d"].times) / updates * 1e9, 3)}}
    if not identical:
        log(f"[fps] MISMATCH with open3d at B={b} N={n} M={m}")
    return row


def _best_of(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def floors(n: int = 10000, steps: int = 64) -> dict:
    """ns per point of a vectorised min-update of n float64 distances (the first half of one
    FPS step, no argmax), numpy and torch, best of several rounds; and the fixed cost of one
    call (N=1, M=1) for ours and open3d."""
    import open3d as o3d

    rng = np.random.default_rng(0)
    px, py, pz = rng.standard_normal((3, n))
    dist = np.full(n, np.inf)
    d, t = np.empty(n), np.empty(n)

    def numpy_steps():
        for i in range(steps):
            np.subtract(px, px[i], out=d)
            np.multiply(d, d, out=d)
            np.subtract(py, py[i], out=t)
            np.add(d, np.multiply(t, t, out=t), out=d)
            np.subtract(pz, pz[i], out=t)
            np.add(d, np.multiply(t, t, out=t), out=d)
            np.minimum(dist, d, out=dist)

    tx, ty, tz = (torch.from_numpy(a) for a in (px, py, pz))
    tdist = torch.full((n,), float("inf"), dtype=torch.float64)
    td, tt = torch.empty(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)

    def torch_steps():
        for i in range(steps):
            torch.sub(tx, tx[i], out=td).square_()
            td.add_(torch.sub(ty, ty[i], out=tt).square_())
            td.add_(torch.sub(tz, tz[i], out=tt).square_())
            torch.minimum(tdist, td, out=tdist)

    one = torch.zeros(1, 1, 3)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.zeros((1, 3))))
    call = {"ours": lambda: farthest_point_sample(one, 1), "open3d":
            lambda: pc.farthest_point_down_sample(1, 0)}
    for f in call.values():
        f()
    return {"n": n,
            "numpy_min_update_ns_per_point": round(_best_of(numpy_steps, 15) / (n * steps) * 1e9,
                                                   3),
            "torch_min_update_ns_per_point": round(_best_of(torch_steps, 15) / (n * steps) * 1e9,
                                                   3),
            "call_us_n1_m1": {k: round(min(_best_of(f, 200) for _ in range(3)) * 1e6, 2)
                              for k, f in call.items()}}


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
    for b, n, m in grid(quick):
        log(f"[fps] B={b} N={n} M={m} ...")
        configs.append(bench_config(b, n, m, quick, seed=len(configs) + 1))
    head = next(c for c in configs if (c["B"], c["N"], c["M"]) == HEADLINE)
    worst = min(configs, key=lambda c: c["speedup_vs_open3d"]["of_mins"])
    log("[fps] floors ...")
    res = {"speedup_vs_open3d": head["speedup_vs_open3d"]["of_medians"],
           "speedup_vs_open3d_paired": head["speedup_vs_open3d"]["paired"],
           "headline_config": dict(zip("BNM", HEADLINE)),
           "min_speedup_vs_open3d": {"of_mins": worst["speedup_vs_open3d"]["of_mins"],
                                     "config": {k: worst[k] for k in "BNM"}},
           "all_identical_to_open3d": all(c["identical_to_open3d"] for c in configs),
           "numba": HAVE_NUMBA, "configs": configs, "floors": floors(),
           "load_average_1m_end": round(os.getloadavg()[0], 2),
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
        sp = c["speedup_vs_open3d"]
        rows.append([c["B"], c["N"], c["M"], c["ours_ms"]["min"], c["open3d_ms"]["min"],
                     sp["of_mins"], sp["of_medians"], sp["paired"], c["ns_per_update"]["ours"],
                     c["ns_per_update"]["open3d"],
                     "yes" if c["identical_to_open3d"] else "NO", c["ours_ms"]["rounds"]])
    f = res["floors"]
    ours_ns = [c["ns_per_update"]["ours"] for c in res["configs"]]
    o3d_ns = [c["ns_per_update"]["open3d"] for c in res["configs"]]
    w = res["min_speedup_vs_open3d"]
    out = ["FPS: best-of-rounds time per batch (ms); speed-up = open3d / ours",
           table(rows, ["B", "N", "M", "ours ms", "open3d ms", "best", "medians", "paired",
                        "ours ns/upd", "o3d ns/upd", "identical", "rounds"]),
           f"lowest speed-up (best rounds): {w['of_mins']}x at B={w['config']['B']} "
           f"N={w['config']['N']} M={w['config']['M']}; all identical to open3d: "
           f"{res['all_identical_to_open3d']}",
           f"where time goes: ours {min(ours_ns):.3f}-{max(ours_ns):.3f} ns per distance "
           f"update (N*M per cloud; less than N*M where the cell-pruned loop runs), open3d "
           f"{min(o3d_ns):.3f}-{max(o3d_ns):.3f}; floor on this CPU: a vectorised min-update "
           f"of {f['n']} float64 distances alone (no argmax) costs "
           f"{f['numpy_min_update_ns_per_point']} ns/point in numpy, "
           f"{f['torch_min_update_ns_per_point']} in torch; fixed cost of a call (N=1, M=1): "
           f"ours {f['call_us_n1_m1']['ours']} us, open3d {f['call_us_n1_m1']['open3d']} us"]
    if isinstance(res.get("cuda"), dict):
        c = res["cuda"]
        out.append(f"CUDA ({c['device_name']}) B={c['B']} N={c['N']} M={c['M']}: "
                   f"{c['ms_per_batch']['median']} ms per batch (identical to CPU: "
                   f"{c['identical_to_cpu']}); vs open3d (extrapolated) "
                   f"{c['speedup_vs_open3d']}x, vs CPU numba {c['speedup_vs_cpu_ours']}x")
    else:
        out.append(f"CUDA: {res.get('cuda')}")
    return "\n".join(out)


# ----------------------------------------------------------------------------- issue 23

REF_BATCHES = (1, 8, 32, 256)
REF_POINTS = (512, 2048, 10000, 50000)
REF_SAMPLES = (64, 256, 1024, 4096)
REF_SKIP: dict = {}  # (B, N, M) -> why it is not measured (filled in after the full run)
REF_HS = (3, 5, 7, 9)  # bucket heights tried for both references; each gets its fastest


def _optional(name: str):
    try:
        return __import__(name)
    except Exception:  # noqa: BLE001 - missing or broken optional package: "not installed"
        return None


def ref_grid(quick: bool = False) -> list:
    """(B, N, M) of the issue-23 grid; --quick keeps B in 1 and 32 and N up to 10,000."""
    out = []
    for n in REF_POINTS:
        for m in REF_SAMPLES:
            for b in REF_BATCHES:
                if m >= n or (quick and (b not in (1, 32) or n > 10000)):
                    continue
                out.append((b, n, m))
    return out


def _fastest_h(fn, hs) -> tuple:
    """(h, fn) of the bucket height whose single call was fastest (one untimed call each)."""
    best = None
    for h in hs:
        t0 = time.perf_counter()
        fn(h)
        dt = time.perf_counter() - t0
        if best is None or dt < best[0]:
            best = (dt, h)
    return best[1]


def bench_ref_config(b: int, n: int, m: int, quick: bool, seed: int, qf, fs) -> dict:
    """Ours vs torch-quickfps vs fpsample alternating; one start index shared by every cloud
    (torch-quickfps takes a single int). Picks: ours == torch-quickfps' exactly (both follow
    lowest-index ties in float64-equal order); fpsample's kd-line FPS is speed-only (float32
    distances, its own start handling), its agreement is reported as a fraction."""
    x, _ = make_clouds(b, n, seed)
    start = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)))
    fns = {"ours": lambda: farthest_point_sample(x, m, start)}
    row: dict = {"B": b, "N": n, "M": m, "start": start}
    if qf is not None:
        sub = x[:min(b, 8)]
        hq = _fastest_h(lambda h: qf.sample_idx(sub, m, h=h, start_idx=start), REF_HS)
        row["quickfps_h"] = hq
        fns["quickfps"] = lambda: qf.sample_idx(x, m, h=hq, start_idx=start)
    if fs is not None:
        clouds = [c.numpy() for c in x]
        hs = [h for h in REF_HS if 2 ** h <= n]
        hf = _fastest_h(lambda h: fs.bucket_fps_kdline_sampling(clouds[0], m, h, start_idx=start),
                        hs)
        row["fpsample_h"] = hf
        fns["fpsample"] = lambda: [fs.bucket_fps_kdline_sampling(c, m, hf, start_idx=start)
                                   for c in clouds]
    t = interleaved(fns, rounds=25, warmup=1, min_rounds=3 if quick else 5,
                    budget_s=1.5 if quick else 6.0, keep_first=True)
    ours = t["ours"].first_result
    assert torch.equal(ours[:1], farthest_point_sample_reference(x[:1], m, start)), \
        f"ours != the torch reference at B={b} N={n} M={m}"
    row["ours_ms"] = t["ours"].summary()
    for name in ("quickfps", "fpsample"):
        if name not in t:
            row[name] = "not installed"
            continue
        row[name] = {"ms": t[name].summary(), "ours_speedup": ratio(t[name], t["ours"])}
    if "quickfps" in t:
        theirs = t["quickfps"].first_result.long()
        row["quickfps"]["identical"] = bool(torch.equal(theirs, ours))
        if not row["quickfps"]["identical"]:
            row["quickfps"]["first_difference"] = explain_difference(x, ours, theirs)
            log(f"[fps] torch-quickfps differs at B={b} N={n} M={m}: "
                f"{row['quickfps']['first_difference']}")
    if "fpsample" in t:
        got = np.stack([np.asarray(r, dtype=np.int64) for r in t["fpsample"].first_result])
        row["fpsample"]["same_picks_fraction"] = round(float(
            np.mean([len(set(g.tolist()) & set(o.tolist())) / m
                     for g, o in zip(got, ours.numpy())])), 4)
    refs = [row[k]["ms"]["min"] for k in ("quickfps", "fpsample") if isinstance(row[k], dict)]
    if refs:  # vs the fastest reference, best rounds and medians
        fastest = min((k for k in ("quickfps", "fpsample") if isinstance(row[k], dict)),
                      key=lambda k: row[k]["ms"]["min"])
        row["fastest_ref"] = fastest
        row["vs_fastest"] = row[fastest]["ours_speedup"]
    return row


def explain_difference(x: torch.Tensor, ours: torch.Tensor, theirs: torch.Tensor) -> dict:
    """Where torch-quickfps' picks first leave ours, and whether that is a float32 near-tie:
    after the common prefix our pick is the float64 farthest point (lowest index on ties),
    while in float32 ((dx*dx + dy*dy) + dz*dz, as a float32 kernel computes) their pick is at
    least as far. torch-quickfps computes in float32 whatever the input dtype."""
    b, i = (int(v) for v in (ours != theirs).nonzero()[0])
    picked = ours[b, :i]

    def dmin(p, dtype):
        xs = x[b].to(dtype)
        d = xs[picked] - xs[p]
        return float(((d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) + d[:, 2] * d[:, 2]).min())

    o, q = int(ours[b, i]), int(theirs[b, i])
    o64, q64, o32, q32 = (dmin(o, torch.float64), dmin(q, torch.float64),
                          dmin(o, torch.float32), dmin(q, torch.float32))
    near_tie = (o64 > q64 or (o64 == q64 and o < q)) and q32 >= o32
    return {"cloud": b, "pick": i, "ours": o, "theirs": q,
            "rel_gap_float64": float(f"{(o64 - q64) / o64:.3g}"),
            "float32_near_tie": bool(near_tie)}


def run_refs(device: torch.device | None = None, quick: bool = False) -> dict:
    qf, fs = _optional("torch_quickfps"), _optional("fpsample")
    x, _ = make_clouds(4, 5000, 0)  # compile / warm every path of ours
    for m in (64, 1024):
        assert torch.equal(farthest_point_sample(x, m, 3), farthest_point_sample_reference(x, m, 3))
    rows = []
    for b, n, m in ref_grid(quick):
        if (b, n, m) in REF_SKIP:
            rows.append({"B": b, "N": n, "M": m, "skipped": REF_SKIP[(b, n, m)]})
            continue
        log(f"[fps] refs B={b} N={n} M={m} ...")
        rows.append(bench_ref_config(b, n, m, quick, len(rows) + 1, qf, fs))
    timed = [r for r in rows if "vs_fastest" in r]
    worst = min(timed, key=lambda r: r["vs_fastest"]["of_mins"]) if timed else None
    worst_med = min(timed, key=lambda r: r["vs_fastest"]["of_medians"]) if timed else None
    return {"configs": rows,
            "versions": {"torch_quickfps": _pkg_version("torch-quickfps") if qf else None,
                         "fpsample": getattr(fs, "__version__", "?") if fs else None},
            "torch_threads": torch.get_num_threads(),
            "min_vs_fastest": None if worst is None else
            {"of_mins": worst["vs_fastest"]["of_mins"], "config": {k: worst[k] for k in "BNM"},
             "ref": worst["fastest_ref"]},
            "min_vs_fastest_of_medians": None if worst_med is None else
            {"of_medians": worst_med["vs_fastest"]["of_medians"],
             "config": {k: worst_med[k] for k in "BNM"}, "ref": worst_med["fastest_ref"]},
            "all_identical_to_quickfps": all(r["quickfps"]["identical"] for r in timed
                                             if isinstance(r.get("quickfps"), dict)),
            "differences_all_float32_near_ties": all(
                r["quickfps"]["first_difference"]["float32_near_tie"] for r in timed
                if isinstance(r.get("quickfps"), dict) and not r["quickfps"]["identical"]),
            "load_average_1m_end": round(os.getloadavg()[0], 2),
            "clouds": "uniform in the unit ball, float32, one random start per configuration"}


def _pkg_version(dist: str):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001
        return None


def _identical_cell(q) -> str:
    if not isinstance(q, dict):
        return "-"
    if q["identical"]:
        return "yes"
    d = q["first_difference"]
    return f"from pick {d['pick']}" + (" (f32 tie)" if d["float32_near_tie"] else " (NOT a tie)")


def report_refs(res: dict) -> str:
    rows = []
    for c in res["configs"]:
        if "skipped" in c:
            rows.append([c["B"], c["N"], c["M"], "skipped: " + c["skipped"]] + [None] * 9)
            continue
        cells = [c["B"], c["N"], c["M"], c["ours_ms"]["min"]]
        for k in ("quickfps", "fpsample"):
            r = c[k]
            if isinstance(r, dict):
                cells += [r["ms"]["min"], r["ours_speedup"]["of_mins"],
                          r["ours_speedup"]["of_medians"]]
            else:
                cells += [r, None, None]
        q = c["quickfps"]
        cells += [_identical_cell(q),
                  c["fpsample"]["same_picks_fraction"] if isinstance(c["fpsample"], dict)
                  else "-",
                  c.get("fastest_ref", "-"), c["ours_ms"]["rounds"]]
        rows.append(cells)
    w, wm = res["min_vs_fastest"], res["min_vs_fastest_of_medians"]
    out = ["FPS vs torch-quickfps / fpsample: best-of-rounds ms per batch; speed-up = ref / ours",
           table(rows, ["B", "N", "M", "ours ms", "quickfps ms", "q best", "q medians",
                        "fpsample ms", "f best", "f medians", "= quickfps", "fpsample overlap",
                        "fastest ref", "rounds"])]
    if w:
        out.append(f"lowest speed-up vs the fastest reference: {w['of_mins']}x (best rounds) at "
                   f"B={w['config']['B']} N={w['config']['N']} M={w['config']['M']} "
                   f"({w['ref']}); of medians {wm['of_medians']}x at B={wm['config']['B']} "
                   f"N={wm['config']['N']} M={wm['config']['M']} ({wm['ref']}); all identical "
                   f"to torch-quickfps: {res['all_identical_to_quickfps']} (every difference a "
                   f"float32 near-tie, our pick the float64 farthest: "
                   f"{res['differences_all_float32_near_ties']}); versions "
                   f"{res['versions']}, torch threads {res['torch_threads']}")
    return "\n".join(out)


if __name__ == "__main__":
    import sys
    argv = sys.argv[1:]
    if "--refs" in argv:
        argv.remove("--refs")
        standalone("fps_refs", run_refs, report_refs, argv)
    else:
        standalone("fps", run, report, argv)

