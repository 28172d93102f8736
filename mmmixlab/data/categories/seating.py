"""Seating: chair, stool, sofa, bed, bench (SynthShapes categories)."""

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
from ..primitives import _rot_axis, box, ellipsoid, frustum, rod, torus


def chair(rng):
    parts, phrases = [], []
    seat_mat, seat_c, seat_rgb = _material(rng, ["wood", "fabric", "plastic", "leather"])
    leg_mat, leg_c, leg_rgb = _legs_material(rng, seat_mat, seat_c, seat_rgb, 0.5)
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


def stool(rng):
    parts, phrases = [], []
    seat_mat, seat_c, seat_rgb = _material(rng, ["wood", "plastic", "leather", "metal"])
    _, leg_c, leg_rgb = _legs_material(rng, seat_mat, seat_c, seat_rgb, 0.5)
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


def sofa(rng):
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


def bed(rng):
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


def bench(rng):
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
