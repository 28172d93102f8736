"""CPU bf16 autocast against fp32: the attention op, the max-pool and whole training steps of
every phase of the README plan (issue 23).

``train.amp=auto`` trains the point-patch transformers under bf16 autocast on a CPU with AMX
(:func:`mmmixlab.device.autocast_dtype`). Three views, one thread, one process, each pair
timed alternately (``benchmarks.common.interleaved``), ratio = bf16 / fp32 (< 1: faster):

* ``attention``: SDPA forward + backward at the tiny transformer's shape (64 clouds x 4 heads x
  65 tokens x 32) in fp32, in bf16 (what CPU autocast runs it in) and through
  :func:`mmmixlab.encoders.common.attention` under autocast (fp32 inside autocast);
* ``pool``: the tokenizer's max-pool with indices over (4,096, 32, 32) bf16: torch's kernel
  against :func:`mmmixlab.ops.max_over_rows` (the compiled scan over the widened values);
* ``norm``: the tokenizer's layer norm + ReLU forward and backward at 131,072 rows (16 wide;
  32 wide with the pooled layer's broadcast add): torch's ops under autocast against
  :func:`mmmixlab.ops.layer_norm_relu_forward` / ``_backward``;
* ``steps``: ``benchmarks.training_throughput.train_step`` (loss, backward, clip, AdamW,
  schedule) of each phase, batch 32 x 1,024, for ``pointbert-tiny``,
  ``openshape-pointbert-tiny`` and ``sparseconv-tiny``: one trainer at ``train.amp=off`` and
  one at ``train.amp=bf16``, the same weights and batch. Where the CPU has no native bf16 the
  steps are skipped (bf16 would be emulated) and the report says so.

    python -m benchmarks.cpu_bf16 [--quick] [--json FILE]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmmixlab import ops
from mmmixlab.device import cpu_has_amx, cpu_has_bf16
from mmmixlab.encoders.common import attention

from .common import interleaved, log, ratio, standalone, table
from .training_throughput import train_step
from .workloads import enter_phase, make_workload

PHASES = {"baseline": "baseline", "stage1": "mm-mixing", "im": "im", "stage2": "mm-mixing",
          "joint": "one-stage"}
ENCODERS = ("pointbert-tiny", "openshape-pointbert-tiny", "sparseconv-tiny")


def attention_row(rounds: int) -> dict:
    q, k, v = (torch.randn(64, 4, 65, 32, requires_grad=True) for _ in range(3))
    qb, kb, vb = (t.detach().to(torch.bfloat16).requires_grad_() for t in (q, k, v))

    def fp32():
        F.scaled_dot_product_attention(q, k, v).sum().backward()

    def bf16():
        F.scaled_dot_product_attention(qb, kb, vb).float().sum().backward()

    def helper():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = attention(qb, kb, vb)
        out.sum().backward()

    t = interleaved({"fp32": fp32, "bf16": bf16, "helper": helper}, rounds=rounds, warmup=2)
    return {**{f"{n}_ms": round(x.median * 1e3, 2) for n, x in t.items()},
            "bf16/fp32": ratio(t["bf16"], t["fp32"]), "helper/fp32": ratio(t["helper"], t["fp32"])}


def pool_row(rounds: int) -> dict:
    x = torch.randn(4096, 32, 32).to(torch.bfloat16)
    x[:, 9] = x[:, 4]  # ball-query padding: tied rows
    same = all(torch.equal(a, b) for a, b in zip(ops.max_over_rows(x),
                                                 ops.max_over_rows_reference(x)))
    t = interleaved({"torch": lambda: ops.max_over_rows_reference(x),
                     "compiled": lambda: ops.max_over_rows(x)}, rounds=rounds, warmup=2)
    return {"torch_ms": round(t["torch"].median * 1e3, 2),
            "compiled_ms": round(t["compiled"].median * 1e3, 2),
            "compiled/torch": ratio(t["compiled"], t["torch"]), "same": same}


def norm_row(rounds: int, c: int, with_add: bool) -> dict:
    """The tokenizer's norm + ReLU forward and backward at a 64-cloud batch's per-point shape,
    ``c`` wide: torch's ops as autocast runs them (bf16 add, bf16 norm, ReLU) against the
    compiled pass."""
    g = torch.Generator().manual_seed(c)
    x = torch.randn(4096, 32, c, generator=g).to(torch.bfloat16)
    add = torch.randn(4096, c, generator=g).to(torch.bfloat16) if with_add else None
    w, b = torch.randn(c, generator=g), torch.randn(c, generator=g)
    grad = torch.randn(4096, 32, c, generator=g).to(torch.bfloat16)
    norm = torch.nn.LayerNorm(c)
    with torch.no_grad():
        norm.weight.copy_(w)
        norm.bias.copy_(b)

    def torch_ops():
        xr = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = F.relu(norm(xr + add.unsqueeze(1) if with_add else xr))
        y.backward(grad)

    def compiled():
        _, mean, rstd = ops.layer_norm_relu_forward(x, w, b, 1e-5, add=add)
        ops.layer_norm_relu_backward(grad, x, w, b, mean, rstd, add=add)

    t = interleaved({"torch": torch_ops, "compiled": compiled}, rounds=rounds, warmup=2)
    return {"shape": f"131,072 x {c}" + (" + add" if with_add else ""),
            "torch_ms": round(t["torch"].median * 1e3, 2),
            "compiled_ms": round(t["compiled"].median * 1e3, 2),
            "compiled/torch": ratio(t["compiled"], t["torch"])}


def norm_rows(rounds: int) -> list:
    return [norm_row(rounds, 16, False), norm_row(rounds, 32, True)]


def step_rows(rounds: int, encoders, phases: dict) -> list:
    rows = []
    for encoder in encoders:
        for name, variant in phases.items():
            log(f"[cpu_bf16] {encoder} {name} ...")
            sides = {}
            for amp in ("off", "bf16"):  # the same seed: the same initial weights and batch
                w = make_workload(encoder, 32, 1024, torch.device("cpu"), amp=amp,
                                  variant=variant)
                opt = w.trainer._optimizer(enter_phase(w.trainer, name))
                sides[amp] = (w, opt)

            def step(amp):
                w, opt = sides[amp]
                return lambda: train_step(w.trainer, enter_phase(w.trainer, name), w.batch, *opt)

            t = interleaved({"fp32": step("off"), "bf16": step("bf16")}, rounds=rounds,
                            warmup=1)
            rows.append({"encoder": encoder, "phase": name,
                         "fp32_ms": round(t["fp32"].median * 1e3, 1),
                         "bf16_ms": round(t["bf16"].median * 1e3, 1),
                         "bf16/fp32": ratio(t["bf16"], t["fp32"])})
    return rows


def run(device: torch.device, quick: bool = False) -> dict:
    if device.type != "cpu":
        log("[cpu_bf16] CPU autocast is a CPU path; measuring on the CPU")
    torch.set_num_threads(1)
    res = {"threads": 1, "native_bf16": cpu_has_bf16(), "amx": cpu_has_amx(),
           "attention": attention_row(3 if quick else 20)}
    if not res["native_bf16"]:
        log("[cpu_bf16] this CPU has no native bf16: the pool and the steps are skipped")
        return res
    res["pool"] = pool_row(3 if quick else 20)
    res["norm"] = norm_rows(3 if quick else 20)
    encoders = ENCODERS[:1] if quick else ENCODERS
    phases = {k: PHASES[k] for k in ("baseline", "stage2")} if quick else PHASES
    res["steps"] = step_rows(2 if quick else 6, encoders, phases)
    return res


def report(res: dict) -> str:
    a = res["attention"]
    out = [f"native bf16: {res['native_bf16']}, AMX: {res['amx']}, one thread",
           table([[f"{a['fp32_ms']:.2f}", f"{a['bf16_ms']:.2f}", f"{a['helper_ms']:.2f}",
                   f"{a['bf16/fp32']['paired']:.2f}", f"{a['helper/fp32']['paired']:.2f}"]],
                 ["SDPA fwd+bwd fp32 ms", "bf16 ms", "attention() under autocast ms",
                  "bf16/fp32", "attention()/fp32"])]
    if "pool" in res:
        p = res["pool"]
        out.append(table([[f"{p['torch_ms']:.2f}", f"{p['compiled_ms']:.2f}",
                           f"{p['compiled/torch']['paired']:.2f}", "yes" if p["same"] else "NO"]],
                         ["bf16 pool torch.max ms", "compiled ms", "ratio", "same values"]))
    if "norm" in res:
        out.append(table([[r["shape"], f"{r['torch_ms']:.2f}", f"{r['compiled_ms']:.2f}",
                           f"{r['compiled/torch']['paired']:.2f}"] for r in res["norm"]],
                         ["norm + ReLU fwd+bwd", "torch autocast ops ms", "compiled ms",
                          "ratio"]))
    if "steps" in res:
        out.append(table([[r["encoder"], r["phase"], f"{r['fp32_ms']:.0f}",
                           f"{r['bf16_ms']:.0f}", f"{r['bf16/fp32']['paired']:.2f}",
                           f"{r['bf16/fp32']['of_mins']:.2f}"] for r in res["steps"]],
                         ["encoder", "phase", "fp32 ms", "bf16 ms", "bf16/fp32 (paired)",
                          "(of minimums)"]))
    return "\n\n".join(out)


def main(argv=None) -> dict:
    return standalone("cpu_bf16", run, report, argv)


if __name__ == "__main__":
    main()
