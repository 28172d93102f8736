"""Files from others never run code: crafted pickles in every file the workbench reads are
refused by name (and their payload never runs); shared runs travel as safetensors."""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmmixlab import pipeline
from mmmixlab.checkpoints import SAFETENSORS_NAME
from mmmixlab.cli import main
from mmmixlab.config import preset
from mmmixlab.safe_pickle import UnsafePickleError, load_npy
from mmmixlab.train import Trainer
from tests.helpers import realdata
from tests.helpers.toy import toy_batches, toy_cfg


class Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "payload-ran"
    yield m
    assert not m.exists(), "a crafted file ran code"


def crafted_torch(path, marker, extra=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": {}, "encoders": {}, "embed_dim": 8, "evil": Payload(marker),
                **(extra or {})}, path)
    return path


def test_crafted_final_pt_is_refused_by_eval(tmp_path, marker, capsys):
    run = tmp_path / "run"
    crafted_torch(run / "final.pt", marker)
    assert main(["eval", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert str(run / "final.pt") in err and "safe loader refuses" in err


def test_crafted_checkpoint_is_refused_on_resume(tmp_path, marker):
    out = tmp_path / "run"
    crafted_torch(out / "checkpoints" / "last.pt", marker)
    trainer = Trainer(toy_cfg("baseline"), toy_batches(), embed_dim=16, out_dir=out,
                      progress=False)
    with pytest.raises(ValueError, match=r"last\.pt is corrupt, unreadable, or holds objects"):
        trainer.fit(resume=True)


def test_crafted_stage1_checkpoint_is_refused(tmp_path, marker):
    bad = crafted_torch(tmp_path / "stage1" / "final.pt", marker)
    cfg = toy_cfg("mm-mixing", **{"train.stage1_checkpoint": str(bad.parent)})
    with pytest.raises(ValueError, match=rf"{bad}: not a readable run file"):
        Trainer(cfg, toy_batches(), embed_dim=16, out_dir=tmp_path / "run", progress=False)


def test_crafted_cache_file_is_refused(tmp_path, marker):
    from mmmixlab.clip import cached_features
    path = crafted_torch(tmp_path / "features" / "train.pt", marker)
    with pytest.raises(ValueError, match=rf"corrupt or unreadable cache file {path}"):
        cached_features(None, [], path)


def test_crafted_openshape_and_benchmark_npy_are_refused(tmp_path, marker):
    from mmmixlab.data import load_benchmark, read_openshape_npy
    shape = tmp_path / "shape.npy"
    np.save(shape, np.array({"xyz": Payload(marker)}, dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError, match=rf"{shape}: refusing to unpickle posix\.system"):
        read_openshape_npy(shape)
    scan = tmp_path / "scanobjectnn"
    scan.mkdir()
    np.save(scan / "xyz_label.npy", np.array({"xyz": Payload(marker), "label": [0]},
                                             dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"xyz_label\.npy: refusing to unpickle"):
        load_benchmark("scanobjectnn", scan)
    mn = tmp_path / "modelnet40"
    mn.mkdir()
    (mn / "test_split.json").write_text(json.dumps([{"name": "a", "category": "chair"}]))
    np.save(mn / "test_pc.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"test_pc\.npy: refusing to unpickle"):
        load_benchmark("modelnet40", mn)
    feats = tmp_path / "cat_name_pt_feat.npy"
    np.save(feats, np.array({"chair": Payload(marker)}, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_npy(feats)


def test_plain_pickled_data_still_loads(tmp_path):
    """The allowlist admits what OpenShape's files hold: dicts, lists, strings, numbers,
    numpy arrays and scalars."""
    d = {"xyz": np.zeros((3, 3), np.float32), "text": ["a"], "n": None, "f": np.float32(1.5),
         "feat": [{"original": np.ones(4, np.float16)}], "id": "x", "k": (1, 2.0)}
    np.save(tmp_path / "d.npy", d, allow_pickle=True)
    back = load_npy(tmp_path / "d.npy").item()
    assert back["text"] == ["a"] and back["f"] == np.float32(1.5) and back["k"] == (1, 2.0)
    np.testing.assert_array_equal(back["feat"][0]["original"], np.ones(4, np.float16))
    np.save(tmp_path / "arr.npy", np.arange(5))
    assert load_npy(tmp_path / "arr.npy").tolist() == [0, 1, 2, 3, 4]


def test_malformed_runs_name_the_file_and_what_is_wrong(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"config": {}, "embed_dim": 8}, run / "final.pt")
    assert main(["eval", "--run", str(run)]) == 2
    assert "lacks ['encoders']" in capsys.readouterr().err
    torch.save({"config": {"train": {"nope": 1}}, "embed_dim": 8, "encoders": {"A": {}}},
               run / "final.pt")
    assert main(["eval", "--run", str(run)]) == 2
    assert "config does not fit" in capsys.readouterr().err
    (run / "final.pt").unlink()
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(run / SAFETENSORS_NAME))
    assert main(["eval", "--run", str(run)]) == 2
    assert "without mmmixlab's metadata" in capsys.readouterr().err
    (run / SAFETENSORS_NAME).unlink()
    assert main(["eval", "--run", str(run)]) == 2
    assert "missing final.pt and encoders.safetensors" in capsys.readouterr().err


def test_safetensors_run_evaluates_like_final_pt(tmp_path, capsys):
    root = tmp_path / "data"
    info = realdata.write_openshape_training(root, per_kind=6)
    mn = realdata.write_modelnet40_hdf5(root)
    cf = realdata.write_class_features(root)["modelnet40"]
    cfg = preset("tiny").replace(**{
        "data.root": str(info["folder"]), "data.num_points": 128, "data.num_workers": 0,
        "train.encoder": "pointnet", "train.variant": "mm-mixing", "train.epochs_stage1": 1,
        "train.epochs_stage2": 1, "train.batch_size": 8, "train.device": "cpu"})
    run = tmp_path / "run"
    pipeline.run(cfg, run, progress=False)
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.copy(run / SAFETENSORS_NAME, shared)  # what a Hub repo of the run holds
    shutil.copy(run / "config.json", shared)
    a_cfg, a = pipeline.load_run(run)
    b_cfg, b = pipeline.load_run(shared)
    assert a_cfg == b_cfg and a.keys() == b.keys() == {"A", "B"}
    for name in a:
        for k, v in a[name].state_dict().items():
            assert torch.equal(v, b[name].state_dict()[k])
    for r in (run, shared):
        assert main(["eval", "--run", str(r), "--benchmark", f"modelnet40={mn}",
                     "--class-features", f"modelnet40={cf}"]) == 0
    capsys.readouterr()
    ra = json.loads((run / "eval" / "modelnet40.json").read_text())
    rb = json.loads((shared / "eval" / "modelnet40.json").read_text())
    assert ra["zero_shot"] == rb["zero_shot"] and ra["retrieval"] == rb["retrieval"]
    # stage 2 from a shared stage-1 run: encoder A taken from the safetensors folder
    s2 = cfg.replace(**{"train.stage1_checkpoint": str(shared)})
    world = pipeline.prepare_world(s2)
    trainer = Trainer(s2, pipeline.training_batches(s2, world), embed_dim=world.dim,
                      out_dir=tmp_path / "s2", progress=False)
    assert [p.name for p in trainer.phases] == ["stage2"]
    for k, v in a["A"].state_dict().items():
        assert torch.equal(v, trainer.encoders["A"].state_dict()[k])


def test_download_run_fetches_a_model_repo(tmp_path, monkeypatch):
    from mmmixlab import download as dl
    from tests.test_download import fake_hub
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    files = {f: f"content of {f}".encode() for f in dl.RUN_FILES}
    calls = []
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub(files, calls))
    paths = dl.download("run", "someone/mm-mixing-shapenet", tmp_path / "run", progress=False)
    assert sorted(Path(p).name for p in paths) == sorted(dl.RUN_FILES)
    assert {c[2] for c in calls} == {"model"} and calls[0][0] == "someone/mm-mixing-shapenet"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"huggingface\.co/other/run/resolve/main/"
                                           r"encoders\.safetensors"):
        dl.download("run", "other/run", tmp_path / "other", progress=False)
    with pytest.raises(ValueError, match="USER/NAME"):
        dl.plan_files("run", None)
