"""The per-category builders of the SynthShapes world (the primitives they assemble are in
:mod:`mmmixlab.data.primitives`).

Conventions: z is up, objects face -y, units are roughly metres before normalization.

Each category builder draws proportions, optional parts, materials and colours from the
instance's random generator and returns ``(parts, attributes)``; the attributes feed captions:
``color`` (main colour word), ``colors`` (all colour words used), ``material``, ``parts``
(caption phrases such as "four legs", "a handle"), ``size`` (small/large/tall/short/wide).
"""

from __future__ import annotations

import math

import numpy as np

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

# material -> (caption adjective, [(colour word, rgb), ...])
MATERIALS: dict[str, tuple[str, list[tuple[str, tuple[float, float, float]]]]] = {
    "wood": ("wooden", [("brown", (0.55, 0.36, 0.20)), ("dark brown", (0.33, 0.20, 0.11)),
                        ("light brown", (0.76, 0.60, 0.42)), ("tan", (0.84, 0.71, 0.52))]),
    "metal": ("metal", [("grey", (0.55, 0.56, 0.58)), ("silver", (0.77, 0.78, 0.80)),
                        ("black", (0.12, 0.12, 0.13)), ("dark grey", (0.30, 0.30, 0.32))]),
    "plastic": ("plastic", [("red", (0.85, 0.15, 0.12)), ("blue", (0.15, 0.35, 0.85)),
                            ("green", (0.20, 0.68, 0.25)), ("yellow", (0.95, 0.83, 0.15)),
                            ("orange", (0.97, 0.55, 0.10)), ("white", (0.93, 0.93, 0.93)),
                            ("black", (0.10, 0.10, 0.11)), ("purple", (0.55, 0.25, 0.70)),
                            ("pink", (0.95, 0.52, 0.70))]),
    "ceramic": ("ceramic", [("white", (0.94, 0.94, 0.92)), ("cream", (0.95, 0.90, 0.76)),
                            ("blue", (0.20, 0.35, 0.72)), ("teal", (0.12, 0.55, 0.55)),
                            ("red", (0.75, 0.18, 0.14)), ("black", (0.12, 0.12, 0.12)),
                            ("yellow", (0.93, 0.80, 0.25))]),
    "glass": ("glass", [("clear", (0.82, 0.90, 0.95)), ("green", (0.32, 0.62, 0.38)),
                        ("blue", (0.42, 0.62, 0.90)), ("amber", (0.72, 0.45, 0.12))]),
    "fabric": ("fabric", [("grey", (0.52, 0.52, 0.54)), ("blue", (0.22, 0.36, 0.66)),
                          ("red", (0.70, 0.16, 0.16)), ("green", (0.28, 0.50, 0.30)),
                          ("beige", (0.86, 0.80, 0.66)), ("brown", (0.50, 0.34, 0.22)),
                          ("navy", (0.12, 0.16, 0.40))]),
    "leather": ("leather", [("black", (0.10, 0.09, 0.09)), ("brown", (0.45, 0.26, 0.14)),
                            ("white", (0.92, 0.91, 0.88))]),
    "terracotta": ("terracotta", [("orange", (0.80, 0.45, 0.25)), ("brown", (0.58, 0.32, 0.20)),
                                  ("red", (0.70, 0.27, 0.19))]),
}

_GREENS = [(0.16, 0.50, 0.18), (0.25, 0.62, 0.22), (0.10, 0.38, 0.16), (0.40, 0.60, 0.20)]
_FLOWERS = [("red", (0.85, 0.12, 0.15)), ("yellow", (0.97, 0.85, 0.15)),
            ("pink", (0.95, 0.50, 0.72)), ("white", (0.96, 0.96, 0.96)),
            ("purple", (0.55, 0.25, 0.72))]
_SOIL = (0.30, 0.20, 0.12)
_SCREEN = (0.05, 0.06, 0.09)
_NUM = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def category_index(category: str) -> int:
    try:
        return CATEGORIES.index(category)
    except ValueError:
        raise ValueError(f"unknown category {category!r}; choose one of "
                         f"{', '.join(CATEGORIES)}") from None


# --------------------------------------------------------------------------------------------
# primitives (mmmixlab.data.primitives), re-exported for the builders below and older imports
from .primitives import (  # noqa: E402
    Part,
    _rot_axis,
    _rot_to,
    box,
    disk,
    ellipsoid,
    frustum,
    normalize_cloud,
    rod,
    sample_parts,
    torus,
)

