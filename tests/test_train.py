"""Trainer behaviour on random clouds and features (no world needed, seconds on a CPU)."""

import pytest
import torch

from mmmixlab.batches import TripletBatches
from mmmixlab.device import _glibc
from mmmixlab.train import Trainer, plan_phases
from tests.helpers.toy import toy_batches, toy_cfg


def params(module):
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("variant", ["baseline", "fm", "im", "mm-mixing", "one-stage",
                                     "baseline-2x"])
def test_every_variant_trains(variant):
    trainer = Trainer(toy_cfg(variant), toy_batches(), embed_dim=16, progress=False)
    before = {n: params(e) for n, e in trainer.encoders.items()}
    result = trainer.fit()
    # per-stage budget, 1 epoch a stage: one stage for baseline/fm/im, two for the others
    two = variant in ("mm-mixing", "one-stage", "baseline-2x")
    assert len(result.history) == (2 if two else 1)
    for rec in result.history:
        assert torch.isfinite(torch.tensor(rec["loss"]))
    for n, enc in result.encoders.items():
        changed = any(not torch.equal(a, b) for a, b in zip(before[n], params(enc)))
        assert changed, f"encoder {n} did not train"
    assert set(result.encoders) == ({"A", "B"} if variant in ("mm-mixing", "one-stage") else {"A"})


def test_phases_share_total_epochs_under_the_total_budget():
    for v in ("baseline", "fm", "im", "one-stage"):
        assert sum(p.epochs for p in plan_phases(v, 3, 4, "total")) == 7
    assert [(p.name, p.epochs) for p in plan_phases("mm-mixing", 3, 4)] == [("stage1", 3),
                                                                              ("stage2", 4)]


def test_stage1_encoder_frozen_in_stage2():
    trainer = Trainer(toy_cfg("mm-mixing"), toy_batches(), embed_dim=16, progress=False)
    seen = {}

    def on_epoch(rec):
        seen[rec["phase"]] = params(trainer.encoders["A"])
    trainer.fit(on_epoch=on_epoch)
    assert all(torch.equal(a, b) for a, b in zip(seen["stage1"], seen["stage2"]))


def test_resume_reproduces_uninterrupted_run(tmp_path):
    cfg = toy_cfg("mm-mixing", **{"train.epochs_stage1": 2, "train.epochs_stage2": 1,
                                  "train.checkpoint_every": 2})
    full = Trainer(cfg, toy_batches(), embed_dim=16, progress=False).fit()

    class Stop(Exception):
        pass

    interrupted = Trainer(cfg, toy_batches(), embed_dim=16, out_dir=tmp_path, progress=False)
    original = interrupted._run_epoch
    calls = {"n": 0}

    def crash_after_first_epoch(*args, **kwargs):
        if calls["n"] == 1:
            raise Stop()
        calls["n"] += 1
        return original(*args, **kwargs)
    interrupted._run_epoch = crash_after_first_epoch
    with pytest.raises(Stop):
        interrupted.fit()
    resumed = Trainer(cfg, toy_batches(), embed_dim=16, out_dir=tmp_path, progress=False)
    result = resumed.fit(resume=True)
    for name in ("A", "B"):
        for a, b in zip(params(full.encoders[name]), params(result.encoders[name])):
            assert torch.allclose(a, b, atol=1e-6)


def test_resume_refuses_changed_config(tmp_path):
    cfg = toy_cfg("fm")
    Trainer(cfg, toy_batches(), embed_dim=16, out_dir=tmp_path, progress=False).fit()
    other = cfg.replace(**{"mix.beta": 0.3})
    with pytest.raises(ValueError, match="mix.beta"):
        Trainer(other, toy_batches(), embed_dim=16, out_dir=tmp_path, progress=False).fit(
            resume=True)


def test_corrupt_checkpoint_is_reported(tmp_path):
    cfg = toy_cfg("fm")
    Trainer(cfg, toy_batches(), embed_dim=16, out_dir=tmp_path, progress=False).fit()
    ckpt = tmp_path / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt"):
        Trainer(cfg, toy_batches(), embed_dim=16, out_dir=tmp_path, progress=False).fit(
            resume=True)


