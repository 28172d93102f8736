"""Plants and flower pots, a confusable pair: both stand in the same pot; a plant's foliage
is taller, a flower pot holds soil, a small plant or flowers (SynthShapes categories)."""

from __future__ import annotations

import math

import numpy as np

from ..parts import (
    _FLOWERS,
    _GREENS,
    MATERIALS,
    _article,
    _attrs,
    _jitter,
    _material,
    _revolve,
    _shade,
    _size_word,
    _u,
)
from ..primitives import _rot_axis, _rot_to, disk, ellipsoid, frustum, rod

_SOIL = (0.30, 0.20, 0.12)


def _pot(rng, parts, r, h, rgb, soil=True):
    """Flower pot: tapered open vessel with a rim band and soil near the top."""
    taper = rng.uniform(0.62, 0.85)
    _revolve(parts, "pot", [0.0, h], [r * taper, r], rgb)
    parts.append(disk("pot bottom", (0, 0, 0), r * taper, rgb, rot=np.diag([1.0, -1, -1])))
    rim_h = h * rng.uniform(0.1, 0.2)
    parts.append(frustum("pot rim", (0, 0, h - rim_h), r * 1.07, r * 1.07, rim_h, rgb,
                         bottom=True, top=False))
    parts.append(disk("rim top", (0, 0, h), r * 1.07, rgb, r_in=r * 0.93))
    if soil:
        parts.append(disk("soil", (0, 0, h * 0.9), r * 0.95, _SOIL))
    else:
        _revolve(parts, "inner wall", [h * 0.1, h], [r * taper * 0.92, r * 0.93],
                 _shade(rgb, 0.7))
        parts.append(disk("inner bottom", (0, 0, h * 0.1), r * taper * 0.92, _shade(rgb, 0.6)))


def _leaves(rng, parts, n, center, spread, size, green=None, up=1.0):
    for _ in range(n):
        off = rng.normal(size=3) * np.asarray(spread)
        pos = np.asarray(center) + off
        g = _GREENS[int(rng.integers(len(_GREENS)))] if green is None else green
        rot = _rot_to(rng.normal(size=3) + (0, 0, up))
        L = size * rng.uniform(0.7, 1.3)
        parts.append(ellipsoid("leaf", pos, (L, L * 0.45, L * 0.06), _jitter(rng, g, 0.05),
                               rot=rot))


def plant(rng):
    parts, phrases = [], []
    mat, cname, prgb = _material(rng, ["terracotta", "ceramic", "plastic"], [0.5, 0.3, 0.2])
    r, _ = _u(rng, 0.09, 0.16)
    if rng.random() < 0.25:  # a big pot with a modest plant: looks like a flower pot
        ph = r * rng.uniform(1.4, 2.2)
        ch, th = _u(rng, 0.8, 1.4)
    else:
        ph = r * rng.uniform(1.1, 1.8)
        ch, th = _u(rng, 0.9, 2.6)  # foliage height relative to the pot
    _pot(rng, parts, r, ph, prgb)
    cw, tw = _u(rng, 1.0, 2.2)  # foliage radius relative to the pot radius
    top = ph + ph * ch
    style = rng.random()
    if style < 0.45:  # bushy canopy on stems
        ns = int(rng.integers(1, 4))
        for k in range(ns):
            parts.append(rod("stem", (rng.normal(0, r * 0.2), rng.normal(0, r * 0.2), ph * 0.9),
                             (rng.normal(0, r * 0.3), rng.normal(0, r * 0.3), top * 0.8),
                             0.008, (0.35, 0.25, 0.12)))
        nl = int(rng.integers(25, 50))
        _leaves(rng, parts, nl, (0, 0, 0.5 * (ph + top) + 0.15 * (top - ph)),
                (r * cw * 0.5, r * cw * 0.5, (top - ph) * 0.22), r * 0.45)
        phrases.append("a bushy crown of leaves")
    else:  # long leaves / fronds from the soil
        nl = int(rng.integers(8, 18))
        for _ in range(nl):
            a = rng.uniform(0, 2 * math.pi)
            lean = rng.uniform(0.15, 0.8)
            L = (top - ph) * rng.uniform(0.6, 1.0)
            dvec = np.array([lean * math.cos(a), lean * math.sin(a), 1.0])
            dvec /= np.linalg.norm(dvec)
            c = np.array([0, 0, ph * 0.9]) + dvec * L / 2
            g = _GREENS[int(rng.integers(len(_GREENS)))]
            parts.append(ellipsoid("leaf", c, (r * 0.18 * cw, 0.006, L / 2), _jitter(rng, g, 0.05),
                                   rot=_rot_to(dvec) @ _rot_axis("z", rng.uniform(0, math.pi))))
        phrases.append("long green leaves")
    phrases.append(f"{_article(cname)} {cname} {MATERIALS[mat][0]} pot")
    size = _size_word(height=th, width=tw, scale=0.5 * (th + tw))
    # the material belongs to the pot, not to the plant: captions say so through the parts
    return parts, _attrs(mat, "green", [cname], phrases, size, material_on_part=True)


def flower_pot(rng):
    parts, phrases = [], []
    mat, cname, prgb = _material(rng, ["terracotta", "ceramic", "plastic"], [0.6, 0.25, 0.15])
    r, tr = _u(rng, 0.08, 0.16)
    ratio, th = _u(rng, 0.8, 1.5)
    ph = r * ratio * 1.6
    soil = rng.random() < 0.8
    _pot(rng, parts, r, ph, prgb, soil=soil)
    colors = []
    if soil:
        phrases.append("soil")
        u = rng.random()
        if u < 0.5:  # a small plant: lower foliage than most plants, but it can overlap
            fh = rng.uniform(1.25, 2.1)
            _leaves(rng, parts, int(rng.integers(10, 26)), (0, 0, ph * fh),
                    (r * 0.45, r * 0.45, ph * (fh - 1) * 0.5), r * 0.45)
            phrases.append("a small plant")
            colors.append("green")
        elif u < 0.8:  # flowers on short stems
            fc, frgb = _FLOWERS[int(rng.integers(len(_FLOWERS)))]
            for k in range(int(rng.integers(2, 6))):
                tip = (rng.normal(0, r * 0.35), rng.normal(0, r * 0.35), ph * rng.uniform(1.3, 1.8))
                parts.append(rod("stem", (tip[0] * 0.3, tip[1] * 0.3, ph * 0.9), tip, 0.004,
                                 _GREENS[0]))
                parts.append(ellipsoid("flower", tip, (r * 0.2, r * 0.2, r * 0.12), frgb))
            _leaves(rng, parts, int(rng.integers(2, 6)), (0, 0, ph * 1.1),
                    (r * 0.3, r * 0.3, ph * 0.05), r * 0.3)
            phrases.append(f"{fc} flowers")
            colors.append(fc)
    else:
        phrases.append("an empty opening")
    if rng.random() < 0.35:
        parts.append(frustum("saucer", (0, 0, -0.012), r * 0.95, r * 1.15, 0.012, prgb,
                             top=False))
        phrases.append("a saucer")
    size = _size_word(height=th, width=tr, scale=tr)
    return parts, _attrs(mat, cname, colors, phrases, size)
