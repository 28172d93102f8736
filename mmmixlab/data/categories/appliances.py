"""Appliances: lamp and monitor (SynthShapes categories)."""

from __future__ import annotations

import math

import numpy as np

from ..parts import (
    _attrs,
    _material,
    _revolve,
    _size_word,
    _smooth_profile,
    _u,
)
from ..primitives import _rot_to, box, disk, ellipsoid, frustum, rod

_SCREEN = (0.05, 0.06, 0.09)


def lamp(rng):
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


def monitor(rng):
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
