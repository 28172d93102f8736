"""Geometry primitives of the SynthShapes world: parts (box, frustum, rod, ellipsoid, torus arc,
disk/annulus), area-weighted surface sampling and the world's unit-sphere normalization.

Conventions: z is up, objects face -y, units are roughly metres before normalization. A shape
is a list of :class:`Part`, each with its own colour; :func:`sample_parts` samples points ON
THE SURFACE, area-weighted over all parts (multinomial allocation of the point budget, then
uniform sampling within each part). The category builders live in :mod:`.shapes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Part", "box", "disk", "ellipsoid", "frustum", "normalize_cloud", "rod",
           "sample_parts", "torus"]


# --------------------------------------------------------------------------------------------
# primitives

@dataclass
class Part:
    kind: str                 # box | frustum | ellipsoid | torus | disk
    params: dict
    color: tuple
    name: str = ""
    rot: np.ndarray | None = None   # 3x3, applied about the part's anchor
    anchor: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def area(self) -> float:
        p = self.params
        if self.kind == "box":
            sx, sy, sz = p["size"]
            return 2.0 * (sx * sy + sy * sz + sx * sz)
        if self.kind == "frustum":
            r0, r1, h = p["r0"], p["r1"], p["h"]
            a = math.pi * (r0 + r1) * math.hypot(h, r1 - r0)
            if p["bottom"]:
                a += math.pi * r0 * r0
            if p["top"]:
                a += math.pi * r1 * r1
            return a
        if self.kind == "ellipsoid":
            a, b, c = p["radii"]
            q = 1.6075  # Knud Thomsen's approximation
            return 4 * math.pi * (((a * b) ** q + (a * c) ** q + (b * c) ** q) / 3) ** (1 / q)
        if self.kind == "torus":
            return (p["arc"][1] - p["arc"][0]) * p["R"] * 2 * math.pi * p["r"]
        if self.kind == "disk":
            return math.pi * (p["r"] ** 2 - p["r_in"] ** 2)
        raise ValueError(f"unknown part kind {self.kind!r}")


def _rot_to(v) -> np.ndarray:
    """Rotation taking +z onto the direction v (Rodrigues)."""
    v = np.asarray(v, dtype=np.float64)
    v = v / np.linalg.norm(v)
    z = np.array([0.0, 0.0, 1.0])
    c = float(z @ v)
    if c > 1 - 1e-9:
        return np.eye(3)
    if c < -1 + 1e-9:
        return np.diag([1.0, -1.0, -1.0])
    k = np.cross(z, v)
    s = np.linalg.norm(k)
    k = k / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - c) * (kx @ kx)


def _rot_axis(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def box(name, center, size, color, rot=None) -> Part:
    return Part("box", {"size": tuple(float(s) for s in size)}, tuple(color), name,
                rot, np.asarray(center, dtype=np.float64))


def frustum(name, base, r0, r1, h, color, bottom=True, top=True, rot=None) -> Part:
    """Cone frustum along +z from ``base`` (radius r0) to base + h (radius r1)."""
    return Part("frustum", {"r0": float(r0), "r1": float(r1), "h": float(h),
                            "bottom": bool(bottom), "top": bool(top)}, tuple(color), name,
                rot, np.asarray(base, dtype=np.float64))


def rod(name, p0, p1, r, color, caps=True) -> Part:
    p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    d = p1 - p0
    return frustum(name, p0, r, r, float(np.linalg.norm(d)), color, caps, caps, _rot_to(d))


def ellipsoid(name, center, radii, color, rot=None) -> Part:
    return Part("ellipsoid", {"radii": tuple(float(r) for r in radii)}, tuple(color), name,
                rot, np.asarray(center, dtype=np.float64))


def torus(name, center, R, r, color, arc=(0.0, 2 * math.pi), rot=None) -> Part:
    """Torus around the local z axis (ring in the local xy plane), angular range ``arc``."""
    return Part("torus", {"R": float(R), "r": float(r), "arc": (float(arc[0]), float(arc[1]))},
                tuple(color), name, rot, np.asarray(center, dtype=np.float64))


def disk(name, center, r, color, r_in=0.0, rot=None) -> Part:
    return Part("disk", {"r": float(r), "r_in": float(r_in)}, tuple(color), name, rot,
                np.asarray(center, dtype=np.float64))


def _sample_box(p, n, rng):
    sx, sy, sz = p["size"]
    areas = np.array([sy * sz, sy * sz, sx * sz, sx * sz, sx * sy, sx * sy])
    face = rng.choice(6, size=n, p=areas / areas.sum())
    uv = rng.random((n, 2)) - 0.5
    pts = np.empty((n, 3))
    axis = face // 2
    sign = np.where(face % 2 == 0, 0.5, -0.5)
    half = np.array([sx, sy, sz])
    # the two in-face coordinates of each axis
    other = np.array([[1, 2], [0, 2], [0, 1]])[axis]
    rows = np.arange(n)
    pts[rows, axis] = sign * half[axis]
    pts[rows, other[:, 0]] = uv[:, 0] * half[other[:, 0]]
    pts[rows, other[:, 1]] = uv[:, 1] * half[other[:, 1]]
    return pts


def _sample_frustum(p, n, rng):
    r0, r1, h = p["r0"], p["r1"], p["h"]
    lat = math.pi * (r0 + r1) * math.hypot(h, r1 - r0)
    a = np.array([lat, math.pi * r0 * r0 * p["bottom"], math.pi * r1 * r1 * p["top"]])
    which = rng.choice(3, size=n, p=a / a.sum())
    u = rng.random(n)
    phi = rng.random(n) * 2 * math.pi
    # lateral: height fraction t with density proportional to the radius at t
    d = r1 - r0
    if abs(d) < 1e-9:
        t = u
    else:
        t = (-r0 + np.sqrt(np.maximum(r0 * r0 + d * u * (r0 + r1), 0.0))) / d
    rad = r0 + d * t
    z = t * h
    cap_r = np.sqrt(rng.random(n))
    rad = np.where(which == 1, cap_r * r0, np.where(which == 2, cap_r * r1, rad))
    z = np.where(which == 1, 0.0, np.where(which == 2, h, z))
    return np.stack([rad * np.cos(phi), rad * np.sin(phi), z], axis=1)


def _sample_ellipsoid(p, n, rng):
    radii = np.asarray(p["radii"])
    out = np.empty((0, 3))
    # exact area weighting by rejection on the area-stretch factor of the sphere map
    while out.shape[0] < n:
        m = 2 * (n - out.shape[0]) + 16
        u = rng.normal(size=(m, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        f = np.linalg.norm(u / radii, axis=1) * radii.prod()
        keep = rng.random(m) * f.max() * 1.0001 < f
        if radii.max() / radii.min() > 1e3:
            keep[:] = True
        out = np.concatenate([out, u[keep] * radii])
    return out[:n]


def _sample_torus(p, n, rng):
    R, r, (a0, a1) = p["R"], p["r"], p["arc"]
    out = np.empty((0, 3))
    while out.shape[0] < n:
        m = 2 * (n - out.shape[0]) + 16
        phi = a0 + rng.random(m) * (a1 - a0)
        th = rng.random(m) * 2 * math.pi
        keep = rng.random(m) * (R + r) < R + r * np.cos(th)
        phi, th = phi[keep], th[keep]
        rr = R + r * np.cos(th)
        out = np.concatenate([out, np.stack([rr * np.cos(phi), rr * np.sin(phi),
                                             r * np.sin(th)], axis=1)])
    return out[:n]


def _sample_disk(p, n, rng):
    r, ri = p["r"], p["r_in"]
    rad = np.sqrt(ri * ri + rng.random(n) * (r * r - ri * ri))
    phi = rng.random(n) * 2 * math.pi
    return np.stack([rad * np.cos(phi), rad * np.sin(phi), np.zeros(n)], axis=1)


_SAMPLERS = {"box": _sample_box, "frustum": _sample_frustum, "ellipsoid": _sample_ellipsoid,
             "torus": _sample_torus, "disk": _sample_disk}


def sample_parts(parts: list[Part], n: int, rng: np.random.Generator,
                 color_noise: float = 0.02) -> np.ndarray:
    """Sample ``n`` surface points (n, 6) float64 (xyz + rgb) area-weighted over ``parts``."""
    areas = np.array([pt.area() for pt in parts], dtype=np.float64)
    counts = rng.multinomial(int(n), areas / areas.sum())
    chunks = []
    for part, c in zip(parts, counts):
        if c == 0:
            continue
        xyz = _SAMPLERS[part.kind](part.params, int(c), rng)
        if part.rot is not None:
            xyz = xyz @ np.asarray(part.rot).T
        xyz = xyz + part.anchor
        rgb = np.broadcast_to(np.asarray(part.color, dtype=np.float64), (int(c), 3))
        chunks.append(np.concatenate([xyz, rgb], axis=1))
    out = np.concatenate(chunks, axis=0)
    if color_noise > 0:
        out[:, 3:] += rng.normal(scale=color_noise, size=(out.shape[0], 3))
    np.clip(out[:, 3:], 0.0, 1.0, out=out[:, 3:])
    return out


def normalize_cloud(points: np.ndarray) -> np.ndarray:
    """Centre xyz on the centroid and scale into the unit sphere (max norm 1). Returns float32."""
    out = np.array(points, dtype=np.float64, copy=True)
    out[:, :3] -= out[:, :3].mean(axis=0)
    r = np.sqrt((out[:, :3] ** 2).sum(axis=1)).max()
    if r > 0:
        out[:, :3] /= r * (1.0 + 1e-6)  # keep every norm strictly <= 1 after the float32 cast
    return out.astype(np.float32)
