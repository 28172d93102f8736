"""Real data end to end: OpenShape's files and packed stores streamed into training, ranks that
read disjoint shards, resume, unreadable shapes, and evaluation on the benchmarks as released
(all files written by the tests in the released formats: tests/helpers/realdata.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmmixlab import pipeline
from mmmixlab.batches import TripletBatches
from mmmixlab.benchmark_eval import parse_benchmark
from mmmixlab.class_features import load_class_features
from mmmixlab.cli import main
from mmmixlab.config import preset
from mmmixlab.data import pack_triplets
from mmmixlab.streaming import PackedSource, StreamBatches, detect_data_format, open_shape_source
from mmmixlab.train import Trainer
from tests.helpers import realdata
from tests.helpers.toy import toy_batches

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("openshape")
    info = realdata.write_openshape_training(root)
    pack_triplets(info["folder"], root / "packed", progress=False)
    realdata.write_modelnet40_hdf5(root)
    realdata.write_scanobjectnn(root)
    realdata.write_lvis(root)
    info["class_features"] = realdata.write_class_features(root)
    info["root"], info["packed"] = root, root / "packed"
    return info


def cfg_for(root, **extra):
    updates = {"data.root": str(root), "data.num_points": 256, "data.num_workers": 0,
               "train.encoder": "pointnet", "train.epochs_stage1": 1, "train.epochs_stage2": 1,
               "train.batch_size": 8, "train.device": "cpu", "train.warmup_steps": 0}
    updates.update(extra)
    return preset("tiny").replace(**updates)


# ------------------------------------------------------------------------------ detection

def test_detects_each_format_and_names_what_it_looked_for(data, tmp_path):
    assert detect_data_format(data["packed"]) == "packed"
    assert detect_data_format(data["folder"]) == "openshape"
    assert detect_data_format(data["root"] / "objaverse-processed") == "openshape"
    # OpenShape's top folder: the shapes below objaverse-processed/, not meta_data/'s files
    assert detect_data_format(data["root"]) == "openshape"
    top = open_shape_source(data["root"])
    assert len(top) == len(open_shape_source(data["folder"]))
    assert not any("meta_data" in top.paths[i] for i in range(len(top)))
    assert detect_data_format(data["split"]) == "openshape"
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "manifest.json").write_text("{}")
    assert detect_data_format(tmp_path) == "triplets"
    other = tmp_path / "other"
    other.mkdir()
    (other / "readme.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match=r"none of the training formats.*"
                                                r"train/manifest.json.*packed store.*\.npy"):
        detect_data_format(other)
    assert main(["train", "--data", str(other), "--out", str(tmp_path / "r")]) == 2


def test_split_list_with_authors_paths_restricts_the_folder(data):
    half = data["root"] / "meta_data" / "split" / "train_half.json"
    src = open_shape_source(data["root"], half)
    assert len(src) == data["num_shapes"] // 2
    entries = json.loads(half.read_text())
    assert entries[0]["data_path"].startswith("/mnt/data/")  # as OpenShape ships it
    assert Path(src.paths[0]).is_file() and src.paths[0].endswith(
        Path(entries[0]["data_path"]).name)
    assert src.dim == realdata.D


# ------------------------------------------------------------------------------ sharding

@pytest.mark.parametrize("kind", ["stream", "memory"])
def test_ranks_read_disjoint_shards_that_cover_the_epoch(data, kind):
    def batches(rank, world, b):
        if kind == "stream":
            return StreamBatches(PackedSource(data["packed"]), num_points=64, batch_size=b,
                                 rank=rank, world_size=world, num_workers=0)
        return toy_batches(n=data["num_shapes"], batch_size=b, rank=rank, world_size=world)

    order = batches(0, 1, 4).epoch_order(torch.Generator().manual_seed(3))
    seen = {}
    for rank in (0, 1):
        bs = batches(rank, 2, 4)
        assert len(bs) == data["num_shapes"] // 8
        seen[rank] = [b.index.tolist() for b in bs.iterate(order, torch.Generator(), 0)]
    flat0 = [i for b in seen[0] for i in b]
    flat1 = [i for b in seen[1] for i in b]
    assert not set(flat0) & set(flat1)
    assert sorted(flat0 + flat1) == sorted(order[:len(flat0) * 2].tolist())
    # global batch b = rank 0's slice then rank 1's: the 1-rank x 2B batch
    one = batches(0, 1, 8)
    for b, whole in enumerate(one.iterate(order, torch.Generator(), 0)):
        assert whole.index.tolist() == seen[0][b] + seen[1][b]


def test_stream_batches_do_not_depend_on_workers_or_restart_point(data):
    src = PackedSource(data["packed"])
    order = torch.randperm(len(src), generator=torch.Generator().manual_seed(0))
    inproc = list(StreamBatches(src, num_points=128, batch_size=8, num_workers=0).iterate(order))
    workers = StreamBatches(src, num_points=128, batch_size=8, num_workers=2, prefetch_factor=2)
    pooled = list(workers.iterate(order))
    resumed = list(workers.iterate(order, start=3))  # the persistent workers serve again
    assert len(inproc) == len(pooled) == 6 and len(resumed) == 3
    for a, b in zip(inproc, pooled):
        for name in ("points", "image", "text", "text_valid", "index"):
            assert torch.equal(getattr(a, name), getattr(b, name))
    for a, b in zip(inproc[3:], resumed):
        assert torch.equal(a.points, b.points) and torch.equal(a.text, b.text)
    b0 = inproc[0]
    assert b0.points.shape == (8, 128, 6)
    torch.testing.assert_close(b0.image.norm(dim=-1), torch.ones(8))
    assert torch.equal(b0.text.norm(dim=-1) > 0, b0.text_valid)  # no text -> zero, masked
    next_epoch = list(StreamBatches(src, num_points=128, batch_size=8, num_workers=0).iterate(
        order.flip(0)))
    assert not torch.equal(next_epoch[-1].points, inproc[0].points.flip(0))  # fresh draws


def _rank_step(rank, world, init_file, packed, out_file, batch_size):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    torch.set_num_threads(1)
    out = _one_step(packed, batch_size)
    if rank == 0:
        torch.save(out, out_file)
    dist.destroy_process_group()
    # Every result is written and checked above; leave without interpreter teardown, where a
    # loaded machine sometimes saw a native thread abort the spawned rank ("terminate called
    # without an active exception") after the work was done.
    os._exit(0)


def _one_step(packed, batch_size):
    cfg = cfg_for(packed, **{"train.variant": "baseline", "train.batch_size": batch_size})
    world = pipeline.prepare_world(cfg)
    trainer = Trainer(cfg, pipeline.training_batches(cfg, world), embed_dim=world.dim,
                      progress=False)
    order = trainer.batches.epoch_order(trainer.generator)
    batch = next(iter(trainer.batches.iterate(order, trainer.local_generator)))
    loss, _ = trainer._forward_backward(trainer.phases[0], batch)
    grads = {n: p.grad.clone() for n, p in trainer.encoders["A"].named_parameters()}
    return {"loss": loss.item(), "grads": grads,
            "scale_grad": trainer.logit_scales["A"].log_scale.grad.clone()}


@pytest.mark.slow
def test_two_ranks_times_b_equal_one_rank_times_2b_through_the_data_path(data, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_rank_step, args=(2, str(tmp_path / "init"), str(data["packed"]),
                               str(tmp_path / "ddp.pt"), 6), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    single = _one_step(str(data["packed"]), 12)
    assert ddp["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert ddp["grads"].keys() == single["grads"].keys()
    for name, g in single["grads"].items():
        torch.testing.assert_close(ddp["grads"][name], g, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ddp["scale_grad"], single["scale_grad"], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------ training

def test_resume_mid_epoch_with_workers_is_bit_equal(data, tmp_path):
    cfg = cfg_for(data["packed"], **{"data.num_workers": 2, "train.checkpoint_every": 1,
                                     "train.variant": "mm-mixing"})
    full = pipeline.train_variant(cfg, pipeline.prepare_world(cfg), tmp_path / "a",
                                  progress=False)

    class Crash(Exception):
        pass

    def crash(record):
        if record["phase"] == "stage2":
            raise Crash  # after stage 2's steps, before its epoch-end checkpoint
    with pytest.raises(Crash):
        pipeline.train_variant(cfg, pipeline.prepare_world(cfg), tmp_path / "b",
                               progress=False, on_epoch=crash)
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["phase"] == 1 and 0 < ckpt["step_in_epoch"] < 6  # mid stage 2
    resumed = pipeline.train_variant(cfg, pipeline.prepare_world(cfg), tmp_path / "b",
                                     resume=True, progress=False)
    for name in ("A", "B"):
        for k, v in full.encoders[name].state_dict().items():
            assert torch.equal(v, resumed.encoders[name].state_dict()[k]), f"{name}.{k}"


def test_unreadable_shapes_are_named_counted_and_capped(data, tmp_path):
    import shutil
    folder = tmp_path / "merged_for_training_final"
    shutil.copytree(data["folder"], folder)
    files = sorted(folder.rglob("*.npy"))
    files[3].write_bytes(files[3].read_bytes()[:200])  # truncated download

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    np.save(files[7], np.array({"xyz": Evil()}, dtype=object), allow_pickle=True)
    cfg = cfg_for(folder, **{"data.max_bad_share": 0.1, "train.variant": "baseline",
                             "train.epochs_stage1": 2, "train.epochs_stage2": 0})
    metrics = pipeline.run(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "pwned").exists()  # the doctored pickle ran nothing
    assert sorted(metrics["data"]["unreadable_shapes"]) == sorted(map(str, (files[3], files[7])))
    logged = [json.loads(ln) for ln in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    bad = [r for r in logged if r["kind"] == "unreadable_shape"]
    assert {r["path"] for r in bad} == {str(files[3]), str(files[7])}
    assert any("refusing to unpickle posix.system" in r["reason"] for r in bad)
    assert all(r["unreadable_so_far"] >= 1 for r in bad)
    assert sum(r.get("unreadable_shapes", 0) for r in metrics["history"]) == len(bad)
    strict = cfg.replace(**{"data.max_bad_share": 0.01})
    with pytest.raises(RuntimeError, match=r"\d of 60 shapes are unreadable.*max_bad_share"):
        pipeline.run(strict, tmp_path / "strict", progress=False)


def test_feature_width_mismatch_is_caught_before_the_first_step(data):
    bs = StreamBatches(PackedSource(data["packed"]), num_points=64, batch_size=4,
                       num_workers=0)
    with pytest.raises(ValueError, match=rf"data's image/text features are {realdata.D}-d, "
                                         r"the 3D encoder's output is 64-d"):
        Trainer(cfg_for(data["packed"]), bs, embed_dim=64, progress=False)


# ------------------------------------------------------------------------------ class features

def test_class_features_array_and_dict_forms(data, tmp_path):
    from mmmixlab.data import MODELNET40_CLASSES, SCANOBJECTNN_CLASSES
    cf = data["class_features"]
    mn = load_class_features(cf["modelnet40"], MODELNET40_CLASSES, realdata.D)
    assert mn.shape == (40, realdata.D)
    torch.testing.assert_close(mn.norm(dim=-1), torch.ones(40))
    raw = np.load(cf["scanobjectnn"], allow_pickle=True).item()
    names = ["Toilet", "bag"]  # case and order do not matter in the dict form
    got = load_class_features(cf["scanobjectnn"], names, realdata.D)
    want = torch.nn.functional.normalize(torch.from_numpy(np.stack([raw["toilet"], raw["bag"]])),
                                         dim=-1)
    torch.testing.assert_close(got, want)
    objs = tmp_path / "objects.npy"  # an object array of per-class arrays, (C, 1, D) too
    arr = np.empty(40, dtype=object)
    for i in range(40):
        arr[i] = np.load(cf["modelnet40"])[i][None]
    np.save(objs, arr, allow_pickle=True)
    torch.testing.assert_close(load_class_features(objs, MODELNET40_CLASSES, realdata.D), mn)
    np.save(objs, np.load(cf["modelnet40"])[:, None, :])
    torch.testing.assert_close(load_class_features(objs, MODELNET40_CLASSES, realdata.D), mn)
    with pytest.raises(ValueError, match=r"features of 40 classes, .* has 15 classes"):
        load_class_features(cf["modelnet40"], SCANOBJECTNN_CLASSES, realdata.D)
    with pytest.raises(ValueError, match=rf"are {realdata.D}-d, the run's 3D encoder outputs "
                                         r"1280-d"):
        load_class_features(cf["modelnet40"], MODELNET40_CLASSES, 1280)
    with pytest.raises(ValueError, match=r"no feature for 1 of the 2 classes.*'unicorn'"):
        load_class_features(cf["scanobjectnn"], ["bag", "unicorn"], realdata.D)


def test_parse_benchmark_specs(tmp_path):
    s = parse_benchmark(f"scanobjectnn={tmp_path}:obj_bg")
    assert (s.name, s.path, s.variant, s.label) == ("scanobjectnn", tmp_path, "obj_bg",
                                                    "scanobjectnn-obj_bg")
    assert parse_benchmark(f"lvis={tmp_path}").name == "objaverse_lvis"
    with pytest.raises(ValueError, match="unknown benchmark 'imagenet'"):
        parse_benchmark(f"imagenet={tmp_path}")
    with pytest.raises(ValueError, match="NAME=PATH"):
        parse_benchmark("modelnet40")


# ------------------------------------------------------------------------------ end to end

def cli(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run(list(args), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def eval_args(data, run):
    r, cf = data["root"], data["class_features"]
    return ["--run", str(run),
            "--benchmark", f"modelnet40={r / 'modelnet40_ply_hdf5_2048'}",
            "--benchmark", f"scanobjectnn={r / 'h5_files'}:obj_bg",
            "--benchmark", f"objaverse_lvis={r}",
            "--class-features", f"modelnet40={cf['modelnet40']}",
            "--class-features", f"scanobjectnn={cf['scanobjectnn']}",
            "--class-features", f"objaverse_lvis={cf['objaverse_lvis']}"]


@pytest.mark.slow
def test_openshape_folder_to_pack_to_torchrun_train_to_benchmark_tables(data, tmp_path):
    """The issue's path: OpenShape-format folder (shapes without text included) -> pack ->
    mm-mixing 1+1 epochs under torchrun with 2 CPU ranks -> eval on ModelNet40 HDF5 shards,
    ScanObjectNN obj_bg and an Objaverse-LVIS split, class features from files -> JSON."""
    bin_dir = Path(sys.executable).parent
    packed = tmp_path / "packed"
    r = cli(str(bin_dir / "mmmixlab"), "pack", str(data["folder"]), str(packed),
            "--num-points", "512")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["shapes_without_text"] > 0
    run = tmp_path / "run"
    r = cli(str(bin_dir / "torchrun"), "--nproc_per_node", "2", "-m", "mmmixlab.cli", "train",
            "--data", str(packed), "--out", str(run), "--variant", "mm-mixing", "--epochs1", "1",
            "--epochs2", "1", "--batch-size", "8", "--encoder", "pointnet", "--device", "cpu",
            "--workers", "1", "--set", "data.num_points=256")
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["data"]["format"] == "packed"
    assert [h["phase"] for h in metrics["history"]] == ["stage1", "stage2"]
    r = cli(str(bin_dir / "mmmixlab"), "eval", *eval_args(data, run), "--linear-probe")
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("modelnet40", "scanobjectnn-obj_bg", "objaverse_lvis"):
        res = json.loads((run / "eval" / f"{name}.json").read_text())
        assert {"top1", "top3", "top5", "mean_class_accuracy", "per_class"} <= set(
            res["zero_shot"])
        assert res["num_shapes"] == 12 and res["class_features"].startswith("file ")
        assert "R@1" in res["retrieval"]["pc2pc"]
        assert name.split("-")[0] in r.stdout
    lvis = json.loads((run / "eval" / "objaverse_lvis.json").read_text())
    assert lvis["retrieval"]["img2pc"]["queries"] == 12
    assert lvis["retrieval"]["text2pc"]["queries"] == 8  # shapes without text are no queries
    assert "skipped" in lvis["linear_probe"]
    mn = json.loads((run / "eval" / "modelnet40.json").read_text())
    assert mn["linear_probe"]["train_shapes"] == 12 and 0 <= mn["linear_probe"]["accuracy"] <= 1
    assert "top1" in r.stdout.splitlines()[0] and len(r.stdout.splitlines()) == 5


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    metrics = pipeline.run(cfg_for(data["packed"], **{"train.variant": "baseline",
                                                      "train.epochs_stage1": 12,
                                                      "train.epochs_stage2": 0,
                                                      "train.lr": 3e-3}), run, progress=False)
    assert metrics["zero_shot"] == {}
    return run


def test_eval_on_benchmarks_learns_and_matches_reference_metrics(data, trained, capsys):
    assert main(["eval", *eval_args(data, trained)]) == 0
    out = capsys.readouterr().out
    res = json.loads((trained / "eval" / "modelnet40.json").read_text())
    # the fake world is easy: a trained run must beat chance (1/40) by far
    assert res["zero_shot"]["top1"] > 0.5, out
    from sklearn.metrics import balanced_accuracy_score

    from mmmixlab.benchmark_eval import RunModel, evaluate_benchmark
    model = RunModel.load(trained)
    again = evaluate_benchmark(model, parse_benchmark(
        f"modelnet40={data['root'] / 'modelnet40_ply_hdf5_2048'}"),
        data["class_features"]["modelnet40"])
    pred = (again.point_feats @ again.class_feats.t()).argmax(1).numpy()
    assert again.metrics["zero_shot"]["top1"] == pytest.approx(
        float((pred == again.labels).mean()))
    assert again.metrics["zero_shot"]["mean_class_accuracy"] == pytest.approx(
        balanced_accuracy_score(again.labels, pred))


def test_eval_bad_benchmark_inputs(data, trained, tmp_path, capsys):
    missing = tmp_path / "mn"
    missing.mkdir()
    (missing / "shape_names.txt").write_text("a\n")
    assert main(["eval", "--run", str(trained), "--benchmark", f"modelnet40={missing}"]) == 2
    assert str(missing) in capsys.readouterr().err
    cf = data["class_features"]
    assert main(["eval", "--run", str(trained), "--benchmark",
                 f"scanobjectnn={data['root'] / 'h5_files'}:obj_bg", "--class-features",
                 f"scanobjectnn={cf['modelnet40']}"]) == 2
    assert "features of 40 classes" in capsys.readouterr().err
    assert main(["eval", "--run", str(trained), "--benchmark",
                 f"modelnet40={data['root'] / 'modelnet40_ply_hdf5_2048'}"]) == 2
    assert "--class-features" in capsys.readouterr().err  # no text encoder for file features


def _write_meshes(root: Path):
    import trimesh
    (root / "ball").mkdir(parents=True)
    (root / "crate").mkdir(parents=True)
    for i in range(3):
        trimesh.creation.icosphere(subdivisions=2, radius=1 + 0.1 * i).export(
            root / "ball" / f"b{i}.ply")
        trimesh.creation.box(extents=(0.6, 1.0 + 0.1 * i, 0.4)).export(
            root / "crate" / f"c{i}.obj")
    return root


def test_classify_and_eval_on_a_folder_of_own_meshes(data, trained, tmp_path, capsys):
    meshes = _write_meshes(tmp_path / "meshes")
    feats = tmp_path / "feats.npy"
    lvis = np.load(data["class_features"]["objaverse_lvis"])  # rows: ball, crate, plate, pole
    np.save(feats, {"ball": lvis[0], "crate": lvis[1], "pole": lvis[3]}, allow_pickle=True)
    npy = tmp_path / "pole.npy"
    np.save(npy, realdata.cloud("rod", np.random.default_rng(0), 2048))
    bad = tmp_path / "broken.obj"
    bad.write_text("this is not a mesh")
    files = [meshes / "ball" / "b0.ply", meshes / "crate" / "c0.obj", npy, bad]
    code = main(["classify", "--run", str(trained), "--classes", "ball,crate,pole",
                 "--class-features", str(feats), "--top-k", "2", *map(str, files)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 1 and len(lines) == 4  # one line per file; the broken one says why
    for f, line in zip(files, lines):
        assert line.startswith(f"{f}: ")
    assert "error" in lines[3]
    scores = [[float(x.split()[1]) for x in ln.split(": ", 1)[1].split(", ")] for ln in lines[:3]]
    assert all(len(s) == 2 and s[0] >= s[1] and sum(s) <= 1 + 1e-6 for s in scores)
    assert lines[2].split(": ")[1].startswith("pole")  # a rod is a pole to this run

    folder = tmp_path / "own"
    assert main(["import-meshes", str(meshes), str(folder), "--points", "512",
                 "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(trained), "--data", str(folder), "--class-features",
                 f"own={feats}"]) == 0
    res = json.loads((trained / "eval" / "own.json").read_text())
    assert res["num_shapes"] == 6 and res["num_classes"] == 2
    assert set(res["zero_shot"]["per_class"]) == {"ball", "crate"}
    assert "own" in capsys.readouterr().out


def test_memory_world_batches_keep_their_interface():
    tb = toy_batches(n=24, batch_size=4, rank=1, world_size=2)
    assert isinstance(tb, TripletBatches) and tb.dim == 16 and len(tb) == 3


def test_notebook_benchmark_section_runs_on_released_formats(data, trained, tmp_path):
    """What notebooks 05-07 call when BENCHMARKS is set (CI's smoke run leaves it empty)."""
    from types import SimpleNamespace

    from mmmixlab import viz, workbench
    runs = {"baseline": SimpleNamespace(path=trained)}
    bench = {"modelnet40": str(data["root"] / "modelnet40_ply_hdf5_2048"),
             "scanobjectnn": f"{data['root'] / 'h5_files'}:obj_only",
             "objaverse_lvis": str(data["root"])}
    cf = {k: str(v) for k, v in data["class_features"].items()}
    evals = workbench.benchmark_evals(runs, bench, cf, linear_probe=True)
    assert set(evals) == {"modelnet40", "scanobjectnn-obj_only", "objaverse_lvis"}
    table = workbench.benchmark_table(evals)
    cli_json = json.loads((trained / "eval" / "modelnet40.json").read_text()) \
        if (trained / "eval" / "modelnet40.json").exists() else None
    row = table.loc[("modelnet40", "baseline")]
    if cli_json is not None:  # the notebook shows what the CLI wrote
        assert row["top1"] == pytest.approx(round(100 * cli_json["zero_shot"]["top1"], 1))
    assert "linear probe" in table.columns and "img2pc R@1" in table.columns
    cm = workbench.benchmark_confusion(evals["modelnet40"]["baseline"])
    assert cm.shape == (40, 40) and cm.sum() == 12
    rows = workbench.benchmark_retrieval_rows(evals["objaverse_lvis"], 2, 3)
    assert rows["hits"].shape == (2, 3)
    fig = viz.retrieval_grid(**rows, title="lvis")
    viz.save(fig, tmp_path, "retrieval.png")
    assert (tmp_path / "retrieval.png").stat().st_size > 1000


@pytest.mark.slow
def test_notebooks_05_to_07_on_streamed_data_with_benchmarks(data, tmp_path, monkeypatch):
    """The series with DATA_ROOT = a packed store and BENCHMARKS set (papermill-style: a cell
    after the parameters cell overrides them): the benchmark sections show tables, confusions
    and retrieval grids, the tiny-world sections step aside."""
    import nbformat
    from nbclient import NotebookClient

    cf = {k: str(v) for k, v in data["class_features"].items()}
    override = (f"DATA_ROOT = {str(data['packed'])!r}\nBACKBONE = 'pointnet'\n"
                f"BENCHMARKS = {{'modelnet40': {str(data['root'] / 'modelnet40_ply_hdf5_2048')!r},"
                f" 'scanobjectnn': {str(data['root'] / 'h5_files') + ':obj_bg'!r},"
                f" 'objaverse_lvis': {str(data['root'])!r}}}\nCLASS_FEATURES = {cf!r}\n")
    for k, v in {"MMMIXLAB_SMOKE": "1", "MMMIXLAB_CACHE": str(tmp_path / "cache"),
                 "MMMIXLAB_FIGURES": str(tmp_path / "figures"), "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(k, v)
    shown = {}
    for stem in ("05_zero_shot_and_linear_probe", "06_embeddings_and_hard_samples",
                 "07_retrieval_figures"):
        nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
        k = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        nb.cells.insert(k + 1, nbformat.v4.new_code_cell(override))
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                  if o.output_type == "error"]
        assert not errors, errors[0]["evalue"]
        shown[stem] = json.dumps([c.outputs for c in nb.cells if c.cell_type == "code"])
    assert "modelnet40" in shown["05_zero_shot_and_linear_probe"]
    assert "linear probe" in shown["05_zero_shot_and_linear_probe"]
    assert "objaverse_lvis" in shown["07_retrieval_figures"]
    figures = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert {"retrieval_modelnet40.png", "retrieval_objaverse_lvis.png"} <= figures
    runs = sorted(p.name.split("-s")[0] for p in (tmp_path / "cache" / "runs").iterdir())
    assert runs == ["baseline", "mm-mixing"]  # trained once on the store, shared by the series


def test_pack_from_a_split_list_with_the_authors_paths(data, tmp_path):
    """`mmmixlab pack meta_data/split/train_all.json OUT`: the /mnt/data/... paths OpenShape's
    split files carry are found below the list's folders."""
    half = data["root"] / "meta_data" / "split" / "train_half.json"
    manifest = pack_triplets(half, tmp_path / "packed", progress=False)
    assert manifest["num_shapes"] == data["num_shapes"] // 2 and not manifest["skipped"]


def test_cli_train_on_a_split_list(data, tmp_path):
    """`train --data OpenShape --split meta_data/split/X.json` trains on that split only."""
    half = data["root"] / "meta_data" / "split" / "train_half.json"
    assert main(["train", "--data", str(data["root"]), "--split", str(half), "--out",
                 str(tmp_path / "run"), "--variant", "baseline", "--epochs1", "1",
                 "--encoder", "pointnet", "--batch-size", "8", "--workers", "0",
                 "--device", "cpu", "--set", "data.num_points=128"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["num_shapes"] == data["num_shapes"] // 2
    assert metrics["data"]["split"] == str(half)
