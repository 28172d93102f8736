"""What the SynthShapes category builders share: materials and colours, the random draws,
the caption words, and the few part assemblies several categories use.

* Materials and colours: :data:`MATERIALS` (material -> caption adjective and its palette of
  colour words with rgb; captions read it too), the leaf and flower palettes, :func:`_material`
  (a material, colour word and jittered rgb drawn from the instance's generator),
  :func:`_shade`, :func:`_accent`.
* Draws and words: :func:`_u` (a uniform draw and its position in the range, which becomes a
  size word), :func:`_size_word`, :func:`_article`, :func:`_count`, and :func:`_attrs`, the
  attribute dict every builder returns (``color``, ``colors``, ``material``, ``parts``,
  ``size``).
* Assemblies: :func:`_legs4` (four legs under a rectangle), :func:`_revolve` (a surface of
  revolution from a profile), :func:`_smooth_profile` (a smooth radius profile through knots).

Conventions: z is up, objects face -y, units are roughly metres before normalization. The
order of the random draws is part of the world: changing it changes every generated shape.
"""

from __future__ import annotations

import math

import numpy as np

from .primitives import box, frustum, rod

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

_NUM = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def _u(rng, lo, hi):
    """Uniform draw in [lo, hi] and its position in the range (for size words)."""
    t = float(rng.random())
    return lo + t * (hi - lo), t


def _material(rng, options, weights=None):
    mat = options[int(rng.choice(len(options), p=weights))]
    _, palette = MATERIALS[mat]
    cname, rgb = palette[int(rng.integers(len(palette)))]
    return mat, cname, _jitter(rng, rgb)


def _legs_material(rng, mat, cname, rgb, same_share):
    """Legs: the top's material a shade darker (with probability ``same_share``), otherwise
    their own wood or metal."""
    if rng.random() < same_share:
        return mat, cname, _shade(rgb, 0.85)
    return _material(rng, ["wood", "metal"])


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
