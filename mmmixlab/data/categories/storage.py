"""Storage: bookshelf and cabinet, a confusable pair built on the same open carcass
(SynthShapes categories)."""

from __future__ import annotations

import numpy as np

from ..parts import (
    MATERIALS,
    _accent,
    _attrs,
    _count,
    _legs4,
    _material,
    _shade,
    _size_word,
    _u,
)
from ..primitives import box


def _carcass(parts, w, d, h, z0, rgb, t=0.02, y=0.0):
    """Box frame centred at y: two sides, top, bottom and a back panel; open at the front."""
    for sx in (-1, 1):
        parts.append(box("side", (sx * (w / 2 - t / 2), y, z0 + h / 2), (t, d, h), rgb))
    parts.append(box("top", (0, y, z0 + h - t / 2), (w, d, t), rgb))
    parts.append(box("bottom", (0, y, z0 + t / 2), (w - 2 * t, d, t), rgb))
    parts.append(box("back", (0, y + d / 2 - t / 4, z0 + h / 2), (w - 2 * t, t / 2, h - 2 * t),
                     _shade(rgb, 0.85)))


def _books(rng, parts, x0, x1, z, y_back, depth, max_h):
    x = x0 + rng.uniform(0, 0.03)
    colors = MATERIALS["plastic"][1] + MATERIALS["fabric"][1]
    while x < x1 - 0.03:
        bw = rng.uniform(0.02, 0.05)
        if x + bw > x1:
            break
        bh = max_h * rng.uniform(0.65, 0.92)
        bd = depth * rng.uniform(0.7, 0.9)
        c = colors[int(rng.integers(len(colors)))][1]
        parts.append(box("book", (x + bw / 2, y_back - bd / 2, z + bh / 2), (bw, bd, bh), c))
        x += bw + (rng.uniform(0.05, 0.2) if rng.random() < 0.1 else 0.002)


def bookshelf(rng):
    parts, phrases = [], []
    mat, cname, rgb = _material(rng, ["wood", "metal", "plastic"], [0.75, 0.1, 0.15])
    h, th = _u(rng, 0.9, 2.0)
    w, tw = _u(rng, 0.6, 1.2)
    d = rng.uniform(0.25, 0.4)
    t = rng.uniform(0.018, 0.03)
    plinth = rng.uniform(0.0, 0.08)
    _carcass(parts, w, d, h - plinth, plinth, rgb, t)
    if plinth > 0.02:
        parts.append(box("plinth", (0, -0.01, plinth / 2), (w - 0.02, d - 0.03, plinth),
                         _shade(rgb, 0.8)))
    ns = int(np.clip(round((h - plinth) / rng.uniform(0.28, 0.4)), 2, 7))
    doors = rng.random() < 0.25
    sh = (h - plinth) / ns
    books = rng.random() < 0.7
    for k in range(1, ns):
        parts.append(box("shelf", (0, 0, plinth + k * sh), (w - 2 * t, d - t, t), rgb))
    if doors:
        for sx in (-1, 1):
            parts.append(box("door", (sx * w / 4, -d / 2 - 0.008, plinth + sh / 2),
                             (w / 2 - 0.01, 0.016, sh - 0.01), _accent(rgb)))
            parts.append(box("knob", (sx * 0.04, -d / 2 - 0.025, plinth + sh * 0.6),
                             (0.015, 0.02, 0.03), (0.7, 0.7, 0.72)))
        phrases.append("cabinet doors at the bottom")
    if books:
        lvl = int(doors)
        for k in range(lvl, ns):
            if rng.random() < 0.85:
                _books(rng, parts, -w / 2 + t, w / 2 - t, plinth + k * sh + t / 2, d / 2 - t,
                       d - t, sh - t)
        phrases.append("books")
    phrases.insert(0, f"{_count(ns)} shelves")
    size = _size_word(height=th, width=tw, scale=th)
    return parts, _attrs(mat, cname, [], phrases, size)


def cabinet(rng):
    parts, phrases = [], []
    mat, cname, rgb = _material(rng, ["wood", "metal", "plastic"], [0.65, 0.2, 0.15])
    handle = MATERIALS["metal"][1][int(rng.integers(2))][1]
    h, th = _u(rng, 0.6, 1.9)
    w, tw = _u(rng, 0.5, 1.3)
    d = rng.uniform(0.35, 0.6)
    feet = rng.uniform(0.0, 0.12) if rng.random() < 0.5 else 0.0
    body_h = h - feet
    t = 0.02
    style = rng.random()
    open_h = 0.0
    if style < 0.25 and body_h > 1.1:  # hutch: open shelves on top of a closed base
        open_h = body_h * rng.uniform(0.35, 0.5)
        _carcass(parts, w, d * 0.7, open_h, feet + body_h - open_h, rgb, t, y=0.15 * d)
        for k in range(1, int(rng.integers(2, 4))):
            parts.append(box("shelf", (0, 0.15 * d, feet + body_h - open_h + k * open_h / 3),
                             (w - 2 * t, d * 0.65, t), rgb))
        phrases.append("open shelves on top")
    closed_h = body_h - open_h
    parts.append(box("body", (0, 0, feet + closed_h / 2), (w, d, closed_h), rgb))
    front = -d / 2 - 0.008
    u = rng.random()
    if u < 0.45:
        nd = 1 if w < 0.7 else 2
        for k in range(nd):
            x = 0.0 if nd == 1 else (k - 0.5) * w / 2
            dw = w / nd - 0.015
            parts.append(box("door", (x, front, feet + closed_h / 2), (dw, 0.016, closed_h - 0.02),
                             _accent(rgb)))
            hx = x + dw * 0.4 if nd == 1 else (-0.04 if k == 0 else 0.04)
            parts.append(box("handle", (hx, front - 0.02, feet + closed_h * 0.55),
                             (0.015, 0.02, min(0.15, closed_h * 0.2)), handle))
        phrases.append(f"{_count(nd)} door" + ("s" if nd > 1 else ""))
    elif u < 0.75:
        nd = int(np.clip(round(closed_h / rng.uniform(0.18, 0.3)), 2, 8))
        dh = closed_h / nd
        for k in range(nd):
            z = feet + dh * (k + 0.5)
            parts.append(box("drawer front", (0, front, z), (w - 0.02, 0.016, dh - 0.015),
                             _accent(rgb)))
            parts.append(box("handle", (0, front - 0.02, z + dh * 0.2), (w * 0.25, 0.02, 0.015),
                             handle))
        phrases.append(f"{_count(nd)} drawers")
    else:
        nd = int(rng.integers(1, 3))
        dh = 0.2
        for k in range(nd):
            z = feet + closed_h - dh * (k + 0.5)
            parts.append(box("drawer front", (0, front, z), (w - 0.02, 0.016, dh - 0.015),
                             _accent(rgb)))
            parts.append(box("handle", (0, front - 0.02, z), (w * 0.25, 0.02, 0.015), handle))
        lh = closed_h - nd * dh
        for sx in (-1, 1):
            parts.append(box("door", (sx * w / 4, front, feet + lh / 2), (w / 2 - 0.015, 0.016,
                                                                          lh - 0.02),
                             _accent(rgb)))
            parts.append(box("handle", (sx * 0.04, front - 0.02, feet + lh * 0.8),
                             (0.015, 0.02, 0.08), handle))
        phrases += ["drawers", "two doors"]
    if feet > 0.02:
        _legs4(parts, w, d, feet, 0.04, 0.02, _shade(rgb, 0.7), True)
        phrases.append("short feet")
    size = _size_word(height=th, width=tw, scale=th)
    return parts, _attrs(mat, cname, [], phrases, size)