# --------------------------------------------------------------------------------------------
# helpers for builders

def _u(rng, lo, hi):
    """Uniform draw in [lo, hi] and its position in the range (for size words)."""
    t = float(rng.random())
    return lo + t * (hi - lo), t


def _material(rng, options, weights=None):
    mat = options[int(rng.choice(len(options), p=weights))]
    _, palette = MATERIALS[mat]
    cname, rgb = palette[int(rng.integers(len(palette)))]
    return mat, cname, _jitter(rng, rgb)


def _jitter(rng, rgb, amount=0.04):
    return tuple(np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0, 1).tolist())


def _shade(rgb, f):
    return tuple(np.clip(np.asarray(rgb) * f, 0, 1).tolist())


def _accent(rgb):
    """A clearly different shade of rgb (doors, drawer fronts): darker if light, else lighter."""
    a = np.asarray(rgb, dtype=np.float64)
    out = a * 0.72 if a.mean() > 0.45 else a * 1.35 + 0.12
    return tuple(np.clip(out, 0, 1).tolist())


def _size_word(height=0.5, width=0.5, scale=0.5):
    """Pick the most extreme of the instance's proportions (each a position in [0, 1])."""
    cands = {"tall": height, "short": 1 - height, "wide": width, "large": scale,
             "small": 1 - scale}
    return max(cands, key=lambda k: (cands[k], k))


def _article(word):
    return "an" if word[:1].lower() in "aeiou" else "a"


def _count(k):
    return _NUM.get(int(k), str(int(k)))


def _attrs(material, color, colors, parts, size, **extra):
    seen = []
    for c in [color, *colors]:
        if c not in seen:
            seen.append(c)
    d = {"material": material, "color": color, "colors": seen, "parts": list(parts),
         "size": size}
    d.update(extra)
    return d


def _legs4(parts, w, d, h, inset, r, color, square, splay=0.0):
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * (w / 2 - inset), sy * (d / 2 - inset)
            if square:
                parts.append(box("leg", (x, y, h / 2), (2 * r, 2 * r, h), color))
            else:
                parts.append(rod("leg", (x + sx * splay, y + sy * splay, 0), (x, y, h), r, color))


def _revolve(parts, name, zs, rs, color, base=(0.0, 0.0, 0.0)):
    """Surface of revolution about z through the profile points (zs[i], rs[i])."""
    base = np.asarray(base, dtype=np.float64)
    for i in range(len(zs) - 1):
        h = zs[i + 1] - zs[i]
        if h <= 1e-6:
            continue
        parts.append(frustum(name, base + (0, 0, zs[i]), rs[i], rs[i + 1], h, color,
                             bottom=False, top=False))


def _smooth_profile(knots_t, knots_r, n=14):
    t = np.linspace(0.0, 1.0, n)
    # monotone-free smooth interpolation: cosine blend between knots
    r = np.empty(n)
    for i, ti in enumerate(t):
        j = int(np.searchsorted(knots_t, ti, side="right") - 1)
        j = min(max(j, 0), len(knots_t) - 2)
        a = (ti - knots_t[j]) / (knots_t[j + 1] - knots_t[j])
        a = 0.5 - 0.5 * math.cos(math.pi * a)
        r[i] = knots_r[j] * (1 - a) + knots_r[j + 1] * a
    return t, r


# --------------------------------------------------------------------------------------------
# seating

