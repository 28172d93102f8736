"""mmmixlab: MM-Mixing (multi-modal mixing alignment for 3D understanding) as a small library."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# Idle OpenMP workers sleep instead of spinning. The policy is read once, when torch loads its
# OpenMP runtime, so it only takes effect when mmmixlab is imported before torch (as the
# notebooks and the CLI do) and never overrides a value the user set. On a small or shared
# machine spinning workers made a tiny training step 1.7-5.4x slower and ball query ~5x slower
# (benchmarks/threading_env.py, benchmarks/step_profile.py).
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load_encoder(run, device="cpu"):
    """The 3D encoder of a run folder as an eval-mode ``torch.nn.Module`` (see
    :func:`mmmixlab.pipeline.load_encoder`)."""
    from .pipeline import load_encoder as _load_encoder

    return _load_encoder(run, device=device)
