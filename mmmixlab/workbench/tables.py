"""The notebooks' tables (pandas DataFrames, numbers in %): results per method, confused
pairs, the world and its features, benchmarks, released models beside their reported numbers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import pipeline
from ..clip import resolve_cache_dir
from ..config import RunConfig
from ..data import CONFUSABLE_PAIRS
from ..evaluate import most_confused_pairs


SPLIT_NAMES = {"test": "test (ModelNet40-like)", "scan": "scan (ScanObjectNN-like)"}


def results_table(runs: dict, kind: str = "zero_shot"):
    """Rows: methods (``{name: metrics}``), columns: split (or task) x metric, in %.
    ``kind``: ``zero_shot`` (top-1/3/5), ``linear_probe`` (accuracy) or ``retrieval`` (R@k)."""
    import pandas as pd

    keys = {"zero_shot": ("top1", "top3", "top5"), "linear_probe": ("accuracy",),
            "retrieval": ("R@1", "R@5", "R@10")}[kind]
    order = ["test", "scan", "pc2pc", "img2pc", "text2pc"]
    rows = {}
    for name, metrics in runs.items():
        parts = sorted(metrics[kind], key=lambda s: (order.index(s) if s in order else 99, s))
        rows[name] = {(SPLIT_NAMES.get(s, s), k): 100 * metrics[kind][s][k]
                      for s in parts for k in keys if k in metrics[kind][s]}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table.round(1)


def confused_pairs_table(matrices: dict, class_names: Sequence[str], top: int = 5):
    """The most confused (true, predicted) class pairs of each method's confusion matrix."""
    import pandas as pd

    rows = [{"method": name, "true": a, "predicted": b, "errors": n,
             "confusable pair": (a, b) in CONFUSABLE_PAIRS or (b, a) in CONFUSABLE_PAIRS}
            for name, cm in matrices.items()
            for a, b, n in most_confused_pairs(cm, class_names, top)]
    return pd.DataFrame(rows)


def world_table(world: pipeline.World):
    """One row per split: shapes, points per shape, views, image size, captions, classes."""
    import pandas as pd

    rows = {s: {"shapes": len(t), "points per shape": t.num_points, "views": t.num_views,
                "image size": t.image_size,
                "captions per shape": round(float(np.mean([len(c) for c in t.captions])), 2),
                "classes": len(t.class_names or [])} for s, t in world.splits.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def feature_table(world: pipeline.World, cfg: RunConfig):
    """Shapes of the cached frozen features per split, and the file each is cached in."""
    import pandas as pd

    folder = resolve_cache_dir(cfg.cache_dir) / "features" / world.key / world.clip.key
    rows = {s: {"image features (S, views, D)": tuple(f.image.shape),
                "text features (S, captions, D)": tuple(f.text.shape),
                "captions present": int(f.text_mask.sum()), "file": str(folder / f"{s}.pt")}
            for s, f in world.features.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def benchmark_table(evals: dict):
    """Table 1 (and 2) shaped: rows (benchmark, run), zero-shot top-1/3/5, mean class accuracy
    and, where fitted, the linear probe, in %."""
    import pandas as pd

    rows = {}
    for label, by_run in evals.items():
        for run_name, res in by_run.items():
            m = res.metrics
            zs = m["zero_shot"]
            row = {"shapes": m["num_shapes"], "top1": 100 * zs["top1"],
                   "top3": 100 * zs["top3"], "top5": 100 * zs["top5"],
                   "mean class acc": 100 * zs["mean_class_accuracy"]}
            if "accuracy" in (m.get("linear_probe") or {}):
                row["linear probe"] = 100 * m["linear_probe"]["accuracy"]
            for task, r in m["retrieval"].items():
                row[f"{task} R@1"] = 100 * r["R@1"]
            rows[(label, run_name)] = row
    return pd.DataFrame.from_dict(rows, orient="index").round(1)


def released_table(evals: dict, runs: dict):
    """:func:`benchmark_table` of released runs with the zero-shot top-1 their authors report
    for each checkpoint (``reported top1``, %) and our measurement minus it."""
    table = benchmark_table(evals)
    reported = []
    for label, run_name in table.index:
        bench = next(iter(evals[label].values())).metrics["benchmark"]
        info = runs[run_name].metrics.get("released", {})
        reported.append(info.get("reported_zero_shot_top1", {}).get(bench, float("nan")))
    table.insert(1, "reported top1", reported)
    table.insert(2, "measured - reported", (table["top1"] - table["reported top1"]).round(1))
    return table
