"""Released checkpoints: OpenShape's point-patch transformer against an independent float64
reference written here from the architecture facts (not from the module under test), the
import into a run folder, and that run through classify, eval --benchmark, load_encoder,
train.init_from and train.stage1_checkpoint. Every checkpoint is written by the tests in the
released layout (DDP's ``module.`` prefix, training state beside the weights); no network."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mmmixlab import load_encoder
from mmmixlab.cli import main
from mmmixlab.data.benchmarks import MODELNET40_CLASSES
from mmmixlab.released import import_checkpoint, read_checkpoint_file, recognise
from tests.helpers import realdata

G14 = {"width": 512, "depth": 12, "heads": 8, "mlp": 1536, "sa": (64, 64, 256),
       "patches": 384, "radius": 0.2, "k": 64, "in_dim": 6, "out": 1280}
S3 = {"width": 512, "depth": 12, "heads": 8, "mlp": 1024, "sa": (64, 64, 128),
      "patches": 128, "radius": 0.35, "k": 128, "in_dim": 6, "out": 768}
L14 = dict(S3, patches=64, radius=0.4, k=256)


# ------------------------------------------------------------------ the released layout

def released_state_dict(size: dict, seed: int = 0, prefix: str = "module.",
                        project: bool = True) -> dict:
    """Random tensors under the exact names and shapes of OpenShape's ``Projected(ppat,
    proj)`` state dict (``ppat.sa.mlp_convs.i`` Conv2d 1x1, ``mlp_bns.i`` BatchNorm2d,
    ``lift.0`` Conv1d, ``lift.2`` LayerNorm, ``cls_token``, per layer ``0.norm``,
    ``0.fn.to_qkv`` (no bias), ``0.fn.to_out.0``, ``1.norm``, ``1.fn.net.0`` / ``net.3``,
    ``proj``), scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape, fan_in=None):
        fan = fan_in or shape[1]
        return torch.randn(*shape, generator=g) / math.sqrt(fan)

    def vec(n, base=0.0, scale=0.1):
        return base + scale * torch.randn(n, generator=g)

    d, inner = size["width"], size["heads"] * 64
    sd = {}
    last = size["in_dim"] + 3
    for i, c in enumerate(size["sa"]):
        sd[f"ppat.sa.mlp_convs.{i}.weight"] = w(c, last, 1, 1, fan_in=last)
        sd[f"ppat.sa.mlp_convs.{i}.bias"] = vec(c)
        sd[f"ppat.sa.mlp_bns.{i}.weight"] = vec(c, 1.0)
        sd[f"ppat.sa.mlp_bns.{i}.bias"] = vec(c)
        sd[f"ppat.sa.mlp_bns.{i}.running_mean"] = vec(c)
        sd[f"ppat.sa.mlp_bns.{i}.running_var"] = 0.5 + torch.rand(c, generator=g)
        sd[f"ppat.sa.mlp_bns.{i}.num_batches_tracked"] = torch.tensor(1234)
        last = c
    sd["ppat.lift.0.weight"] = w(d, last + 3, 1, fan_in=last + 3)
    sd["ppat.lift.0.bias"] = vec(d)
    sd["ppat.lift.2.weight"] = vec(d, 1.0)
    sd["ppat.lift.2.bias"] = vec(d)
    sd["ppat.cls_token"] = torch.randn(d, generator=g)
    for layer in range(size["depth"]):
        p = f"ppat.transformer.layers.{layer}"
        sd[f"{p}.0.norm.weight"], sd[f"{p}.0.norm.bias"] = vec(d, 1.0), vec(d)
        sd[f"{p}.0.fn.to_qkv.weight"] = w(3 * inner, d)
        sd[f"{p}.0.fn.to_out.0.weight"] = w(d, inner) * 0.5
        sd[f"{p}.0.fn.to_out.0.bias"] = vec(d)
        sd[f"{p}.1.norm.weight"], sd[f"{p}.1.norm.bias"] = vec(d, 1.0), vec(d)
        sd[f"{p}.1.fn.net.0.weight"] = w(size["mlp"], d)
        sd[f"{p}.1.fn.net.0.bias"] = vec(size["mlp"])
        sd[f"{p}.1.fn.net.3.weight"] = w(d, size["mlp"]) * 0.5
        sd[f"{p}.1.fn.net.3.bias"] = vec(d)
    if project:
        sd["proj.weight"] = w(size["out"], d)
        sd["proj.bias"] = vec(size["out"])
    else:
        sd = {k[len("ppat."):]: v for k, v in sd.items()}  # PointPatchTransformer alone
    return {prefix + k: v for k, v in sd.items()}


