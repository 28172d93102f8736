"""Helpers the notebooks share: one config for the whole series, one cache, runs trained once.

Every notebook builds its config with :func:`notebook_config` from the same parameters, so
they all hit the same cache entries: the world, the frozen encoders and their features live
under ``cache`` (``pipeline.prepare_world`` caches them), finished runs under
``cache/runs/<variant>-s<seed>-<hash>`` and ablations under ``cache/ablations/<hash>``, where
the hash covers every config field that changes a result. Running the series top to bottom
therefore trains each run once; a later notebook loads its ``final.pt`` and ``metrics.json``.

Smoke mode (``smoke=True``, which the notebooks take from ``MMMIXLAB_SMOKE=1``) shrinks the
world, the frozen-encoder pre-training and the epochs so the whole series runs in CI.

``make strip`` (:mod:`mmmixlab.nbstrip`) removes outputs and saved widget
state before a commit.

The paper's own numbers, shown beside ours, live in :mod:`mmmixlab.paper` (``paper_table``,
``PAPER`` and ``ABLATION_TABLES`` are re-exported here for the notebooks).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import pipeline
from .clip import resolve_cache_dir
from .config import RunConfig, preset
from .data import CONFUSABLE_PAIRS
from .device import resolve_device
from .evaluate import confusion_matrix, most_confused_pairs, zero_shot
from .paper import ABLATION_TABLES
from .paper import PAPER as PAPER  # re-exported: the notebooks read them here
from .paper import paper_table as paper_table
from .train import RESUME_MAY_CHANGE, final_encoder

# What MMMIXLAB_SMOKE=1 changes: 64 train shapes, 1+1 epochs, a few steps of CLIP pre-training
# (and, for Point-BERT backbones, 16 patches of 16 points).
SMOKE_OVERRIDES = {
    "data.synth_train_per_class": 4, "data.synth_test_per_class": 4,
    "data.synth_scan_per_class": 4, "data.synth_points": 512, "data.num_points": 256,
    "clip.tiny_steps": 30, "clip.tiny_batch_size": 32,
    "train.epochs_stage1": 1, "train.epochs_stage2": 1, "train.batch_size": 16,
    "train.warmup_steps": 2,
}
# Fields that do not change what a run learns (the trainer's list): left out of the cache key.
# eval_every stays in: it decides whether the cached history has the per-epoch curves.
_NOT_IN_KEY = {tuple(name.split(".")) for name in RESUME_MAY_CHANGE
               if name != "train.eval_every"} | {("cache_dir", None)}
_WORLDS: dict = {}


def notebook_config(data_root: str | None = None, clip: str = "synth-tiny",
                    backbone: str = "pointbert-tiny", epochs: Sequence[int] = (15, 15),
                    batch_size: int = 64, device: str = "auto", cache: str | None = None,
                    seed: int = 0, smoke: bool = False, **overrides) -> RunConfig:
    """The series' config from the notebook parameters (``tiny`` preset underneath).

    ``clip`` is ``synth-tiny``, ``MODEL/TAG`` (``ViT-B-32/openai``) or ``MODEL//path.pt``.
    Per-epoch zero-shot evaluation is on (``train.eval_every=1``) for the training curves.
    ``smoke`` applies :data:`SMOKE_OVERRIDES` after everything else; ``overrides`` are dotted
    config fields (``**{"mix.beta": 0.4}``).
    """
    if data_root is not None and not Path(data_root).expanduser().exists():
        raise FileNotFoundError(f"DATA_ROOT {data_root!r} does not exist (a triplet folder, a "
                                f"packed store or OpenShape's files; None: the embedded world)")
    model, sep, pretrained = clip.partition("/")
    cache = str(resolve_cache_dir(str(Path(cache).expanduser()) if cache else None))
    updates = {"data.root": None if data_root is None else str(Path(data_root).expanduser()),
               "clip.model": model, "clip.pretrained": pretrained if sep else None,
               "train.encoder": backbone, "train.epochs_stage1": int(epochs[0]),
               "train.epochs_stage2": int(epochs[1]), "train.batch_size": int(batch_size),
               "train.device": device, "train.seed": int(seed), "train.eval_every": 1,
               "cache_dir": cache, **overrides}
    if smoke:
        updates.update(SMOKE_OVERRIDES)
        if backbone.startswith("pointbert"):
            updates["train.encoder_overrides"] = {"num_groups": 16, "group_size": 16}
        elif backbone.startswith("openshape-pointbert"):  # smoke clouds have 256 points
            updates["train.encoder_overrides"] = {"num_patches": 16, "patch_points": 16}
    return preset("tiny").replace(**updates).validate()


def config_key(cfg: RunConfig) -> str:
    """A short hash of every config field that changes a result (not device or cache)."""
    d = cfg.to_dict()
    for section, name in _NOT_IN_KEY:
        if name is None:
            d.pop(section, None)
        else:
            d[section].pop(name, None)
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def get_world(cfg: RunConfig, progress: bool = True) -> pipeline.World:
    """``pipeline.prepare_world``, memoized in this process (its steps are cached on disk)."""
    key = json.dumps([cfg.to_dict()["data"], cfg.to_dict()["clip"], cfg.cache_dir,
                      cfg.train.device], sort_keys=True)
    if key not in _WORLDS:
        _WORLDS[key] = pipeline.prepare_world(cfg, progress=progress)
    return _WORLDS[key]


@dataclass
class Run:
    """A finished run: its folder, config, ``metrics.json`` and trained encoders."""

    path: Path
    cfg: RunConfig
    metrics: dict
    encoders: dict

    @property
    def encoder(self) -> torch.nn.Module:
        """The encoder that is evaluated: B for two-encoder variants, else A."""
        return final_encoder(self.encoders)

    @property
    def history(self) -> list:
        return self.metrics.get("history", [])


def run_dir(cfg: RunConfig) -> Path:
    """Where the run of ``cfg`` lives in the cache."""
    root = resolve_cache_dir(cfg.cache_dir) / "runs"
    return root / f"{cfg.train.variant}-s{cfg.train.seed}-{config_key(cfg)}"


def get_run(cfg: RunConfig, variant: str | None = None,
            on_epoch: Callable[[dict], None] | None = None, progress: bool | None = None,
            retrain: bool = False, **overrides) -> Run:
    """Train ``variant`` once (then reuse it): ``final.pt`` + ``metrics.json`` in the cache.

    ``on_epoch(record)`` is called after every epoch while training (live curves); progress
    bars and per-epoch log lines are shown only without it (``progress=None``). An interrupted
    run resumes from its last checkpoint; ``retrain=True`` deletes the cached run first.
    ``overrides`` are dotted config fields.
    """
    progress = on_epoch is None if progress is None else progress
    updates = dict(overrides)
    if variant is not None:
        updates["train.variant"] = variant
    cfg = cfg.replace(**updates).validate() if updates else cfg
    path = run_dir(cfg)
    if retrain and path.exists():
        shutil.rmtree(path)
    if not ((path / "final.pt").exists() and (path / "metrics.json").exists()):
        pipeline.run(cfg, path, resume=True, progress=progress,
                     world=get_world(cfg, progress), on_epoch=on_epoch)
    _, encoders = pipeline.load_run(path, device=resolve_device(cfg.train.device))
    metrics = json.loads((path / "metrics.json").read_text())
    return Run(path, cfg, metrics, encoders)


def get_runs(cfg: RunConfig, variants: Sequence[str] = ("baseline", "mm-mixing"),
             live: bool = True, retrain: bool = False) -> dict:
    """:func:`get_run` for several variants, ``{variant: Run}``. With ``live``, each run gets a
    :class:`~mmmixlab.viz.LiveCurves` widget (shown in the notebook) that follows its training,
    or draws its stored history when it comes from the cache."""
    from .viz import LiveCurves

    runs = {}
    for variant in variants:
        curves = LiveCurves(f"{variant}: loss, temperature, zero-shot top-1") if live else None
        if curves is not None:
            _display(curves.widget)
        runs[variant] = get_run(cfg, variant, on_epoch=curves, retrain=retrain)
        if curves is not None:
            curves.show_history(runs[variant].history)
    return runs


def _display(obj) -> None:
    try:
        from IPython.display import display
    except ImportError:
        return
    display(obj)


# ---------------------------------------------------------------------------------------------
# Features, predictions, retrieval
# ---------------------------------------------------------------------------------------------

def run_point_features(run: Run, world: pipeline.World) -> dict:
    """Unit 3D features of every split, ``{split: (S, D)}``, cached beside the run."""
    path = run.path / "point_features.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    feats = pipeline.point_features(run.encoder, world, run.cfg)
    torch.save(feats, path)
    return feats


def evaluate(run: Run, world: pipeline.World, encoder: str = "A") -> dict:
    """Metrics of one of a run's encoders (``"A"``: after stage 1), cached beside the run."""
    path = run.path / f"metrics_{encoder}.json"
    if not path.exists():
        pipeline.write_json(pipeline.evaluate_encoder(run.encoders[encoder], world, run.cfg),
                            path)
    return json.loads(path.read_text())


