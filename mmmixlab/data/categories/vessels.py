"""Vessels: cup, vase, bottle. Straight vases overlap the taller cups on purpose (a
confusable pair); vases may hold flowers (SynthShapes categories)."""

from __future__ import annotations

import math

import numpy as np

from ..parts import (
    _FLOWERS,
    _GREENS,
    MATERIALS,
    _attrs,
    _material,
    _revolve,
    _shade,
    _size_word,
    _smooth_profile,
    _u,
)
from ..primitives import _rot_axis, disk, ellipsoid, frustum, rod, torus


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


def cup(rng):
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


def vase(rng):
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


def bottle(rng):
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
