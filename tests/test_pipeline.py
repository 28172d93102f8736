"""End to end on a shrunken tiny world: data -> frozen encoders -> training -> metrics."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmmixlab import pipeline
from mmmixlab.ablation import ablate
from mmmixlab.cli import main
from mmmixlab.config import preset

SMALL = ["--set", "data.synth_train_per_class=5", "--set", "data.synth_test_per_class=3",
         "--set", "data.synth_scan_per_class=3", "--set", "data.synth_points=512",
         "--set", "data.num_points=256", "--set", "clip.tiny_steps=20",
         "--set", "train.warmup_steps=0", "--epochs1", "1", "--epochs2", "1",
         "--batch-size", "16", "--device", "cpu"]

pytestmark = pytest.mark.slow


def small_cfg(cache, **extra):
    updates = {"data.synth_train_per_class": 5, "data.synth_test_per_class": 3,
               "data.synth_scan_per_class": 3, "data.synth_points": 512,
               "data.num_points": 256, "clip.tiny_steps": 20, "train.warmup_steps": 0,
               "train.epochs_stage1": 1, "train.epochs_stage2": 1, "train.batch_size": 16,
               "train.device": "cpu", "cache_dir": str(cache)}
    updates.update(extra)
    return preset("tiny").replace(**updates)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def get(d, dotted):
    for k in dotted.split("."):
        d = d[k]
    return d


def test_cli_train_writes_metrics_and_final(cache, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--variant", "mm-mixing", "--out", str(run), "--seed", "0",
                 "--cache", str(cache)] + SMALL) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ["zero_shot.test.top1", "zero_shot.test.top3", "zero_shot.test.top5",
                "zero_shot.scan.top1", "zero_shot.scan.top3", "zero_shot.scan.top5",
                "linear_probe.test.accuracy", "linear_probe.scan.accuracy",
                "retrieval.pc2pc.R@1", "retrieval.img2pc.R@5", "retrieval.text2pc.R@10",
                "chance.test", "chance.scan"]:
        value = get(metrics, key)
        assert 0.0 <= value <= 1.0, key
    assert metrics["num_classes"] == 16
    assert metrics["chance"]["test"] == pytest.approx(1 / 16)
    assert {"data", "clip", "features", "train", "eval"} <= set(metrics["seconds"])
    assert metrics["config"]["train"]["variant"] == "mm-mixing"
    from mmmixlab.device import cpu_has_amx  # auto: bf16 on an AMX CPU for pointbert-tiny
    assert metrics["precision"] == ("bf16" if cpu_has_amx() else "fp32")
    assert get(metrics, "zero_shot.test.top1") <= get(metrics, "zero_shot.test.top3") <= get(
        metrics, "zero_shot.test.top5")
    state = torch.load(run / "final.pt", weights_only=True)
    assert set(state["encoders"]) == {"A", "B"}

    # eval reproduces the metrics from final.pt alone
    assert main(["eval", "--run", str(run)]) == 0
    again = json.loads((run / "metrics.json").read_text())
    assert again["zero_shot"]["test"]["top1"] == pytest.approx(metrics["zero_shot"]["test"]["top1"])


def test_world_and_features_are_cached(cache):
    cfg = small_cfg(cache)
    w1 = pipeline.prepare_world(cfg, progress=False)
    w2 = pipeline.prepare_world(cfg, progress=False)
    assert w1.key == w2.key and w1.clip.key == w2.clip.key
    assert w2.seconds["clip"] < 5.0  # loaded from the cache, not pre-trained again
    assert torch.equal(w1.features["test"].image, w2.features["test"].image)
    assert set(w1.splits) == {"train", "test", "scan"}
    scan = np.asarray(w1.splits["scan"].points)
    assert np.allclose(scan[..., 3:], 0.4)  # colourless, like ScanObjectNN


def test_frozen_encoders_carry_class_structure(cache):
    world = pipeline.prepare_world(small_cfg(cache), progress=False)
    q = pipeline.frozen_encoder_quality(world)
    # even 20 pre-training steps put captions well above chance (1/16) against the prompts
    assert q["caption_top1"] > 3 / 16


def test_corrupt_feature_cache_is_reported(cache, tmp_path):
    cfg = small_cfg(cache)
    world = pipeline.prepare_world(cfg, progress=False)
    path = cache / "features" / world.key / world.clip.key / "test.pt"
    backup = path.read_bytes()
    path.write_bytes(b"not a torch file")
    try:
        with pytest.raises(ValueError, match="test.pt"):
            pipeline.prepare_world(cfg, progress=False)
    finally:
        path.write_bytes(backup)


def test_cli_rejects_bad_input(cache, tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--cache", str(cache),
                 "--set", "mix.beta=-1"] + SMALL) == 2
    assert "beta" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "--encoder", "pointtransformer",
                 "--cache", str(cache)] + SMALL) == 2
    assert "pointtransformer" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path / "missing")]) == 2
    assert "final.pt" in capsys.readouterr().err
    assert main(["ablate", "--variants", "baseline,mixup", "--out", str(tmp_path / "a"),
                 "--cache", str(cache)] + SMALL) == 2
    assert "mixup" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "--data", str(tmp_path / "nodata"),
                 "--cache", str(cache)] + SMALL) == 2
    assert "nodata" in capsys.readouterr().err


def test_ablation_table(cache, tmp_path):
    cfg = small_cfg(cache, **{"train.encoder": "pointnet"})
    result = ablate(cfg, ["baseline", "fm"], [0, 1], tmp_path / "abl",
                    modality_sets=[("text",)])
    assert set(result["summary"]) == {"baseline", "fm", "mm-mixing (T)"}
    assert len(result["runs"]) == 6
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert md.startswith("Protocol: budget per-stage") and "| baseline |" in md
    zs = [r["metrics"]["zs_test_top1"] for r in result["runs"] if r["row"] == "fm"]
    base = [r["metrics"]["zs_test_top1"] for r in result["runs"] if r["row"] == "baseline"]
    s = result["summary"]["fm"]["zs_test_top1"]
    assert s["mean"] == pytest.approx(np.mean(zs)) and s["sd"] == pytest.approx(np.std(zs, ddof=1))
    d = result["diff_vs_baseline"]["fm"]["zs_test_top1"]
    assert d["mean"] == pytest.approx(np.mean(zs) - np.mean(base))
    assert result["protocol"]["epochs"]["mm-mixing (T)"] == [["stage1", 1], ["stage2", 1]]
    # a rerun loads every finished run instead of training it again
    again = ablate(cfg, ["baseline", "fm"], [0, 1], tmp_path / "abl",
                   modality_sets=[("text",)], announce=False)
    assert again["runs"] == result["runs"]
    with pytest.raises(ValueError, match="another protocol"):
        ablate(cfg.replace(**{"train.budget": "total"}), ["baseline", "fm"], [0, 1],
               tmp_path / "abl", announce=False)


def test_tiny_world_run_on_released_benchmark_and_own_meshes(cache, tmp_path, capsys):
    """A run on the embedded world, judged on files in ModelNet40's release and on a folder of
    the user's meshes: class features from the run's own text encoder (no file given), and,
    for folder classes the run was trained with, its class features matched by name."""
    import trimesh

    from tests.helpers import realdata
    run = tmp_path / "run"
    assert main(["train", "--variant", "baseline", "--out", str(run), "--cache", str(cache)]
                + SMALL) == 0
    mn = realdata.write_modelnet40_hdf5(tmp_path)
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--benchmark", f"modelnet40={mn}"]) == 0
    res = json.loads((run / "eval" / "modelnet40.json").read_text())
    assert res["class_features"].startswith("text encoder synth-tiny, 64 templates")
    assert res["num_classes"] == 40 and 0 <= res["zero_shot"]["top1"] <= 1
    meshes = tmp_path / "meshes"
    for cls, mesh in (("table", trimesh.creation.box((1.2, 0.8, 0.05))),
                      ("lamp", trimesh.creation.cylinder(0.05, 1.0)),
                      ("teapot", trimesh.creation.icosphere(2))):
        (meshes / cls).mkdir(parents=True)
        for i in range(2):
            mesh.export(meshes / cls / f"{cls}{i}.ply")
    folder = tmp_path / "mine"
    assert main(["import-meshes", str(meshes), str(folder), "--points", "512",
                 "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--data", str(folder)]) == 0
    res = json.loads((run / "eval" / "mine.json").read_text())
    assert res["class_features"].startswith("2 of 3 classes matched by name")
    assert {"pc2pc", "img2pc", "text2pc"} <= set(res["retrieval"])  # renders and captions
    assert set(res["zero_shot"]["per_class"]) == {"lamp", "table", "teapot"}
    out = capsys.readouterr().out
    assert "modelnet40" not in out and "mine" in out


def test_demo_compares_baseline_and_mm_mixing(cache, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--cache", str(cache)] + SMALL) == 0
    printed = capsys.readouterr().out
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    first = rows[0]
    base = json.loads((out / "baseline" / "metrics.json").read_text())
    mm = json.loads((out / "mm-mixing" / "metrics.json").read_text())
    assert first["metric"] == "zero-shot top-1 test"
    assert first["baseline"] == base["zero_shot"]["test"]["top1"]
    assert first["mm-mixing"] == mm["zero_shot"]["test"]["top1"]
    assert [h["phase"] for h in base["history"]] == ["baseline"]  # one stage: per-stage budget
    assert [h["phase"] for h in mm["history"]] == ["stage1", "stage2"]
    assert "zero-shot top-1 test" in printed and "budget per-stage" in printed


def test_find_converged_epochs_compares_baseline_with_twice_its_training(cache, tmp_path):
    from mmmixlab.ablation import find_converged_epochs
    cfg = small_cfg(cache, **{"train.encoder": "pointnet"})
    res = find_converged_epochs(cfg, [1, 2], [0, 1], tmp_path / "conv")
    assert 1 <= len(res["checks"]) <= 2
    first = res["checks"][0]
    assert first["epochs"] == 1 and set(first["within"]) == {"zs_test_top1", "zs_scan_top1"}
    b, b2 = first["baseline"]["zs_test_top1"], first["baseline-2x"]["zs_test_top1"]
    assert first["within"]["zs_test_top1"] == (b["lo"] <= b2["mean"] <= b["hi"])
    assert res["epochs"] in (None, 1, 2)
    assert json.loads((tmp_path / "conv" / "convergence.json").read_text())["checks"]


def test_notebook_loads_what_the_cli_ablation_computed(cache, tmp_path, monkeypatch):
    """Notebook 08 with ABLATION_DIR: finished runs of `mmmixlab ablate --out DIR` are loaded,
    though the notebook's config differs in fields that do not change results."""
    from mmmixlab import ablation, workbench
    cfg = small_cfg(cache, **{"train.encoder": "pointnet"})
    first = ablate(cfg, ["baseline", "fm"], [0, 1], tmp_path / "abl", announce=False)

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(ablation, "run", no_training)
    nb_cfg = cfg.replace(**{"train.eval_every": 1, "train.log_every": 5})
    again = workbench.ablation(nb_cfg, ["baseline", "fm"], 2, out=tmp_path / "abl")
    assert again["runs"] == first["runs"]
    (tmp_path / "abl" / "ablation.json").unlink()  # the table is rebuilt from the runs
    monkeypatch.setattr(ablation, "estimate_seconds", lambda *a, **k: 0.0)
    rebuilt = workbench.ablation(nb_cfg, ["baseline", "fm"], 2, out=tmp_path / "abl")
    assert rebuilt["summary"] == first["summary"]


