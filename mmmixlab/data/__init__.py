"""Data: the embedded SynthShapes world, the triplet format, renders, captions and prompts."""

from .benchmarks import (
                         MODELNET40_CLASSES,
                         SCANOBJECTNN_CLASSES,
                         ULIP_TEMPLATES,
                         LazyPoints,
                         PointDataset,
                         load_benchmark,
)
from .meshes import import_meshes
from .openshape import OpenShapeTriplets, read_openshape_npy
from .packed import PackedTriplets, pack_triplets
from .prompts import PROMPT_TEMPLATES, class_prompts, display_name
from .render import render_views
from .synth import CATEGORIES, CONFUSABLE_PAIRS, SynthConfig, build_world, generate_split
from .triplets import TripletSet, load_triplets, write_triplets

__all__ = [
    "MODELNET40_CLASSES", "SCANOBJECTNN_CLASSES", "ULIP_TEMPLATES", "LazyPoints", "PointDataset",
    "load_benchmark", "import_meshes", "OpenShapeTriplets", "read_openshape_npy",
    "PackedTriplets", "pack_triplets",
    "CATEGORIES", "CONFUSABLE_PAIRS", "PROMPT_TEMPLATES", "SynthConfig", "TripletSet",
    "build_world", "class_prompts", "display_name", "generate_split", "load_triplets",
    "render_views", "write_triplets",
]
