"""Template captions of SynthShapes instances, built from their attributes.

Every caption contains the class display name and the main colour word, plus some of: material,
size word and part phrases ("four legs", "a handle"). Captions of one shape are distinct.
"""

from __future__ import annotations

import numpy as np

from .parts import MATERIALS
from .prompts import display_name, fix_articles

__all__ = ["CAPTION_TEMPLATES", "make_captions"]

# {c} colour, {m} material adjective, {mn} material noun, {n} name, {s} size, {p} parts
CAPTION_TEMPLATES: list[str] = [
    "a {s} {c} {m} {n} with {p}",
    "a {c} {m} {n}",
    "3d model of a {c} {n} with {p}",
    "a {c} {n} made of {mn}",
    "a {s} {c} {n}",
    "a {c} {m} {n}, {s}, with {p}",
    "a render of a {c} {n} with {p}",
    "a {m} {n} in {c}",
    "a {s} {n}, {c}, made of {mn}",
    "there is a {c} {n} with {p}",
    "a {c} {n}",
    "a point cloud of a {s} {c} {n}",
]

_NOUN = {"wood": "wood", "metal": "metal", "plastic": "plastic", "ceramic": "ceramic",
         "glass": "glass", "fabric": "fabric", "leather": "leather", "terracotta": "terracotta"}


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def make_captions(category: str, attributes: dict, n: int = 3,
                  rng: np.random.Generator | None = None) -> list[str]:
    """``n`` distinct captions (distinct as long as the templates allow; else cycled)."""
    if int(n) < 1:
        raise ValueError(f"n (captions per shape) must be >= 1, got {n}")
    rng = np.random.default_rng(0) if rng is None else rng
    name = display_name(category)
    color = attributes["color"]
    mat = attributes.get("material")
    on_part = bool(attributes.get("material_on_part")) or mat not in MATERIALS
    m = "" if on_part else MATERIALS[mat][0]
    mn = None if on_part else _NOUN[mat]
    size = attributes.get("size") or ""
    phrases = list(attributes.get("parts", []))
    usable = []
    for t in CAPTION_TEMPLATES:
        if "{p}" in t and not phrases:
            continue
        if "{mn}" in t and mn is None:
            continue
        if "{m}" in t and not m and "{m} {n}" not in t:
            continue
        usable.append(t)
    order = rng.permutation(len(usable))
    out: list[str] = []
    k = 0
    while len(out) < n:  # duplicates are accepted only once the templates run out
        t = usable[order[k % len(usable)]]
        k += 1
        if phrases:
            take = int(rng.integers(1, min(3, len(phrases)) + 1))
            idx = np.sort(rng.choice(len(phrases), size=take, replace=False))
            p = _join([phrases[i] for i in idx])
        else:
            p = ""
        text = t.format(c=color, m=m, mn=mn, n=name, s=size, p=p)
        text = fix_articles(" ".join(text.replace(" ,", ",").split()))
        if text not in out or k > 2 * len(usable):
            out.append(text)
    return out
