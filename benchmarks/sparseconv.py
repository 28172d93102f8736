"""SparseConv vs Point-BERT: a full training step of each tiny backbone at the same batch.

Both encoders train on one fixed batch (64 clouds x 1024 points, the tiny world's sizes)
through the trainer's own step (:func:`benchmarks.training_throughput.train_step`), stage 1 and
stage 2, interleaved in one process so load from other jobs hits both alike. Reported: median
step time per encoder and phase, the ratio sparseconv-tiny / pointbert-tiny (paired), and the
parameter counts. On CUDA the same rows run on the GPU; the ``spconv`` comparison the issue asks
for needs a GPU and the ``spconv`` wheel (not measured where either is missing).

    python -m benchmarks.sparseconv [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import torch

from mmmixlab.encoders import count_parameters

from .common import interleaved, log, ratio, standalone, table
from .training_throughput import train_step
from .workloads import enter_phase, make_workload

ENCODERS = ("sparseconv-tiny", "pointbert-tiny")


def _case(device: torch.device, batch: int, num_points: int, rounds: int, budget_s: float):
    fns, params = {}, {}
    for enc in ENCODERS:
        wl = make_workload(enc, batch, num_points, device,
                           amp="bf16" if device.type == "cuda" else "off")
        tr, b = wl.trainer, wl.batch
        params[enc] = count_parameters(tr.encoders["A"])
        for phase_name in ("stage1", "stage2"):
            opt = tr._optimizer(next(p for p in tr.phases if p.name == phase_name))

            def step(tr=tr, b=b, phase_name=phase_name, opt=opt):
                return train_step(tr, enter_phase(tr, phase_name), b, *opt)

            fns[f"{enc}/{phase_name}"] = step
    log(f"[sparseconv] {device.type}: {' vs '.join(ENCODERS)}, batch {batch} x {num_points}")
    t = interleaved(fns, rounds=rounds, warmup=1, min_rounds=2, budget_s=budget_s,
                    device=device)
    return {"device": device.type, "batch": batch, "num_points": num_points,
            "parameters": params,
            "step_ms": {k: v.summary() for k, v in t.items()},
            "sparse_over_pointbert": {
                ph: ratio(t[f"sparseconv-tiny/{ph}"], t[f"pointbert-tiny/{ph}"])
                for ph in ("stage1", "stage2")}}


def run(device: torch.device | None = None, quick: bool = False) -> dict:
    device = device if device is not None else torch.device("cpu")
    cases = [_case(torch.device("cpu"), 64, 1024, rounds=3 if quick else 6,
                   budget_s=60 if quick else 150)]
    if device.type == "cuda":
        cases.append(_case(device, 64, 1024, rounds=10, budget_s=60))
    res = {"cases": cases,
           "step_ratio_stage1": cases[0]["sparse_over_pointbert"]["stage1"]["paired"]}
    res["spconv"] = "not measured: needs a CUDA GPU and the spconv wheel"
    return res


def report(res: dict) -> str:
    rows = []
    for c in res["cases"]:
        for ph in ("stage1", "stage2"):
            rows.append([c["device"], f"{c['batch']}x{c['num_points']}", ph,
                         c["step_ms"][f"sparseconv-tiny/{ph}"]["median"],
                         c["step_ms"][f"pointbert-tiny/{ph}"]["median"],
                         c["sparse_over_pointbert"][ph]["paired"]])
    params = res["cases"][0]["parameters"]
    return "\n".join([
        "SparseConv vs Point-BERT training step (tiny presets; "
        + ", ".join(f"{k} {v:,} params" for k, v in params.items()) + ")",
        table(rows, ["device", "batch", "phase", "sparseconv-tiny ms", "pointbert-tiny ms",
                     "sparse/pointbert (paired)"]),
        f"spconv: {res['spconv']}"])


if __name__ == "__main__":
    standalone("sparseconv", run, report)
