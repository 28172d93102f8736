"""The paper's benchmarks and released models in the notebooks: runs (trained or imported with
``mmmixlab import-checkpoint``) evaluated on ``BENCHMARKS`` as ``mmmixlab eval --benchmark``
does, memoized per process; their confusions, hard samples and retrieval rows; how an encoder
sees a mixed cloud."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import pipeline
from ..evaluate import confusion_matrix, top_k
from .runs import Run
from .samples import hard_samples

_BENCH_CACHE: dict = {}


def benchmark_evals(runs: dict, benchmarks: dict, class_features: dict | None = None,
                    linear_probe: bool = False) -> dict:
    """Each run on each benchmark of the notebooks' ``BENCHMARKS`` parameter
    (``{"modelnet40": PATH, "scanobjectnn": "PATH:obj_bg", ...}``), as ``mmmixlab eval
    --benchmark`` computes it: ``{benchmark label: {run name: EvalResult}}``. Class features
    from ``class_features[name]`` (a ``cat_name_pt_feat.npy``) or the run's text encoder.
    Memoized per (run folder, benchmark) in this process."""
    from ..benchmark_eval import RunModel, evaluate_benchmark, parse_benchmark

    class_features = class_features or {}
    out: dict = {}
    for name, path in (benchmarks or {}).items():
        spec = parse_benchmark(f"{name}={path}")
        file = class_features.get(spec.label, class_features.get(spec.name))
        for run_name, run in runs.items():
            key = (str(run.path), spec.label, str(spec.path), str(file), linear_probe)
            if key not in _BENCH_CACHE:
                model = RunModel.load(run.path, device="cpu")
                _BENCH_CACHE[key] = evaluate_benchmark(model, spec, file, linear_probe,
                                                       keep=True)
            out.setdefault(spec.label, {})[run_name] = _BENCH_CACHE[key]
    return out


def benchmark_confusion(result) -> np.ndarray:
    """Zero-shot confusion matrix of one benchmark result (rows: true class)."""
    pred = (result.point_feats @ result.class_feats.t()).argmax(1).numpy()
    return confusion_matrix(result.labels, pred, len(result.class_names))


def benchmark_retrieval_rows(evals_by_run: dict, num_queries: int = 4, k: int = 5,
                             seed: int = 0) -> dict:
    """PC -> PC retrieval on a benchmark's test set as the gallery: the arguments of
    :func:`mmmixlab.viz.retrieval_grid`, one row per (query, run)."""
    first = next(iter(evals_by_run.values()))
    ds = first.dataset
    rng = np.random.default_rng(seed)
    queries = rng.choice(len(ds), min(num_queries, len(ds)), replace=False)
    rows = {"queries": [], "hits": [], "query_labels": [], "row_labels": []}
    for q in queries:
        for run_name, res in evals_by_run.items():
            top = top_k(res.point_feats[int(q)][None], res.point_feats, k + 1)[0]
            rows["queries"].append(np.asarray(ds.points[int(q)]))
            rows["hits"].append(top[top != int(q)][:k].numpy())
            rows["query_labels"].append(int(res.labels[q]))
            rows["row_labels"].append(run_name)
    gallery = ds.points
    return {"queries": rows["queries"], "hits": np.stack(rows["hits"]),
            "gallery_points": gallery, "gallery_labels": first.labels,
            "query_labels": rows["query_labels"], "class_names": first.class_names,
            "row_labels": rows["row_labels"]}


def released_runs(released: dict | None, device: str = "cpu") -> dict:
    """The notebooks' ``RELEASED`` parameter (``{"OpenShape": "runs/openshape-pointbert",
    "MM-Mixing": "runs/tripletmix-pointbert"}``: run folders made by ``mmmixlab download
    checkpoint`` / ``import-checkpoint``, or trained ones) as ``{label: Run}``, usable wherever
    the notebooks take runs (:func:`benchmark_evals`). ``metrics["released"]`` holds the
    folder's ``released.json`` (source, size, the authors' reported numbers)."""
    from ..released import release_info

    out = {}
    for label, folder in (released or {}).items():
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"RELEASED[{label!r}] = {folder!r}: no such run folder (make "
                                    f"it with `mmmixlab download checkpoint NAME --out {folder}` "
                                    f"or `mmmixlab import-checkpoint model.pt --out {folder}`)")
        cfg, encoders = pipeline.load_run(path, device=device)
        out[label] = Run(path, cfg, {"released": release_info(path) or {}}, encoders)
    return out


def benchmark_hard_samples(evals_by_run: dict, limit: int = 8) -> dict:
    """Figure 3 on a benchmark: shapes the first run gets wrong and the last gets right, as the
    arguments of :func:`mmmixlab.viz.hard_sample_gallery`."""
    names = list(evals_by_run)
    first = evals_by_run[names[0]]
    preds = {n: (r.point_feats @ r.class_feats.t()).argmax(1).numpy()
             for n, r in evals_by_run.items()}
    idx = hard_samples(first.labels, preds[names[0]], preds[names[-1]], first.class_names,
                       limit=limit)
    return {"points": first.dataset.points, "indices": idx, "labels": first.labels,
            "preds": preds, "class_names": first.class_names}


def mix_feature_agreement(encoders: dict, cloud_a, cloud_b, lams=(0.1, 0.3, 0.5, 0.7, 0.9),
                          variant: str = "knn", seed: int = 0):
    """How each encoder sees a mixed cloud: cosine between the feature of the mix,
    ``E(mix(P_a, P_b, lam))``, and the mix of the features, ``lam E(P_a) + (1 - lam) E(P_b)``
    (normalised), per lam; with the cosines of the mix's feature to each parent. The mixed
    cloud is input-mixed (PointCutMix, ``variant``) at the exact ratio ``lam_x``."""
    import pandas as pd
    import torch.nn.functional as F

    from ..mixing import input_mix

    a = torch.as_tensor(np.asarray(cloud_a, dtype=np.float32))[None]
    b = torch.as_tensor(np.asarray(cloud_b, dtype=np.float32))[None]
    rows = {}
    for name, enc in encoders.items():
        enc = enc.eval()
        c = enc.in_channels
        device = next(enc.parameters()).device
        with torch.no_grad():
            fa, fb = (F.normalize(enc(x[..., :c].to(device)).float().cpu(), dim=-1)
                      for x in (a, b))
            for lam in lams:
                g = torch.Generator().manual_seed(seed)
                mixed = input_mix(a, b, torch.tensor([float(lam)]), variant, generator=g)
                lx = float(mixed.lam[0])
                fm = F.normalize(enc(mixed.points[..., :c].to(device)).float().cpu(), dim=-1)
                mix_of = F.normalize(lx * fa + (1 - lx) * fb, dim=-1)
                rows[(name, round(lx, 3))] = {
                    "cos(E(mix), mix of E)": float((fm * mix_of).sum()),
                    "cos(E(mix), E(A))": float((fm * fa).sum()),
                    "cos(E(mix), E(B))": float((fm * fb).sum())}
    table = pd.DataFrame.from_dict(rows, orient="index").round(3)
    table.index.names = ["encoder", "lam_x"]
    return table