def modality_features(point_feats: dict, world: pipeline.World, split: str) -> dict:
    """``{"point", "image", "text"}`` features of ``split`` (first view, first caption)."""
    f = world.features[split]
    return {"point": point_feats[split], "image": f.image[:, 0], "text": f.text[:, 0]}


def predictions(feats: torch.Tensor, world: pipeline.World, split: str) -> np.ndarray:
    """Zero-shot predicted class per shape of ``split``."""
    zs = zero_shot(feats, world.class_feats, world.splits[split].labels)
    return np.asarray(zs["predictions"])


def confusion(feats: torch.Tensor, world: pipeline.World, split: str) -> np.ndarray:
    """The zero-shot confusion matrix (rows: truth, columns: prediction) of ``split``."""
    return confusion_matrix(world.splits[split].labels, predictions(feats, world, split),
                            len(world.class_names))


def hard_samples(labels, wrong_pred, right_pred, class_names: Sequence[str],
                 limit: int = 8) -> list:
    """Indices that ``wrong_pred`` gets wrong and ``right_pred`` gets right (Figure 3), those
    whose true class is in a confusable pair (table/desk, cup/vase, ...) first."""
    labels = np.asarray(labels)
    hit = np.flatnonzero((np.asarray(wrong_pred) != labels) & (np.asarray(right_pred) == labels))
    hard = {c for pair in CONFUSABLE_PAIRS for c in pair}
    order = sorted(hit, key=lambda i: (class_names[labels[i]] not in hard, i))
    return [int(i) for i in order[:limit]]


