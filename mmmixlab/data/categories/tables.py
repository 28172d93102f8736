"""Tables and desks, a confusable pair: both are a rectangular top on legs or supports; some
tables get a single shallow drawer, some desks are table-like (four legs and a drawer)."""

from __future__ import annotations

import math

from ..parts import (
    MATERIALS,
    _accent,
    _attrs,
    _count,
    _legs4,
    _legs_material,
    _material,
    _shade,
    _size_word,
    _u,
)
from ..primitives import box, frustum, rod


def _table_top_and_legs(rng, parts, phrases, w, d, h, top_rgb, leg_rgb, round_ok=True):
    tt = rng.uniform(0.025, 0.06)
    round_top = round_ok and rng.random() < 0.3
    if round_top:
        r = 0.5 * max(w, d) * 0.85
        parts.append(frustum("top", (0, 0, h - tt), r, r, tt, top_rgb))
        phrases.append("a round top")
        if rng.random() < 0.6:
            parts.append(rod("pedestal", (0, 0, 0.03), (0, 0, h - tt), rng.uniform(0.04, 0.07),
                             leg_rgb))
            parts.append(frustum("foot", (0, 0, 0), r * 0.5, r * 0.45, 0.03, leg_rgb))
            phrases.append("a central pedestal")
        else:
            for k in range(int(rng.integers(3, 5))):
                a = 2 * math.pi * k / 4 + 0.4
                parts.append(rod("leg", (0.75 * r * math.cos(a), 0.75 * r * math.sin(a), 0),
                                 (0.65 * r * math.cos(a), 0.65 * r * math.sin(a), h - tt), 0.02,
                                 leg_rgb))
            phrases.append("legs")
        return tt
    parts.append(box("top", (0, 0, h - tt / 2), (w, d, tt), top_rgb))
    phrases.append("a rectangular top")
    return tt


def table(rng):
    parts, phrases = [], []
    mat, cname, rgb = _material(rng, ["wood", "metal", "plastic"], [0.65, 0.15, 0.2])
    lmat, lc, lrgb = _legs_material(rng, mat, cname, rgb, 0.6)
    coffee = rng.random() < 0.2
    h, th = _u(rng, 0.35, 0.5) if coffee else _u(rng, 0.70, 0.78)
    w, tw = _u(rng, 0.8, 1.8)
    d = w * rng.uniform(0.5, 0.9)
    tt = _table_top_and_legs(rng, parts, phrases, w, d, h, rgb, lrgb)
    if parts[0].kind == "box":
        _legs4(parts, w, d, h - tt, 0.05, rng.uniform(0.018, 0.035), lrgb, lmat == "wood")
        phrases.append("four legs")
        if rng.random() < 0.5:
            ah = rng.uniform(0.06, 0.1)
            for sy in (-1, 1):
                parts.append(box("apron", (0, sy * (d / 2 - 0.05), h - tt - ah / 2),
                                 (w - 0.1, 0.02, ah), lrgb))
            for sx in (-1, 1):
                parts.append(box("apron", (sx * (w / 2 - 0.05), 0, h - tt - ah / 2),
                                 (0.02, d - 0.1, ah), lrgb))
        if rng.random() < 0.25:
            parts.append(box("lower shelf", (0, 0, h * 0.25), (w - 0.1, d - 0.1, 0.02), rgb))
            phrases.append("a lower shelf")
        if rng.random() < 0.12:  # a single shallow drawer: the table/desk overlap
            parts.append(box("drawer", (0, -d / 2 + 0.06, h - tt - 0.05), (w * 0.35, 0.02, 0.07),
                             _shade(rgb, 0.9)))
            phrases.append("a drawer")
    size = _size_word(height=th if not coffee else 0.0, width=tw, scale=tw)
    return parts, _attrs(mat, cname, [lc], phrases, size)