def _chair(rng):
    parts, phrases = [], []
    seat_mat, seat_c, seat_rgb = _material(rng, ["wood", "fabric", "plastic", "leather"])
    leg_mat, leg_c, leg_rgb = (seat_mat, seat_c, _shade(seat_rgb, 0.85)) if rng.random() < 0.5 \
        else _material(rng, ["wood", "metal"])
    w, tw = _u(rng, 0.40, 0.56)
    d, _ = _u(rng, 0.40, 0.55)
    sh, th = _u(rng, 0.40, 0.50)
    st = rng.uniform(0.03, 0.08)
    parts.append(box("seat", (0, 0, sh + st / 2), (w, d, st), seat_rgb))
    base = rng.random()
    if base < 0.22:  # office chair: column + five-star base
        parts.append(rod("column", (0, 0, 0.06), (0, 0, sh), 0.025, leg_rgb))
        for k in range(5):
            a = 2 * math.pi * k / 5 + 0.3
            tip = (0.27 * math.cos(a), 0.27 * math.sin(a), 0.05)
            parts.append(rod("spoke", (0, 0, 0.07), tip, 0.018, leg_rgb))
            parts.append(ellipsoid("caster", (tip[0], tip[1], 0.025), (0.025,) * 3, leg_rgb))
        phrases.append("a swivel base")
    else:
        square = leg_mat == "wood" and rng.random() < 0.6
        _legs4(parts, w, d, sh, 0.035, rng.uniform(0.012, 0.025), leg_rgb, square,
               splay=rng.uniform(0.0, 0.04))
        phrases.append("four legs")
    bh, thb = _u(rng, 0.35, 0.55)
    tilt = _rot_axis("x", -rng.uniform(0.0, 0.2))
    bt = rng.uniform(0.025, 0.07)
    back_y = d / 2 - bt / 2
    if rng.random() < 0.65:
        parts.append(box("backrest", (0, back_y, sh + st + bh / 2), (w, bt, bh), seat_rgb,
                         rot=tilt))
        phrases.append("a solid backrest")
    else:
        ns = int(rng.integers(3, 6))
        for k in range(ns):
            x = (k - (ns - 1) / 2) * (w * 0.8 / max(ns - 1, 1))
            parts.append(box("slat", (x, back_y, sh + st + bh * 0.4), (w * 0.08, bt, bh * 0.8),
                             leg_rgb, rot=tilt))
        parts.append(box("top rail", (0, back_y, sh + st + bh * 0.9), (w, bt, bh * 0.2),
                         leg_rgb, rot=tilt))
        phrases.append(f"a backrest with {_count(ns)} slats")
    if rng.random() < 0.35:
        ah = rng.uniform(0.18, 0.26)
        for sx in (-1, 1):
            parts.append(box("armrest", (sx * (w / 2 + 0.02), 0, sh + st + ah), (0.05, d * 0.9,
                                                                                 0.03), seat_rgb))
            parts.append(box("arm support", (sx * (w / 2 + 0.02), -d * 0.35, sh + st + ah / 2),
                             (0.03, 0.03, ah), leg_rgb))
        phrases.append("armrests")
    size = _size_word(height=thb, width=tw, scale=th)
    return parts, _attrs(seat_mat, seat_c, [leg_c], phrases, size)


def _stool(rng):
    parts, phrases = [], []
    seat_mat, seat_c, seat_rgb = _material(rng, ["wood", "plastic", "leather", "metal"])
    _, leg_c, leg_rgb = (seat_mat, seat_c, _shade(seat_rgb, 0.85)) if rng.random() < 0.5 \
        else _material(rng, ["wood", "metal"])
    h, th = _u(rng, 0.42, 0.80)
    r, tr = _u(rng, 0.14, 0.22)
    st = rng.uniform(0.03, 0.07)
    if rng.random() < 0.7:
        parts.append(frustum("seat", (0, 0, h), r, r, st, seat_rgb))
        phrases.append("a round seat")
    else:
        parts.append(box("seat", (0, 0, h + st / 2), (2 * r * 0.9, 2 * r * 0.9, st), seat_rgb))
        phrases.append("a square seat")
    nl = 3 if rng.random() < 0.4 else 4
    splay = rng.uniform(0.0, 0.08)
    lr = rng.uniform(0.012, 0.022)
    for k in range(nl):
        a = 2 * math.pi * k / nl + math.pi / 4
        top = (0.75 * r * math.cos(a), 0.75 * r * math.sin(a), h)
        foot = ((0.75 * r + splay) * math.cos(a), (0.75 * r + splay) * math.sin(a), 0)
        parts.append(rod("leg", foot, top, lr, leg_rgb))
    phrases.append(f"{_count(nl)} legs")
    if rng.random() < 0.4:
        zr = h * rng.uniform(0.3, 0.45)
        rr = 0.75 * r + splay * (1 - zr / h)
        parts.append(torus("footrest", (0, 0, zr), rr, 0.012, leg_rgb))
        phrases.append("a footrest ring")
    if rng.random() < 0.1:
        parts.append(box("low backrest", (0, r * 0.8, h + st + 0.1), (1.4 * r, 0.03, 0.16),
                         seat_rgb))
        phrases.append("a low backrest")
    size = _size_word(height=th, width=tr, scale=0.5 * (th + tr))
    return parts, _attrs(seat_mat, seat_c, [leg_c], phrases, size)


