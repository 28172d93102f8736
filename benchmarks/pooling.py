"""The Point-BERT tokenizer's max-pools: torch's kernels against the compiled pool and ``amax``
(issue 23).

A ``pointbert-tiny`` pass pools twice over each patch's 32 points ((2,048, 32, 32) per 32
clouds). torch's max-with-indices over that middle dimension costs ~4 ms per 32 clouds on one
core; the pools now run through :func:`mmmixlab.ops.max_over_rows` (a compiled scan, the same
values and indices) where autograd records, and ``amax`` (no indices) where it does not:
stage 2's frozen targets, evaluation (:func:`mmmixlab.encoders.common.max_pool`).

Two views, one thread, one process, each pair timed alternately (``benchmarks.common.
interleaved``), ratio = compiled / torch (< 1: faster):

* the pooling op alone at the tokenizer's shapes for 32 and 64 clouds;
* whole training steps (``benchmarks.training_throughput.train_step``: loss, backward, clip,
  AdamW, schedule) of every phase of the README plan, ``pointbert-tiny``, batch 32 x 1,024,
  the same trainer and batch for both sides; "torch" is this checkout with the pools put back
  to ``torch.max`` (what the code did before), so the rest of the step is the same code.
  Both sides' losses are checked equal bit for bit.

    python -m benchmarks.pooling [--quick] [--json FILE]
"""

from __future__ import annotations

import contextlib

import torch

from mmmixlab import ops
from mmmixlab.encoders import pointbert

from .common import interleaved, log, ratio, standalone, table
from .training_throughput import train_step
from .workloads import enter_phase, make_workload

PHASES = {"baseline": "baseline", "stage1": "mm-mixing", "stage2": "mm-mixing",
          "im": "im", "joint": "one-stage"}


def _torch_max_pool(x, dim, keepdim=False):
    return x.max(dim=dim, keepdim=keepdim).values


@contextlib.contextmanager
def torch_pools():
    """The pools as they were: torch.max with indices everywhere."""
    saved = ops.max_over_rows, pointbert.max_pool
    ops.max_over_rows, pointbert.max_pool = ops.max_over_rows_reference, _torch_max_pool
    try:
        yield
    finally:
        ops.max_over_rows, pointbert.max_pool = saved


def op_rows(rounds: int) -> list:
    rows = []
    for clouds in (32, 64):
        x = torch.randn(clouds * 64, 32, 32)
        x[:, 9] = x[:, 4]  # ball-query padding: tied rows
        t = interleaved({"torch max": lambda: x.max(dim=1),
                         "compiled": lambda: ops.max_over_rows(x),
                         "amax": lambda: x.amax(dim=1)}, rounds=rounds, warmup=2)
        rows.append({"shape": list(x.shape), **{k: round(v.median * 1e3, 3) for k, v in t.items()},
                     "compiled/torch": ratio(t["compiled"], t["torch max"]),
                     "amax/torch": ratio(t["amax"], t["torch max"])})
    return rows


def step_rows(rounds: int, phases: dict) -> list:
    rows = []
    for name, variant in phases.items():
        log(f"[pooling] {name} ...")
        w = make_workload("pointbert-tiny", 32, 1024, torch.device("cpu"), variant=variant)
        tr = w.trainer
        opt = tr._optimizer(enter_phase(tr, name))
        losses = {}

        def step(side):
            def run():
                with (torch_pools() if side == "torch" else contextlib.nullcontext()):
                    tr.local_generator.manual_seed(0)  # the same mixing draw for both sides
                    return train_step(tr, enter_phase(tr, name), w.batch, *opt)
            return run

        # the same weights for both sides' first step: compare the losses bit for bit
        params = [p for m in (*tr.encoders.values(), *tr.logit_scales.values())
                  for p in m.parameters()]
        start = [p.detach().clone() for p in params]
        for side in ("torch", "compiled"):
            with torch.no_grad():
                for p, p0 in zip(params, start):
                    p.copy_(p0)
            losses[side] = step(side)()
        t = interleaved({"torch": step("torch"), "compiled": step("compiled")},
                        rounds=rounds, warmup=1)
        rows.append({"phase": name, "torch_ms": round(t["torch"].median * 1e3, 1),
                     "compiled_ms": round(t["compiled"].median * 1e3, 1),
                     "compiled/torch": ratio(t["compiled"], t["torch"]),
                     "same_loss": losses["torch"] == losses["compiled"]})
    return rows


def run(device: torch.device, quick: bool = False) -> dict:
    if device.type != "cpu":
        log("[pooling] the compiled pool is the CPU path; measuring on the CPU")
    torch.set_num_threads(1)
    phases = {k: PHASES[k] for k in ("baseline", "stage2")} if quick else PHASES
    return {"threads": 1, "ops": op_rows(5 if quick else 30),
            "steps": step_rows(2 if quick else 12, phases)}


def report(res: dict) -> str:
    ops_table = table([[str(tuple(r["shape"])), f"{r['torch max']:.2f}", f"{r['compiled']:.2f}",
                        f"{r['amax']:.2f}", f"{r['compiled/torch']['paired']:.3f}",
                        f"{r['amax/torch']['paired']:.3f}"] for r in res["ops"]],
                      ["shape", "torch max ms", "compiled ms", "amax ms",
                       "compiled/torch (paired)", "amax/torch (paired)"])
    steps_table = table([[r["phase"], f"{r['torch_ms']:.0f}", f"{r['compiled_ms']:.0f}",
                          f"{r['compiled/torch']['paired']:.3f}",
                          f"{r['compiled/torch']['of_mins']:.3f}", "yes" if r["same_loss"] else "NO"]
                         for r in res["steps"]],
                        ["phase", "torch pools ms", "compiled pools ms", "ratio (paired)",
                         "ratio (of minimums)", "same loss bits"])
    return ops_table + "\n\n" + steps_table


def main(argv=None) -> dict:
    return standalone("pooling", run, report, argv)


if __name__ == "__main__":
    main()
