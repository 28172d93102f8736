"""Point-cloud encoders and the factory the trainers use.

``create_point_encoder(name, out_dim, in_channels=6, **overrides)`` builds one of
``ENCODER_NAMES``; overrides are config field names (``OpenShapePointBERTConfig``,
``PointBERTConfig``, ``PointNetConfig``, ``SparseConvConfig``)
and an unknown one raises ValueError listing the valid ones. Every encoder maps
(B, N, in_channels) clouds to (B, out_dim) features, takes no device at construction and
works after ``.to(device)``. The point-patch encoders (``pointbert*``, ``openshape-pointbert*``)
also cut clouds into patches on request (``patch_index(points)``, a
:class:`~mmmixlab.encoders.common.PatchIndex`) and take them back
(``forward(points, patches=...)``): how the trainer cuts a step's unmixed clouds once for A
and B (``train.share_patches``).
"""

from __future__ import annotations

from torch import nn

from ..checks import check_choice
from .common import build_config, count_parameters
from .openshape_pointbert import TINY as OPENSHAPE_TINY
from .openshape_pointbert import OpenShapePointBERT, OpenShapePointBERTConfig
from .pointbert import TINY, PatchTokenizer, PointBERT, PointBERTConfig
from .pointnet import PointNet, PointNetConfig
from .sparseconv import TINY as SPARSECONV_TINY
from .sparseconv import SparseConvConfig, SparseConvEncoder

__all__ = [
    "ENCODER_NAMES",
    "OpenShapePointBERT",
    "OpenShapePointBERTConfig",
    "PointBERT",
    "PointBERTConfig",
    "PointNet",
    "PointNetConfig",
    "SparseConvConfig",
    "SparseConvEncoder",
    "count_parameters",
    "create_point_encoder",
    "set_fused_attention",
    "set_fused_tokenizer",
]

# name -> (config class, model class, preset values applied before the user's overrides)
_REGISTRY = {
    # OpenShape's point-patch transformer, the paper's backbone (released checkpoints load)
    "openshape-pointbert": (OpenShapePointBERTConfig, OpenShapePointBERT, {}),
    "openshape-pointbert-tiny": (OpenShapePointBERTConfig, OpenShapePointBERT, OPENSHAPE_TINY),
    # this project's variant (LayerNorm tokenizer, positions at every block, CLS+max head)
    "pointbert": (PointBERTConfig, PointBERT, {}),
    "pointbert-tiny": (PointBERTConfig, PointBERT, TINY),
    "pointnet": (PointNetConfig, PointNet, {}),
    "sparseconv": (SparseConvConfig, SparseConvEncoder, {}),
    "sparseconv-tiny": (SparseConvConfig, SparseConvEncoder, SPARSECONV_TINY),
}
ENCODER_NAMES = tuple(_REGISTRY)


def create_point_encoder(name: str, out_dim: int, in_channels: int = 6,
                         **overrides) -> nn.Module:
    """Build encoder ``name`` mapping (B, N, in_channels) points to (B, out_dim) features."""
    check_choice(name, ENCODER_NAMES, "encoder name")
    config_cls, model_cls, preset = _REGISTRY[name]
    config = build_config(config_cls, {**preset, **overrides, "out_dim": out_dim,
                                       "in_channels": in_channels})
    return model_cls(config)


def set_fused_attention(encoder: nn.Module, on: bool) -> int:
    """Switch the compiled attention (:func:`~mmmixlab.encoders.common.packed_attention`) on or
    off in ``encoder``'s transformer blocks (``train.fused_attention``); returns how many it
    set. Where it does not fit (longer sequences, a GPU, no compiler) torch's kernel runs."""
    blocks = [m for m in encoder.modules() if hasattr(type(m), "fused_attention")]
    for m in blocks:
        m.fused_attention = bool(on)
    return len(blocks)


def set_fused_tokenizer(encoder: nn.Module, on: bool) -> int:
    """Switch the compiled tokenizer (:mod:`mmmixlab.native`) on or off in ``encoder``'s
    Point-BERT tokenizers (``train.fused_tokenizer``); returns how many it set. Where it does
    not fit (other widths, a GPU, no compiler) torch's ops run either way."""
    tokenizers = [m for m in encoder.modules() if isinstance(m, PatchTokenizer)]
    for m in tokenizers:
        m.fused = bool(on)
    return len(tokenizers)
