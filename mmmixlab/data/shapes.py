"""The SynthShapes categories: their names, the confusable pairs, and one builder per category.

The builders live in :mod:`mmmixlab.data.categories` (one module per family of objects), the
helpers and caption words they share in :mod:`mmmixlab.data.parts`, the mesh primitives they
assemble in :mod:`mmmixlab.data.primitives`.

Conventions: z is up, objects face -y, units are roughly metres before normalization.

Each category builder draws proportions, optional parts, materials and colours from the
instance's random generator and returns ``(parts, attributes)``; the attributes feed captions:
``color`` (main colour word), ``colors`` (all colour words used), ``material``, ``parts``
(caption phrases such as "four legs", "a handle"), ``size`` (small/large/tall/short/wide).
"""

from __future__ import annotations

import numpy as np

from .categories import appliances, plants, seating, storage, tables, vessels
from .parts import MATERIALS

# primitives (mmmixlab.data.primitives), re-exported for older imports
from .primitives import (  # noqa: F401
    Part,
    box,
    disk,
    ellipsoid,
    frustum,
    normalize_cloud,
    rod,
    sample_parts,
    torus,
)

__all__ = [
    "CATEGORIES",
    "CONFUSABLE_PAIRS",
    "MATERIALS",
    "Part",
    "build_parts",
    "category_index",
    "normalize_cloud",
    "sample_parts",
]

CATEGORIES: tuple[str, ...] = (
    "chair", "stool", "table", "desk", "cup", "vase", "bottle", "lamp",
    "plant", "flower_pot", "cabinet", "bookshelf", "sofa", "bed", "monitor", "bench",
)

# class pairs built to overlap in geometry (the "hard samples" of the MM-Mixing paper)
CONFUSABLE_PAIRS: tuple[tuple[str, str], ...] = (
    ("table", "desk"), ("cup", "vase"), ("plant", "flower_pot"), ("cabinet", "bookshelf"),
)


def category_index(category: str) -> int:
    try:
        return CATEGORIES.index(category)
    except ValueError:
        raise ValueError(f"unknown category {category!r}; choose one of "
                         f"{', '.join(CATEGORIES)}") from None


_BUILDERS = {
    "chair": seating.chair, "stool": seating.stool, "sofa": seating.sofa, "bed": seating.bed,
    "bench": seating.bench,
    "table": tables.table, "desk": tables.desk,
    "cup": vessels.cup, "vase": vessels.vase, "bottle": vessels.bottle,
    "plant": plants.plant, "flower_pot": plants.flower_pot,
    "bookshelf": storage.bookshelf, "cabinet": storage.cabinet,
    "lamp": appliances.lamp, "monitor": appliances.monitor,
}
assert set(_BUILDERS) == set(CATEGORIES)


def build_parts(category: str, rng: np.random.Generator) -> tuple[list[Part], dict]:
    """Draw one instance of ``category``: its parts and caption attributes."""
    category_index(category)
    parts, attrs = _BUILDERS[category](rng)
    attrs["category"] = category
    attrs["num_parts"] = len(parts)
    return parts, attrs