def write_release(path: Path, size: dict, seed: int = 0, **kw) -> dict:
    """A ``model.pt`` as OpenShape's trainer saves it: weights plus training state."""
    sd = released_state_dict(size, seed, **kw)
    torch.save({"state_dict": sd, "logit_scale": {"module.logit_scale": torch.tensor(3.5)},
                "text_proj": None, "image_proj": None, "epoch": 7, "step": 1234,
                "optimizer": {"state": {}, "param_groups": [{"lr": 5e-4, "params": [0, 1]}]},
                "scheduler": {"last_epoch": 3}, "best_lvis_acc": torch.tensor(0.46)}, path)
    return sd


# ------------------------------------------------------------------ the float64 reference

def reference_features(sd: dict, clouds: np.ndarray, size: dict, project: bool = True):
    """OpenShape's forward in float64 numpy, from the architecture facts: FPS from point 0
    (first maximum), ball query = the first ``k`` indices with squared distance <= r^2, padded
    with the first; patches ``[xyz - centre, features]``; 1x1 conv + BatchNorm (eval) + ReLU;
    max; lift ``[centre, feature]`` -> conv -> LayerNorm; CLS first; pre-norm blocks with
    softmax(q k^T / 8) v attention and exact-erf GELU; CLS -> proj."""
    from scipy.special import erf

    t = {k.removeprefix("module.").removeprefix("pc_encoder."): v.double().numpy()
         for k, v in sd.items()}
    if not project:
        t = {f"ppat.{k}": v for k, v in t.items()}

    def ln(x, wt, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * wt + b

    out = []
    for pts in clouds.astype(np.float64):
        xyz = pts[:, :3]
        n = len(xyz)
        picks, dist = [0], np.full(n, np.inf)
        for _ in range(size["patches"] - 1):
            dist = np.minimum(dist, ((xyz - xyz[picks[-1]]) ** 2).sum(1))
            picks.append(int(np.argmax(dist)))
        centres = xyz[picks]
        feats = []
        for c in centres:
            inside = np.flatnonzero(((xyz - c) ** 2).sum(1) <= size["radius"] ** 2)[:size["k"]]
            idx = np.concatenate([inside, np.full(size["k"] - len(inside), inside[0])])
            x = np.concatenate([xyz[idx] - c, pts[idx]], axis=1)
            for i in range(len(size["sa"])):
                x = x @ t[f"ppat.sa.mlp_convs.{i}.weight"][:, :, 0, 0].T \
                    + t[f"ppat.sa.mlp_convs.{i}.bias"]
                b = f"ppat.sa.mlp_bns.{i}"
                x = (x - t[f"{b}.running_mean"]) / np.sqrt(t[f"{b}.running_var"] + 1e-5) \
                    * t[f"{b}.weight"] + t[f"{b}.bias"]
                x = np.maximum(x, 0)
            feats.append(x.max(0))
        tok = np.concatenate([centres, np.stack(feats)], 1) @ t["ppat.lift.0.weight"][:, :, 0].T \
            + t["ppat.lift.0.bias"]
        x = np.concatenate([t["ppat.cls_token"][None], ln(tok, t["ppat.lift.2.weight"],
                                                           t["ppat.lift.2.bias"])])
        h_n = size["heads"]
        for layer in range(size["depth"]):
            p = f"ppat.transformer.layers.{layer}"
            h = ln(x, t[f"{p}.0.norm.weight"], t[f"{p}.0.norm.bias"])
            q, k, v = np.split(h @ t[f"{p}.0.fn.to_qkv.weight"].T, 3, axis=1)
            heads = []
            for j in range(h_n):
                s = slice(64 * j, 64 * (j + 1))
                logits = q[:, s] @ k[:, s].T / 8.0
                a = np.exp(logits - logits.max(1, keepdims=True))
                heads.append((a / a.sum(1, keepdims=True)) @ v[:, s])
            x = x + np.concatenate(heads, 1) @ t[f"{p}.0.fn.to_out.0.weight"].T \
                + t[f"{p}.0.fn.to_out.0.bias"]
            h = ln(x, t[f"{p}.1.norm.weight"], t[f"{p}.1.norm.bias"])
            h = h @ t[f"{p}.1.fn.net.0.weight"].T + t[f"{p}.1.fn.net.0.bias"]
            h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
            x = x + h @ t[f"{p}.1.fn.net.3.weight"].T + t[f"{p}.1.fn.net.3.bias"]
        cls = x[0]
        out.append(cls @ t["proj.weight"].T + t["proj.bias"] if project else cls)
    return np.stack(out)


def clouds(b=2, n=600, seed=0) -> np.ndarray:
    """Unit-sphere clouds with rgb, as OpenShape feeds them."""
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(b, n, 3)) * [1.0, 0.6, 0.3]
    xyz -= xyz.mean(1, keepdims=True)
    xyz /= np.linalg.norm(xyz, axis=2).max(1)[:, None, None]
    return np.concatenate([xyz, rng.uniform(size=(b, n, 3))], 2).astype(np.float32)


