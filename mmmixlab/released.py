"""Released checkpoints (OpenShape's and MM-Mixing's) as run folders of this workbench.

The paper's trained models and its baseline's are public on the Hugging Face Hub, each a
``model.pt``: a dict whose ``state_dict`` holds the network under DDP's ``module.`` prefix,
beside training state (optimizer, scheduler, ``logit_scale``, epoch, best accuracies).
:func:`import_checkpoint` reads such a file without running code, recognises the network from
its tensor names and shapes (:func:`recognise`), loads it with ``strict=True`` into
:class:`mmmixlab.encoders.OpenShapePointBERT` (or the SparseConv encoder, see
:mod:`mmmixlab.released_sparseconv`) and writes a run folder that ``eval``, ``classify``,
``train.stage1_checkpoint``, ``train.init_from``, :func:`mmmixlab.load_encoder` and the
notebooks accept like a trained one:

* ``encoders.safetensors``: the encoder as ``A`` and its logit scale;
* ``config.json``: the ``paper`` preset with the recognised encoder and sizes, the frozen CLIP
  the weights belong to (``clip.model`` / ``clip.pretrained``: ViT-bigG-14 /
  laion2b_s39b_b160k for the 1280-d releases), 10,000 points, and OpenShape's input convention
  (``data.up_convention = "swap"``: y-up files get their y and z columns swapped; the unit
  sphere; rgb in [0, 1], grey 0.4 where a file has no colour);
* ``released.json``: where the weights came from (file, sha256, Hub repo), what was
  recognised, the numbers the authors report, and what could not be established.

Known names (:data:`RELEASES`) are what ``mmmixlab download checkpoint NAME`` fetches; any
``OWNER/REPO`` holding a ``model.pt`` works too and is recognised from its tensors.

What the public material does not establish, said where it matters: MM-Mixing ("TripletMix",
its arXiv v1 title) published weights but no code; its demo maps them to a constructor of its
own that is not in the public material this project could read. Its Point-BERT checkpoints are
treated as OpenShape's G14 network (the paper trains OpenShape's backbone at OpenShape's
setting); a file holding anything else (an adapter, another size) is refused with the first
unexpected tensors named, never loaded partially.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

__all__ = ["RELEASES", "Release", "import_checkpoint", "read_checkpoint_file", "recognise"]

# OpenShape's frozen encoder for the 1280-d releases (its data's features).
BIGG = ("ViT-bigG-14", "laion2b_s39b_b160k")


@dataclass(frozen=True)
class Release:
    """A published checkpoint: its Hub repo, what it is, and what its authors report."""

    repo: str
    method: str                  # "OpenShape" | "MM-Mixing"
    architecture: str            # "openshape-pointbert" | "sparseconv"
    size: Optional[str]          # key of openshape_pointbert.SIZES (None: SparseConv)
    clip: tuple                  # (open_clip model, pretrained tag)
    trained_on: str
    reported: dict = field(default_factory=dict)  # benchmark -> zero-shot top-1 (%)
    note: str = ""
    file: str = "model.pt"


_ENSEMBLED = "Ensembled (ShapeNet + 3D-FUTURE + ABO + Objaverse)"
RELEASES = {
    "openshape-pointbert-vitg14-rgb": Release(
        "OpenShape/openshape-pointbert-vitg14-rgb", "OpenShape", "openshape-pointbert", "g14",
        BIGG, _ENSEMBLED, {"modelnet40": 84.4, "scanobjectnn": 52.2, "objaverse_lvis": 46.8},
        "the MM-Mixing paper's Table 1 baseline row"),
    "openshape-pointbert-vitl14-rgb": Release(
        "OpenShape/openshape-pointbert-vitl14-rgb", "OpenShape", "openshape-pointbert", "l14",
        ("ViT-L-14", "openai"), _ENSEMBLED, {},
        "768-d; file layout of OpenShape's demo (pc_encoder.*). The CLIP tag 'openai' is not "
        "stated in the public material read here: check the model card"),
    "openshape-pointbert-vitb32-rgb": Release(
        "OpenShape/openshape-pointbert-vitb32-rgb", "OpenShape", "openshape-pointbert", "b32",
        ("ViT-B-32", "openai"), _ENSEMBLED, {},
        "512-d, no projection; file layout of OpenShape's demo. The CLIP tag 'openai' is not "
        "stated in the public material read here: check the model card"),
    "openshape-spconv-all": Release(
        "OpenShape/openshape-spconv-all", "OpenShape", "sparseconv", None, BIGG, _ENSEMBLED),
    "tripletmix-pointbert-all-objaverse": Release(
        "TripletMix/tripletmix-pointbert-all-objaverse", "MM-Mixing", "openshape-pointbert",
        "g14", BIGG, _ENSEMBLED, {"objaverse_lvis": 51.4},
        "the paper's checkpoint for Objaverse-LVIS (Table 1: 86.0 / 54.3 / 51.4 over its "
        "per-benchmark checkpoints; which one gives the ScanObjectNN 54.3 is not stated)"),
    "tripletmix-pointbert-all-modelnet40": Release(
        "TripletMix/tripletmix-pointbert-all-modelnet40", "MM-Mixing", "openshape-pointbert",
        "g14", BIGG, _ENSEMBLED, {"modelnet40": 86.0},
        "the paper's checkpoint for ModelNet40"),
    "tripletmix-pointbert-shapenet": Release(
        "TripletMix/tripletmix-pointbert-shapenet", "MM-Mixing", "openshape-pointbert", "g14",
        BIGG, "ShapeNet", {"modelnet40": 74.1, "scanobjectnn": 61.9, "objaverse_lvis": 13.0},
        "OpenShape's ShapeNet-only baseline: 70.3 / 51.3 / 10.8"),
    "tripletmix-spconv-all": Release(
        "TripletMix/tripletmix-spconv-all", "MM-Mixing", "sparseconv", None, BIGG, _ENSEMBLED),
}

# The frozen CLIP a feature width implies when the release is not a known one.
_CLIP_BY_WIDTH = {1280: BIGG, 768: ("ViT-L-14", "openai"), 512: ("ViT-B-32", "openai")}

CONVENTION = {"up": "y-up files: y and z columns swapped to z-up (OpenShape's loaders)",
              "normalize": "centred on the mean, farthest point on the unit sphere",
              "rgb": "in [0, 1]; grey 0.4 where a file has no colour",
              "points": 10000}


# ---------------------------------------------------------------------------------- reading

class UnsafeCheckpointError(ValueError):
    """A checkpoint whose pickle asks to run code (or build objects outside plain data)."""


def read_checkpoint_file(path) -> dict:
    """A ``torch.save``d checkpoint read with ``torch.load(weights_only=True)``: tensors,
    containers, numbers and strings only. A pickle that asks for any other global (a function
    to call, a class to build) is refused by name; nothing in it runs."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        allowed = _plain_numpy_globals(path)
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "global" not in text.lower():  # a corrupt pickle, not a refused one
            raise ValueError(f"{path}: not a readable PyTorch checkpoint (corrupt pickle: "
                             f"{text.splitlines()[0][:200]})") from err
        found = (re.search(r"GLOBAL ([\w.]+)", text)
                 or re.search(r"[Uu]nsupported global:?\s+([\w.]+)", text))
        name = found.group(1) if found else "a global outside plain data"
        raise UnsafeCheckpointError(
            f"{path}: refusing to load: its pickle asks for {name}, which the safe loader "
            f"(torch.load weights_only=True) does not allow; loading it otherwise could run "
            f"code. Nothing in the file was run.") from None
    except Exception as err:  # noqa: BLE001 (zip/pickle corruption raises several types)
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: "
                         f"{str(err)[:200]})") from err
    if isinstance(obj, dict):
        return obj
    raise ValueError(f"{path}: a checkpoint must hold a dict (a state dict or "
                     f"{{'state_dict': ...}}), got {type(obj).__name__}")