def test_cli_ablation_options(cache, tmp_path, capsys):
    """`ablate --budget total --find-epochs` and `--seeds 1` through the command line."""
    args = ["ablate", "--cache", str(cache), "--encoder", "pointnet"] + SMALL
    assert main(args + ["--seeds", "1", "--out", str(tmp_path / "a")]) == 2
    assert "--seeds must be >= 2" in capsys.readouterr().err
    assert main(args + ["--seeds", "2", "--budget", "total", "--find-epochs", "1",
                        "--out", str(tmp_path / "conv")]) == 0
    assert "converged stage length" in capsys.readouterr().out
    res = json.loads((tmp_path / "conv" / "E1" / "ablation.json").read_text())
    assert res["protocol"]["budget"] == "total"
    assert res["protocol"]["epochs"]["baseline-2x"] == [["baseline", 4]]  # 2 x (1 + 1)


def test_ablate_trains_stage1_once_for_fm_and_mm_mixing(cache, tmp_path):
    """mm-mixing takes its seed's fm run as stage 1: the same numbers as a full run, and a
    rerun loads both."""
    import json

    from mmmixlab import pipeline
    cfg = small_cfg(cache, **{"train.encoder": "pointnet"})
    result = ablate(cfg, ["mm-mixing", "fm"], [0, 1], tmp_path / "abl", announce=False)
    assert list(result["summary"]) == ["mm-mixing", "fm"]  # the order asked for
    record = json.loads((tmp_path / "abl" / "mm-mixing-seed0" / "stage1.json").read_text())
    assert record["streams"].startswith("continued from") and "fm-seed0" in record["path"]
    full = pipeline.run(cfg.replace(**{"train.variant": "mm-mixing", "train.seed": 0}),
                        tmp_path / "full", progress=False)
    reused = json.loads((tmp_path / "abl" / "mm-mixing-seed0" / "metrics.json").read_text())
    assert reused["zero_shot"] == full["zero_shot"]
    assert reused["linear_probe"] == full["linear_probe"]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "abl").glob("*/final.pt")}
    again = ablate(cfg, ["mm-mixing", "fm"], [0, 1], tmp_path / "abl", announce=False)
    assert again["runs"] == result["runs"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # loaded, not trained again


def test_sweep_rows_share_seeds_and_differ_only_in_the_field(cache, tmp_path):
    import json
    cfg = small_cfg(cache, **{"train.encoder": "pointnet"})
    result = ablate(cfg, ["baseline", "fm"], [0, 1], tmp_path / "abl", announce=False,
                    sweeps=[("mix.mix_prob", [0.5, 1.0])])  # 1.0 is the default: not twice
    assert list(result["summary"]) == ["baseline", "fm", "baseline [mix.mix_prob=0.5]",
                                       "fm [mix.mix_prob=0.5]"]
    assert result["protocol"]["sweeps"] == {"mix.mix_prob": [0.5, 1.0]}
    for seed in (0, 1):
        a = json.loads((tmp_path / "abl" / f"fm-seed{seed}" / "metrics.json").read_text())
        b = json.loads((tmp_path / "abl" / f"fm_[mix.mix_prob=0.5]-seed{seed}" /
                        "metrics.json").read_text())
        diff = [(s, k) for s in a["config"] for k in a["config"][s] or {}
                if isinstance(a["config"][s], dict) and a["config"][s][k] != b["config"][s][k]]
        assert diff == [("mix", "mix_prob")], diff
    # the baseline draws no mixing: the same numbers at any mix_prob (the pairing holds)
    assert result["diff_vs_default"]["baseline [mix.mix_prob=0.5]"]["zs_test_top1"]["mean"] == 0
    assert "fm [mix.mix_prob=0.5]" in result["diff_vs_baseline"]
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert "Swept (every row again, same seeds): mix.mix_prob = 0.5, 1.0." in md
    assert "at the default value" in md


def test_bad_jobs_is_a_one_line_error_before_any_work(tmp_path, capsys):
    assert main(["ablate", "--variants", "baseline", "--seeds", "2", "--out",
                 str(tmp_path / "a"), "--jobs", "zero"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--jobs must be a positive integer or 'auto', got 'zero'" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "a").exists()


@pytest.mark.parametrize("sweep,match", [
    ("train.lr=abc", r"--sweep train\.lr=abc: train\.lr must be a number, got 'abc'"),
    ("mix.nope=1", r"--sweep mix\.nope=1: unknown config field 'mix\.nope'"),
    ("mix.mix_prob=2", r"--sweep mix\.mix_prob=2: mix\.mix_prob must lie in \[0, 1\]"),
    ("train.epochs_stage1=3,5", r"--sweep train\.epochs_stage1: refused"),
    ("clip.model=ViT-B-32", r"--sweep clip\.model: refused"),
    ("mix.beta", r"--sweep expects FIELD=V1,V2"),
])
def test_bad_sweeps_get_one_line_errors(tmp_path, capsys, sweep, match):
    import re
    assert main(["ablate", "--variants", "baseline", "--seeds", "2", "--out",
                 str(tmp_path / "a"), "--sweep", sweep]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(match, err), err


@pytest.mark.slow
def test_notebook_08_reads_and_plots_a_sweep(tmp_path, monkeypatch):
    """Notebook 08 with SWEEPS set (a cell after the parameters cell, papermill-style): the
    sweep table and chart appear, with the swept rows beside their defaults."""
    import json

    import nbformat
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[1]
    for k, v in {"MMMIXLAB_SMOKE": "1", "MMMIXLAB_CACHE": str(tmp_path / "cache"),
                 "MMMIXLAB_FIGURES": str(tmp_path / "figures"), "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(root / "notebooks" / "08_ablations.ipynb", as_version=4)
    k = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(k + 1, nbformat.v4.new_code_cell(
        "SWEEPS = ['mix.mix_prob=0.5']\nBACKBONE = 'pointnet'"))
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(root / "notebooks")}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, errors[0]["evalue"]
    last = json.dumps(nb.cells[-1].outputs)
    assert "[mix.mix_prob=0.5]" in last and "vs default" in last


def test_ablate_reads_fm_off_a_finished_mm_mixing_run(cache, tmp_path, monkeypatch):
    """The reverse reuse: fm added to a folder that holds mm-mixing is mm-mixing's stage-1
    encoder, evaluated, not trained; its numbers are those of a trained fm run."""
    import json

    from mmmixlab import ablation
    cfg = small_cfg(cache, **{"train.encoder": "pointnet"})
    ablate(cfg, ["mm-mixing"], [0, 1], tmp_path / "abl", announce=False)
    trained = []
    real_run = ablation.run
    monkeypatch.setattr(ablation, "run", lambda c, f, **kw: trained.append(f) or real_run(
        c, f, **kw))
    result = ablate(cfg, ["fm", "mm-mixing"], [0, 1], tmp_path / "abl", announce=False)
    assert trained == []  # fm read off mm-mixing, mm-mixing loaded
    fm0 = json.loads((tmp_path / "abl" / "fm-seed0" / "metrics.json").read_text())
    assert fm0["stage1_of"].endswith("mm-mixing-seed0")
    alone = pipeline.run(cfg.replace(**{"train.variant": "fm", "train.seed": 0}),
                         tmp_path / "fm-alone", progress=False)
    assert fm0["zero_shot"] == alone["zero_shot"] and fm0["retrieval"] == alone["retrieval"]
    assert set(result["summary"]) == {"fm", "mm-mixing"}


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_parallel_ablation_equals_sequential_at_the_same_thread_count(cache, tmp_path,
                                                                     restore_threads):
    """`ablate --jobs 2` trains runs side by side in worker processes: with train.num_threads
    fixed, every run's numbers equal the sequential plan's bit for bit, mm-mixing still takes
    its seed's fm run as stage 1, and the table is in the plan's order."""
    cfg = small_cfg(cache, **{"train.encoder": "pointbert-tiny", "train.num_threads": 1,
                              "train.encoder_overrides": {"num_groups": 16, "group_size": 16}})
    plan = ["baseline", "mm-mixing", "fm"]
    seq = ablate(cfg, plan, [0, 1], tmp_path / "seq", announce=False, jobs=1)
    par = ablate(cfg, plan, [0, 1], tmp_path / "par", announce=False, jobs=2)
    assert par["runs"] == seq["runs"]
    assert [r["row"] for r in par["runs"]] == ["fm", "fm", "baseline", "baseline",
                                               "mm-mixing", "mm-mixing"]
    record = json.loads((tmp_path / "par" / "mm-mixing-seed1" / "stage1.json").read_text())
    assert record["streams"].startswith("continued from") and "fm-seed1" in record["path"]
    a = json.loads((tmp_path / "seq" / "mm-mixing-seed1" / "metrics.json").read_text())
    b = json.loads((tmp_path / "par" / "mm-mixing-seed1" / "metrics.json").read_text())
    assert a["zero_shot"] == b["zero_shot"] and a["retrieval"] == b["retrieval"]


def test_run_pool_names_the_failed_run_and_refuses_bad_jobs(cache, tmp_path):
    from mmmixlab.run_pool import Task, resolve_jobs, run_tasks
    from tests.helpers.pool import fail_on, read_file, square, thread_counts, write_after_pause

    cfg = small_cfg(cache)
    world = pipeline.prepare_world(cfg, progress=False)
    tasks = [Task("a", square, {"x": 3}), Task("b", fail_on, {"x": 2}, after="a")]
    results = {}
    with pytest.raises(ValueError, match=r"run b failed in its worker process: bad input 2"):
        for key, value in run_tasks(tasks, 2, cfg, world):
            results[key] = value
    assert results == {"a": 9}  # a finished before b started (b waits for it)
    # a task starts only once the one it waits for has finished, though a worker is free
    flag = tmp_path / "flag.txt"
    waited = dict(run_tasks([Task("w", write_after_pause, {"path": flag, "seconds": 1.0}),
                             Task("r", read_file, {"path": flag}, after="w")], 2, cfg, world))
    assert waited == {"w": "written", "r": "a was here"}
    assert dict(run_tasks([Task("a", square, {"x": 4})], 1, cfg, world)) == {"a": 16}
    # a worker's torch, BLAS and OpenMP pools all hold its share of the cores (one of two)
    from mmmixlab.run_pool import available_cores
    share = max(1, available_cores() // 2)
    assert dict(run_tasks([Task("t", thread_counts, {})], 2, cfg, world)) == {"t": (share, share)}
    with pytest.raises(ValueError, match="waits for 'z', which is not in the plan"):
        list(run_tasks([Task("a", square, {"x": 1}, after="z")], 2, cfg, world))
    for bad in (-1, "two", 1.5):
        with pytest.raises(ValueError, match="--jobs must be a positive integer or 'auto'"):
            resolve_jobs(bad, cfg, 4)
    assert resolve_jobs(8, cfg, 3) == 3 and resolve_jobs("1", cfg, 3) == 1
    assert 1 <= resolve_jobs("auto", cfg, 10) <= 10
    assert resolve_jobs("auto", cfg.replace(**{"train.device": "cpu"}), 1) == 1
    assert resolve_jobs("auto", cfg.replace(**{"data.root": str(cache)}), 10) == 1  # a folder


def test_evaluation_encodes_only_the_evaluated_splits(cache, monkeypatch):
    """A run's evaluation encodes test and scan, not the train split (no metric reads it), and
    its metrics equal those from every split's features."""
    from mmmixlab.encoders import create_point_encoder

    world = pipeline.prepare_world(small_cfg(cache), progress=False)
    cfg = small_cfg(cache)
    torch.manual_seed(0)
    encoder = create_point_encoder("pointbert-tiny", world.dim)
    every = pipeline.point_features(encoder, world, cfg)
    assert set(every) == {"train", "test", "scan"}
    encoded = []
    real = pipeline.encode_points
    monkeypatch.setattr(pipeline, "encode_points",
                        lambda enc, points, *a, **k: encoded.append(len(points)) or
                        real(enc, points, *a, **k))
    got = pipeline.evaluate_encoder(encoder, world, cfg)
    assert sorted(encoded) == sorted(len(world.splits[s]) for s in ("test", "scan"))
    assert got == pipeline.evaluate_encoder(encoder, world, cfg, feats=every)


def test_longest_chain_first_starts_long_runs_first():
    """The pool's start order: by the cost of the chain a task starts (an fm run carries its
    mm-mixing run's cost), longest first, ties in the given order; a cycle is refused."""
    from mmmixlab.run_pool import Task, longest_chain_first

    tasks = [Task("base", None, cost=1.0), Task("fm", None, cost=1.1),
             Task("mm", None, cost=2.3, after="fm"), Task("joint", None, cost=5.8),
             Task("im", None, cost=2.1), Task("base2", None, cost=2.0), Task("tie", None, cost=2.0)]
    assert [t.key for t in longest_chain_first(tasks)] == [
        "joint", "fm", "mm", "im", "base2", "tie", "base"]
    chained = [Task("a", None, cost=1.0), Task("b", None, cost=1.0, after="a"),
               Task("c", None, cost=1.0, after="b"), Task("d", None, cost=2.5)]
    assert [t.key for t in longest_chain_first(chained)] == ["a", "d", "b", "c"]
    with pytest.raises(RuntimeError, match="wait for each other"):
        longest_chain_first([Task("x", None, after="y"), Task("y", None, after="x")])


def test_ablate_costs_each_run_by_its_phases(cache, monkeypatch):
    """``ablate`` gives the pool each run's cost: its phases' epochs at their relative epoch
    cost, an mm-mixing run that continues its seed's fm run without stage 1."""
    from mmmixlab import ablation

    seen = {}

    class Captured(Exception):
        pass

    def capture(tasks, jobs, base, world):
        seen.update({t.key: t.cost for t in tasks})
        raise Captured

    monkeypatch.setattr(ablation, "run_tasks", capture)
    cfg = small_cfg(cache, **{"train.epochs_stage1": 3, "train.epochs_stage2": 2})
    with pytest.raises(Captured):
        ablate(cfg, ["baseline", "fm", "mm-mixing", "one-stage", "baseline-2x"], [0, 1],
               cache / "costs", announce=False, jobs=2)
    cost = ablation.EPOCH_COST
    assert seen["baseline seed 1"] == pytest.approx(3 * cost["baseline"])
    assert seen["fm seed 0"] == pytest.approx(3 * cost["stage1"])
    assert seen["mm-mixing seed 0"] == pytest.approx(2 * cost["stage2"])
    assert seen["one-stage seed 0"] == pytest.approx(5 * cost["joint"])
    assert seen["baseline-2x seed 0"] == pytest.approx(5 * cost["baseline"])