def _sofa(rng):
    parts, phrases = [], []
    mat, cname, rgb = _material(rng, ["fabric", "leather"], [0.75, 0.25])
    w, tw = _u(rng, 1.4, 2.3)
    d, _ = _u(rng, 0.80, 0.98)
    sh, th = _u(rng, 0.38, 0.46)
    legs = rng.random() < 0.6
    lh = rng.uniform(0.06, 0.14) if legs else 0.0
    base_h = sh - lh - 0.12
    parts.append(box("base", (0, 0, lh + base_h / 2), (w, d, base_h), rgb))
    bt = rng.uniform(0.15, 0.26)
    bh, thb = _u(rng, 0.32, 0.50)
    parts.append(box("back", (0, d / 2 - bt / 2, lh + (base_h + 0.12 + bh) / 2),
                     (w, bt, base_h + 0.12 + bh), rgb))
    arm_w = 0.0
    if rng.random() < 0.85:
        arm_w = rng.uniform(0.12, 0.24)
        ah = rng.uniform(0.12, 0.26)
        for sx in (-1, 1):
            arm_h = base_h + 0.12 + ah
            parts.append(box("armrest", (sx * (w / 2 - arm_w / 2), 0, lh + arm_h / 2),
                             (arm_w, d, arm_h), _shade(rgb, 0.95)))
        phrases.append("two armrests")
    nc = int(rng.integers(2, 4))
    cw = (w - 2 * arm_w) / nc
    cc = _accent(rgb)
    for k in range(nc):
        x = -w / 2 + arm_w + cw * (k + 0.5)
        parts.append(box("seat cushion", (x, -bt / 2, lh + base_h + 0.06),
                         (cw * 0.97, d - bt, 0.12), cc))
        parts.append(box("back cushion", (x, d / 2 - bt - 0.06, sh + bh * 0.45),
                         (cw * 0.95, 0.12, bh * 0.8), cc))
    phrases.append(f"{_count(nc)} seat cushions")
    if legs:
        _, _, leg_rgb = _material(rng, ["wood", "metal"])
        _legs4(parts, w, d, lh, 0.06, 0.02, leg_rgb, False)
        phrases.append("short legs")
    size = _size_word(height=thb, width=tw, scale=0.5 * (tw + th))
    return parts, _attrs(mat, cname, [], phrases, size)


def _bed(rng):
    parts, phrases = [], []
    fmat, fc, frgb = _material(rng, ["wood", "metal", "fabric"], [0.6, 0.15, 0.25])
    mc, mrgb = MATERIALS["fabric"][1][int(rng.integers(len(MATERIALS["fabric"][1])))]
    if rng.random() < 0.5:
        mc, mrgb = "white", (0.94, 0.94, 0.94)
    L, _ = _u(rng, 1.9, 2.15)
    W, tw = _u(rng, 0.9, 1.85)
    fh, th = _u(rng, 0.22, 0.40)
    mt = rng.uniform(0.15, 0.26)
    parts.append(box("frame", (0, 0, fh / 2), (W, L, fh), frgb))
    parts.append(box("mattress", (0, -0.02, fh + mt / 2), (W * 0.97, L * 0.96, mt), mrgb))
    hb, thb = _u(rng, 0.45, 1.0)
    parts.append(box("headboard", (0, L / 2 + 0.03, (fh + mt + hb) / 2), (W + 0.04, 0.06,
                                                                         fh + mt + hb), frgb))
    phrases.append("a headboard")
    if rng.random() < 0.45:
        fb = rng.uniform(0.1, 0.4)
        parts.append(box("footboard", (0, -L / 2 - 0.03, (fh + mt * 0.5 + fb) / 2),
                         (W + 0.04, 0.06, fh + mt * 0.5 + fb), frgb))
        phrases.append("a footboard")
    npw = 1 if W < 1.2 else 2
    for k in range(npw):
        x = 0.0 if npw == 1 else (k - 0.5) * W * 0.48
        parts.append(ellipsoid("pillow", (x, L / 2 - 0.25, fh + mt + 0.05),
                               (W / (2.4 * npw), 0.16, 0.06), (0.96, 0.96, 0.95)))
    phrases.append(f"{_count(npw)} pillow" + ("s" if npw > 1 else ""))
    colors = [mc]
    if rng.random() < 0.6:
        bc, brgb = MATERIALS["fabric"][1][int(rng.integers(len(MATERIALS["fabric"][1])))]
        cover = rng.uniform(0.5, 0.75)
        parts.append(box("blanket", (0, -L / 2 + L * cover / 2 - 0.02, fh + mt + 0.015),
                         (W * 1.0, L * cover, 0.03), brgb))
        phrases.append("a blanket")
        colors.append(bc)
    size = _size_word(height=thb, width=tw, scale=0.5 * (tw + th))
    return parts, _attrs(fmat, fc, colors, phrases, size)