# numpy's scalars and arrays (a training script's best accuracy, say) are plain data: allowed
# on top of what ``weights_only`` admits. Anything else keeps being refused.
_NUMPY_DATA = {f"{m}.{n}" for m in ("numpy.core.multiarray", "numpy._core.multiarray")
               for n in ("scalar", "_reconstruct")} | {"numpy.ndarray", "numpy.dtype"}


def _plain_numpy_globals(path: Path) -> list:
    """The numpy globals of ``path``'s pickle that are plain data, as objects for
    ``torch.serialization.safe_globals`` (read from the pickle's opcodes; nothing is run)."""
    import importlib

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 (not a zip checkpoint: torch.load reports it below)
        return []
    out = []
    for name in names:
        module, _, attr = name.rpartition(".")
        plain = name in _NUMPY_DATA or (module == "numpy.dtypes" and attr.endswith("DType"))
        if plain:
            try:
                out.append(getattr(importlib.import_module(module), attr))
            except (ImportError, AttributeError):
                continue
    if out:  # a pickled dtype is rebuilt as its class (numpy.dtypes.Float64DType, ...)
        import numpy as np

        dtypes = getattr(np, "dtypes", None)
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")] if dtypes else []
    return out


def _state_dict_of(obj: dict, where: str) -> tuple[dict, str, list]:
    """(network tensors with wrapper prefixes removed, layout, names of the tensors outside
    the network's prefix) of a loaded checkpoint."""
    sd = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else obj
    if not isinstance(sd, dict) or not sd:
        raise ValueError(f"{where}: no state dict found (expected a dict of tensors, or one under "
                         f"'state_dict')")
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{where}: its state dict holds no tensors")
    layout, outside = "openshape-train", []
    # the network under a wrapper's prefix (DDP's module., OpenShape's demo files' pc_encoder.):
    # tensors outside it (a text projection, say) are not the 3D encoder; they are listed in
    # released.json ("not_imported"), never silently used or dropped
    for prefix, name in (("module.", "openshape-train"), ("pc_encoder.", "openshape-demo")):
        if any(k.startswith(prefix) for k in tensors):
            outside += [k for k in tensors if not k.startswith(prefix)]
            tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            layout = name if prefix == "pc_encoder." else layout
    bare = ("sa.", "lift.", "cls_token", "transformer.")
    if any(k.startswith(bare) for k in tensors) and not any(k.startswith("ppat.")
                                                            for k in tensors):
        tensors = {f"ppat.{k}": v for k, v in tensors.items()}  # PointPatchTransformer alone
        layout += "-unprojected"
    return tensors, layout, outside


