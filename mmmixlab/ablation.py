"""The paper's ablations (Tables 3, 4 and 5) as a protocol with paired seeds and intervals.

``ablate`` trains every (row, seed) of a plan on one world, evaluates each run, and reports per
row and metric the mean over seeds with its 95% t interval, and the paired difference to the
baseline with its interval (:mod:`mmmixlab.stats`). Rows: the variants (Table 3: baseline, fm,
im, mm-mixing; Table 4: one-stage vs mm-mixing; the control ``baseline-2x``) and, for each
modality set, mm-mixing with only those loss terms (Table 5).

The protocol (budget, epochs per stage and per row, seeds, the mixing reading) is printed with
every table and stored in ``ablation.json``; an output folder holding another protocol is
refused, never mixed into one table. A run whose folder already holds its ``metrics.json`` for
the same config is loaded, not retrained, so an interrupted ablation continues where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from .config import FAITHFUL, RunConfig
from .run_pool import Task, resolve_jobs, run_tasks
from .pipeline import frozen_encoder_quality, prepare_world, run, write_json
from .stats import mean_interval, paired_difference
from .train import plan_phases

__all__ = ["HEADLINE", "ablate", "ablation_markdown", "check_sweeps", "find_converged_epochs",
           "parse_sweep", "protocol_of", "sweep_rows"]

HEADLINE = {
    "zs_test_top1": ("zero_shot", "test", "top1"),
    "zs_test_top5": ("zero_shot", "test", "top5"),
    "zs_scan_top1": ("zero_shot", "scan", "top1"),
    "zs_scan_top5": ("zero_shot", "scan", "top5"),
    "lp_test": ("linear_probe", "test", "accuracy"),
    "lp_scan": ("linear_probe", "scan", "accuracy"),
    "text2pc_R@1": ("retrieval", "text2pc", "R@1"),
    "img2pc_R@1": ("retrieval", "img2pc", "R@1"),
}


def _short(modality: str) -> str:
    return {"text": "T", "image": "I", "point": "P"}[modality]


def headline(metrics: dict) -> dict:
    out = {}
    for name, (a, b, c) in HEADLINE.items():
        if b in metrics.get(a, {}):
            out[name] = metrics[a][b][c]
    return out


def plan_rows(variants: Sequence[str], modality_sets: Sequence[tuple] = ()) -> list:
    """(label, variant, modalities or None) per row."""
    rows = [(v, v, None) for v in variants]
    rows += [(f"mm-mixing ({'+'.join(_short(m) for m in ms)})", "mm-mixing", tuple(ms))
             for ms in modality_sets]
    return rows


# What a sweep may not vary: the protocol's core (a row's epochs, network, batch) and what
# makes the world or the frozen encoders (rows would no longer be paired).
SWEEP_REFUSED = ("train.epochs_stage1", "train.epochs_stage2", "train.budget",
                 "train.encoder", "train.encoder_overrides", "train.batch_size",
                 "train.variant", "train.seed", "train.stage1_checkpoint", "train.init_from",
                 "data.root", "data.split", "data.synth_", "clip.", "cache_dir")


def _value_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def parse_sweep(text: str) -> tuple[str, list]:
    """``FIELD=V1,V2[,...]`` -> (field, values); values are JSON where they parse
    (``true``, ``0.5``), else strings (``fps``)."""
    field, eq, rest = text.partition("=")
    values = [v.strip() for v in rest.split(",") if v.strip()]
    if not eq or not field.strip() or len(values) < 1:
        raise ValueError(f"--sweep expects FIELD=V1,V2[,...], got {text!r}")
    parsed = []
    for v in values:
        try:
            parsed.append(json.loads(v))
        except json.JSONDecodeError:
            parsed.append(v)
    return field.strip(), parsed


def check_sweeps(base: RunConfig, sweeps) -> list:
    """The sweeps, each ``(field, values)`` checked: a known config field outside the
    protocol's core, every value of its type and valid. One-line errors name both."""
    out = []
    for field, values in sweeps:
        refused = next((r for r in SWEEP_REFUSED if field == r or (r.endswith(("_", "."))
                                                                    and field.startswith(r))),
                       None)
        if refused:
            raise ValueError(f"--sweep {field}: refused, it changes the protocol's core (epochs, "
                             f"network, batch) or the world and frozen encoders the rows are "
                             f"paired on; run another ablation for it")
        for value in values:
            try:
                base.replace(**{field: value}).validate()
            except ValueError as err:
                raise ValueError(f"--sweep {field}={_value_text(value)}: {err}") from None
        out.append((field, list(values)))
    return out


