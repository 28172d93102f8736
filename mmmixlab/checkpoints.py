"""What a run leaves and reads back: ``final.pt``, ``encoders.safetensors`` and the RNG state of
``checkpoints/last.pt``, all loadable without running code (``torch.load(weights_only=True)``
or safetensors). The training loop that writes ``last.pt`` is :class:`mmmixlab.train.Trainer`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from . import distributed as dist_utils
from .config import RunConfig
from .fileio import atomic_path

__all__ = ["SAFETENSORS_NAME", "encoders_of_state", "load_safetensors", "numpy_rng_from_tensors",
           "numpy_rng_to_tensors", "read_run_state", "save_final", "save_safetensors"]


def numpy_rng_to_tensors() -> tuple:
    """numpy's global RNG state with its key array as a tensor, so the checkpoint loads with
    ``torch.load(weights_only=True)`` (which refuses numpy arrays)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
            float(cached))


def numpy_rng_from_tensors(state) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)


SAFETENSORS_NAME = "encoders.safetensors"


def save_final(result, cfg: RunConfig, path: os.PathLike) -> Optional[Path]:
    """All trained state dicts, logit scales and the config, written atomically (rank 0):
    ``final.pt`` and, for sharing, ``encoders.safetensors`` beside it (the same tensors in the
    Hub's safe format, the config and feature width in its metadata; see
    :func:`save_safetensors`)."""
    if not dist_utils.is_main_process():
        return None
    path = Path(path)
    skip = set(getattr(result, "unsaved", ()))
    encoders = {n: e for n, e in result.encoders.items() if n not in skip}
    scales = {n: s for n, s in result.logit_scales.items() if n not in skip}
    with atomic_path(path) as tmp:
        torch.save({"config": cfg.to_dict(), "embed_dim": result.embed_dim,
                    "encoders": {n: e.state_dict() for n, e in encoders.items()},
                    "logit_scales": {n: s.state_dict() for n, s in scales.items()},
                    "history": result.history}, tmp)
    save_safetensors(encoders, scales, cfg, result.embed_dim, path.parent / SAFETENSORS_NAME)
    return path


def save_safetensors(encoders: dict, logit_scales: dict, cfg: RunConfig, embed_dim: int,
                     path: os.PathLike) -> Path:
    """Encoders as ``safetensors``: tensor ``"{A|B}.{parameter}"`` per weight and
    ``"logit_scale.{A|B}"``; metadata ``mmmixlab`` = JSON {config, embed_dim, encoders}."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {f"{n}.{k}": v.detach().cpu().contiguous()
               for n, e in encoders.items() for k, v in e.state_dict().items()}
    tensors.update({f"logit_scale.{n}": s.log_scale.detach().cpu().reshape(1)
                    for n, s in logit_scales.items()})
    meta = {"mmmixlab": json.dumps({"config": cfg.to_dict(), "embed_dim": int(embed_dim),
                                    "encoders": sorted(encoders)}), "format": "pt"}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_safetensors(path: os.PathLike) -> dict:
    """What :func:`save_safetensors` wrote, as a ``final.pt``-shaped dict (config, embed_dim,
    encoders {name: state dict}, logit_scales {name: {"log_scale": t}}). Errors name the file."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("mmmixlab", "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 (a corrupt header raises several types)
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if not isinstance(meta, dict) or not {"config", "embed_dim", "encoders"} <= set(meta):
        raise ValueError(f"{path}: a safetensors file without mmmixlab's metadata (config, "
                         f"embed_dim, encoders)")
    out = {"config": meta["config"], "embed_dim": meta["embed_dim"], "encoders": {},
           "logit_scales": {}}
    for name in meta["encoders"]:
        prefix = f"{name}."
        out["encoders"][name] = {k[len(prefix):]: v for k, v in tensors.items()
                                 if k.startswith(prefix)}
        if f"logit_scale.{name}" in tensors:
            out["logit_scales"][name] = {"log_scale": tensors[f"logit_scale.{name}"].reshape(())}
    return out


def read_run_state(path: os.PathLike) -> tuple[dict, Path]:
    """A finished run's state from a run folder (``final.pt``, else ``encoders.safetensors``)
    or either file, read without running code: ``(state, file)``. ``state`` is
    ``final.pt``-shaped (config, embed_dim, encoders, logit_scales[, history])."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "final.pt", path / SAFETENSORS_NAME]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"no finished run at {path} (missing "
                                    f"{' and '.join(c.name for c in candidates)})")
        path = found
    elif not path.is_file():
        raise FileNotFoundError(f"no finished run at {path} (no such folder or file; a run "
                                f"folder holds final.pt or {SAFETENSORS_NAME})")
    if path.suffix == ".safetensors":
        return load_safetensors(path), path
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a readable run file (corrupt, or it holds objects the "
                         f"safe loader refuses: {type(err).__name__}: {str(err)[:300]})") from err
    missing = [k for k in ("config", "encoders", "embed_dim") if k not in state] \
        if isinstance(state, dict) else ["a dict at the top level"]
    if missing:
        raise ValueError(f"{path}: not a mmmixlab run file: lacks {missing}")
    return state, path


def encoders_of_state(state: dict, path, names=None) -> tuple[RunConfig, dict]:
    """(config, {name: encoder in eval mode on the CPU}) of a run state from
    :func:`read_run_state`, each encoder built from the run's own config and loaded with
    ``strict=True``; ``names`` restricts which. Errors name the file and what does not fit."""
    from .encoders import create_point_encoder

    try:
        cfg = RunConfig.from_dict(state["config"])
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: its config does not fit this version: {err}") from err
    if not state["encoders"] or not {"A", "B"} >= set(state["encoders"]):
        raise ValueError(f"{path}: expected encoders 'A' (and 'B'), found "
                         f"{sorted(state['encoders'])}")
    encoders = {}
    for name, sd in state["encoders"].items():
        if names is not None and name not in names:
            continue
        enc = create_point_encoder(cfg.train.encoder, out_dim=state["embed_dim"],
                                   in_channels=cfg.data.in_channels, **cfg.train.encoder_overrides)
        try:
            enc.load_state_dict(sd)
        except RuntimeError as err:
            raise ValueError(f"{path}: encoder {name} does not match its config "
                             f"({cfg.train.encoder}): {str(err)[:300]}") from err
        encoders[name] = enc.eval()
    return cfg, encoders


def final_name(encoders) -> str:
    """The encoder a run is judged by: the last one trained (B for two-encoder variants)."""
    return "B" if "B" in encoders else "A"