def _logit_scale_of(obj: dict) -> Optional[float]:
    """exp of the stored log scale (OpenShape's ``logit_scale`` state dict), if any."""
    ls = obj.get("logit_scale") if isinstance(obj, dict) else None
    values = [v for v in (ls.values() if isinstance(ls, dict) else [ls])
              if isinstance(v, torch.Tensor) and v.numel() == 1]
    if len(values) != 1 or not torch.isfinite(values[0]).all():
        return None
    return float(values[0].float().exp().clamp(max=100))


# ---------------------------------------------------------------------------------- recognising

def _shapes(sd: dict) -> dict:
    return {k: tuple(v.shape) for k, v in sd.items()}


def describe_mismatch(expected: dict, got: dict, limit: int = 4) -> tuple[int, str]:
    """(number of differences, text naming the first missing / unexpected / mis-shaped
    tensors with both shapes) between two {name: shape} maps."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shaped = [k for k in expected if k in got and expected[k] != got[k]]
    parts = []
    if missing:
        parts.append("missing " + ", ".join(f"{k} {expected[k]}" for k in missing[:limit])
                     + (f" (+{len(missing) - limit} more)" if len(missing) > limit else ""))
    if unexpected:
        parts.append("unexpected " + ", ".join(f"{k} {got[k]}" for k in unexpected[:limit])
                     + (f" (+{len(unexpected) - limit} more)" if len(unexpected) > limit
                        else ""))
    if shaped:
        parts.append("mis-shaped " + ", ".join(f"{k}: checkpoint {got[k]}, model {expected[k]}"
                                               for k in shaped[:limit])
                     + (f" (+{len(shaped) - limit} more)" if len(shaped) > limit else ""))
    return len(missing) + len(unexpected) + len(shaped), "; ".join(parts)


def _pointbert_widths(sd: dict, where: str) -> dict:
    """The config fields a state dict's shapes fix (width, depth, heads, MLP, SA MLP,
    channels, output)."""
    def get(key):
        if key not in sd:
            raise ValueError(f"{where}: not OpenShape's point-patch transformer: missing {key}")
        return sd[key]

    width = get("ppat.cls_token").shape[0]
    layers = {int(m.group(1)) for k in sd
              if (m := re.match(r"ppat\.transformer\.layers\.(\d+)\.", k))}
    inner = get("ppat.transformer.layers.0.0.fn.to_qkv.weight").shape[0] // 3
    dim_head = 64 if inner % 64 == 0 else inner  # OpenShape's heads are 64-d
    sa = []
    while f"ppat.sa.mlp_convs.{len(sa)}.weight" in sd:
        sa.append(sd[f"ppat.sa.mlp_convs.{len(sa)}.weight"].shape[0])
    project = "proj.weight" in sd
    return {"width": width, "depth": len(layers), "heads": inner // dim_head,
            "dim_head": dim_head,
            "mlp_dim": get("ppat.transformer.layers.0.1.fn.net.0.weight").shape[0],
            "sa_mlp": tuple(sa),
            "in_channels": get("ppat.sa.mlp_convs.0.weight").shape[1] - 3,
            "out_dim": sd["proj.weight"].shape[0] if project else width, "project": project}


def _expected_shapes(overrides: dict) -> dict:
    from .encoders import create_point_encoder

    kw = dict(overrides)
    out_dim, in_channels = kw.pop("out_dim"), kw.pop("in_channels")
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = create_point_encoder("openshape-pointbert", out_dim=out_dim,
                                     in_channels=in_channels, **kw)
    return _shapes(model.state_dict())


@dataclass
class Recognised:
    architecture: str
    size: Optional[str]
    encoder_overrides: dict      # create_point_encoder overrides (no out_dim / in_channels)
    out_dim: int
    in_channels: int
    state_dict: dict             # the tensors, named as our module names them
    layout: str
    info: dict = field(default_factory=dict)


def recognise(obj: dict, where: str = "checkpoint", size: Optional[str] = None,
              hint: Optional[str] = None) -> Recognised:
    """The network of a loaded checkpoint, from its tensor names and shapes.

    OpenShape's point-patch transformer: the widths come from the shapes; the geometry that no
    tensor holds (patches, radius, points per patch) from the one released size
    (:data:`mmmixlab.encoders.openshape_pointbert.SIZES`) with those widths, or from ``size``
    where two sizes share them (OpenShape's ``s3`` and the ViT-L/14 release; ``hint``, a known
    release's size, settles that too). Anything else
    raises ValueError naming the first differing tensors and the sizes tried.
    """
    from .encoders.openshape_pointbert import SIZES

    sd, layout, outside = _state_dict_of(obj, where)
    if any(k.startswith("ppat.") for k in sd):
        rec = _recognise_pointbert(sd, layout, where, size, hint)
        rec.info["not_imported"] = outside
        return rec
    try:
        from . import released_sparseconv
    except ImportError:  # pragma: no cover - the module ships with the package
        released_sparseconv = None
    if released_sparseconv is not None and released_sparseconv.looks_like_minkowski(sd):
        if size is not None:
            raise ValueError(f"--size {size!r} applies to OpenShape's Point-BERT; {where} holds "
                             f"a SparseConv (MinkowskiEngine) network")
        converted, info = released_sparseconv.convert_minkowski_state_dict(sd)
        info["not_imported"] = outside
        return Recognised("sparseconv", None, info.get("encoder_overrides", {}),
                          info["out_dim"], info["in_channels"], converted, layout, info)
    sample = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(sd.items())[:5])
    raise ValueError(f"{where}: not a network this workbench knows (tried OpenShape's "
                     f"point-patch transformer, ppat.*, sizes {', '.join(_size_names(SIZES))}; "
                     f"and OpenShape's MinkResNet34): its first tensors are {sample}")


def _size_names(sizes) -> list:
    return [n for n in sizes if n != "s4"]  # s4 is g14's alias


def _recognise_pointbert(sd: dict, layout: str, where: str, size: Optional[str],
                         hint: Optional[str] = None) -> Recognised:
    from .encoders.openshape_pointbert import SIZES

    widths = _pointbert_widths(sd, where)
    got = _shapes(sd)
    names = _size_names(SIZES)
    if size is not None:
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}; OpenShape's sizes: {', '.join(names)}")
        tried = [size]
    else:
        tried = names
    results = []
    for name in tried:
        geometry = dict(SIZES[name])
        overrides = {**geometry, "dim_head": widths["dim_head"], "project": widths["project"],
                     "out_dim": widths["out_dim"], "in_channels": widths["in_channels"]}
        try:
            expected = _expected_shapes(overrides)
        except ValueError as err:
            results.append((name, 10 ** 6, str(err)))
            continue
        count, text = describe_mismatch(expected, got)
        results.append((name, count, text))
    matches = [r[0] for r in results if r[1] == 0]
    if not matches:
        best = min(results, key=lambda r: r[1])
        raise ValueError(f"{where}: OpenShape's point-patch transformer of no known size fits "
                         f"(widths read off the file: {widths}); sizes tried: "
                         f"{', '.join(tried)}; closest {best[0]}: {best[2]}")
    if len(matches) > 1:
        # the same tensors, another geometry: OpenShape's demo layout is the ViT-L/14 release
        if hint not in matches:
            hint = "l14" if layout.startswith("openshape-demo") and "l14" in matches else None
        if hint is None:
            raise ValueError(f"{where}: its tensors fit OpenShape's sizes {matches} alike (they "
                             f"differ in patches / radius / points per patch, which no tensor "
                             f"holds): choose one with --size")
        matches = [hint]
    name = matches[0]
    overrides = {**SIZES[name], "dim_head": widths["dim_head"], "project": widths["project"]}
    return Recognised("openshape-pointbert", "g14" if name == "s4" else name, overrides,
                      widths["out_dim"], widths["in_channels"], sd, layout,
                      {"widths": {k: v for k, v in widths.items()}})


# ---------------------------------------------------------------------------------- importing

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def import_checkpoint(file, out, *, name: Optional[str] = None, size: Optional[str] = None,
                      clip: Optional[str] = None, repo: Optional[str] = None,
                      overwrite: bool = False) -> Path:
    """A released checkpoint -> a run folder ``out`` (see the module docstring).

    ``name``: a key of :data:`RELEASES` (its size, CLIP and reported numbers are recorded);
    ``size``: OpenShape's size where the tensors do not decide it; ``clip``: ``MODEL/TAG`` of
    the frozen encoder the weights were aligned to, when neither the release nor the feature
    width says it. The encoder is loaded with ``strict=True`` and checked to run before
    anything is written.
    """
    from .checkpoints import SAFETENSORS_NAME, save_safetensors
    from .config import preset
    from .encoders import create_point_encoder
    from .fileio import write_json
    from .losses import LogitScale

    file = Path(file).expanduser()
    out = Path(out).expanduser()
    release = None
    if name is not None:
        if name not in RELEASES:
            raise ValueError(f"unknown release {name!r}; known: {', '.join(RELEASES)}")
        release = RELEASES[name]
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (choose another --out)")
    obj = read_checkpoint_file(file)
    from .encoders.openshape_pointbert import SIZES

    hint = release.size if release is not None and release.size in SIZES else None
    rec = recognise(obj, str(file), size, hint=hint)
    if release is not None and release.architecture != rec.architecture:
        raise ValueError(f"{file}: holds a {rec.architecture} network, but {name} is a "
                         f"{release.architecture} release")
    encoder = create_point_encoder(rec.architecture, out_dim=rec.out_dim,
                                   in_channels=rec.in_channels, **rec.encoder_overrides)
    try:
        encoder.load_state_dict(rec.state_dict, strict=True)
    except RuntimeError as err:  # recognise() compared shapes already; keep the reason
        raise ValueError(f"{file}: does not load into {rec.architecture}: {str(err)[:400]}"
                         ) from err
    encoder.eval()
    with torch.no_grad():  # a forward pass on a sphere proves the weights are usable
        probe = torch.randn(1, 2048, rec.in_channels, generator=torch.Generator().manual_seed(0))
        probe[..., :3] = torch.nn.functional.normalize(probe[..., :3], dim=-1)
        if rec.in_channels == 6:
            probe[..., 3:] = 0.4
        feat = encoder(probe)
    if not torch.isfinite(feat).all():
        raise ValueError(f"{file}: the imported encoder gives non-finite features (NaN/inf "
                         f"weights?)")
    if clip:
        model, sep, tag = clip.partition("/")
        clip_spec = (model, tag if sep else None)
    elif release is not None:
        clip_spec = release.clip
    else:
        clip_spec = _CLIP_BY_WIDTH.get(rec.out_dim, (None, None))
    if clip_spec[0] is None:
        raise ValueError(f"{file}: {rec.out_dim}-d features match no frozen CLIP this workbench "
                         f"knows (1280: ViT-bigG-14, 768: ViT-L-14, 512: ViT-B-32); give "
                         f"--clip MODEL/TAG")
    cfg = preset("paper").replace(**{
        "train.encoder": rec.architecture, "train.encoder_overrides": rec.encoder_overrides,
        "train.variant": "baseline", "data.in_channels": rec.in_channels,
        "data.up_convention": "swap", "data.num_points": 10000,
        "clip.model": clip_spec[0], "clip.pretrained": clip_spec[1]}).validate()
    scale = LogitScale()
    stored = _logit_scale_of(obj)
    if stored is not None:
        with torch.no_grad():
            scale.log_scale.fill_(torch.tensor(stored).log())
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors({"A": encoder}, {"A": scale}, cfg, rec.out_dim, out / SAFETENSORS_NAME)
    (out / "config.json").write_text(cfg.to_json())
    record = {
        "source": {"file": str(file.resolve()), "sha256": _sha256(file),
                   "repo": repo or (release.repo if release else None), "release": name},
        "method": release.method if release else None,
        "architecture": rec.architecture, "size": rec.size,
        "encoder_overrides": rec.encoder_overrides, "out_dim": rec.out_dim,
        "in_channels": rec.in_channels, "layout": rec.layout,
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "logit_scale": stored, "clip": {"model": clip_spec[0], "pretrained": clip_spec[1]},
        "convention": CONVENTION,
        "reported_zero_shot_top1": dict(release.reported) if release else {},
        "trained_on": release.trained_on if release else None,
        "note": release.note if release else "",
        "checkpoint_extras": sorted(k for k in obj if k != "state_dict"),
        "not_imported": rec.info.get("not_imported", []),
    }
    write_json(record, out / "released.json")
    return out


def release_info(run_dir) -> Optional[dict]:
    """``released.json`` of an imported run folder, or None for a trained run."""
    path = Path(run_dir) / "released.json"
    return json.loads(path.read_text()) if path.is_file() else None


def release_of(name_or_repo: str) -> tuple[str, Optional[str], Optional[Release]]:
    """(Hub repo, release name or None, Release or None) of a name or ``OWNER/REPO``."""
    if name_or_repo in RELEASES:
        r = RELEASES[name_or_repo]
        return r.repo, name_or_repo, r
    for key, r in RELEASES.items():
        if r.repo == name_or_repo:
            return r.repo, key, r
    if "/" in name_or_repo and len(name_or_repo.split("/")) == 2 and all(
            name_or_repo.split("/")):
        return name_or_repo, None, None
    raise ValueError(f"unknown checkpoint {name_or_repo!r}: give one of {', '.join(RELEASES)} "
                     f"or a Hub repo OWNER/REPO holding a model.pt")