def sweep_rows(rows: list, base: RunConfig, sweeps) -> list:
    """``(label, variant, modalities, overrides)`` per row: the plan's rows at the defaults,
    then, for each swept value that is not the default, every row again labelled
    ``label [field=value]``."""
    out = [(label, v, m, {}) for label, v, m in rows]
    for field, values in sweeps:
        section, _, key = field.partition(".")
        default = base.to_dict()[section][key]
        for value in values:
            if json.dumps(value) == json.dumps(default):
                continue  # the default rows are this value
            out += [(f"{label} [{field}={_value_text(value)}]", v, m, {field: value})
                    for label, v, m in rows]
    return out


def protocol_of(base: RunConfig, variants, seeds, modality_sets=()) -> dict:
    """Everything that decides what a row's numbers mean; stored with every table."""
    tc = base.train
    epochs = {label: [[p.name, p.epochs] for p in plan_phases(v, tc.epochs_stage1,
                                                              tc.epochs_stage2, tc.budget)]
              for label, v, _ in plan_rows(variants, modality_sets)}
    faithful = all(base.to_dict()[k.split(".")[0]][k.split(".")[1]] == v
                   for k, v in FAITHFUL.items())
    return {"budget": tc.budget, "epochs_stage1": tc.epochs_stage1,
            "epochs_stage2": tc.epochs_stage2, "epochs": epochs, "seeds": list(seeds),
            "reading": "faithful (paper: mixed terms only, FPS)" if faithful else
            "mmmixlab defaults (unmixed terms averaged in, random subsets)",
            "mix": base.to_dict()["mix"], "sampling": base.data.sampling,
            "encoder": tc.encoder, "batch_size": tc.batch_size}


def protocol_line(protocol: dict) -> str:
    e = protocol["epochs"]
    plan = "; ".join(f"{label} " + "+".join(str(n) for _, n in phases)
                     for label, phases in e.items())
    scope = protocol.get("mix", {}).get("modality_scope", "both")
    table5 = (f" Table 5 rows drop their terms in "
              f"{'both stages' if scope == 'both' else 'stage 2 only'} (mix.modality_scope="
              f"{scope})." if any("(" in label for label in e) else "")
    swept = protocol.get("sweeps") or {}
    sweeps = (" Swept (every row again, same seeds): " + "; ".join(
        f"{f} = {', '.join(_value_text(v) for v in vals)}" for f, vals in swept.items()) + "."
        if swept else "")
    return (f"Protocol: budget {protocol['budget']} (epochs per row: {plan}); "
            f"{len(protocol['seeds'])} paired seeds {protocol['seeds']}; {protocol['reading']}; "
            f"encoder {protocol['encoder']}, batch {protocol['batch_size']}.{table5}{sweeps}")


# An epoch's cost by phase relative to a baseline epoch, only to start a plan's longest runs
# first (run_pool.longest_chain_first): encoder passes per step (B on mixed and unmixed
# clouds, A's no-grad targets), as measured per epoch on one thread beside another run
# (benchmarks/RESULTS.md: 3.47 / 3.94 / 7.28 / 8.04 / 10.21 s on the Zen 3 VM).
EPOCH_COST = {"baseline": 1.0, "stage1": 1.1, "im": 2.1, "stage2": 2.3, "joint": 2.9}


