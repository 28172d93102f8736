"""Data subcommands of the ``mmmixlab`` command line: download, import-meshes, pack.

Kept apart from :mod:`mmmixlab.cli` so the heavy training imports are not needed to handle data;
``cli`` registers these with :func:`add_subcommands` and tries :func:`dispatch` first.

    mmmixlab download openshape --subset shapenet|abo|3d-future|meta|objaverse[:A-B]|all
                      [--dest DIR] [--extract] [--checksums FILE] [--revision REV]
    mmmixlab download eval [--dest DIR] [--extract]
    mmmixlab download run --subset USER/NAME --dest RUN   (then: mmmixlab eval --run RUN ...)
    mmmixlab download checkpoint NAME|OWNER/REPO --out RUN   (a released model.pt, imported)
    mmmixlab import-checkpoint FILE --out RUN [--name NAME] [--size SIZE] [--clip MODEL/TAG]
    mmmixlab import-meshes SRC OUT [--points N] [--views K] [--image-size S]
                      [--captions FILE] [--workers W] [--up y|z] [--seed S]
    mmmixlab pack SRC OUT [--num-points N] [--points-dtype float16|float32]
                      [--max-texts T] [--workers W] [--on-error skip|raise] [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import os

COMMANDS = ("download", "import-checkpoint", "import-meshes", "pack")


def add_subcommands(sub) -> None:
    """Register the data subcommands on an ``argparse`` subparsers object."""
    p = sub.add_parser("download", help="fetch OpenShape's data or the eval sets "
                                        "(huggingface_hub; resumable, checksummed)")
    p.add_argument("what", choices=("openshape", "eval", "run", "checkpoint", "modelnet40",
                                    "scanobjectnn"),
                   help="openshape (training data, needs --subset), eval (OpenShape's "
                        "meta_data.zip: ModelNet40/ScanObjectNN test clouds, LVIS split), "
                        "run (a shared run's safetensors encoders: --subset USER/NAME), "
                        "checkpoint NAME (a released OpenShape / MM-Mixing model.pt, imported "
                        "into the run folder --out); modelnet40/scanobjectnn print where to "
                        "fetch their releases by hand")
    p.add_argument("name", nargs="?", help="checkpoint: a release name (e.g. "
                                           "openshape-pointbert-vitg14-rgb, "
                                           "tripletmix-pointbert-all-objaverse) or OWNER/REPO")
    p.add_argument("--out", help="checkpoint: the run folder to write")
    p.add_argument("--size", help="checkpoint: OpenShape size where the tensors do not decide")
    p.add_argument("--subset", help="meta, shapenet, abo, 3d-future, objaverse, objaverse:A-B "
                                    "or all (comma-separated allowed); for run: the Hub model "
                                    "repo USER/NAME")
    p.add_argument("--dest", default="data/openshape", help="target folder")
    p.add_argument("--extract", action="store_true", help="unpack the archives after download")
    p.add_argument("--checksums", help="JSON {file: sha256} or sha256sum file; takes precedence "
                                       "over the Hub's published sha256")
    p.add_argument("--revision", help="dataset revision (branch, tag or commit)")

    p = sub.add_parser("import-checkpoint", help="a released checkpoint (OpenShape's or "
                                                 "MM-Mixing's model.pt) -> a run folder")
    p.add_argument("file", help="the checkpoint file (model.pt); read without running code")
    p.add_argument("--out", required=True, help="the run folder to write")
    p.add_argument("--name", help="the release it is (sets the frozen CLIP and the reported "
                                  "numbers): " + ", ".join(_release_names()))
    p.add_argument("--size", help="OpenShape's size (s1, s2, s3, g14, s5, s6, l14) where two "
                                  "sizes have the same tensors")
    p.add_argument("--clip", help="MODEL/TAG of the frozen CLIP the weights were aligned to "
                                  "(default: from the release or the feature width)")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("import-meshes", help="turn a folder of meshes (OBJ+MTL, PLY, GLB/GLTF, "
                                             "OFF, STL) into a triplet dataset")
    p.add_argument("src", help="folder of mesh files (searched recursively)")
    p.add_argument("out", help="output triplet dataset folder")
    p.add_argument("--points", type=int, default=2048, help="points per cloud")
    p.add_argument("--views", type=int, default=2, help="rendered views per shape")
    p.add_argument("--image-size", type=int, default=64, help="rendered image side (pixels)")
    p.add_argument("--captions", help="captions file (.json, .csv or .tsv); default: captions "
                                      "from file and folder names")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="parallel processes (1 runs inline)")
    p.add_argument("--up", choices=("y", "z"), default="y",
                   help="up axis of the files (y: glTF/ShapeNet/Objaverse habit; z: keep)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("pack", help="pack OpenShape per-shape .npy files into memory-mapped "
                                    "arrays for fast training reads")
    p.add_argument("src", help="folder of .npy dicts, an OpenShape split .json, or a file of "
                               "paths")
    p.add_argument("out", help="output packed store folder")
    p.add_argument("--num-points", type=int, help="subsample each cloud to N points "
                                                  "(default: keep all)")
    p.add_argument("--points-dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--feat-dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--max-texts", type=int, default=8, help="text entries kept per shape")
    p.add_argument("--text-version", choices=("prompt_avg", "original"), default="prompt_avg")
    p.add_argument("--workers", type=int, default=1, help="reader processes")
    p.add_argument("--on-error", choices=("skip", "raise"), default="skip")
    p.add_argument("--overwrite", action="store_true")


def dispatch(args: argparse.Namespace) -> int | None:
    """Run a data subcommand; ``None`` when ``args.command`` is not one of them."""
    command = getattr(args, "command", None)
    if command not in COMMANDS:
        return None
    if command == "import-checkpoint":
        from .released import import_checkpoint

        out = import_checkpoint(args.file, args.out, name=args.name, size=args.size,
                                clip=args.clip, overwrite=args.overwrite)
        _print_imported(out)
        return 0
    if command == "download" and args.what == "checkpoint":
        from .download import download_checkpoint

        if not args.name or not args.out:
            raise ValueError("download checkpoint needs NAME (a release or OWNER/REPO) and "
                             "--out RUN")
        out = download_checkpoint(args.name, args.out, revision=args.revision, size=args.size)
        _print_imported(out)
        return 0
    if command == "download":
        from .download import download, plan_files

        if args.what in ("modelnet40", "scanobjectnn"):
            plan_files(args.what)  # raises RuntimeError with the hand-fetch instructions
        paths = download(args.what, args.subset, args.dest, extract=args.extract,
                         checksums=args.checksums, revision=args.revision)
        for p in paths:
            print(p)
        return 0
    if command == "import-meshes":
        from .data.meshes import import_meshes

        report = import_meshes(args.src, args.out, points=args.points, views=args.views,
                               image_size=args.image_size, captions=args.captions,
                               workers=args.workers, seed=args.seed, up_axis=args.up)
        return 0 if report["num_imported"] else 1
    from .data.packed import pack_triplets

    manifest = pack_triplets(args.src, args.out, num_points=args.num_points,
                             points_dtype=args.points_dtype, feat_dtype=args.feat_dtype,
                             max_texts=args.max_texts, text_version=args.text_version,
                             workers=args.workers, on_error=args.on_error,
                             overwrite=args.overwrite)
    print(json.dumps({k: manifest[k] for k in ("num_shapes", "points_per_shape", "views",
                                               "dim", "text_entries_truncated",
                                               "shapes_without_text")}))
    return 0


def _release_names() -> list:
    from .released import RELEASES

    return list(RELEASES)


def _print_imported(out) -> None:
    from .released import release_info

    info = release_info(out)
    reported = info["reported_zero_shot_top1"]
    print(f"{out}: {info['architecture']} ({info['size'] or '-'}, {info['parameters']:,} "
          f"parameters, {info['in_channels']} input channels, {info['out_dim']}-d features "
          f"for {info['clip']['model']}/{info['clip']['pretrained']})")
    if reported:
        print("reported zero-shot top-1: " + ", ".join(f"{k} {v:.1f}"
                                                       for k, v in reported.items()))
    if info.get("not_imported"):
        skipped = info["not_imported"]
        print(f"not imported (outside the 3D network): {', '.join(skipped[:6])}"
              + (f" (+{len(skipped) - 6} more)" if len(skipped) > 6 else ""))
    print(f"next: mmmixlab eval --run {out} --benchmark modelnet40=PATH  |  mmmixlab classify "
          f"FILES --run {out} --classes a,b,c")
