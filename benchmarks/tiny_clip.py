"""The tiny CLIP's pre-training (``mmmixlab.clip.pretrain_tiny_clip``): the whole token table
against only the rows the texts use (issue 23, the demo's cold start).

The synth-tiny frozen encoders are pre-trained once per world (500 steps, batch 128: two
minutes of the demo's cold start on 2 cores). Its text tower's token embedding has 49,408 rows;
the world's texts use a few hundred. With ``used_token_rows`` the model trains an embedding of
those rows and decays the others afterwards as AdamW would have (``_UsedTokenRows``): the same
weights bit for bit, checked here on the timed runs themselves.

The default world's train split (generated here, ~7 s), ``--steps`` steps per call (the
warm-up and cosine schedule scaled to them: the same per-step work), the process's
default torch threads (as ``mmmixlab demo`` / ``features`` run it), the two sides alternately
(``benchmarks.common.interleaved``), ratio = used rows / full table (< 1: faster).

    python -m benchmarks.tiny_clip [--quick] [--json FILE]
"""

from __future__ import annotations

import dataclasses

import torch

from mmmixlab import clip as clip_mod
from mmmixlab.config import RunConfig
from mmmixlab.data.synth import generate_split
from mmmixlab.device import retain_freed_memory
from mmmixlab.pipeline import synth_config

from .common import interleaved, log, ratio, standalone, table


def run(device: torch.device, quick: bool = False) -> dict:
    if device.type != "cpu":
        log("[tiny_clip] measuring on the CPU (where the tiny CLIP is pre-trained)")
    cfg = RunConfig()
    retain_freed_memory("cpu")  # as pipeline.prepare_world does before pre-training
    train = generate_split(synth_config(cfg), "train")
    steps, rounds = (8, 2) if quick else (60, 6)
    clip_cfg = dataclasses.replace(cfg.clip, tiny_steps=steps)

    def side(used: bool):
        def call():
            model, _ = clip_mod.pretrain_tiny_clip(train, clip_cfg, seed=cfg.data.synth_seed,
                                                   progress=False, used_token_rows=used)
            return model.state_dict()
        return call

    t = interleaved({"full": side(False), "used": side(True)}, rounds=rounds, warmup=0,
                    keep_first=True)
    a, b = t["full"].first_result, t["used"].first_result
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return {"threads": torch.get_num_threads(), "steps": steps, "shapes": len(train),
            "full_ms_per_step": round(t["full"].median * 1e3 / steps, 1),
            "used_ms_per_step": round(t["used"].median * 1e3 / steps, 1),
            "used/full": ratio(t["used"], t["full"]), "rounds": t["full"].n,
            "same_weights": same}


def report(res: dict) -> str:
    return table([[res["threads"], res["steps"], res["full_ms_per_step"],
                   res["used_ms_per_step"], f"{res['used/full']['paired']:.3f}",
                   f"{res['used/full']['of_mins']:.3f}", "yes" if res["same_weights"] else "NO"]],
                 ["threads", "steps", "full table ms/step", "used rows ms/step",
                  "ratio (paired)", "ratio (of minimums)", "same weights"])


def main(argv=None) -> dict:
    return standalone("tiny_clip", run, report, argv)


if __name__ == "__main__":
    main()