def estimate_seconds(base: RunConfig, world, rows, seeds, jobs: int = 1) -> float:
    """Seconds the plan should take, from one measured step of each phase it uses, at the
    thread count each of ``jobs`` parallel runs gets (runs spread evenly over the jobs)."""
    import torch

    from .run_pool import available_cores

    from .pipeline import training_batches
    from .train import Trainer

    step = {}
    threads = torch.get_num_threads()
    if jobs > 1:
        torch.set_num_threads(base.train.num_threads or max(1, available_cores() // jobs))
    for _, variant, _ in rows:
        cfg = base.replace(**{"train.variant": variant})
        trainer = Trainer(cfg, training_batches(cfg, world), embed_dim=world.dim, progress=False)
        batch = trainer.batches.make_batch(torch.arange(trainer.batches.batch_size),
                                           torch.Generator().manual_seed(0))
        for phase in trainer.phases:
            if phase.name in step:
                continue
            times = []
            for _ in range(2):  # the first step pays for lazy set-up
                t = time.perf_counter()
                trainer._forward_backward(phase, batch)
                times.append(time.perf_counter() - t)
            step[phase.name] = times[-1] * 1.15  # optimizer step, batching, logging
    torch.set_num_threads(threads)
    steps = len(training_batches(base, world))
    tc = base.train
    total = sum(step[p.name] * p.epochs * steps
                for _, v, _ in rows
                for p in plan_phases(v, tc.epochs_stage1, tc.epochs_stage2, tc.budget))
    return total * len(seeds) / jobs


def _same_result_config(a: dict, b: dict) -> bool:
    """Configs equal in every field that changes a result (device, threads, logging and
    evaluation intervals, and the cache folder may differ), after a JSON round trip."""
    from .train import RESUME_MAY_CHANGE, _config_diff

    a, b = json.loads(json.dumps(a)), json.loads(json.dumps(b))
    return not _config_diff(a, b, ignore=RESUME_MAY_CHANGE + ("cache_dir",))


def _same_frozen_encoders(done: dict, quality: dict) -> bool:
    """The run was trained against the same frozen encoders (same features digest; runs
    written before the digest existed are matched on their frozen encoders' exact accuracies)."""
    theirs = done.get("frozen_encoders", {})
    if "digest" in theirs:
        return theirs["digest"] == quality["digest"]
    return all(theirs.get(k) == quality[k] for k in ("caption_top1", "image_top1"))


def _exact_stage1_reuse(folder: Path) -> bool:
    """The run in ``folder`` took its stage 1 from another run and continued its random
    streams (``stage1.json``): its results are those of the full run."""
    record = folder / "stage1.json"
    return record.is_file() and json.loads(record.read_text()).get("streams", "").startswith(
        "continued from")


def _finished(cfg: RunConfig, folder: Path, quality: dict) -> dict | None:
    """``metrics.json`` of a finished run in ``folder`` of the same config (up to a stage 1
    reused exactly) and the same frozen encoders, else None."""
    metrics_path = folder / "metrics.json"
    if not metrics_path.exists():
        return None
    done = json.loads(metrics_path.read_text())
    theirs = json.loads(json.dumps(done.get("config", {})))
    if _exact_stage1_reuse(folder):
        theirs.setdefault("train", {})["stage1_checkpoint"] = cfg.train.stage1_checkpoint
    if _same_result_config(theirs, cfg.to_dict()) and _same_frozen_encoders(done, quality):
        return done
    return None


def _load_or_run(cfg: RunConfig, folder: Path, world, progress: bool,
                 quality: dict | None = None, stage1_from: Path | None = None,
                 mm_folder: Path | None = None) -> dict:
    """A finished run of the same config and the same frozen encoders in ``folder`` is loaded
    (e.g. one ``mmmixlab ablate`` computed for the notebook); anything else is trained (a run
    against other frozen encoders, e.g. a cache rebuilt elsewhere, would not be paired).
    ``stage1_from``: a finished ``fm`` run whose stage 1 an ``mm-mixing`` run takes instead
    of training it again (bit for bit the same run: see ``Trainer._stage1_end_state``);
    ``mm_folder``: a finished ``mm-mixing`` run whose stage-1 encoder an ``fm`` run is."""
    quality = quality if quality is not None else frozen_encoder_quality(world)
    done = _finished(cfg, folder, quality)
    if done is not None:
        return done
    if mm_folder is not None:
        made = _fm_from_mm_mixing(cfg, folder, mm_folder, world, quality)
        if made is not None:
            return made
    if stage1_from is not None:
        cfg = cfg.replace(**{"train.stage1_checkpoint": str(stage1_from)})
    return run(cfg, folder, progress=progress, world=world)


def _ablation_run(world, cfg: dict, folder: Path, progress: bool, quality: dict,
                  fm_folder: Path | None, mm_folder: Path | None) -> dict:
    """One (row, seed) of a plan, in this process or a :mod:`~mmmixlab.run_pool` worker:
    loaded when finished, else trained (with its seed's fm run as stage 1 when there is one)."""
    cfg = RunConfig.from_dict(cfg)
    stage1_from = _stage1_source(cfg, fm_folder, quality) if fm_folder is not None else None
    return _load_or_run(cfg, folder, world, progress, quality, stage1_from, mm_folder)


def _fm_from_mm_mixing(cfg: RunConfig, folder: Path, mm_folder: Path, world,
                       quality: dict) -> dict | None:
    """The reverse of :func:`_stage1_source`: an ``fm`` run written from a finished
    ``mm-mixing`` run of the same seed and stage-1 config (its A is the stage-1 encoder, frozen
    in stage 2): A, its logit scale and the stage-1 history saved as the fm run and evaluated,
    nothing trained. None when there is no such run."""
    from .checkpoints import encoders_of_state, read_run_state, save_final
    from .losses import LogitScale
    from .pipeline import evaluate_encoder
    from .train import TrainResult

    mm = cfg.replace(**{"train.variant": "mm-mixing"})
    done = _finished(mm, mm_folder, quality)
    if cfg.train.variant != "fm" or done is None:
        return None
    state, path = read_run_state(mm_folder)
    _, encoders = encoders_of_state(state, path, names=["A"])
    scale = LogitScale()
    if "A" in state.get("logit_scales", {}):
        scale.load_state_dict(state["logit_scales"]["A"])
    history = [h for h in state.get("history", done.get("history", []))
               if h.get("phase") == "stage1"]
    result = TrainResult({"A": encoders["A"]}, {"A": scale}, history, 0.0,
                         int(state["embed_dim"]))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(cfg.to_json())
    save_final(result, cfg, folder / "final.pt")
    metrics = evaluate_encoder(encoders["A"], world, cfg)
    metrics.update(frozen_encoders=quality, history=history, config=cfg.to_dict(),
                   world=world.key, ranks=1, seconds={"train": 0.0},
                   stage1_of=str(mm_folder), precision=done.get("precision", "fp32"))
    write_json(metrics, folder / "metrics.json")
    return metrics


def _stage1_source(cfg: RunConfig, fm_folder: Path, quality: dict) -> Path | None:
    """The finished fm run of the same seed and stage-1 config, with its phase-boundary
    checkpoint, that an mm-mixing run can continue from; else None."""
    if cfg.train.variant != "mm-mixing" or cfg.train.stage1_checkpoint:
        return None
    fm = cfg.replace(**{"train.variant": "fm"})
    ok = (_finished(fm, fm_folder, quality) is not None and (fm_folder / "final.pt").is_file()
          and (fm_folder / "checkpoints" / "last.pt").is_file())
    return fm_folder if ok else None


def ablate(base: RunConfig, variants: Sequence[str], seeds: Sequence[int], out_dir,
           modality_sets: Sequence[tuple] = (), progress: bool = False,
           announce: bool = True, sweeps=(), jobs="auto") -> dict:
    """Train and evaluate every (row, seed); write ``ablation.json`` and ``ablation.md``.

    ``jobs``: runs trained at once, each in its own process with ``cores // jobs`` threads
    (:mod:`mmmixlab.run_pool`); ``"auto"`` is one per core on a CPU with the tiny world, 1 on
    a GPU. The results are the same for any ``jobs`` when ``train.num_threads`` is fixed;
    otherwise each run's numbers depend on its thread count, as any torch run's do.

    ``sweeps``: ``[(field, values)]`` (``--sweep FIELD=V1,V2``): every row again at each value,
    with the same paired seeds, world and frozen encoders, differing only in that field.
    Returns ``{"runs", "summary": {row: {metric: {mean, sd, lo, hi, n}}}, "diff_vs_baseline":
    {row: {metric: {mean, lo, hi, sd, n}}}`` (a swept row against the baseline at the same
    value), ``"diff_vs_default"`` (a swept row against itself at the default), ``"protocol"``.
    """
    sweeps = check_sweeps(base, sweeps)
    seeds = list(seeds)
    if len(seeds) < 2:
        raise ValueError(f"intervals over seeds need at least 2 seeds, got {len(seeds)}")
    out_dir = Path(out_dir)
    protocol = protocol_of(base, variants, seeds, modality_sets)
    protocol["sweeps"] = {f: v for f, v in sweeps}
    previous = out_dir / "ablation.json"
    if previous.exists():
        old = json.loads(previous.read_text()).get("protocol") or {}
        core = ("budget", "epochs_stage1", "epochs_stage2", "reading", "mix", "sampling",
                "encoder", "batch_size")  # rows and seeds may grow; these may not change
        new = json.loads(json.dumps(protocol))
        old = dict(old, mix={**new["mix"], **(old.get("mix") or {})}) if "mix" in old else old
        # (mix fields added since the folder was written take their defaults, which new has)
        if {k: old.get(k) for k in core} != {k: new[k] for k in core}:
            raise ValueError(f"{out_dir} holds an ablation of another protocol ({previous}); "
                             f"choose a new --out folder rather than mixing protocols in one "
                             f"table")
    plain = plan_rows(variants, modality_sets)
    rows = sweep_rows(plain, base, sweeps)
    jobs = resolve_jobs(jobs, base, len(rows) * len(seeds))  # a bad --jobs before any work
    out_dir.mkdir(parents=True, exist_ok=True)
    world = prepare_world(base, progress=progress)
    quality = frozen_encoder_quality(world)
    if announce:
        est = estimate_seconds(base, world, [r[:3] for r in rows], seeds, jobs)
        print(f"ablation plan: {len(rows)} rows x {len(seeds)} seeds = {len(rows) * len(seeds)} "
              f"runs, {jobs} at a time, about {duration_text(est)} here (from a measured step "
              f"of each phase)\n" + protocol_line(protocol), flush=True)
    # fm first: each mm-mixing run then takes its seed's fm run as stage 1 (the same stage 1,
    # trained once; the result is bit for bit the full run's), so it waits for that run
    labels = [r[0] for r in rows]
    rows = sorted(rows, key=lambda r: r[1] != "fm")
    fm_labels = {json.dumps(o, sort_keys=True): label for label, v, m, o in rows
                 if v == "fm" and m is None}
    mm_labels = {json.dumps(o, sort_keys=True): label for label, v, m, o in rows
                 if v == "mm-mixing" and m is None}
    tasks, row_seed = [], {}
    for label, variant, mods, overrides in rows:
        key = json.dumps(overrides, sort_keys=True)
        fm_label = fm_labels.get(key) if variant == "mm-mixing" and mods is None else None
        mm_label = mm_labels.get(key) if variant == "fm" else None
        for seed in seeds:
            cfg = base.replace(**{"train.variant": variant, "train.seed": seed, **overrides})
            if mods is not None:
                cfg = cfg.replace(**{"mix.modalities": mods})
            fm_folder = out_dir / f"{_slug(fm_label)}-seed{seed}" if fm_label else None
            row_seed[f"{label} seed {seed}"] = (label, seed)
            phases = plan_phases(variant, cfg.train.epochs_stage1, cfg.train.epochs_stage2,
                                 cfg.train.budget)
            if fm_label:  # stage 1 is the fm run's
                phases = [p for p in phases if p.name != "stage1"]
            tasks.append(Task(
                f"{label} seed {seed}", _ablation_run,
                {"cfg": cfg.to_dict(), "folder": out_dir / f"{_slug(label)}-seed{seed}",
                 "progress": progress and jobs == 1, "quality": quality,
                 "fm_folder": fm_folder,
                 "mm_folder": out_dir / f"{_slug(mm_label)}-seed{seed}" if mm_label else None},
                after=f"{fm_label} seed {seed}" if fm_label else None,
                cost=sum(EPOCH_COST[p.name] * p.epochs for p in phases)))
    by_key = {}
    for key, metrics in run_tasks(tasks, jobs, base, world):
        by_key[key] = headline(metrics)
        label, seed = row_seed[key]
        print(f"{label:24s} seed {seed}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in by_key[key].items()), flush=True)
    runs = [{"row": row_seed[t.key][0], "seed": row_seed[t.key][1], "metrics": by_key[t.key]}
            for t in tasks]
    summary, diffs = summarize_runs(runs, labels, seeds)
    to_default = {label: {k: paired_difference(
                      [r["metrics"][k] for r in runs if r["row"] == label],
                      [r["metrics"][k] for r in runs if r["row"] == label.split(" [")[0]])
                      for k in summary[label]}
                  for label in labels if " [" in label}
    result = {"runs": runs, "summary": summary, "diff_vs_baseline": diffs,
              "diff_vs_default": to_default, "seeds": seeds,
              "protocol": protocol, "world": world.key,
              "frozen_encoders": quality, "config": base.to_dict()}
    write_json(result, out_dir / "ablation.json")
    (out_dir / "ablation.md").write_text(ablation_markdown(result))
    return result


def duration_text(seconds: float) -> str:
    """``48 s``, ``7 min``, ``2.5 h``: a plan's estimate in the unit that reads."""
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _slug(label: str) -> str:
    return label.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "")


def summarize_runs(runs: list, labels: Sequence[str], seeds: Sequence[int]):
    by = {(r["row"], r["seed"]): r["metrics"] for r in runs}
    summary, diffs = {}, {}
    for label in labels:
        vals = [by[(label, s)] for s in seeds]
        summary[label] = {k: mean_interval([v[k] for v in vals]) for k in vals[0]}
        suffix = label[label.index(" ["):] if " [" in label else ""
        baseline = "baseline" + suffix  # the baseline at the same swept value
        if baseline in labels and label != baseline:
            base = [by[(baseline, s)] for s in seeds]
            diffs[label] = {k: paired_difference([v[k] for v in vals], [b[k] for b in base])
                            for k in vals[0] if k in base[0]}
    return summary, diffs


def ablation_markdown(result: dict, metrics: Sequence[str] | None = None) -> str:
    """Per row: mean [95% interval] over seeds in %, and the paired difference to the baseline
    ``+2.1 [0.4, 3.8]`` (an interval that excludes 0 is a difference these seeds resolve)."""
    summary, diffs = result["summary"], result.get("diff_vs_baseline", {})
    cols = list(metrics or next(iter(summary.values())).keys())
    lines = [protocol_line(result["protocol"]), "",
             "Mean [95% t interval] over seeds, and the paired difference to the baseline, in "
             "points (%).", "",
             "| run | " + " | ".join(f"{c} | Δ {c}" for c in cols) + " |",
             "|---" * (2 * len(cols) + 1) + "|"]
    for label, stats in summary.items():
        cells = []
        for c in cols:
            s = stats[c]
            cells.append(f"{100 * s['mean']:.1f} [{100 * s['lo']:.1f}, {100 * s['hi']:.1f}]")
            d = diffs.get(label, {}).get(c)
            cells.append("" if d is None else
                         f"{100 * d['mean']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    to_default = result.get("diff_vs_default") or {}
    if to_default:
        lines += ["", "Swept rows against the same row at the default value (paired seeds):", "",
                  "| run | " + " | ".join(f"Δ {c}" for c in cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        for label, d in to_default.items():
            lines.append(f"| {label} | " + " | ".join(
                f"{100 * d[c]['mean']:+.1f} [{100 * d[c]['lo']:+.1f}, {100 * d[c]['hi']:+.1f}]"
                for c in cols) + " |")
    return "\n".join(lines) + "\n"


def find_converged_epochs(base: RunConfig, candidates: Sequence[int], seeds: Sequence[int],
                          out_dir, metrics=("zs_test_top1", "zs_scan_top1"),
                          progress: bool = False, jobs="auto") -> dict:
    """The smallest stage length E (of ``candidates``) at which the baseline has converged:
    ``baseline-2x`` (2E epochs) lies within the 95% interval of ``baseline`` (E epochs) on
    every metric. Writes ``convergence.json``; returns ``{"epochs": E or None, "checks"}``."""
    checks = []
    chosen = None
    for e in candidates:
        cfg = base.replace(**{"train.epochs_stage1": int(e), "train.epochs_stage2": int(e)})
        res = ablate(cfg, ["baseline", "baseline-2x"], seeds, Path(out_dir) / f"E{e}",
                     progress=progress, jobs=jobs)
        b, b2 = res["summary"]["baseline"], res["summary"]["baseline-2x"]
        ok = {m: b[m]["lo"] <= b2[m]["mean"] <= b[m]["hi"] for m in metrics}
        checks.append({"epochs": int(e), "within": ok,
                       "baseline": {m: b[m] for m in metrics},
                       "baseline-2x": {m: b2[m] for m in metrics}})
        print(f"E={e}: baseline-2x within the baseline's interval: {ok}", flush=True)
        if all(ok.values()):
            chosen = int(e)
            break
    out = {"epochs": chosen, "checks": checks, "seeds": list(seeds)}
    write_json(out, Path(out_dir) / "convergence.json")
    return out


