"""The measuring tools of benchmarks/ that a number depends on: checked against torch's own
FLOP counter and hand counts (their timings are not tested: machines here are noisy)."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.ablation_time import extrapolate, plan_epochs
from benchmarks.step_flops import GemmRecorder, gemm_floor, plan_floor, tiny_steps_per_epoch


def test_gemm_recorder_sees_every_product_of_a_training_step():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    x = torch.randn(50, 6)
    rec = GemmRecorder()
    with rec:
        net(x).square().sum().backward()
    with FlopCounterMode(display=False) as fc:
        net(x).square().sum().backward()
    # forward: 2 addmm; backward: input grad of layer 2 and both weight grads (3 mm)
    assert sum(rec.calls.values()) == 5
    assert any(t for (_, mats) in rec.calls for _, t in mats)  # backward's transposed operands
    _, flops = gemm_floor(rec.calls, rounds=1)
    assert flops == fc.get_total_flops() == 2 * 50 * (6 * 16 + 16 * 4) * 3 - 2 * 50 * 6 * 16


def test_readme_plan_extrapolation_counts_each_rows_epochs():
    assert plan_epochs("one-stage", 30) == {"joint": 60}
    assert plan_epochs("baseline-2x", 30) == {"baseline": 60}
    assert plan_epochs("mm-mixing", 30) == {"stage2": 30}  # stage 1 is the fm run's
    costs = {"epoch_s": {"baseline": 1.0, "joint": 3.0}, "other_s": {"baseline": 5.0,
                                                                      "one-stage": 7.0},
             "run_s": 100.0}
    out = extrapolate(costs, wall=50.0, variants=["baseline", "one-stage"], epochs=10, seeds=2)
    assert out["work_s"] == (10 * 1.0 + 5.0 + 20 * 3.0 + 7.0) * 2
    assert out["parallel"] == 2.0 and out["wall_s"] == out["work_s"] / 2


def test_plan_floor_costs_every_row_of_the_readme_plan():
    """30 epochs per stage x 5 seeds: baseline 30 + baseline-2x 60 epochs of the baseline step,
    fm 30 of stage 1, im 30, mm-mixing 30 of stage 2, one-stage 60 of the joint step."""
    floor_ms = {"baseline": 1.0, "stage1": 2.0, "im": 3.0, "stage2": 4.0, "joint": 5.0}
    rows = [{"step": k, "gemm_floor_ms": v, "step_ms": 10 * v} for k, v in floor_ms.items()]
    got = plan_floor(rows, steps_per_epoch=20, cores=2)
    epochs = {"baseline": 90, "stage1": 30, "im": 30, "stage2": 30, "joint": 60}
    seconds = sum(epochs[k] * 20 * 5 * v / 1e3 for k, v in floor_ms.items())
    assert got["floor_min"] == round(seconds / 2 / 60, 1)
    assert got["measured_steps_min"] == round(10 * seconds / 2 / 60, 1)
    assert tiny_steps_per_epoch() == 20  # 16 classes x 40 train shapes / batch 32


def test_ablation_time_sets_apply_to_the_new_side_only():
    from types import SimpleNamespace

    from benchmarks.ablation_time import side_sets

    args = SimpleNamespace(new_set=["train.amp=bf16", "mix.beta=0.4"])
    assert side_sets("new", args) == ["--set", "train.amp=bf16", "--set", "mix.beta=0.4"]
    assert side_sets("old", args) == []


def test_cpu_bf16_benchmark_rows():
    """benchmarks.cpu_bf16: the attention and pool rows measure what they name and report."""
    from benchmarks import cpu_bf16

    att = cpu_bf16.attention_row(rounds=1)
    assert att["fp32_ms"] > 0 and att["bf16_ms"] > 0 and att["helper_ms"] > 0
    res = {"native_bf16": False, "amx": False, "attention": att}
    if cpu_bf16.cpu_has_bf16():
        res["pool"] = cpu_bf16.pool_row(rounds=1)
        assert res["pool"]["same"]
    res["norm"] = cpu_bf16.norm_rows(rounds=1)
    assert [r["shape"] for r in res["norm"]] == ["131,072 x 16", "131,072 x 32 + add"]
    assert all(r["torch_ms"] > 0 and r["compiled_ms"] > 0 for r in res["norm"])
    text = cpu_bf16.report(res)
    assert "attention() under autocast ms" in text and ("pool" not in res or "compiled" in text)
    assert "norm + ReLU fwd+bwd" in text


def test_shared_patches_benchmark_rows():
    """benchmarks.shared_patches: both sides step, lose no bit, and cut fewer clouds shared."""
    from benchmarks import shared_patches

    rows = shared_patches.step_rows(1, encoders=("pointbert-tiny",), batch=8, points=256)
    assert [r["phase"] for r in rows] == ["stage2", "joint"]
    for r in rows:
        assert r["same_losses"] and r["unshared_ms"] > 0 and r["shared_ms"] > 0
        assert r["clouds_cut"] == {"unshared": 3 * 8, "shared": 2 * 8}
    text = shared_patches.report({"steps": rows})
    assert "clouds cut a step" in text and "24 -> 16" in text


def test_sorting_benchmark_rows():
    """benchmarks.sorting: every sort, the batch and the step agree with torch's sort."""
    from benchmarks import sorting

    rows = sorting.sort_rows(1) + [sorting.batch_row(1), sorting.step_row(1, batch=8, points=256)]
    assert len(rows) == len(sorting.SORTS) + 2
    for r in rows:
        assert r["same"] and r["torch_ms"] > 0 and r["fast_ms"] > 0
    assert sorting.ops.argsort_rows is sorting.FAST.sort  # restored after the torch side
    text = sorting.report({"rows": rows})
    assert "ops.argsort_rows ms" in text and "NO" not in text


