"""``mmmixlab`` command line: demo, data, features, train, eval, classify, ablate.

Each step runs alone; every step caches what it builds under ``--cache`` (default
``$MMMIXLAB_CACHE`` or ``~/.cache/mmmixlab``), so later steps reuse it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Before torch loads: idle OpenMP workers sleep instead of spinning (on shared CPUs spinning
# made a tiny training step up to 5x slower). A value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import BUDGETS, PRESETS, VARIANTS, RunConfig, faithful, preset
from .data.synth import SynthConfig


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _split_clip(spec: str):
    """``"ViT-B-32/openai"`` -> (model, tag); ``"ViT-B-32//abs/path.pt"`` -> (model, path);
    ``"synth-tiny"`` -> (model, None)."""
    model, sep, pretrained = spec.partition("/")
    return model, (pretrained if sep else None)


def build_config(args) -> RunConfig:
    cfg = preset(getattr(args, "preset", "tiny") or "tiny")
    updates = {}
    if getattr(args, "split", None):
        args.split = str(Path(args.split).expanduser().resolve())
    if getattr(args, "data", None):
        updates["data.root"] = str(Path(args.data).expanduser().resolve())
    if getattr(args, "clip", None):
        model, pretrained = _split_clip(args.clip)
        updates["clip.model"], updates["clip.pretrained"] = model, pretrained
    for name, key in (("split", "data.split"), ("workers", "data.num_workers"),
                      ("budget", "train.budget"),
                      ("variant", "train.variant"), ("seed", "train.seed"),
                      ("device", "train.device"), ("epochs1", "train.epochs_stage1"),
                      ("epochs2", "train.epochs_stage2"), ("encoder", "train.encoder"),
                      ("checkpoint_every", "train.checkpoint_every"),
                      ("batch_size", "train.batch_size"), ("cache", "cache_dir"),
                      ("deterministic", "train.deterministic"),
                      ("grad_cache_chunk", "train.grad_cache_chunk")):
        value = getattr(args, name, None)
        if value is not None:
            updates[key] = value
    for item in getattr(args, "set", None) or []:
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--set expects key=value, got {item!r}")
        updates[key] = _parse_value(value)
    cfg = cfg.replace(**updates)
    return (faithful(cfg) if getattr(args, "faithful", False) else cfg).validate()


def _common(p, variant=True):
    p.add_argument("--preset", choices=PRESETS, default="tiny")
    p.add_argument("--data", help="training data, detected from what is on disk: a triplet "
                                  "folder with train/ (test/, scan/), a packed store (mmmixlab "
                                  "pack) or OpenShape's per-shape .npy files (e.g. objaverse-"
                                  "processed/merged_for_training_final); default: the "
                                  "embedded SynthShapes world")
    p.add_argument("--split", help="OpenShape split list (meta_data/split/*.json) restricting "
                                   "--data to its shapes")
    p.add_argument("--workers", type=int, help="streamed data: DataLoader worker processes")
    p.add_argument("--clip", help="frozen encoders: synth-tiny (default), MODEL/TAG "
                                  "(ViT-B-32/openai) or MODEL//path/to/weights.pt")
    p.add_argument("--cache", help="cache folder (default $MMMIXLAB_CACHE or ~/.cache/mmmixlab)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps or auto (default)")
    p.add_argument("--epochs1", type=int, help="stage-1 epochs")
    p.add_argument("--epochs2", type=int, help="stage-2 epochs")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--encoder", help="openshape-pointbert (OpenShape's point-patch "
                                      "transformer, the paper's backbone; released weights "
                                      "load), openshape-pointbert-tiny, pointbert-tiny / "
                                      "pointbert (this project's variant), pointnet, "
                                      "sparseconv-tiny or sparseconv (OpenShape's MinkResNet34)")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set mix.beta=0.4 (repeatable)")
    p.add_argument("--faithful", action="store_true",
                   help="the paper's reading of the losses: mixed terms only, FPS-resampled "
                        "clouds, features normalized after mixing (see config.FAITHFUL)")
    if variant:
        p.add_argument("--variant", choices=VARIANTS)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmmixlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="tiny world end to end: data, encoders, the baseline and "
                                    "MM-Mixing trained and compared side by side")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    _common(p, variant=False)

    p = sub.add_parser("data", help="generate the SynthShapes triplet folders")
    p.add_argument("--out", required=True)
    synth = SynthConfig()  # the world's defaults live there
    p.add_argument("--seed", type=int, default=synth.seed)
    p.add_argument("--points", type=int, default=synth.num_points)
    p.add_argument("--train-per-class", type=int, default=synth.train_per_class)
    p.add_argument("--test-per-class", type=int, default=synth.test_per_class,
                   help="shapes per class in test and scan")

    p = sub.add_parser("features", help="cache frozen image/text features of a dataset")
    p.add_argument("--seed", type=int)
    _common(p, variant=False)

    p = sub.add_parser("train", help="train one variant; writes RUN/final.pt and metrics.json")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--checkpoint-every", type=int, help="also checkpoint every N steps")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic kernels (torch.use_deterministic_algorithms)")
    p.add_argument("--grad-cache-chunk", type=int,
                   help="gradient caching: run the 3D encoder in chunks of this many clouds")
    _common(p)

    p = sub.add_parser("eval", help="evaluate a finished run: on its own world, on the paper's "
                                    "benchmarks (--benchmark) or on a labelled folder (--data)")
    p.add_argument("--run", required=True)
    p.add_argument("--device")
    p.add_argument("--benchmark", action="append", default=[], metavar="NAME=PATH[:VARIANT]",
                   help="modelnet40=PATH, scanobjectnn=PATH:obj_bg|obj_only|pb_t50_rs, "
                        "objaverse_lvis=PATH (repeatable); writes RUN/eval/NAME[-VARIANT].json")
    p.add_argument("--class-features", action="append", default=[], metavar="NAME=FILE",
                   help="class-name features for benchmark or folder NAME (OpenShape's "
                        "cat_name_pt_feat.npy: array or {name: feature} dict); default: the "
                        "run's frozen text encoder with the prompt templates")
    p.add_argument("--linear-probe", action="store_true",
                   help="also fit a linear probe on each benchmark's train split, report test")
    p.add_argument("--data", action="append", default=[], metavar="FOLDER",
                   help="a labelled triplet folder (e.g. import-meshes output; repeatable); "
                        "writes RUN/eval/FOLDER_NAME.json")

    p = sub.add_parser("classify", help="zero-shot labels for mesh or point files")
    p.add_argument("files", nargs="+", help="OBJ, PLY, GLB/GLTF, OFF, STL, .npy or .npz files")
    p.add_argument("--run", required=True)
    p.add_argument("--classes", required=True, help='comma-separated, e.g. "chair,table,lamp"')
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--up", choices=("y", "z"), default="y",
                   help="up axis of the files (as import-meshes: y is glTF/ShapeNet's habit)")
    p.add_argument("--class-features", metavar="FILE",
                   help="{name: feature} file for the classes instead of the text encoder")
    p.add_argument("--device")

    p = sub.add_parser("ablate", help="the paper's ablation tables on the tiny world")
    p.add_argument("--variants", default="baseline,fm,im,mm-mixing,one-stage,baseline-2x")
    p.add_argument("--seeds", type=int, default=5, help="number of paired seeds (0..N-1), >= 2")
    p.add_argument("--budget", choices=BUDGETS,
                   help="per-stage (default; the paper: each stage a full schedule) or total "
                        "(every variant epochs1 + epochs2 epochs)")
    p.add_argument("--find-epochs", metavar="E1,E2,...",
                   help="instead of the tables: the smallest stage length E at which "
                        "baseline-2x lies within the baseline's interval (converged)")
    p.add_argument("--modality-sets", default="",
                   help="Table 5 rows for mm-mixing, e.g. T,T+I,T+P,T+I+P")
    p.add_argument("--sweep", action="append", default=[], metavar="FIELD=V1,V2",
                   help="every row again at each value of a config field, same paired seeds "
                        "(repeatable; one field varied at a time), e.g. mix.mix_prob=0.5,1.0 "
                        "or mix.align_unmixed=false")
    p.add_argument("--jobs", default="auto",
                   help="runs trained at once, each in its own process on cores/JOBS threads "
                        "(default auto: one per core on a CPU with the tiny world, 1 on a GPU)")
    p.add_argument("--out", required=True)
    _common(p, variant=False)

    from .cli_data import add_subcommands
    add_subcommands(sub)
    return parser


def _demo(cfg: RunConfig, out: Path) -> None:
    """The paper's story in one command: the baseline and MM-Mixing trained on the same world
    under the per-stage protocol (one seed), evaluated, and printed side by side."""
    from . import pipeline
    from .stats import binomial_se

    from .run_pool import Task, resolve_jobs, run_tasks

    world = pipeline.prepare_world(cfg)
    variants = ("baseline", "mm-mixing")
    jobs = resolve_jobs("auto", cfg, len(variants))
    if jobs > 1:
        print(f"training {' and '.join(variants)} side by side, one process each", flush=True)
    tasks = [Task(v, pipeline.run_task, {"cfg": cfg.replace(**{"train.variant": v}).to_dict(),
                                         "out_dir": out / v, "progress": jobs == 1})
             for v in variants]
    runs = {}
    for variant, metrics in run_tasks(tasks, jobs, cfg, world):
        runs[variant] = metrics
        took = metrics["seconds"]["train"] + metrics["seconds"]["eval"]
        print(f"== {variant}: trained and evaluated in {took:.0f} s", flush=True)
    rows = []
    for split in world.eval_splits:
        n = len(world.splits[split])
        for key, name in (("top1", "zero-shot top-1"), ("top5", "zero-shot top-5")):
            a, b = (runs[v]["zero_shot"][split][key] for v in ("baseline", "mm-mixing"))
            rows.append((f"{name} {split}", a, b, binomial_se(a, n)))
        a, b = (runs[v]["linear_probe"][split]["accuracy"] for v in ("baseline", "mm-mixing"))
        rows.append((f"linear probe {split}", a, b, binomial_se(a, n)))
    for task in ("pc2pc", "img2pc", "text2pc"):
        a, b = (runs[v]["retrieval"][task]["R@1"] for v in ("baseline", "mm-mixing"))
        rows.append((f"retrieval {task} R@1", a, b, None))
    e1, e2 = cfg.train.epochs_stage1, cfg.train.epochs_stage2
    lines = [f"baseline: {e1} epochs; MM-Mixing: stage 1 {e1} + stage 2 {e2} epochs "
             f"(budget {cfg.train.budget}); seed {cfg.train.seed}; one seed, so a difference "
             f"within about 2 SE is noise (`mmmixlab ablate` gives intervals over seeds)",
             f"{'metric (%)':28s} {'baseline':>9s} {'MM-Mixing':>10s} {'diff':>7s} {'SE':>5s}"]
    for name, a, b, se in rows:
        lines.append(f"{name:28s} {100 * a:9.1f} {100 * b:10.1f} {100 * (b - a):+7.1f} "
                     + (f"{100 * se:5.1f}" if se is not None else f"{'-':>5s}"))
    table = "\n".join(lines)
    pipeline.write_json({"rows": [{"metric": r[0], "baseline": r[1], "mm-mixing": r[2],
                                   "se": r[3]} for r in rows], "config": cfg.to_dict()},
                        out / "comparison.json")
    print(table)
    print(f"wrote {out / 'baseline'}, {out / 'mm-mixing'} and {out / 'comparison.json'}")


def _eval_elsewhere(args) -> int:
    """``eval --benchmark ... --data ...``: each result in RUN/eval/<name>.json, then one
    Table-1-shaped table."""
    from .benchmark_eval import (
        RunModel,
        evaluate_benchmark,
        evaluate_folder,
        parse_benchmark,
        parse_named_file,
        results_text,
        write_result,
    )

    specs = [parse_benchmark(b) for b in args.benchmark]
    class_files = dict(parse_named_file(c) for c in args.class_features)
    labels = [s.label for s in specs] + [Path(d).expanduser().name for d in args.data]
    for name, path in class_files.items():
        known = {s.name for s in specs} | set(labels)
        if name not in known:
            raise ValueError(f"--class-features {name}={path}: {name!r} is none of the "
                             f"benchmarks or folders evaluated ({', '.join(sorted(known))})")
        if not path.is_file():
            raise FileNotFoundError(f"--class-features {name}: {path} not found")
    model = RunModel.load(args.run, device=args.device or "cpu")
    results = {}
    for spec in specs:
        file = class_files.get(spec.label, class_files.get(spec.name))
        res = evaluate_benchmark(model, spec, file, linear_probe_split=args.linear_probe)
        path = write_result(model, res, spec.label)
        results[spec.label] = res.metrics
        print(f"{spec.label}: wrote {path}", file=sys.stderr)
    for folder in args.data:
        name = Path(folder).expanduser().name
        res = evaluate_folder(model, folder, class_files.get(name))
        path = write_result(model, res, name)
        results[name] = res.metrics
        print(f"{name}: wrote {path}", file=sys.stderr)
    print(results_text(results))
    return 0


def _modality_sets(text: str):
    names = {"T": "text", "I": "image", "P": "point"}
    sets = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        try:
            sets.append(tuple(names[m] for m in item.split("+")))
        except KeyError as err:
            raise ValueError(f"modality sets use T, I and P joined by '+', got {item!r}") from err
    return sets


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    try:
        from .cli_data import dispatch as dispatch_data
        code = dispatch_data(args)
        return _dispatch(args) if code is None else code
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        print(f"mmmixlab {args.command}: error: {err}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    from . import pipeline

    if args.command == "data":
        from .data import build_world
        paths = build_world(SynthConfig(seed=args.seed, num_points=args.points,
                                        train_per_class=args.train_per_class,
                                        test_per_class=args.test_per_class,
                                        scan_per_class=args.test_per_class), Path(args.out))
        for split, path in paths.items():
            print(f"{split}: {path}")
        return 0
    if args.command == "eval":
        if args.benchmark or args.data:
            return _eval_elsewhere(args)
        from .released import release_info
        if Path(args.run).is_dir() and release_info(args.run) is not None:
            raise ValueError(f"{args.run} is an imported release: it has no training world of "
                             f"its own to evaluate on; give --benchmark NAME=PATH (e.g. "
                             f"modelnet40=data/OpenShape/meta_data) or --data FOLDER")
        cfg, encoders = pipeline.load_run(args.run, device=args.device or "cpu")
        if args.device:
            cfg = cfg.replace(**{"train.device": args.device})
        world = pipeline.prepare_world(cfg)
        if not world.eval_splits:
            raise ValueError(f"{args.run} was trained on streamed data ({world.data_format}), "
                             f"which has no eval splits: give --benchmark NAME=PATH or --data "
                             f"FOLDER")
        from .train import final_encoder
        metrics = pipeline.evaluate_encoder(final_encoder(encoders), world, cfg)
        metrics.update(config=cfg.to_dict(), world=world.key)
        pipeline.write_json(metrics, Path(args.run) / "metrics.json")
        print(pipeline.summarize(metrics))
        return 0
    if args.command == "classify":
        from .benchmark_eval import RunModel
        from .classify import classify_files

        model = RunModel.load(args.run, device=args.device or "cpu")
        results = classify_files(model, args.files, args.classes.split(","), args.top_k,
                                 args.up, args.class_features)
        for r in results:
            if "error" in r:
                print(f"{r['file']}: error: {r['error']}")
            else:
                print(f"{r['file']}: " + ", ".join(f"{c} {p:.3f}" for c, p in r["labels"]))
        return 1 if any("error" in r for r in results) else 0

    cfg = build_config(args)
    if args.command == "demo":
        cfg = cfg.replace(**{"train.seed": args.seed, "data.synth_seed": args.seed})
        _demo(cfg, Path(args.out))
    elif args.command == "features":
        world = pipeline.prepare_world(cfg)
        print(f"world {world.key}; frozen encoders {world.clip.key}; feature width "
              f"{world.class_feats.shape[1]}")
        print(json.dumps(pipeline.frozen_encoder_quality(world), indent=2))
    elif args.command == "train":
        from . import distributed as dist_utils
        device = dist_utils.init_from_env(cfg.train.device)  # joins torchrun's group, if any
        cfg = cfg.replace(**{"train.device": str(device)})
        metrics = pipeline.run(cfg, args.out, resume=args.resume)
        if metrics:
            print(pipeline.summarize(metrics))
    elif args.command == "ablate":
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        for v in variants:
            if v not in VARIANTS:
                raise ValueError(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
        if args.seeds < 2:
            raise ValueError(f"--seeds must be >= 2 (intervals over seeds), got {args.seeds}")
        from .ablation import ablate, find_converged_epochs
        if args.find_epochs:
            candidates = [int(e) for e in args.find_epochs.split(",") if e.strip()]
            res = find_converged_epochs(cfg, candidates, list(range(args.seeds)), args.out,
                                        jobs=args.jobs)
            print(f"converged stage length: {res['epochs']} (see {args.out}/convergence.json)")
            return 0
        from .ablation import parse_sweep
        ablate(cfg, variants, list(range(args.seeds)), args.out,
               _modality_sets(args.modality_sets), sweeps=[parse_sweep(t) for t in args.sweep],
               jobs=args.jobs)
        print((Path(args.out) / "ablation.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
