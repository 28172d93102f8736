"""Run a toy mm-mixing training in its own process; optionally SIGKILL itself mid-step.

python -m tests.helpers.resume_worker OUT_DIR [--kill-at-step K] [--resume]
"""

import argparse
import os
import signal

import torch

from mmmixlab.checkpoints import save_final
from mmmixlab.train import Trainer
from tests.helpers.toy import toy_batches, toy_cfg

CFG = dict(**{"train.epochs_stage1": 2, "train.epochs_stage2": 2,
              "train.checkpoint_every": 2, "train.encoder": "pointbert-tiny",
              "train.encoder_overrides": {"num_groups": 8, "group_size": 8}})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--kill-at-step", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    trainer = Trainer(toy_cfg("mm-mixing", **CFG), toy_batches(), embed_dim=16,
                      out_dir=args.out, progress=False)
    if args.kill_at_step:
        inner, calls = trainer._forward_backward, {"n": 0}

        def dying(phase, batch):
            calls["n"] += 1
            out = inner(phase, batch)
            if calls["n"] == args.kill_at_step:  # after backward, before the optimizer step
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        trainer._forward_backward = dying
    result = trainer.fit(resume=args.resume)
    save_final(result, trainer.cfg, os.path.join(args.out, "final.pt"))


if __name__ == "__main__":
    main()