def test_gpu_step_script_runs_the_trainers_step_on_the_cpu():
    """benchmarks.gpu_step --quick (the GPU script's CPU check): both encoders, both phases,
    each step the trainer's optimizer step (the weights move, the scheduler counts)."""
    from benchmarks import gpu_step
    from benchmarks.workloads import enter_phase, make_workload

    res = gpu_step.run("cpu", quick=True, batch=2, points=256, repeats=1)
    for enc in ("openshape-pointbert-tiny", "pointbert-tiny"):
        for phase in ("stage1", "stage2"):
            r = res[enc][phase]
            assert r["samples_per_s"] > 0 and r["sync_wait"] is None
    w = make_workload("pointbert-tiny", 2, 256, torch.device("cpu"))
    phase = enter_phase(w.trainer, "stage2")
    opt, sched = w.trainer._optimizer(phase)
    before = [p.detach().clone() for p in w.trainer.encoders["B"].parameters()]
    loss = gpu_step.step_once(w, phase, opt, sched)
    assert torch.isfinite(loss) and sched.last_epoch == 1
    assert any(not torch.equal(a, p) for a, p in zip(before, w.trainer.encoders["B"].parameters()))


def test_freed_memory_benchmark_runs_its_three_sides():
    """benchmarks.freed_memory: glibc's default, the retained heap on 4 KB pages and on huge
    pages, each in its own child; only the last one's heap is advised for huge pages."""
    import os

    from benchmarks import freed_memory

    res = freed_memory.run(1, 1, {"baseline": "baseline"}, 1, amp="off")
    row = res["phases"]["baseline"]
    assert all(row[side]["wall_ms"] > 0 for side in freed_memory.SIDES)
    assert row["retain/retain-4k"] > 0 and row["retain/default"] > 0
    assert [o["huge_heap"] for o in res["raw"]["retain-4k"]] == [False]
    if os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"):
        assert res["huge_heap"] is True
    text = freed_memory.report(res)
    assert "retain/retain-4k" in text and "retain-4k ms" in text
    with pytest.raises(SystemExit):
        freed_memory.main(["--phases", "stage3"])


def test_compiled_kernels_benchmark_rows():
    """benchmarks.compiled_kernels: the tokenizer alone against torch's ops (autocast and
    float32), the attention alone and in two blocks against torch's kernel, and a whole step
    with both kernels, the tokenizer only, and neither."""
    from benchmarks import compiled_kernels
    from mmmixlab import native

    if native.compiled() is None:
        pytest.skip(f"no compiled kernels here: {native.native_error()}")
    res = compiled_kernels.run(quick=True)
    tk = res["tokenizer"]
    assert tk["compiled_ms"] > 0 and tk["torch_amp_ms"] > 0 and tk["torch_fp32_ms"] > 0
    assert [r["what"][:9] for r in res["attention"]] == ["attention", "2 transfo"]
    assert all(r["compiled_ms"] > 0 and r["torch_ms"] > 0 for r in res["attention"])
    assert [r["what"] for r in res["steps"]] == ["step baseline"]
    step = res["steps"][0]
    assert step["ratio"]["paired"] > 0 and step["attention_ratio"]["paired"] > 0
    assert step["both_ms"] > 0 and step["tokenizer_ms"] > 0 and step["torch_ms"] > 0
    text = compiled_kernels.report(res)
    assert "compiled/fp32" in text and "step baseline" in text and "both/tokenizer only" in text