def retrieve(queries: torch.Tensor, gallery: torch.Tensor, k: int = 5,
             exclude_self: bool = False) -> np.ndarray:
    """(Q, k) indices of the gallery items most similar (cosine) to each query."""
    q = torch.nn.functional.normalize(torch.as_tensor(queries).float(), dim=-1)
    g = torch.nn.functional.normalize(torch.as_tensor(gallery).float(), dim=-1)
    sims = q @ g.t()
    if exclude_self:
        sims.fill_diagonal_(float("-inf"))
    return sims.topk(min(k, g.shape[0] - int(exclude_self)), dim=1).indices.numpy()


def pick_examples(triplets, n: int = 4) -> list:
    """``n`` shapes from classes spread over the class list (the first shape of each)."""
    labels = np.asarray(triplets.labels)
    classes = np.unique(labels)
    picks = classes[np.linspace(0, len(classes) - 1, min(n, len(classes))).round().astype(int)]
    return [int(np.flatnonzero(labels == c)[0]) for c in picks]


def retrieval_rows(task: str, point_feats: dict, world: pipeline.World, split: str,
                   queries: Sequence[int], k: int = 5) -> dict:
    """Arguments for ``viz.retrieval_grid``: for each method (``{name: {split: feats}}``) and
    query, the query item (cloud, image or caption) and its top-k clouds of ``split``.
    ``task``: ``pc2pc`` (the query left out of the gallery), ``img2pc`` or ``text2pc``."""
    t, f = world.splits[split], world.features[split]
    items, hits, row_labels, qlabels = [], [], [], []
    for name, feats in point_feats.items():
        gallery = feats[split]
        q = {"pc2pc": gallery, "img2pc": f.image[:, 0], "text2pc": f.text[:, 0]}[task]
        top = retrieve(q, gallery, k + (task == "pc2pc"))
        for i in queries:
            row = [h for h in top[i] if task != "pc2pc" or h != i][:k]
            items.append({"pc2pc": t.points[i], "img2pc": t.images[i, 0],
                          "text2pc": (t.captions[i] or [""])[0]}[task])
            hits.append(row)
            row_labels.append(name)
            qlabels.append(int(t.labels[i]))
    return {"queries": items, "hits": np.asarray(hits), "query_labels": qlabels,
                "row_labels": row_labels, "gallery_points": t.points, "gallery_labels": t.labels,
                "class_names": world.class_names}