def _bench(rng):
    parts, phrases = [], []
    mat, cname, rgb = _material(rng, ["wood", "metal", "plastic"], [0.6, 0.25, 0.15])
    _, lc, lrgb = _material(rng, ["metal", "wood"])
    w, tw = _u(rng, 1.0, 1.9)
    d, _ = _u(rng, 0.30, 0.46)
    h, th = _u(rng, 0.40, 0.48)
    st = rng.uniform(0.03, 0.06)
    if rng.random() < 0.5:
        ns = int(rng.integers(3, 6))
        sd = d / ns
        for k in range(ns):
            parts.append(box("seat slat", (0, -d / 2 + sd * (k + 0.5), h + st / 2),
                             (w, sd * 0.8, st), rgb))
        phrases.append(f"a seat of {_count(ns)} slats")
    else:
        parts.append(box("seat", (0, 0, h + st / 2), (w, d, st), rgb))
        phrases.append("a flat seat")
    if rng.random() < 0.55:
        for sx in (-1, 1):
            parts.append(box("side support", (sx * (w / 2 - 0.1), 0, h / 2), (0.05, d * 0.9, h),
                             lrgb))
        phrases.append("two side supports")
    else:
        _legs4(parts, w, d, h, 0.06, rng.uniform(0.015, 0.025), lrgb, rng.random() < 0.5)
        phrases.append("four legs")
    if rng.random() < 0.35:
        bh = rng.uniform(0.3, 0.45)
        for k in range(3):
            parts.append(box("back slat", (0, d / 2, h + st + 0.08 + k * bh / 3 + bh / 8),
                             (w, 0.03, bh / 4), rgb, rot=_rot_axis("x", -0.12)))
        phrases.append("a slatted backrest")
    size = _size_word(height=th, width=tw, scale=0.5 * (tw + th))
    return parts, _attrs(mat, cname, [lc], phrases, size)


# --------------------------------------------------------------------------------------------
# tables

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


def _table(rng):
    parts, phrases = [], []
    mat, cname, rgb = _material(rng, ["wood", "metal", "plastic"], [0.65, 0.15, 0.2])
    lmat, lc, lrgb = (mat, cname, _shade(rgb, 0.85)) if rng.random() < 0.6 \
        else _material(rng, ["wood", "metal"])
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


def _desk(rng):
    parts, phrases = [], []
    mat, cname, rgb = _material(rng, ["wood", "metal", "plastic"], [0.7, 0.1, 0.2])
    lmat, lc, lrgb = (mat, cname, _shade(rgb, 0.85)) if rng.random() < 0.6 \
        else _material(rng, ["wood", "metal"])
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


# --------------------------------------------------------------------------------------------
# containers

def _open_vessel(parts, zs, rs, rgb, wall, inner_frac=1.0, base=(0.0, 0.0, 0.0)):
    """Outer profile, bottom, rim and inner wall (the top ``inner_frac`` of it) of a vessel."""
    zs, rs = np.asarray(zs, dtype=np.float64), np.asarray(rs, dtype=np.float64)
    base = np.asarray(base, dtype=np.float64)
    _revolve(parts, "body", zs, rs, rgb, base)
    parts.append(disk("bottom", base + (0, 0, zs[0]), rs[0], rgb, rot=np.diag([1.0, -1.0, -1.0])))
    parts.append(disk("rim", base + (0, 0, zs[-1]), rs[-1], rgb, r_in=max(rs[-1] - wall, 0.0)))
    ri = np.maximum(rs - wall, 0.2 * rs)
    inner = _shade(rgb, 0.8)
    if inner_frac >= 1.0:
        _revolve(parts, "inner wall", zs, ri, inner, base)
        parts.append(disk("inner bottom", base + (0, 0, zs[0] + wall), ri[0], _shade(rgb, 0.7)))
    else:
        z0 = zs[-1] - inner_frac * (zs[-1] - zs[0])
        zi = np.concatenate([[z0], zs[zs > z0]])
        _revolve(parts, "inner wall", zi, np.interp(zi, zs, ri), inner, base)