def test_batches_bad_input():
    feats = toy_batches().features
    with pytest.raises(ValueError, match="24 clouds|clouds but features"):
        TripletBatches(torch.rand(20, 128, 6), feats)
    bad = torch.rand(24, 128, 6)
    bad[2, 5, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        TripletBatches(bad, feats, num_points=64, batch_size=8)
    with pytest.raises(ValueError, match="num_points"):
        TripletBatches(torch.rand(24, 128, 6), feats, num_points=256)
    with pytest.raises(ValueError, match=r"\(S, P, 6\)"):
        TripletBatches(torch.rand(24, 128, 3), feats)


def test_shapes_without_text_get_no_text_target():
    b = toy_batches(missing_text=(0, 1, 2, 3, 4, 5, 6, 7))
    batch = b.make_batch(torch.arange(8), torch.Generator().manual_seed(0))
    assert not batch.text_valid.any() and torch.all(batch.text == 0)


def test_stage2_can_start_from_the_stage1_encoder():
    trainer = Trainer(toy_cfg("mm-mixing", **{"train.stage2_init": "stage1"}), toy_batches(),
                      embed_dim=16, progress=False)
    seen = {}

    def on_epoch(rec):
        if rec["phase"] == "stage1":
            seen["A"] = params(trainer.encoders["A"])
    trainer.fit(on_epoch=on_epoch)
    b_after = params(trainer.encoders["B"])
    # B started from A's weights, then trained: close to A, not equal, not a fresh init
    dist_to_a = sum((a - b).norm() for a, b in zip(seen["A"], b_after))
    fresh = Trainer(toy_cfg("mm-mixing"), toy_batches(), embed_dim=16, progress=False)
    dist_fresh = sum((a - b).norm() for a, b in zip(seen["A"], params(fresh.encoders["B"])))
    assert 0 < dist_to_a < dist_fresh


def test_stage2_from_a_finished_stage1_run(tmp_path):
    from mmmixlab.checkpoints import save_final
    first = Trainer(toy_cfg("mm-mixing"), toy_batches(), embed_dim=16, progress=False)
    save_final(first.fit(), first.cfg, tmp_path / "s1" / "final.pt")
    cfg = toy_cfg("mm-mixing", **{"train.stage1_checkpoint": str(tmp_path / "s1")})
    second = Trainer(cfg, toy_batches(), embed_dim=16, out_dir=tmp_path / "s2", progress=False)
    assert [p.name for p in second.phases] == ["stage2"]
    for a, b in zip(params(first.encoders["A"]), params(second.encoders["A"])):
        assert torch.equal(a, b)
    second.fit()
    assert "sha1" in (tmp_path / "s2" / "stage1.json").read_text()
    (tmp_path / "s1" / "final.pt").write_bytes((tmp_path / "s1" / "final.pt").read_bytes() + b"x")
    with pytest.raises(ValueError, match="changed"):
        Trainer(cfg, toy_batches(), embed_dim=16, out_dir=tmp_path / "s2", progress=False)
    with pytest.raises(FileNotFoundError, match="stage-1 checkpoint"):
        Trainer(toy_cfg("mm-mixing", **{"train.stage1_checkpoint": str(tmp_path / "none.pt")}),
                toy_batches(), embed_dim=16, progress=False)


def test_logs_read_well_outside_a_terminal():
    """Output to a file (CI, nohup, make demo > log): one plain line per epoch, no
    carriage-return redraws; MMMIXLAB_PROGRESS=bar brings the bars back."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    code = ("from mmmixlab.train import Trainer\n"
            "from mmmixlab.progress import bar\n"
            "from tests.helpers.toy import toy_batches, toy_cfg\n"
            "b = bar(range(100000), desc='count')\n"
            "for i in b: b.set_postfix(i=i) if i % 1000 == 0 else None\n"
            "Trainer(toy_cfg('mm-mixing', **{'train.epochs_stage1': 2}), toy_batches(),"
            " embed_dim=16).fit()\n")
    env = {k: v for k, v in os.environ.items() if k != "MMMIXLAB_PROGRESS"}
    env.update(PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                       timeout=300)  # bytes: text mode would turn every \r into \n
    assert r.returncode == 0, r.stderr.decode()
    out = (r.stdout + r.stderr).decode()
    epochs = [ln for ln in out.splitlines() if " epoch " in ln]
    assert [ln.split()[0:3] for ln in epochs] == [["stage1", "epoch", "1/2"],
                                                  ["stage1", "epoch", "2/2"],
                                                  ["stage2", "epoch", "1/1"]]
    assert all("loss" in ln and not ln.lstrip().startswith("{") for ln in epochs)
    assert out.count("\r") <= 2  # the counter: its first and last state, no redraws
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                       env=dict(env, MMMIXLAB_PROGRESS="bar"), timeout=300)
    assert r.stderr.count(b"\r") > 10


def test_batches_are_checked_once_on_the_cpu_and_losses_skip_their_scans():
    """A NaN feature is caught at the batch boundary, naming the shapes; the losses inside the
    step run with check=False (no per-term scan, which is a host sync on a GPU)."""
    from mmmixlab import losses
    batches = toy_batches()
    batches.features.image[5, :, 0] = float("nan")
    trainer = Trainer(toy_cfg("fm"), batches, embed_dim=16, progress=False)
    with pytest.raises(ValueError, match=r"batch image hold NaN or inf .*shapes \[5\]"):
        trainer.fit()
    calls = []
    real = losses.check_features
    losses.check_features = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        Trainer(toy_cfg("mm-mixing"), toy_batches(), embed_dim=16, progress=False).fit()
    finally:
        losses.check_features = real
    assert calls == []


def test_cpu_precision_follows_what_the_cpu_has(monkeypatch):
    """CPU runs fp32 unless bf16 is asked for; bf16 only on a CPU that has it natively, with
    a clear error elsewhere; fp16 autocast is refused on a CPU."""
    from mmmixlab import device as dev

    cpu = torch.device("cpu")
    assert dev.autocast_dtype("auto", cpu) is None and dev.autocast_dtype("off", cpu) is None
    # auto: bf16 on a CPU with AMX for the encoders where it pays, fp32 otherwise
    for amx in (False, True):
        monkeypatch.setattr(dev, "cpu_has_amx", lambda amx=amx: amx)
        assert dev.autocast_dtype("auto", cpu, cpu_bf16_pays=True) is (
            torch.bfloat16 if amx else None)
        assert dev.autocast_dtype("auto", cpu, cpu_bf16_pays=False) is None
        assert dev.autocast_dtype("off", cpu, cpu_bf16_pays=True) is None
        for encoder, pays in (("pointbert-tiny", True), ("openshape-pointbert-tiny", True),
                              ("pointnet", False), ("sparseconv-tiny", False)):
            tr = Trainer(toy_cfg("baseline", **{"train.encoder": encoder}), toy_batches(d=16),
                         embed_dim=16, progress=False)
            assert tr.amp_dtype is (torch.bfloat16 if amx and pays else None), encoder
    monkeypatch.undo()
    assert dev.precision_name(None) == "fp32" and dev.precision_name(torch.bfloat16) == "bf16"
    with pytest.raises(ValueError, match="train.amp=fp16 is for CUDA"):
        dev.autocast_dtype("fp16", cpu)
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="this CPU has no native bf16"):
        dev.autocast_dtype("bf16", cpu)
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    assert dev.autocast_dtype("bf16", cpu) is torch.bfloat16
    monkeypatch.undo()
    if not dev.cpu_has_bf16():
        return
    # a bf16 trainer's encoder really computes in bf16, and hands fp32 features to the losses
    feats = {}
    for amp in ("off", "bf16"):
        tr = Trainer(toy_cfg("baseline", **{"train.amp": amp}), toy_batches(d=16),
                     embed_dim=16, progress=False)
        batch = tr.batches.make_batch(torch.arange(8), torch.Generator().manual_seed(0))
        feats[amp] = tr.encode("A", batch.points)
    assert feats["bf16"].dtype == torch.float32
    diff = (feats["bf16"] - feats["off"]).abs().max().item()
    assert 1e-5 < diff < 0.1, diff  # bf16 rounding: different, but the same features


def test_optimizer_runs_foreach_with_the_per_tensor_loops_updates():
    """The trainer's AdamW runs its multi-tensor (foreach) path, and three of its steps give
    bit for bit the parameters of the per-tensor loop (CPU's default) on the same gradients."""
    trainer = Trainer(toy_cfg("fm"), toy_batches(), embed_dim=16, progress=False)
    phase = trainer.enter_phase(trainer.phases[0])
    opt = trainer._optimizer(phase)[0]  # (optimizer, schedule)
    assert all(g["foreach"] for g in opt.param_groups)
    tensors = [p for g in opt.param_groups for p in g["params"]]
    twins = [p.detach().clone().requires_grad_(True) for p in tensors]
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "foreach": False,
               "params": twins[sum(len(h["params"]) for h in opt.param_groups[:i]):][
                   :len(g["params"])]} for i, g in enumerate(opt.param_groups)]
    loop = torch.optim.AdamW(groups)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p, q in zip(tensors, twins):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        opt.step()
        loop.step()
    assert all(torch.equal(p, q) for p, q in zip(tensors, twins))