def confusable_pair(triplets) -> tuple:
    """Indices of one shape from each class of the first confusable pair in ``triplets``."""
    names = list(triplets.class_names)
    labels = np.asarray(triplets.labels)
    for a, b in CONFUSABLE_PAIRS:
        if a in names and b in names:
            return (int(np.flatnonzero(labels == names.index(a))[0]),
                    int(np.flatnonzero(labels == names.index(b))[0]))
    return 0, min(1, len(labels) - 1)


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

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


def per_class_table(runs: dict, split: str = "test"):
    """Zero-shot accuracy (%) per class (rows) and method (columns) on ``split``."""
    import pandas as pd

    return (100 * pd.DataFrame({name: m["zero_shot"][split]["per_class"]
                                for name, m in runs.items()})).round(1)


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


def ablation(cfg: RunConfig, variants: Sequence[str], seeds: int, modality_sets=(),
             progress: bool = False, out=None) -> dict:
    """``ablation.ablate`` (what ``mmmixlab ablate`` runs), cached under
    ``cache/ablations/<hash>``: computed results are loaded, not retrained (so are single
    runs of an interrupted plan). ``out``: a folder of ``mmmixlab ablate --out DIR`` instead,
    whose finished runs of the same configs are loaded. ``modality_sets`` are strings like
    ``"T+I"``."""
    from .ablation import ablate, plan_rows

    names = {"T": "text", "I": "image", "P": "point"}
    sets = [tuple(names[m] for m in s.split("+")) for s in modality_sets]
    blob = json.dumps([config_key(cfg), list(variants), int(seeds), sets])
    out = Path(out).expanduser() if out else resolve_cache_dir(cfg.cache_dir) / "ablations" / \
        hashlib.sha1(blob.encode()).hexdigest()[:10]
    done = out / "ablation.json"
    wanted = {label for label, _, _ in plan_rows(variants, sets)}
    stored = json.loads(done.read_text()) if done.exists() else {}
    if stored.get("seeds") != list(range(int(seeds))) or not wanted <= set(
            stored.get("summary", {})):
        ablate(cfg, list(variants), list(range(int(seeds))), out, sets, progress=progress)
    return json.loads((out / "ablation.json").read_text())


def protocol_text(result: dict) -> str:
    """The protocol line every ablation table carries (budget, epochs per row, seeds)."""
    from .ablation import protocol_line

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


# ---------------------------------------------------------------------------------- benchmarks
_BENCH_CACHE: dict = {}


def benchmark_evals(runs: dict, benchmarks: dict, class_features: dict | None = None,
                    linear_probe: bool = False) -> dict:
    """Each run on each benchmark of the notebooks' ``BENCHMARKS`` parameter
    (``{"modelnet40": PATH, "scanobjectnn": "PATH:obj_bg", ...}``), as ``mmmixlab eval
    --benchmark`` computes it: ``{benchmark label: {run name: EvalResult}}``. Class features
    from ``class_features[name]`` (a ``cat_name_pt_feat.npy``) or the run's text encoder.
    Memoized per (run folder, benchmark) in this process."""
    from .benchmark_eval import RunModel, evaluate_benchmark, parse_benchmark

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
            sims = res.point_feats @ res.point_feats[q]
            sims[q] = float("-inf")
            rows["queries"].append(np.asarray(ds.points[int(q)]))
            rows["hits"].append(sims.topk(k).indices.numpy())
            rows["query_labels"].append(int(res.labels[q]))
            rows["row_labels"].append(run_name)
    gallery = ds.points
    return {"queries": rows["queries"], "hits": np.stack(rows["hits"]),
            "gallery_points": gallery, "gallery_labels": first.labels,
            "query_labels": rows["query_labels"], "class_names": first.class_names,
            "row_labels": rows["row_labels"]}