def _handle(parts, x, z, R, r, rgb, side=1):
    """Half-ring handle in the xz plane sticking out towards +x (side=1) or -x.

    ``x`` is the wall radius at height z: the ring's ends then touch the wall.
    """
    x = x - 0.05 * R
    rot = _rot_axis("x", math.pi / 2)
    if side < 0:
        rot = _rot_axis("z", math.pi) @ rot
    parts.append(torus("handle", (side * x, 0, z), R, r, rgb, arc=(-1.5, 1.5), rot=rot))


def _cup(rng):
    parts, phrases = [], []
    mat, cname, rgb = _material(rng, ["ceramic", "plastic", "glass", "metal"],
                                [0.55, 0.2, 0.15, 0.1])
    r, tr = _u(rng, 0.035, 0.055)
    ratio, th = _u(rng, 0.85, 1.8)
    h = 2 * r * ratio
    taper = rng.uniform(0.75, 1.05)
    zs = np.array([0.0, h])
    rs = np.array([r * taper, r])
    if rng.random() < 0.3:  # curved (tulip) profile
        zs, rs = np.array([0, 0.3, 0.7, 1.0]) * h, np.array([taper * r, r * 1.04, r * 0.98, r])
        phrases.append("a curved body")
    _open_vessel(parts, zs, rs, rgb, wall=0.004)
    if rng.random() < 0.7:
        R = h * rng.uniform(0.25, 0.35)
        _handle(parts, r, h * 0.55, R, rng.uniform(0.005, 0.009), rgb)
        phrases.append("a handle")
    if rng.random() < 0.15:
        parts.append(disk("saucer", (0, 0, -0.004), r * 2.0, rgb))
        parts.append(disk("saucer", (0, 0, -0.006), r * 2.0, rgb, rot=np.diag([1.0, -1, -1])))
        phrases.append("a saucer")
    size = _size_word(height=th, width=tr, scale=tr)
    return parts, _attrs(mat, cname, [], phrases, size)


def _vase(rng):
    parts, phrases = [], []
    mat, cname, rgb = _material(rng, ["ceramic", "glass", "terracotta"], [0.6, 0.3, 0.1])
    rmax, tr = _u(rng, 0.06, 0.16)
    style = rng.random()
    # height / diameter: straight vases overlap the taller cups on purpose
    ratio, th = _u(rng, 1.0, 1.8) if style < 0.35 else _u(rng, 1.2, 2.4)
    h = 2 * rmax * ratio
    if style < 0.35:  # simple cylinder vase: a cup-like silhouette
        zs = np.array([0.0, h])
        rs = np.array([rmax * rng.uniform(0.8, 1.0), rmax])
        phrases.append("straight sides")
    else:
        tb = rng.uniform(0.25, 0.55)
        neck = rng.uniform(0.3, 0.7)
        lip = rng.uniform(neck, 1.0)
        kt = np.array([0.0, tb, 0.8, 0.92, 1.0])
        kr = rmax * np.array([rng.uniform(0.5, 0.8), 1.0, neck, neck * 1.05, lip])
        t, rr = _smooth_profile(kt, kr, 12)
        zs, rs = t * h, rr
        phrases.append("a narrow neck" if neck < 0.5 else "a rounded body")
    _open_vessel(parts, zs, rs, rgb, wall=0.006, inner_frac=0.2)
    if rng.random() < 0.15:
        for side in (-1, 1):
            R = h * 0.12
            _handle(parts, float(np.interp(0.78 * h, zs, rs)), h * 0.78, R, 0.008, rgb, side)
        phrases.append("two handles")
    if rng.random() < 0.25:
        fc, frgb = _FLOWERS[int(rng.integers(len(_FLOWERS)))]
        for k in range(int(rng.integers(2, 5))):
            a = rng.uniform(0, 2 * math.pi)
            tip = (0.4 * rs[-1] * math.cos(a) + rng.normal(0, 0.03),
                   0.4 * rs[-1] * math.sin(a) + rng.normal(0, 0.03), h * rng.uniform(1.2, 1.45))
            parts.append(rod("stem", (0, 0, h * 0.7), tip, 0.003, _GREENS[0]))
            parts.append(ellipsoid("flower", tip, (0.025, 0.025, 0.018), frgb))
        phrases.append(f"{fc} flowers")
    size = _size_word(height=th, width=tr, scale=tr)
    return parts, _attrs(mat, cname, [], phrases, size)