_FAULTS = """
import hashlib, resource, sys, torch
torch.set_num_threads(1)
from mmmixlab.device import retain_freed_memory
from mmmixlab.encoders import create_point_encoder
if sys.argv[1] == "retain":
    assert retain_freed_memory()
from mmmixlab.device import heap_on_huge_pages, _heap_range
maps = open("/proc/self/smaps").read()
heap_flags = maps[maps.index("[heap]"):].split("VmFlags:")[1].splitlines()[0].split()
heap_start, heap_end = _heap_range()
heap_mb = (heap_end - heap_start) >> 20
torch.manual_seed(0)
enc = create_point_encoder("pointbert-tiny", 16, 6)
x = torch.randn(16, 1024, 6)
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    enc(x).square().sum().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
grads = torch.cat([p.grad.flatten() for p in enc.parameters()])
# mmap off still serves a block larger than a thread arena's 64 MB heap (glibc falls back)
import threading
big = []
thread = threading.Thread(target=lambda: big.append(float(torch.ones(24 << 20).sum())))
thread.start(); thread.join()
assert big == [24 << 20], big
print(heap_on_huge_pages(), "hg" in heap_flags, heap_mb)
print(hashlib.sha1(grads.numpy().tobytes()).hexdigest(), sum(faults[6:]))
"""