@pytest.fixture(scope="module")
def g14_release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    sd = write_release(root / "model.pt", G14)
    run = import_checkpoint(root / "model.pt", root / "run",
                            name="openshape-pointbert-vitg14-rgb")
    return {"root": root, "sd": sd, "run": run}


# ------------------------------------------------------------------ the network

def test_release_features_equal_the_float64_reference(g14_release):
    x = clouds()
    ref = reference_features(g14_release["sd"], x, G14)
    enc = load_encoder(g14_release["run"])
    assert not enc.training
    with torch.no_grad():
        got32 = enc(torch.from_numpy(x)).numpy()
        got64 = enc.double()(torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(got64, ref, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(got32, ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())


def test_release_size_parameters_and_strict_round_trip(g14_release):
    enc = load_encoder(g14_release["run"])
    assert sum(p.numel() for p in enc.parameters()) == 32_326_080  # OpenShape's 32.3M
    ours = enc.state_dict()
    theirs = {k.removeprefix("module."): v for k, v in g14_release["sd"].items()}
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    info = json.loads((g14_release["run"] / "released.json").read_text())
    assert info["size"] == "g14" and info["clip"] == {"model": "ViT-bigG-14",
                                                      "pretrained": "laion2b_s39b_b160k"}
    assert info["reported_zero_shot_top1"] == {"modelnet40": 84.4, "scanobjectnn": 52.2,
                                               "objaverse_lvis": 46.8}
    assert {"epoch", "optimizer", "logit_scale"} <= set(info["checkpoint_extras"])
    cfg = json.loads((g14_release["run"] / "config.json").read_text())
    assert cfg["data"]["up_convention"] == "swap" and cfg["data"]["num_points"] == 10000
    assert abs(info["logit_scale"] - math.exp(3.5)) < 1e-3


def test_fps_random_start_option():
    from mmmixlab.encoders import create_point_encoder

    enc = create_point_encoder("openshape-pointbert-tiny", 16, fps_start="random").eval()
    x = torch.from_numpy(clouds(2, 300))
    torch.manual_seed(0)
    a = enc(x)
    torch.manual_seed(1)
    b = enc(x)
    assert not torch.allclose(a, b)  # another start, other patches
    det = create_point_encoder("openshape-pointbert-tiny", 16).eval()
    assert torch.equal(det(x), det(x))


def test_tiny_preset_matches_the_reference_too():
    from mmmixlab.encoders import create_point_encoder

    torch.manual_seed(0)
    enc = create_point_encoder("openshape-pointbert-tiny", 24).eval()
    cfg = enc.config
    size = {"width": cfg.width, "depth": cfg.depth, "heads": cfg.heads, "mlp": cfg.mlp_dim,
            "sa": cfg.sa_mlp, "patches": cfg.num_patches, "radius": cfg.radius,
            "k": cfg.patch_points}
    x = clouds(2, 400, seed=3)
    with torch.no_grad():
        got = enc.double()(torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(got, reference_features(enc.state_dict(), x, size), rtol=1e-8,
                               atol=1e-8)


# ------------------------------------------------------------------ recognition and refusals

def test_demo_layouts_are_recognised(tmp_path):
    sd = released_state_dict(L14, prefix="pc_encoder.")
    rec = recognise(sd, "l14")
    assert rec.size == "l14" and rec.out_dim == 768 and rec.encoder_overrides["num_patches"] == 64
    b32 = released_state_dict(L14, prefix="pc_encoder.", project=False)
    rec = recognise(b32, "b32")
    assert rec.out_dim == 512 and rec.encoder_overrides["project"] is False
    torch.save(b32, tmp_path / "b32.pt")  # the demo's files: the dict itself, no state_dict
    run = import_checkpoint(tmp_path / "b32.pt", tmp_path / "run")
    x = clouds(1, 400)
    with torch.no_grad():
        got = load_encoder(run).double()(torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(got, reference_features(b32, x, L14, project=False), rtol=1e-8,
                               atol=1e-8)


def test_same_tensors_two_sizes_needs_a_choice():
    sd = released_state_dict(S3)  # OpenShape's s3 and the L/14 release share every shape
    with pytest.raises(ValueError, match=r"--size"):
        recognise(sd, "s3.pt")
    assert recognise(sd, "s3.pt", size="s3").encoder_overrides["num_patches"] == 128


def test_wrong_shape_names_tensors_both_shapes_and_sizes(tmp_path):
    sd = released_state_dict(G14)
    sd["module.ppat.transformer.layers.3.1.fn.net.0.weight"] = torch.zeros(1024, 512)
    torch.save({"state_dict": sd}, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as err:
        import_checkpoint(tmp_path / "bad.pt", tmp_path / "run")
    text = str(err.value)
    assert "layers.3.1.fn.net.0.weight: checkpoint (1024, 512), model (1536, 512)" in text
    assert "sizes tried" in text and "g14" in text and "s1" in text
    assert not (tmp_path / "run").exists()


def test_other_architecture_and_missing_tensor(tmp_path):
    with pytest.raises(ValueError, match="not a network this workbench knows"):
        recognise({"state_dict": {"module.encoder.weight": torch.zeros(3, 3)}}, "x.pt")
    sd = released_state_dict(G14)
    del sd["module.ppat.sa.mlp_bns.1.running_var"]
    with pytest.raises(ValueError, match=r"missing ppat\.sa\.mlp_bns\.1\.running_var \(64,\)"):
        recognise({"state_dict": sd}, "x.pt")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        import_checkpoint(tmp_path / "nope.pt", tmp_path / "run")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        read_checkpoint_file(tmp_path / "junk.pt")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused_by_name(tmp_path):
    marker = tmp_path / "ran"
    sd = released_state_dict(G14)
    torch.save({"state_dict": sd, "config": _Payload(marker)}, tmp_path / "evil.pt")
    assert main(["import-checkpoint", str(tmp_path / "evil.pt"), "--out",
                 str(tmp_path / "run")]) == 2
    with pytest.raises(ValueError, match=r"refusing to load: its pickle asks for (posix|nt)\.system"):
        read_checkpoint_file(tmp_path / "evil.pt")
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_download_offline_names_repo_file_and_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["download", "checkpoint", "tripletmix-pointbert-all-objaverse", "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "TripletMix/tripletmix-pointbert-all-objaverse" in err and "model.pt" in err
    assert "mmmixlab import-checkpoint" in err and "--name tripletmix-pointbert-all-objaverse" in err
    assert main(["download", "checkpoint", "no-such-release", "--out", str(tmp_path)]) == 2


# ------------------------------------------------------------------ the run, end to end

def _class_feature_file(root: Path, names, dim=1280, seed=5) -> Path:
    rng = np.random.default_rng(seed)
    path = root / "cat_name_pt_feat.npy"
    np.save(path, rng.normal(size=(len(names), dim)).astype(np.float32))
    return path


def test_imported_run_through_eval_benchmark(g14_release, tmp_path):
    mn = realdata.write_modelnet40_hdf5(tmp_path, per_class=1)
    feats = _class_feature_file(tmp_path, MODELNET40_CLASSES)
    run = g14_release["run"]
    assert main(["eval", "--run", str(run), "--benchmark", f"modelnet40={mn}",
                 "--class-features", f"modelnet40={feats}"]) == 0
    res = json.loads((run / "eval" / "modelnet40.json").read_text())
    # the same numbers by hand: the benchmark's clouds (y/z swap, unit sphere, rgb 0.4) through
    # the float64 reference, cosine against the class features
    from mmmixlab.data import load_benchmark

    ds = load_benchmark("modelnet40", mn, "test", rgb_fill=0.4)
    ref = reference_features(g14_release["sd"], np.asarray(ds.points), G14)
    cf = np.load(feats)
    sims = (ref / np.linalg.norm(ref, axis=1, keepdims=True)) @ \
        (cf / np.linalg.norm(cf, axis=1, keepdims=True)).T
    top1 = float((sims.argmax(1) == np.asarray(ds.labels)).mean())
    assert res["num_shapes"] == len(ds) and res["zero_shot"]["top1"] == pytest.approx(top1)


def test_imported_run_classifies_in_openshape_convention(g14_release, tmp_path, capsys):
    rng = np.random.default_rng(4)
    yup = clouds(1, 700, seed=4)[0]
    yup[:, :3] *= 3.0  # any scale: classify normalizes
    np.save(tmp_path / "shape.npy", yup)
    names = ["chair", "table", "lamp"]
    table = {c: rng.normal(size=1280).astype(np.float32) for c in names}
    np.save(tmp_path / "classes.npy", table, allow_pickle=True)
    assert main(["classify", str(tmp_path / "shape.npy"), "--run", str(g14_release["run"]),
                 "--classes", ",".join(names), "--class-features",
                 str(tmp_path / "classes.npy"), "--top-k", "3"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    got = dict((w.split()[0], float(w.split()[1])) for w in line.split(": ", 1)[1].split(", "))
    # by hand: OpenShape's column swap (not a rotation), unit sphere, reference features
    xyz = yup[:, :3][:, [0, 2, 1]].astype(np.float64)
    xyz -= xyz.mean(0)
    xyz /= np.linalg.norm(xyz, axis=1).max()
    f = reference_features(g14_release["sd"], np.concatenate([xyz, yup[:, 3:]], 1)[None],
                           G14)[0]
    f /= np.linalg.norm(f)
    cf = np.stack([table[c] / np.linalg.norm(table[c]) for c in names])
    logits = math.exp(3.5) * cf @ f
    p = np.exp(logits - logits.max())
    p /= p.sum()
    for c, prob in zip(names, p):
        assert got[c] == pytest.approx(prob, abs=2e-3)


def test_eval_without_a_benchmark_says_what_to_give(g14_release, capsys):
    assert main(["eval", "--run", str(g14_release["run"])]) == 2
    assert "imported release" in capsys.readouterr().err


def test_width_mismatch_with_class_features_is_an_error(g14_release, tmp_path):
    mn = realdata.write_modelnet40_hdf5(tmp_path, per_class=1)
    small = _class_feature_file(tmp_path, MODELNET40_CLASSES, dim=32)
    assert main(["eval", "--run", str(g14_release["run"]), "--benchmark", f"modelnet40={mn}",
                 "--class-features", f"modelnet40={small}"]) == 2


# ------------------------------------------------------------------ fine-tuning and stage 1

TINY = {"width": 128, "depth": 2, "heads": 2, "mlp": 256, "sa": (32, 32, 64), "patches": 64,
        "radius": 0.2, "k": 32, "in_dim": 6, "out": 16}


@pytest.fixture()
def tiny_release(tmp_path):
    sd = write_release(tmp_path / "model.pt", TINY, seed=2)
    return sd, import_checkpoint(tmp_path / "model.pt", tmp_path / "imported",
                                 clip="synth-tiny")


def test_init_from_an_imported_run(tiny_release, tmp_path):
    from mmmixlab.train import Trainer
    from tests.helpers.toy import toy_batches, toy_cfg

    sd, run = tiny_release
    cfg = toy_cfg("baseline", **{"train.encoder": "openshape-pointbert-tiny",
                                 "train.init_from": str(run)})
    trainer = Trainer(cfg, toy_batches(d=16), embed_dim=16, out_dir=tmp_path / "ft",
                      progress=False)
    start = trainer.encoders["A"].state_dict()
    assert all(torch.equal(start[k.removeprefix("module.")], v) for k, v in sd.items())
    assert json.loads((tmp_path / "ft" / "init.json").read_text())["sha1"]
    trainer.fit()
    moved = trainer.encoders["A"].state_dict()["proj.weight"]
    assert not torch.equal(moved, sd["module.proj.weight"])  # it trained from there
    with pytest.raises(ValueError, match=r"--encoder openshape-pointbert"):
        Trainer(toy_cfg("baseline", **{"train.init_from": str(run)}), toy_batches(d=16),
                embed_dim=16, progress=False)  # pointnet cannot start from it
    with pytest.raises(ValueError, match="16-d features"):
        Trainer(cfg, toy_batches(d=8), embed_dim=8, progress=False)


def test_imported_release_as_stage1_of_another_backbone(tiny_release, tmp_path):
    from mmmixlab import pipeline
    from mmmixlab.checkpoints import save_final
    from mmmixlab.train import Trainer
    from tests.helpers.toy import toy_batches, toy_cfg

    sd, run = tiny_release
    cfg = toy_cfg("mm-mixing", **{"train.stage1_checkpoint": str(run)})  # B: pointnet
    trainer = Trainer(cfg, toy_batches(d=16), embed_dim=16, out_dir=tmp_path / "s2",
                      progress=False)
    assert [p.name for p in trainer.phases] == ["stage2"]
    result = trainer.fit()
    a = result.encoders["A"].state_dict()
    assert all(torch.equal(a[k.removeprefix("module.")], v) for k, v in sd.items())  # frozen
    save_final(result, cfg, tmp_path / "s2" / "final.pt")
    _, encoders = pipeline.load_run(tmp_path / "s2")
    assert set(encoders) == {"B"}  # A is the imported file, named in stage1.json
    assert json.loads((tmp_path / "s2" / "stage1.json").read_text())["path"].endswith(
        "encoders.safetensors")


def test_sparseconv_release_imports(tmp_path):
    from mmmixlab.encoders import create_point_encoder
    from mmmixlab.released_sparseconv import convert_minkowski_state_dict
    from tests.test_released_sparseconv import random_openshape_state_dict

    sd = random_openshape_state_dict(seed=1)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
               tmp_path / "model.pt")
    run = import_checkpoint(tmp_path / "model.pt", tmp_path / "run",
                            name="openshape-spconv-all")
    info = json.loads((run / "released.json").read_text())
    assert info["architecture"] == "sparseconv" and info["out_dim"] == 1280
    converted, meta = convert_minkowski_state_dict(sd)
    direct = create_point_encoder("sparseconv", out_dim=1280, in_channels=6,
                                  **meta["encoder_overrides"])
    direct.load_state_dict(converted)
    x = torch.from_numpy(clouds(1, 2000, seed=6))
    with torch.no_grad():
        assert torch.equal(load_encoder(run)(x), direct.eval()(x))
    with pytest.raises(ValueError, match="sparseconv network, but openshape-pointbert-vitg14"):
        import_checkpoint(tmp_path / "model.pt", tmp_path / "run2",
                          name="openshape-pointbert-vitg14-rgb")


def test_openshape_nested_class_feature_dict(tmp_path):
    """OpenShape's ModelNet40 loader reads ``{category: {"open_clip_text_feat": (1, D)}}``."""
    from mmmixlab.class_features import load_class_features

    rng = np.random.default_rng(0)
    names = ["chair", "flower_pot", "table"]
    raw = {c: rng.normal(size=(1, 8)).astype(np.float32) for c in names}
    np.save(tmp_path / "cf.npy", {c: {"open_clip_text_feat": v} for c, v in raw.items()},
            allow_pickle=True)
    got = load_class_features(tmp_path / "cf.npy", ["table", "flower pot", "chair"], 8)
    want = np.stack([raw[c][0] for c in ("table", "flower_pot", "chair")])
    np.testing.assert_allclose(got.numpy(), want / np.linalg.norm(want, axis=1, keepdims=True),
                               rtol=1e-6)
    np.save(tmp_path / "bad.npy", {c: {"a": 1, "b": 2} for c in names}, allow_pickle=True)
    with pytest.raises(ValueError, match="open_clip_text_feat"):
        load_class_features(tmp_path / "bad.npy", names, 8)


@pytest.mark.slow
def test_openshape_pointbert_tiny_through_the_cli_and_the_notebook_path(tmp_path):
    from mmmixlab import workbench
    from tests.test_pipeline import SMALL

    run = tmp_path / "run"
    assert main(["train", "--variant", "mm-mixing", "--encoder", "openshape-pointbert-tiny",
                 "--out", str(run), "--cache", str(tmp_path / "cache")] + SMALL) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["phase"] for h in metrics["history"]] == ["stage1", "stage2"]
    assert main(["eval", "--run", str(run)]) == 0
    # what the series does with BACKBONE = "openshape-pointbert-tiny" (smoke sizes)
    cfg = workbench.notebook_config(backbone="openshape-pointbert-tiny", cache=str(tmp_path),
                                    smoke=True, device="cpu")
    world = workbench.get_world(cfg, progress=False)
    r = workbench.get_run(cfg, "mm-mixing", progress=False)
    step = workbench.one_step(r, world, phase="stage2")
    assert torch.isfinite(torch.as_tensor(step["loss"])).all()
    assert all(torch.isfinite(f).all() for f in workbench.run_point_features(r, world).values())


def test_numpy_scalars_beside_the_weights_are_plain_data(tmp_path):
    """Training scripts store accuracies as numpy scalars: such a file imports; a global of
    any other kind is still refused."""
    sd = released_state_dict(TINY)
    torch.save({"state_dict": sd, "best_acc": np.float64(0.46), "curve": np.zeros(3)},
               tmp_path / "model.pt")
    run = import_checkpoint(tmp_path / "model.pt", tmp_path / "run", clip="synth-tiny")
    assert "best_acc" in json.loads((run / "released.json").read_text())["checkpoint_extras"]
    torch.save({"state_dict": sd, "cfg": _Payload(tmp_path / "ran")}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refusing to load"):
        read_checkpoint_file(tmp_path / "evil.pt")
    assert not (tmp_path / "ran").exists()


def test_demo_file_with_tensors_outside_the_network(tmp_path, capsys):
    """OpenShape's demo files hold the 3D encoder under pc_encoder. beside other tensors: the
    encoder is imported, the others are named, not used and not silently dropped."""
    sd = released_state_dict(L14, prefix="pc_encoder.")
    sd["text_proj.weight"] = torch.zeros(768, 768)
    torch.save(sd, tmp_path / "l14.pt")
    assert main(["import-checkpoint", str(tmp_path / "l14.pt"), "--out", str(tmp_path / "run"),
                 "--name", "openshape-pointbert-vitl14-rgb"]) == 0
    assert "not imported (outside the 3D network): text_proj.weight" in capsys.readouterr().out
    info = json.loads((tmp_path / "run" / "released.json").read_text())
    assert info["not_imported"] == ["text_proj.weight"] and info["size"] == "l14"
    # inside the network's prefix, an extra tensor is refused, never loaded partially
    sd["pc_encoder.adapter.weight"] = torch.zeros(4, 4)
    torch.save(sd, tmp_path / "l14-adapter.pt")
    with pytest.raises(ValueError, match=r"unexpected adapter\.weight \(4, 4\)"):
        import_checkpoint(tmp_path / "l14-adapter.pt", tmp_path / "run2")