def _bottle(rng):
    parts, phrases = [], []
    mat, cname, rgb = _material(rng, ["glass", "plastic"], [0.6, 0.4])
    r, tr = _u(rng, 0.03, 0.05)
    ratio, th = _u(rng, 2.5, 4.2)
    h = 2 * r * ratio
    body = rng.uniform(0.55, 0.7)
    neck_r = r * rng.uniform(0.28, 0.42)
    kt = np.array([0.0, body, body + 0.12, 0.9, 1.0])
    kr = np.array([r, r, neck_r * 1.3, neck_r, neck_r])
    t, rr = _smooth_profile(kt, kr, 12)
    _revolve(parts, "body", t * h, rr, rgb)
    parts.append(disk("bottom", (0, 0, 0), r, rgb, rot=np.diag([1.0, -1, -1])))
    _, cc, crgb = _material(rng, ["plastic", "metal"])
    ch = h * rng.uniform(0.05, 0.09)
    parts.append(frustum("cap", (0, 0, h), neck_r * 1.15, neck_r * 1.15, ch, crgb))
    phrases.append("a cap")
    colors = [cc]
    if rng.random() < 0.5:
        lc, lrgb = MATERIALS["plastic"][1][int(rng.integers(len(MATERIALS["plastic"][1])))]
        parts.append(frustum("label", (0, 0, h * body * 0.3), r * 1.01, r * 1.01,
                             h * body * 0.45, lrgb, bottom=False, top=False))
        phrases.append("a label")
        colors.append(lc)
    size = _size_word(height=th, width=tr, scale=tr)
    return parts, _attrs(mat, cname, colors, phrases, size)


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


def _plant(rng):
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


def _flower_pot(rng):
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


# --------------------------------------------------------------------------------------------
# storage

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


def _bookshelf(rng):
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


def _cabinet(rng):
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


# --------------------------------------------------------------------------------------------
# others

def _lamp(rng):
    parts, phrases = [], []
    bmat, bc, brgb = _material(rng, ["metal", "ceramic", "wood"], [0.6, 0.25, 0.15])
    smat, sc, srgb = _material(rng, ["fabric", "plastic", "metal"], [0.6, 0.25, 0.15])
    style = rng.random()
    if style < 0.6:  # table or floor lamp with a shade
        floor = rng.random() < 0.35
        hh, th = _u(rng, 1.2, 1.7) if floor else _u(rng, 0.35, 0.6)
        br = rng.uniform(0.08, 0.16) * (1.4 if floor else 1.0)
        if rng.random() < 0.6:
            parts.append(frustum("base", (0, 0, 0), br, br * 0.85, 0.03, brgb))
            pole_r = 0.012
            phrases.append("a thin pole")
        else:
            bh = hh * rng.uniform(0.25, 0.4)
            t, rr = _smooth_profile(np.array([0, 0.5, 1.0]), np.array([br * 0.7, br, br * 0.3]), 8)
            _revolve(parts, "base", t * bh, rr, brgb)
            parts.append(disk("base bottom", (0, 0, 0), br * 0.7, brgb, rot=np.diag([1.0, -1, -1])))
            pole_r = 0.01
            phrases.append("a rounded base")
        sh = hh * rng.uniform(0.25, 0.4) / (1.8 if floor else 1.0)
        parts.append(rod("pole", (0, 0, 0.02), (0, 0, hh - sh * 0.5), pole_r, brgb))
        sr0 = rng.uniform(0.1, 0.22) * (1.2 if floor else 1.0)
        parts.append(frustum("shade", (0, 0, hh - sh), sr0, sr0 * rng.uniform(0.5, 0.85), sh,
                             srgb, bottom=False, top=False))
        parts.append(ellipsoid("bulb", (0, 0, hh - sh * 0.6), (0.03, 0.03, 0.04),
                               (1.0, 0.97, 0.8)))
        phrases.append("a lampshade")
        tw = 0.5
    else:  # desk lamp with an articulated arm
        th, tw = 0.5, 0.5
        br = rng.uniform(0.07, 0.11)
        parts.append(frustum("base", (0, 0, 0), br, br * 0.9, 0.025, brgb))
        l1, l2 = rng.uniform(0.25, 0.4), rng.uniform(0.22, 0.35)
        a1 = rng.uniform(0.0, 0.5)
        j = np.array([l1 * math.sin(a1), 0, 0.025 + l1 * math.cos(a1)])
        a2 = rng.uniform(0.9, 1.6)
        e = j + np.array([l2 * math.sin(a2), 0, l2 * math.cos(a2)])
        parts.append(rod("arm", (0, 0, 0.025), j, 0.01, brgb))
        parts.append(rod("arm", j, e, 0.01, brgb))
        parts.append(ellipsoid("joint", j, (0.018,) * 3, brgb))
        hl = rng.uniform(0.08, 0.14)
        head_dir = np.array([0.3, 0, -1.0])
        parts.append(frustum("head", e, 0.02, hl * 0.6, hl, srgb, bottom=True, top=False,
                             rot=_rot_to(head_dir)))
        phrases.append("an adjustable arm")
    size = _size_word(height=th, width=tw, scale=th)
    return parts, _attrs(smat, sc, [bc], phrases, size, base_material=bmat)