@pytest.mark.skipif(not _glibc(), reason="glibc's mallopt only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    """Encoder steps after the first six: with retain_freed_memory, glibc hands the freed
    activations back to the next step (no page faults); by default it unmaps or trims them and
    the kernel zero-fills their pages again. The retained heap is advised for huge pages. The
    gradients are the same bits either way."""
    import os
    import subprocess
    import sys

    from mmmixlab.device import _HUGE_PAGE_RESERVE

    runs, heaps = {}, {}
    for mode in ("default", "retain"):
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True,
                             text=True, check=True)
        advised, flagged, heap_mb, digest, faults = out.stdout.split()[-5:]
        runs[mode], heaps[mode] = (digest, int(faults)), (advised, flagged, int(heap_mb))
    assert runs["retain"][0] == runs["default"][0]
    # the retained heap is advised for huge pages (VmFlags "hg") and grown by the reserve
    assert heaps["default"][:2] == ("False", "False"), heaps
    if os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"):  # a THP kernel
        assert heaps["retain"][:2] == ("True", "True"), heaps
        assert heaps["retain"][2] >= (_HUGE_PAGE_RESERVE >> 20), heaps
    if runs["default"][1] < 2000:
        pytest.skip(f"this glibc re-faults little by default here: {runs}")
    assert runs["retain"][1] < runs["default"][1] / 5, runs


@pytest.mark.parametrize("retain", [True, False])
def test_trainer_retains_freed_memory_on_a_cpu_when_asked(monkeypatch, retain):
    from mmmixlab import train

    calls = []
    monkeypatch.setattr(train, "retain_freed_memory", lambda device: calls.append(1) or True)
    Trainer(toy_cfg("baseline", **{"train.retain_freed_memory": retain}), toy_batches(),
            embed_dim=16, progress=False).fit()
    assert calls == ([1] if retain else [])


def test_cpu_bf16_training_runs_the_compiled_tokenizer_paths(monkeypatch):
    """A ``pointbert-tiny`` mm-mixing run at ``train.amp=bf16`` on the CPU (AMX or not: torch
    emulates bf16 where the CPU lacks it) trains through the compiled bf16 tokenizer ops in both
    stages, forward and backward, with finite losses, and records its precision."""
    import mmmixlab.device as dev
    from mmmixlab import ops

    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    calls = {"norm": 0, "norm_backward": 0, "pooled_backward": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(ops, "layer_norm_relu_forward",
                        counted("norm", ops.layer_norm_relu_forward))
    monkeypatch.setattr(ops, "layer_norm_relu_backward",
                        counted("norm_backward", ops.layer_norm_relu_backward))
    monkeypatch.setattr(ops, "linear_max_rows_backward",
                        counted("pooled_backward", ops.linear_max_rows_backward))
    # the bf16 path itself: the compiled float32 tokenizer (tests/test_native.py) off
    cfg = toy_cfg("mm-mixing", **{"train.encoder": "pointbert-tiny", "train.amp": "bf16",
                                  "train.fused_tokenizer": False})
    trainer = Trainer(cfg, toy_batches(d=16), embed_dim=16, progress=False)
    result = trainer.fit()
    assert result.precision == "bf16"
    assert [h["phase"] for h in result.history] == ["stage1", "stage2"]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    steps = 2 * len(trainer.batches)  # one stage-1 and one stage-2 epoch
    # per step: two norms a forward (A's targets in stage 2 too), two backward, one pooled
    assert calls["norm"] >= 2 * steps and calls["norm_backward"] == 2 * steps
    assert calls["pooled_backward"] == steps


@pytest.mark.parametrize("encoder,variant", [("pointbert-tiny", "mm-mixing"),
                                             ("pointbert-tiny", "one-stage"),
                                             ("openshape-pointbert-tiny", "one-stage")])
def test_shared_patches_cut_the_unmixed_clouds_once_with_the_same_numbers(monkeypatch, encoder,
                                                                          variant):
    """``train.share_patches``: the unmixed clouds' patches are cut once a step for A's pass
    and B's unmixed rows (stage 2: A's targets; one-stage: A's stage-1 pass), and the whole run
    (losses, every encoder's weights) is the unshared run's bit for bit."""
    from mmmixlab import ops
    cut = []
    fps = ops.farthest_point_sample

    def counted(xyz, *args, **kwargs):
        cut.append(xyz.shape[0])
        return fps(xyz, *args, **kwargs)

    monkeypatch.setattr(ops, "farthest_point_sample", counted)
    small = ({"num_groups": 8, "group_size": 8} if encoder == "pointbert-tiny"
             else {"num_patches": 8, "patch_points": 8})
    runs = {}
    for share in (False, True):
        cut.clear()
        cfg = toy_cfg(variant, **{"train.encoder": encoder, "train.share_patches": share,
                                  "train.encoder_overrides": small, "train.amp": "off"})
        trainer = Trainer(cfg, toy_batches(d=16), embed_dim=16, progress=False)
        result = trainer.fit()
        runs[share] = ([h["loss"] for h in result.history], sum(cut),
                       {n: params(e) for n, e in result.encoders.items()})
    steps = {p.name: p.epochs * len(trainer.batches) for p in trainer.phases}
    b = 8  # clouds a batch: B encodes 2b (mixed, then unmixed), A b
    fm = steps.get("stage1", 0) * b  # mm-mixing's stage 1: A alone
    two = steps.get("stage2", 0) + steps.get("joint", 0)  # steps running A and B
    assert runs[False][1] == fm + two * 3 * b
    assert runs[True][1] == fm + two * 2 * b  # the unmixed b once, not twice
    assert runs[True][0] == runs[False][0]
    for n, weights in runs[False][2].items():
        assert all(torch.equal(a, c) for a, c in zip(weights, runs[True][2][n]))


def test_patches_are_not_shared_with_a_random_fps_start(monkeypatch):
    from mmmixlab.encoders.common import PatchIndex
    seen = []
    monkeypatch.setattr(PatchIndex, "cat", staticmethod(lambda parts: seen.append(parts)))
    cfg = toy_cfg("one-stage", **{"train.encoder": "openshape-pointbert-tiny",
                                  "train.encoder_overrides": {"num_patches": 8,
                                                              "patch_points": 8,
                                                              "fps_start": "random"}})
    trainer = Trainer(cfg, toy_batches(d=16), embed_dim=16, progress=False)
    batch = trainer.batches.make_batch(torch.arange(8), torch.Generator().manual_seed(0))
    plan, _ = trainer._plan(trainer.phases[0], batch)
    assert trainer.patch_index("B", plan.inputs["B"], plan) is None
    assert trainer.patch_index("A", plan.points, plan) is None and not plan.patch_memo
    assert not seen


def test_runs_sort_as_torch_did(monkeypatch):
    """A run whose subsets and input mixes are sorted by ``ops.argsort_rows`` is the run torch's
    argsorts gave (the random subset's unstable one, the mix's stable one), bit for bit."""
    from mmmixlab import ops
    calls = []
    fast = ops.argsort_rows

    def counted(keys, stable=False):
        calls.append(stable)
        return fast(keys, stable)

    runs = []
    for sort in (counted, lambda keys, stable=False: torch.argsort(keys, dim=1, stable=stable)):
        monkeypatch.setattr(ops, "argsort_rows", sort)
        cfg = toy_cfg("mm-mixing", **{"train.amp": "off"})
        result = Trainer(cfg, toy_batches(d=16), embed_dim=16, progress=False).fit()
        runs.append(([h["loss"] for h in result.history], params(result.encoders["B"])))
    assert True in calls and False in calls  # the mix's and the subset's sorts both ran here
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