# ---------------------------------------------------------------------------------- one step
def one_step(run: Run, world: pipeline.World, phase: str = "stage1", rows: int = 8,
             seed: int = 0, batch=None, draw_state=None) -> dict:
    """What one training step of ``phase`` computes, with the run's trained encoders (in eval
    mode), through the trainer's own phase object (:mod:`mmmixlab.objectives`): the batch's
    pairs and ratios (``pairs``; ``lam_x`` only where points are mixed), the features the loss
    aligns (``features``: ``mixed`` / ``plain`` rows of the judged encoder, and the stage-2
    point ``target``), the :class:`~mmmixlab.objectives.Alignment` (``alignment``), the logit
    ``scale``, the phase's ``terms`` and ``loss``; and ``trainer_loss``, the trainer's
    ``compute_loss`` of the same batch and draw (equal, bit for bit on CPU). ``batch`` and
    ``draw_state`` (the trainer's local generator state) replay a given step instead of
    ``rows`` random training shapes and a fresh draw."""
    import pandas as pd

    from .objectives import Stage2
    from .train import Trainer

    cfg = run.cfg.replace(**{"train.device": "cpu"})
    trainer = Trainer(cfg, pipeline.training_batches(cfg, world), embed_dim=world.dim,
                      progress=False)
    for name, enc in trainer.encoders.items():
        enc.load_state_dict(run.encoders[name].state_dict())
        enc.eval()  # no dropout: the features shown are the ones the loss below uses
    step = next((p for p in trainer.phases if p.name == phase), None)
    if step is None:
        raise ValueError(f"run {run.path.name} has no phase {phase!r}; it has "
                         f"{[p.name for p in trainer.phases]}")
    if batch is None:
        g = torch.Generator().manual_seed(seed)
        batch = trainer.batches.make_batch(torch.randperm(len(world.splits["train"]),
                                                          generator=g)[:rows], g)
    if draw_state is not None:
        trainer.local_generator.set_state(draw_state)
    state = trainer.local_generator.get_state()
    scales = {n: s() for n, s in trainer.logit_scales.items()}
    with torch.no_grad():
        plan = step.plan(batch, trainer)
        feats = {n: trainer.encode(n, x) for n, x in plan.inputs.items()}
        loss, terms = step.loss(plan, feats, scales, trainer)
        anchors = step.anchors(plan, feats)
        target = step.point_target(plan, feats, trainer) if isinstance(step, Stage2) else None
        trainer.local_generator.set_state(state)  # the trainer's own step replays the draw
        trainer_loss, _ = trainer.compute_loss(phase, batch)
    al = plan.alignment
    labels, names = world.splits["train"].labels, world.class_names
    table = {"shape": [names[labels[i]] for i in batch.index.tolist()]}
    if step.mixes:
        table["partner"] = [names[labels[batch.index[j]]] for j in al.partner.tolist()]
        table["lam (features)"] = al.lam.tolist()
    if al.lam_x is not None and al.lam_x is not al.lam:  # input-mixed: the exact ratio kept
        table["lam_x (points kept)"] = al.lam_x.tolist()
    return {"pairs": pd.DataFrame(table).round(3), "alignment": al, "phase": step,
            "scale": scales[step.evaluated], "features": {**anchors, "target": target},
            "terms": {k: float(v) for k, v in terms.items()}, "loss": float(loss),
            "trainer_loss": float(trainer_loss)}


# ---------------------------------------------------------------------------------- released
def released_runs(released: dict | None, device: str = "cpu") -> dict:
    """The notebooks' ``RELEASED`` parameter (``{"OpenShape": "runs/openshape-pointbert",
    "MM-Mixing": "runs/tripletmix-pointbert"}``: run folders made by ``mmmixlab download
    checkpoint`` / ``import-checkpoint``, or trained ones) as ``{label: Run}``, usable wherever
    the notebooks take runs (:func:`benchmark_evals`). ``metrics["released"]`` holds the
    folder's ``released.json`` (source, size, the authors' reported numbers)."""
    from .released import release_info

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

    from .mixing import input_mix

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
