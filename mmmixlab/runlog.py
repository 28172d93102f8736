"""What a training run reports as it goes: ``log.jsonl``, TensorBoard, and the progress lines.

:class:`RunLog` is the trainer's one writer. On rank 0 with an output folder it appends one
JSON record a line to ``out_dir/log.jsonl``, each with a ``kind`` and the global ``step``:

* ``step``: every ``train.log_every`` steps, the loss terms, logit scale, learning rate,
  throughput and the time the step waited for data (:meth:`RunLog.step`);
* ``epoch``: at each epoch's end, the epoch's mean losses, temperature, timings and any
  evaluation (:meth:`RunLog.epoch`, which also prints :func:`epoch_line`);
* ``unreadable_shape``: a shape file the stream could not read and replaced
  (:meth:`RunLog.unreadable_shape`; other ranks print it on stderr).

Numbers are mirrored to TensorBoard when it is installed. On resume the records after the
checkpoint's step are dropped, since those steps run again, so a resumed run's log reads as an
uninterrupted one. Ranks other than 0, and runs without an output folder, write nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

from . import distributed as dist_utils
from . import progress as progress_out

__all__ = ["RunLog", "epoch_line"]


class RunLog:
    """``log.jsonl`` (and TensorBoard) of one run; see the module docstring.

    ``main``: whether this is rank 0 (the only rank that writes files); ``progress``: whether
    epoch lines and skipped shapes are shown on the terminal or notebook.
    """

    def __init__(self, out_dir: Optional[Path], main: bool = True, progress: bool = True):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.main = main
        self.progress = progress
        self._file = None
        self._tb = None

    @property
    def path(self) -> Optional[Path]:
        return self.out_dir / "log.jsonl" if self.out_dir is not None else None

    def open(self, resume_step: int) -> None:
        """Start (or, after ``resume_step`` > 0, continue) the log: lines after the
        checkpoint's step are dropped, since those steps will be run again."""
        if self.out_dir is None or not self.main:
            return
        path = self.path
        self.out_dir.mkdir(parents=True, exist_ok=True)
        kept = []
        if path.exists() and resume_step > 0:
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut short by the crash
                if rec.get("step", 0) <= resume_step:
                    kept.append(line)
        path.write_text("".join(k + "\n" for k in kept))
        self._file = open(path, "a", buffering=1)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=resume_step)
        except Exception:  # tensorboard is optional
            self._tb = None

    def write(self, record: dict) -> None:
        """One record (with ``step``) as a line; its numbers to TensorBoard too."""
        if self._file is None:
            return
        self._file.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(f"{record.get('kind', 'step')}/{k}", v, record["step"])

    def step(self, step: int, phase: str, epoch: int, terms: dict, logit_scale: float,
             lr: float, samples_per_s: float, data_wait_s: float) -> None:
        """A ``step`` record: ``terms`` are the loss terms (tensors: read here, a device sync)."""
        self.write({"kind": "step", "step": step, "phase": phase, "epoch": epoch,
                    **{k: float(v.detach()) for k, v in terms.items()},
                    "logit_scale": logit_scale, "lr": lr, "samples_per_s": samples_per_s,
                    "data_wait_s": data_wait_s})

    def epoch(self, step: int, record: dict, epochs: int) -> None:
        """An ``epoch`` record, and its :func:`epoch_line` when progress is shown."""
        self.write({"kind": "epoch", "step": step, **record})
        if self.progress:
            progress_out.write(epoch_line(record, epochs))

    def unreadable_shape(self, bad: dict, phase: str, epoch: int, step: int,
                         so_far: int) -> None:
        """A shape file the stream could not read (and replaced): named in log.jsonl on rank 0,
        on stderr on the others; the running count is in each epoch's record."""
        if self.main:
            self.write({"kind": "unreadable_shape", "step": step, "phase": phase,
                        "epoch": epoch, "path": bad["path"], "reason": bad["reason"],
                        "unreadable_so_far": so_far})
            if self.progress:
                progress_out.write(f"skipped unreadable shape {bad['path']}: {bad['reason']}")
        else:
            print(f"rank {dist_utils.rank()}: skipped unreadable shape {bad['path']}: "
                  f"{bad['reason']}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            if self._tb is not None:
                self._tb.close()
            self._file = None


def epoch_line(record: dict, epochs: int) -> str:
    """One readable line per epoch: ``stage1 epoch 3/15  loss 2.310  T 0.0660  ...``."""
    skip = {"phase", "epoch", "seconds", "data_seconds", "lr", "temperature", "loss"}
    parts = [f"{record['phase']} epoch {record['epoch']}/{epochs}",
             f"loss {record.get('loss', float('nan')):.3f}",
             f"T {record.get('temperature', float('nan')):.4f}"]
    parts += [f"{k.replace('zero_shot_', 'zs ').replace('_top1', ' top1')} {v:.3f}"
              for k, v in record.items()
              if k not in skip and not k.startswith("loss_") and isinstance(v, float)]
    parts.append(f"{record.get('seconds', 0.0):.1f} s "
                 f"(data {record.get('data_seconds', 0.0):.1f} s)")
    return "  ".join(parts)