def _drawer_stack(parts, x, w, d, h, n, rgb, handle_rgb, y_front):
    parts.append(box("drawer unit", (x, 0, h / 2), (w, d, h), rgb))
    dh = h / n
    for k in range(n):
        z = dh * (k + 0.5)
        parts.append(box("drawer front", (x, y_front - 0.01, z), (w * 0.92, 0.02, dh * 0.86),
                         _accent(rgb)))
        parts.append(box("handle", (x, y_front - 0.03, z + dh * 0.2), (w * 0.3, 0.02, 0.015),
                         handle_rgb))


def desk(rng):
    parts, phrases = [], []
    mat, cname, rgb = _material(rng, ["wood", "metal", "plastic"], [0.7, 0.1, 0.2])
    lmat, lc, lrgb = _legs_material(rng, mat, cname, rgb, 0.6)
    handle = MATERIALS["metal"][1][1][1]
    h, th = _u(rng, 0.71, 0.77)
    w, tw = _u(rng, 1.0, 1.7)
    d = rng.uniform(0.55, 0.8)
    tt = rng.uniform(0.025, 0.05)
    parts.append(box("top", (0, 0, h - tt / 2), (w, d, tt), rgb))
    phrases.append("a rectangular top")
    style = rng.random()
    ph = h - tt
    if style < 0.45:  # drawer pedestal on one side, legs or a panel on the other
        pw = rng.uniform(0.35, 0.48)
        side = 1 if rng.random() < 0.5 else -1
        nd = int(rng.integers(2, 5))
        _drawer_stack(parts, side * (w / 2 - pw / 2), pw, d * 0.95, ph, nd, rgb, handle,
                      -d * 0.95 / 2)
        phrases.append(f"{_count(nd)} drawers")
        if rng.random() < 0.5:
            parts.append(box("side panel", (-side * (w / 2 - 0.02), 0, ph / 2), (0.04, d * 0.95,
                                                                               ph), lrgb))
            phrases.append("a side panel")
        else:
            for sy in (-1, 1):
                parts.append(box("leg", (-side * (w / 2 - 0.04), sy * (d / 2 - 0.04), ph / 2),
                                 (0.04, 0.04, ph), lrgb))
            phrases.append("two legs")
    elif style < 0.75:  # two side panels and a modesty panel
        for sx in (-1, 1):
            parts.append(box("side panel", (sx * (w / 2 - 0.02), 0, ph / 2), (0.04, d * 0.95, ph),
                             lrgb))
        parts.append(box("back panel", (0, d / 2 - 0.05, ph * 0.6), (w - 0.08, 0.02, ph * 0.7),
                         lrgb))
        phrases.append("side panels")
        if rng.random() < 0.5:
            parts.append(box("drawer", (0, -d / 2 + 0.05, ph - 0.05), (w * 0.4, 0.03, 0.08),
                             _accent(rgb)))
            phrases.append("a drawer")
    else:  # table-like: four legs and a drawer under the top
        _legs4(parts, w, d, ph, 0.04, rng.uniform(0.018, 0.03), lrgb, lmat == "wood")
        parts.append(box("drawer", (0, -d / 2 + 0.06, ph - 0.05), (w * 0.45, 0.1, 0.08),
                         _accent(rgb)))
        parts.append(box("handle", (0, -d / 2 + 0.005, ph - 0.05), (0.1, 0.015, 0.015), handle))
        phrases += ["four legs", "a drawer"]
    if rng.random() < 0.2:
        hh = rng.uniform(0.25, 0.45)
        parts.append(box("hutch", (0, d / 2 - 0.12, h + hh / 2), (w * 0.9, 0.22, hh), rgb))
        parts.append(box("hutch shelf", (0, d / 2 - 0.12, h + hh * 0.5), (w * 0.88, 0.24, 0.02),
                         _shade(rgb, 0.8)))
        phrases.append("a shelf on top")
    size = _size_word(height=th, width=tw, scale=tw)
    return parts, _attrs(mat, cname, [lc], phrases, size)
