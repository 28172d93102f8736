"""The compiled kernels (``mmmixlab.native``: ``train.fused_tokenizer``,
``train.fused_attention``) against torch's ops, side by side in one process (issue 23).

* ``tokenizer``: ``pointbert-tiny``'s tokenizer alone, forward + backward of 64 clouds' patches
  (4,096 x 32 points), the compiled pass (float32) against torch's ops under the step's
  autocast (bf16 on a CPU with AMX, else float32) and in float32;
* ``attention``: ``packed_attention`` alone (64 clouds x 65 tokens, 4 heads of 32, the packed
  qkv in the step's autocast dtype) and ``pointbert-tiny``'s two transformer blocks, forward +
  backward, the compiled attention against torch's kernel (float32 under autocast);
* ``step``: the trainer's whole step of each phase (``benchmarks.training_throughput``: loss,
  backward, clip, AdamW, schedule; batch 32 x 1,024 points, ``train.amp=auto``) with both
  kernels, with the tokenizer only, and with neither, switched between calls on the same
  trainer and batch.

Ratios are compiled / torch (below 1: faster). One thread, as the ablation plan's runs use.

    python -m benchmarks.compiled_kernels [--quick]
"""

from __future__ import annotations

import copy

import torch

from mmmixlab import native
from mmmixlab.device import autocast_dtype, resolve_device, retain_freed_memory
from mmmixlab.encoders import create_point_encoder, set_fused_attention, set_fused_tokenizer
from mmmixlab.encoders.common import packed_attention
from mmmixlab.encoders.pointbert import PatchTokenizer

from .common import interleaved, ratio, standalone, table
from .training_throughput import train_step
from .workloads import enter_phase, make_workload

PHASES = {"baseline": "baseline", "stage1": "fm", "im": "im", "stage2": "mm-mixing",
          "joint": "one-stage"}


def _tokenizer_row(rounds: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    tok = PatchTokenizer(6, (16, 32, 32, 32), 32)
    torch_tok = copy.deepcopy(tok)
    torch_tok.fused = False
    x = torch.rand(64, 64, 32, 6) - 0.5
    weights = torch.randn(64, 64, 32)
    amp = autocast_dtype("auto", device, cpu_bf16_pays=True)

    def step(module, dtype):
        def run():
            module.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                out = module(x)
            (out.float() * weights).sum().backward()
        return run

    t = interleaved({"compiled": step(tok, None), "torch_amp": step(torch_tok, amp),
                     "torch_fp32": step(torch_tok, None)}, rounds=rounds, warmup=2)
    return {"what": "tokenizer fwd+bwd, 64 clouds", "amp": str(amp),
            "compiled_ms": t["compiled"].median * 1e3, "torch_amp_ms": t["torch_amp"].median * 1e3,
            "torch_fp32_ms": t["torch_fp32"].median * 1e3,
            "vs_amp": ratio(t["compiled"], t["torch_amp"]),
            "vs_fp32": ratio(t["compiled"], t["torch_fp32"])}


def _attention_rows(rounds: int, device: torch.device) -> list:
    torch.manual_seed(0)
    amp = autocast_dtype("auto", device, cpu_bf16_pays=True)
    autocast = torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None)
    qkv = (torch.randn(64, 65, 384) * 2).to(amp or torch.float32).requires_grad_(True)
    grad = torch.randn(64, 65, 128)
    blocks = create_point_encoder("pointbert-tiny", 1280, 6).blocks
    x = torch.randn(64, 65, 128, requires_grad=True)
    pos = torch.randn(64, 65, 128)

    def alone(fused):
        def run():
            qkv.grad = None
            with autocast:
                out = packed_attention(qkv, 4, fused)
            (out.float() * grad).sum().backward()
        return run

    def two_blocks(fused):
        def run():
            set_fused_attention(blocks, fused)
            blocks.zero_grad(set_to_none=True)
            with autocast:
                h = x
                for block in blocks:
                    h = block(h + pos)
            (h.float() * grad).sum().backward()
        return run

    rows = []
    for what, fn in (("attention fwd+bwd, 64 clouds x 65 tokens", alone),
                     ("2 transformer blocks fwd+bwd, 64 clouds", two_blocks)):
        t = interleaved({"compiled": fn(True), "torch": fn(False)}, rounds=rounds, warmup=2)
        rows.append({"what": what, "amp": str(amp), "compiled_ms": t["compiled"].median * 1e3,
                     "torch_ms": t["torch"].median * 1e3,
                     "ratio": ratio(t["compiled"], t["torch"])})
    return rows


def _step_row(phase: str, rounds: int, device: torch.device) -> dict:
    w = make_workload("pointbert-tiny", 32, 1024, device, amp="auto", variant=PHASES[phase])
    opt = w.trainer._optimizer(enter_phase(w.trainer, phase))

    def step(tokenizer, attention):
        def run():
            for enc in w.trainer.encoders.values():
                set_fused_tokenizer(enc, tokenizer)
                set_fused_attention(enc, attention)
            train_step(w.trainer, enter_phase(w.trainer, phase), w.batch, *opt)
        return run

    t = interleaved({"both": step(True, True), "tokenizer": step(True, False),
                     "torch": step(False, False)}, rounds=rounds, warmup=2)
    return {"what": f"step {phase}", "both_ms": t["both"].median * 1e3,
            "tokenizer_ms": t["tokenizer"].median * 1e3, "torch_ms": t["torch"].median * 1e3,
            "ratio": ratio(t["both"], t["torch"]),
            "attention_ratio": ratio(t["both"], t["tokenizer"])}


def run(device: torch.device = None, quick: bool = False, phases=None) -> dict:
    device = resolve_device("cpu") if device is None or device.type != "cpu" else device
    if native.compiled() is None:
        return {"error": f"no compiled kernels here: {native.native_error()}"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    retain_freed_memory(device)
    try:
        rounds = 3 if quick else 15
        res = {"tokenizer": _tokenizer_row(rounds, device),
               "attention": _attention_rows(rounds, device), "steps": []}
        for phase in phases or (["baseline"] if quick else list(PHASES)):
            res["steps"].append(_step_row(phase, 2 if quick else 12, device))
    finally:
        torch.set_num_threads(threads)
    return res


def report(res: dict) -> str:
    if "error" in res:
        return res["error"]
    tk = res["tokenizer"]
    out = [table([[tk["what"], tk["compiled_ms"], tk["torch_amp_ms"], tk["torch_fp32_ms"],
                   tk["vs_amp"]["paired"], tk["vs_fp32"]["paired"]]],
                 ["case", "compiled ms", f"torch {tk['amp']} ms", "torch fp32 ms",
                  "compiled/amp", "compiled/fp32"])]
    out.append(table([[r["what"], r["compiled_ms"], r["torch_ms"], r["ratio"]["paired"]]
                      for r in res["attention"]],
                     ["case", "compiled ms", f"torch ms ({res['attention'][0]['amp']})",
                      "compiled/torch (paired)"]))
    out.append(table([[r["what"], r["both_ms"], r["tokenizer_ms"], r["torch_ms"],
                       r["ratio"]["paired"], r["attention_ratio"]["paired"]]
                      for r in res["steps"]],
                     ["case", "both compiled ms", "tokenizer only ms", "torch ms",
                      "both/torch (paired)", "both/tokenizer only"]))
    return "\n\n".join(out)


def main(argv=None) -> dict:
    return standalone("compiled_kernels", run, report, argv)


if __name__ == "__main__":
    main()
