"""Ablations for notebook 08: ``mmmixlab ablate`` results cached per protocol, and their
tables beside the paper's (:data:`mmmixlab.paper.ABLATION_TABLES`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from ..clip import resolve_cache_dir
from ..config import RunConfig
from ..paper import ABLATION_TABLES
from .runs import config_key


def ablation(cfg: RunConfig, variants: Sequence[str], seeds: int, modality_sets=(),
             progress: bool = False, out=None, sweeps: Sequence[str] = (),
             jobs="auto") -> dict:
    """``ablation.ablate`` (what ``mmmixlab ablate`` runs), cached under
    ``cache/ablations/<hash>``: computed results are loaded, not retrained (so are single
    runs of an interrupted plan). ``out``: a folder of ``mmmixlab ablate --out DIR`` instead,
    whose finished runs of the same configs are loaded. ``modality_sets`` are strings like
    ``"T+I"``; ``sweeps`` like ``"mix.mix_prob=0.5,1.0"`` (``mmmixlab ablate --sweep``);
    ``jobs`` as ``mmmixlab ablate --jobs``."""
    from ..ablation import ablate, check_sweeps, parse_sweep, plan_rows, sweep_rows

    names = {"T": "text", "I": "image", "P": "point"}
    sets = [tuple(names[m] for m in s.split("+")) for s in modality_sets]
    swept = check_sweeps(cfg, [parse_sweep(t) for t in sweeps])
    blob = json.dumps([config_key(cfg), list(variants), int(seeds), sets]
                      + ([swept] if swept else []))
    out = Path(out).expanduser() if out else resolve_cache_dir(cfg.cache_dir) / "ablations" / \
        hashlib.sha1(blob.encode()).hexdigest()[:10]
    done = out / "ablation.json"
    wanted = {r[0] for r in sweep_rows(plan_rows(variants, sets), cfg, swept)}
    stored = json.loads(done.read_text()) if done.exists() else {}
    if stored.get("seeds") != list(range(int(seeds))) or not wanted <= set(
            stored.get("summary", {})):
        ablate(cfg, list(variants), list(range(int(seeds))), out, sets, progress=progress,
               sweeps=swept, jobs=jobs)
    return json.loads((out / "ablation.json").read_text())


def protocol_text(result: dict) -> str:
    """The protocol line every ablation table carries (budget, epochs per row, seeds)."""
    from ..ablation import protocol_line

    return (f"{len(result['runs'])} runs. " + protocol_line(result["protocol"])
            + " Means with 95% t intervals over seeds, in %.")


def ablation_summary(result: dict) -> dict:
    """An :func:`ablation` summary where Table 5's T+I+P row, when it was not run apart, is
    the plain ``mm-mixing`` row (the same config)."""
    summary = dict(result["summary"])
    if summary.get("mm-mixing") is not None:
        summary.setdefault("mm-mixing (T+I+P)", summary["mm-mixing"])
    return summary


def ablation_tables(result: dict, metrics=("zs_test_top1", "zs_scan_top1")) -> dict:
    """``{title: DataFrame}`` for Tables 3-5 from an :func:`ablation` result, in %: the mean
    over seeds with its 95% interval, and the paired difference to the baseline with its
    interval (see :func:`ablation_summary` for Table 5's last row)."""
    import pandas as pd

    summary = ablation_summary(result)
    diffs = dict(result.get("diff_vs_baseline", {}))
    if "mm-mixing" in diffs:  # Table 5's T+I+P row is the plain mm-mixing row
        diffs.setdefault("mm-mixing (T+I+P)", diffs["mm-mixing"])
    tables = {}
    for title, rows in ABLATION_TABLES.items():
        data = {}
        for row, label in rows.items():
            if not summary.get(row):
                continue
            cells = {}
            for m in metrics:
                for stat in ("mean", "lo", "hi"):
                    cells[f"{m} {stat}"] = 100 * summary[row][m][stat]
                d = diffs.get(row, {}).get(m)
                if d is not None:
                    cells[f"{m} Δ vs baseline"] = (f"{100 * d['mean']:+.1f} [{100 * d['lo']:+.1f}"
                                                   f", {100 * d['hi']:+.1f}]")
            data[label] = cells
        if data:
            tables[title] = pd.DataFrame.from_dict(data, orient="index").round(1)
    return tables


def sweep_table(result: dict, metrics=("zs_test_top1", "zs_scan_top1")):
    """The swept rows of an :func:`ablation` (``label [field=value]``), in %: mean [95%
    interval], the paired difference to the baseline at the same value and to the same row at
    the default value. None when nothing was swept."""
    import pandas as pd

    rows = [label for label in result["summary"] if " [" in label]
    if not rows:
        return None

    def fmt(d):
        return f"{100 * d['mean']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"

    data = {}
    for label in rows:
        cells = {}
        for m in metrics:
            s = result["summary"][label][m]
            cells[f"{m}"] = f"{100 * s['mean']:.1f} [{100 * s['lo']:.1f}, {100 * s['hi']:.1f}]"
            d = result.get("diff_vs_baseline", {}).get(label, {}).get(m)
            cells[f"{m} Δ vs baseline"] = fmt(d) if d else ""
            cells[f"{m} Δ vs default"] = fmt(result["diff_vs_default"][label][m])
        data[label] = cells
    return pd.DataFrame.from_dict(data, orient="index")