def _monitor(rng):
    parts, phrases = [], []
    mat, cname, rgb = _material(rng, ["plastic", "metal"], [0.7, 0.3])
    if mat == "plastic" and rng.random() < 0.7:
        cname, rgb = ("black", (0.10, 0.10, 0.11)) if rng.random() < 0.7 else \
            ("white", (0.93, 0.93, 0.93))
    w, tw = _u(rng, 0.45, 0.75)
    aspect, th = _u(rng, 0.5, 0.68)
    sh = w * aspect
    t = rng.uniform(0.015, 0.04)
    stand_h = rng.uniform(0.08, 0.16)
    zc = stand_h + sh / 2
    parts.append(box("frame", (0, 0, zc), (w, t, sh), rgb))
    b = rng.uniform(0.008, 0.03)
    parts.append(box("screen", (0, -t / 2 - 0.006, zc), (w - 2 * b, 0.004, sh - 2 * b), _SCREEN))
    phrases.append("a flat screen")
    if rng.random() < 0.2:
        parts.append(box("back housing", (0, t / 2 + 0.06, zc - sh * 0.05),
                         (w * 0.6, 0.12, sh * 0.6), rgb))
        phrases.append("a bulky back")
    parts.append(box("neck", (0, t / 2 + 0.03, (stand_h + sh * 0.4) / 2), (0.05, 0.025,
                                                                         stand_h + sh * 0.4),
                     rgb))
    if rng.random() < 0.6:
        parts.append(box("base", (0, 0.03, 0.01), (w * rng.uniform(0.3, 0.5), 0.2, 0.02), rgb))
        phrases.append("a rectangular stand")
    else:
        parts.append(frustum("base", (0, 0.03, 0), 0.11, 0.1, 0.015, rgb))
        phrases.append("a round stand")
    size = _size_word(height=0.5 * th, width=tw, scale=tw)
    return parts, _attrs(mat, cname, ["black"], phrases, size)


_BUILDERS = {
    "chair": _chair, "stool": _stool, "table": _table, "desk": _desk, "cup": _cup,
    "vase": _vase, "bottle": _bottle, "lamp": _lamp, "plant": _plant, "flower_pot": _flower_pot,
    "cabinet": _cabinet, "bookshelf": _bookshelf, "sofa": _sofa, "bed": _bed,
    "monitor": _monitor, "bench": _bench,
}
assert set(_BUILDERS) == set(CATEGORIES)


def build_parts(category: str, rng: np.random.Generator) -> tuple[list[Part], dict]:
    """Draw one instance of ``category``: its parts and caption attributes."""
    category_index(category)
    parts, attrs = _BUILDERS[category](rng)
    attrs["category"] = category
    attrs["num_parts"] = len(parts)
    return parts, attrs
