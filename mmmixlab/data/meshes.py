"""The user's own meshes -> a triplet dataset (coloured clouds, rendered views, captions).

``import_meshes(SRC, OUT)`` walks SRC for OBJ (with MTL and textures), PLY, GLB/GLTF, OFF and
STL files and writes OUT in mmmixlab's triplet format (:mod:`mmmixlab.data.triplets`), ready
for feature caching, plus ``OUT/import_report.json`` listing the imported files and the skipped
ones with their reasons.

Real-world files are messy, so each file is handled on its own and a bad one is reported by
name and skipped, never stopping the import and never producing a NaN cloud:

* loading: trimesh, every geometry of the file's scene with its node transform (multiple
  materials become several geometries); files that fail to parse are skipped with the parser's
  message; a worker process killed while parsing (out of memory, a crash in a native library)
  is detected and the file that caused it is skipped.
* geometry: vertices that are NaN/inf drop their faces (counted in the file's warnings); the
  scene is centred and scaled in float64 *before* areas are computed, so huge (1e12) and tiny
  (1e-12) coordinate ranges give the same cloud; degenerate (zero-area) faces get no samples;
  non-manifold meshes need no special care (sampling only uses triangles). A file with no
  surface area left is skipped; a point-cloud PLY (vertices, no faces) is sampled from its
  points.
* colour, per sampled point: vertex colours (interpolated), face colours, texture lookup at
  the interpolated UV (nearest texel, wrapped; times ``baseColorFactor`` for glTF PBR
  materials; an OBJ ``map_Kd`` is used as is, since exporters commonly write ``Kd 0.8`` next to
  a texture), else the material's base / diffuse colour, else grey 0.4 (OpenShape's constant
  for colourless data). A texture named by an MTL file but missing on disk falls back to the
  material colour and is listed in the file's warnings.
* axes: mmmixlab's convention is z-up with objects facing -y; ``up_axis="y"`` (the default:
  glTF's rule, and ShapeNet's and Objaverse's habit) rotates +y up / +z front to it,
  ``up_axis="z"`` keeps the file's axes.
* the cloud is centred and scaled into the unit sphere; ``views`` images are rendered with
  :func:`mmmixlab.data.render.render_views`.

Captions come from ``captions`` (a ``.json`` mapping a file's key to a caption or list of
captions, or a ``.csv``/``.tsv``/``.txt`` of ``key,caption`` lines), the key being the file's
path relative to SRC (with or without extension) or its bare stem; files it does not cover get
captions from their file and folder names, and the report says which source each file used.
Files in subfolders of SRC are labelled with their top-level folder (``class_names`` sorted).

Files are processed in parallel (``workers`` processes; 1 runs inline) with a progress bar;
clouds and images are streamed into on-disk scratch arrays, so memory does not grow with the
number of files.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from .prompts import fix_articles

__all__ = ["MESH_EXTENSIONS", "POINT_EXTENSIONS", "SHAPE_EXTENSIONS", "find_meshes",
           "import_meshes", "read_captions", "read_point_file", "sample_mesh"]

MESH_EXTENSIONS = (".obj", ".ply", ".glb", ".gltf", ".off", ".stl")
# Scans and point clouds, read with open3d's IO (a point-cloud .ply is read by trimesh above)
POINT_EXTENSIONS = (".pcd", ".xyz", ".xyzn", ".xyzrgb", ".pts")
SHAPE_EXTENSIONS = MESH_EXTENSIONS + POINT_EXTENSIONS
DEFAULT_GREY = 0.4
# How a file's up axis becomes z: "y" rotates (x, y, z) -> (x, -z, y); "y-swap" swaps the y and
# z columns as OpenShape's loaders do (a mirror image; released OpenShape weights expect it);
# "z" keeps the file's axes.
UP_AXES = ("y", "z", "y-swap")
_GENERIC = {"model", "models", "mesh", "meshes", "model_normalized", "scene", "object",
            "untitled", "export", "textured", "texture", "obj", "geometry", "source", "raw",
            "file", "files", "data", "default", "final", "output", "out", "3d"}


class MeshError(ValueError):
    """A file that cannot become a point cloud; the message is the reason reported."""


# ---------------------------------------------------------------------------------- files

def find_meshes(src) -> list[Path]:
    """Every mesh file below ``src`` (by extension, case-insensitive), sorted."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: mesh folder not found")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in
                   SHAPE_EXTENSIONS and not any(part.startswith(".") for part in
                                                p.relative_to(src).parts))
    if not files:
        raise FileNotFoundError(f"{src}: no mesh or point files found (looked for "
                                f"{', '.join(SHAPE_EXTENSIONS)} below it)")
    return files


def _words(text: str) -> list[str]:
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    return [w.lower() for w in re.split(r"[_\-\s.]+", text) if w]


def _meaningful(part: str) -> list[str]:
    """Words of a file/folder name, minus numbering and hash-like ids ('' if none left)."""
    if re.fullmatch(r"[0-9a-fA-F]{16,}|\d+", part) or part.lower() in _GENERIC:
        return []
    words = [w for w in _words(part) if not re.fullmatch(r"\d+|v\d+|[0-9a-f]{8,}", w)]
    return [] if " ".join(words) in _GENERIC else words


def captions_from_names(rel: Path) -> list[str]:
    """Captions from a file's stem and folders: ``chairs/office_chair_02.obj`` ->
    ``["office chair", "a 3D model of an office chair"]``. Empty when no part is meaningful."""
    parts = list(rel.with_suffix("").parts)
    words: list[str] = []
    for part in reversed(parts):
        words = _meaningful(part)
        if words:
            break
    if not words:
        return []
    phrase = " ".join(words)
    caps = [phrase, fix_articles(f"a 3D model of a {phrase}")]
    if len(parts) > 1:
        cat = " ".join(_meaningful(parts[0]))
        if cat and cat not in phrase and cat.rstrip("s") not in phrase:
            caps.append(fix_articles(f"a {phrase}, a kind of {cat}"))
    return caps


def read_captions(path) -> dict[str, list[str]]:
    """A captions file -> {key: [captions]}. ``.json``: ``{key: str | [str]}`` or a list of
    ``{"file"|"name"|"path": key, "caption"|"captions": ...}``; ``.csv``/``.tsv``/``.txt``: one
    ``key,caption`` (or tab-separated) line per caption, an optional header, repeated keys
    adding captions."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: captions file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: captions file is not UTF-8 text ({e})") from e
    out: dict[str, list[str]] = {}

    def add(key, caps, where):
        if isinstance(caps, str):
            caps = [caps]
        if not isinstance(key, str) or not isinstance(caps, list) or not all(
                isinstance(c, str) for c in caps):
            raise ValueError(f"{path}: {where}: expected a file key and caption string(s)")
        out.setdefault(key.strip(), []).extend(c.strip() for c in caps if c.strip())

    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if isinstance(obj, dict):
            for k, v in obj.items():
                add(k, v, f"key {k!r}")
        elif isinstance(obj, list):
            for i, e in enumerate(obj):
                if not isinstance(e, dict):
                    raise ValueError(f"{path}: entry {i} is not an object")  # noqa: TRY004
                key = next((e[k] for k in ("file", "name", "path") if k in e), None)
                caps = e.get("captions", e.get("caption"))
                add(key, caps, f"entry {i}")
        else:
            raise ValueError(f"{path}: expected an object or a list, got {type(obj).__name__}")
    else:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        delim = "\t" if path.suffix.lower() == ".tsv" or (lines and "\t" in lines[0]) else ","
        for n, row in enumerate(csv.reader(lines, delimiter=delim), 1):
            if len(row) < 2:
                raise ValueError(f"{path}: line {n}: expected 'file{delim}caption', got "
                                 f"{delim.join(row)!r:.80}")
            if n == 1 and row[0].strip().lower() in ("file", "name", "path", "filename", "uid"):
                continue
            add(row[0], delim.join(row[1:]), f"line {n}")
    if not out:
        raise ValueError(f"{path}: captions file holds no captions")
    return out


def _caption_keys(rel: Path) -> list[str]:
    posix = rel.as_posix()
    return [posix, rel.with_suffix("").as_posix(), rel.name, rel.stem]


# ---------------------------------------------------------------------------------- sampling

def _mtl_warnings(path: Path) -> list[str]:
    """Textures named by an OBJ's MTL files that are missing on disk."""
    out = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for lib in re.findall(r"^\s*mtllib\s+(.+?)\s*$", text, flags=re.MULTILINE):
        mtl = path.parent / lib
        if not mtl.is_file():
            out.append(f"material library {lib!r} not found: default colours used")
            continue
        mtext = mtl.read_text(encoding="utf-8", errors="replace")
        for tex in re.findall(r"^\s*map_Kd\s+(?:-\S+\s+\S+\s+)*(.+?)\s*$", mtext, flags=re.MULTILINE):
            if not (mtl.parent / tex).is_file():
                out.append(f"texture {tex!r} (named in {lib}) not found: material colour used")
    return out


def _to_rgb_image(img) -> np.ndarray | None:
    if img is None:
        return None
    try:
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except Exception:  # noqa: BLE001 (an unreadable texture: fall back to the material colour)
        return None
    return arr if arr.ndim == 3 and arr.shape[0] > 0 and arr.shape[1] > 0 else None


def _color_of(c) -> np.ndarray | None:
    if c is None:
        return None
    raw = np.asarray(c)
    c = raw.astype(np.float64).reshape(-1)
    if c.size < 3 or not np.isfinite(c[:3]).all():
        return None
    integer = np.issubdtype(raw.dtype, np.integer) or c[:3].max() > 1.0
    return np.clip(c[:3] / (255.0 if integer else 1.0), 0.0, 1.0)


def _sample_colors(geom, faces: np.ndarray, fidx: np.ndarray, bary: np.ndarray,
                   warn: list) -> np.ndarray:
    """rgb in [0, 1] of samples on faces ``fidx`` of ``geom`` at barycentric ``bary``."""
    n = len(fidx)
    visual = getattr(geom, "visual", None)
    kind = getattr(visual, "kind", None)
    tri = faces[fidx]
    try:
        if kind == "vertex":
            vc = np.asarray(visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
            return (vc[tri] * bary[:, :, None]).sum(1)
        if kind == "face":
            fc = np.asarray(visual.face_colors, dtype=np.float64)[:, :3] / 255.0
            return fc[fidx]
        material = getattr(visual, "material", None)
        if material is not None:
            factor = _color_of(getattr(material, "baseColorFactor", None))
            image = getattr(material, "baseColorTexture", None)
            if image is None:
                image = getattr(material, "image", None)
            tex = _to_rgb_image(image)
            uv = getattr(visual, "uv", None)
            if tex is not None and uv is not None and len(uv) == len(geom.vertices):
                uv = np.asarray(uv, dtype=np.float64)
                p = (uv[tri] * bary[:, :, None]).sum(1)
                p = np.where(np.isfinite(p), p, 0.0) % 1.0
                h, w = tex.shape[:2]
                col = np.minimum((p[:, 0] * w).astype(np.int64), w - 1)
                row = np.minimum(((1.0 - p[:, 1]) * h).astype(np.int64), h - 1)
                rgb = tex[row, col].astype(np.float64)
                return rgb * factor if factor is not None else rgb
            if tex is not None and uv is None:
                warn.append("texture without UV coordinates: material colour used")
            base = factor if factor is not None else _color_of(
                getattr(material, "diffuse", None))
            if base is None:
                base = _color_of(getattr(material, "main_color", None))
            if base is not None:
                return np.broadcast_to(base, (n, 3)).copy()
    except (IndexError, ValueError, TypeError, AttributeError) as e:
        warn.append(f"colours unreadable ({type(e).__name__}: {e}): grey used")
    return np.full((n, 3), DEFAULT_GREY)


def _collect(scene) -> tuple[list, list, int]:
    """(meshes, point clouds, other geometry count) of a trimesh scene, transforms applied."""
    import trimesh

    meshes, clouds, other = [], [], 0
    for g in scene.dump():
        if isinstance(g, trimesh.Trimesh):
            meshes.append(g)
        elif isinstance(g, trimesh.PointCloud):
            clouds.append(g)
        else:
            other += 1
    return meshes, clouds, other


def sample_mesh(path, num_points: int = 2048, seed: int = 0, up_axis: str = "y"
                ) -> tuple[np.ndarray, list[str]]:
    """One mesh file -> ((num_points, 6) float32 xyz + rgb in the unit sphere, warnings).

    Raises :class:`MeshError` with the reason when the file cannot give a cloud.
    """
    import trimesh

    path = Path(path)
    if up_axis not in UP_AXES:
        raise ValueError(f"up_axis must be one of {UP_AXES}, got {up_axis!r}")
    warn: list[str] = []
    if path.suffix.lower() == ".obj":
        warn.extend(_mtl_warnings(path))
    if path.stat().st_size == 0:
        raise MeshError("empty file (0 bytes)")
    if path.suffix.lower() in POINT_EXTENSIONS:
        xyz, rgb = read_point_file(path)
        pick = np.random.default_rng(seed).choice(len(xyz), num_points,
                                                  replace=len(xyz) < num_points)
        return finish_cloud(xyz[pick], rgb[pick], up_axis,
                             warn + [f"point file: sampled from its {len(xyz)} points"])
    log = logging.getLogger("trimesh")
    records: list[str] = []

    class _Grab(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = _Grab(level=logging.WARNING)
    log.addHandler(handler)
    old_level, old_prop = log.level, log.propagate
    log.setLevel(logging.WARNING)
    log.propagate = False
    try:
        # process=False: trimesh's vertex merging hashes coordinates as int64 and collapses
        # huge (1e15) or tiny (1e-12) meshes to one point; we clean vertices ourselves below
        scene = trimesh.load(str(path), force="scene", process=False)
    except Exception as e:  # parsers raise anything from ValueError to struct.error
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise MeshError(f"could not parse: {type(e).__name__}: {msg}"[:300]) from e
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_prop
    warn.extend(dict.fromkeys(r[:200] for r in records))
    meshes, clouds, other = _collect(scene)
    if other:
        warn.append(f"{other} non-surface geometries (lines, paths) ignored")
    if not meshes and not clouds:
        raise MeshError("no geometry in the file (no faces and no points)")

    # float64 vertices, non-finite ones dropped with their faces
    parts = []
    dropped = 0
    for m in meshes:
        v = np.asarray(m.vertices, dtype=np.float64)
        f = np.asarray(m.faces, dtype=np.int64).reshape(-1, 3)
        if len(f) == 0 or len(v) == 0:
            continue
        bad_v = ~np.isfinite(v).all(1)
        ok = (f >= 0).all(1) & (f < len(v)).all(1)
        ok[ok] &= ~bad_v[f[ok]].any(1)
        dropped += int((~ok).sum())
        parts.append((m, v, f, np.flatnonzero(ok)))
    if dropped:
        warn.append(f"{dropped} faces with NaN/inf or out-of-range vertices dropped")
    finite_pts = [v[np.isfinite(v).all(1)] for _, v, _, _ in parts]
    cloud_pts = []
    for c in clouds:
        v = np.asarray(c.vertices, dtype=np.float64)
        keep = np.isfinite(v).all(1)
        cloud_pts.append((c, v, keep))
        finite_pts.append(v[keep])
    allv = np.concatenate([p for p in finite_pts if len(p)]) if any(
        len(p) for p in finite_pts) else np.zeros((0, 3))
    if len(allv) == 0:
        raise MeshError("no finite vertex coordinates")
    lo, hi = allv.min(0), allv.max(0)
    centre = lo / 2.0 + hi / 2.0
    with np.errstate(over="ignore", invalid="ignore"):
        scale = float(np.abs(allv - centre).max())
    if not np.isfinite(scale):
        raise MeshError("coordinates too large to represent (overflow)")
    if scale == 0.0:
        raise MeshError("all vertices coincide (zero extent)")

    rng = np.random.default_rng(seed)
    tris = []
    for k, (m, v, f, ok) in enumerate(parts):
        vn = (v - centre) / scale
        t = vn[f[ok]]
        area = 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)
        area = np.where(np.isfinite(area), area, 0.0)
        tris.append((k, vn, ok, area))
    total = sum(float(a.sum()) for _, _, _, a in tris)
    n_faces = sum(len(a) for _, _, _, a in tris)
    degenerate = sum(int((a <= 1e-14).sum()) for _, _, _, a in tris)
    if total > 1e-12:
        if degenerate:
            warn.append(f"{degenerate} of {n_faces} faces are degenerate (zero area)")
        areas = np.concatenate([a for _, _, _, a in tris])
        owner = np.concatenate([np.full(len(a), i) for i, (_, _, _, a) in enumerate(tris)])
        local = np.concatenate([np.arange(len(a)) for _, _, _, a in tris])
        pick = rng.choice(len(areas), size=num_points, p=areas / areas.sum())
        r1, r2 = rng.random(num_points), rng.random(num_points)
        s1 = np.sqrt(r1)
        bary = np.stack([1.0 - s1, s1 * (1.0 - r2), s1 * r2], axis=1)
        xyz = np.empty((num_points, 3))
        rgb = np.empty((num_points, 3))
        for i in np.unique(owner[pick]):
            sel = np.flatnonzero(owner[pick] == i)
            k, vn, ok, _ = tris[i]
            m, _, f, _ = parts[k]
            fidx = ok[local[pick[sel]]]
            corners = vn[f[fidx]]
            xyz[sel] = (corners * bary[sel, :, None]).sum(1)
            rgb[sel] = _sample_colors(m, f, fidx, bary[sel], warn)
    elif any(keep.any() for _, _, keep in cloud_pts):
        pts, cols = [], []
        for c, v, keep in cloud_pts:
            pts.append((v[keep] - centre) / scale)
            colors = getattr(c, "colors", None)
            if colors is not None and len(colors) == len(v):
                cols.append(np.asarray(colors, dtype=np.float64)[keep, :3] / 255.0)
            else:
                cols.append(np.full((int(keep.sum()), 3), DEFAULT_GREY))
        pts, cols = np.concatenate(pts), np.concatenate(cols)
        pick = rng.choice(len(pts), num_points, replace=len(pts) < num_points)
        xyz, rgb = pts[pick], cols[pick]
        warn.append(f"no faces: sampled from the file's {len(pts)} points")
    else:
        raise MeshError(f"no surface area: all {n_faces} faces are degenerate (zero area)"
                        if n_faces else "no faces and no points to sample")

    return finish_cloud(xyz, rgb, up_axis, warn)


def read_point_file(path) -> tuple[np.ndarray, np.ndarray]:
    """A scan or point cloud (``.pcd``, ``.xyz``, ``.xyzn``, ``.xyzrgb``, ``.pts``) read with
    open3d's IO -> (xyz (P, 3) float64, rgb (P, 3) in [0, 1], grey 0.4 where the file has none).
    Raises :class:`MeshError` for files open3d cannot parse, without points, or with NaN."""
    try:
        import open3d as o3d
    except ImportError as err:  # open3d needs Debian's libusb-1.0-0 (scripts/system-deps.sh)
        raise MeshError(f"reading {Path(path).suffix} files needs open3d ({err}); install it "
                        f"with pip install open3d (and on Debian: sudo apt-get install "
                        f"libusb-1.0-0)") from err
    path = Path(path)
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)  # we report, not it
    pcd = o3d.io.read_point_cloud(str(path), format="auto", remove_nan_points=False,
                                  remove_infinite_points=False, print_progress=False)
    xyz = np.asarray(pcd.points, dtype=np.float64)
    if len(xyz) == 0:
        raise MeshError(f"no points read (empty, or not a {path.suffix} point file open3d can "
                        f"parse: expected fields x y z [r g b | nx ny nz] per line/point)")
    bad = ~np.isfinite(xyz).all(1)
    if bad.any():
        raise MeshError(f"{int(bad.sum())} of {len(xyz)} points have NaN or inf coordinates")
    rgb = np.asarray(pcd.colors, dtype=np.float64) if pcd.has_colors() else \
        np.full_like(xyz, DEFAULT_GREY)
    return xyz, rgb


def finish_cloud(xyz, rgb, up_axis: str, warn: list = ()) -> tuple[np.ndarray, list[str]]:
    """Up axis, unit sphere and colour clean-up shared by meshes, scans and the point files
    ``classify`` reads: ((P, 6) float32, warnings)."""
    from .openshape import normalize_unit_sphere

    xyz = np.asarray(xyz, dtype=np.float64)
    if up_axis == "y":  # +y up, +z front  ->  +z up, -y front
        xyz = np.stack([xyz[:, 0], -xyz[:, 2], xyz[:, 1]], axis=1)
    elif up_axis == "y-swap":  # OpenShape's column swap (a mirror image): what its weights saw
        xyz = xyz[:, [0, 2, 1]]
    if not np.isfinite(xyz).all() or np.ptp(xyz, axis=0).max() == 0.0:
        raise MeshError("sampled points all coincide (zero extent)"
                        if np.isfinite(xyz).all() else "points hold NaN or inf")
    xyz = normalize_unit_sphere(xyz)
    rgb = np.clip(np.where(np.isfinite(rgb), rgb, DEFAULT_GREY), 0.0, 1.0)
    pts = np.concatenate([xyz, rgb], axis=1).astype(np.float32)
    if not np.isfinite(pts).all():  # cannot happen after the checks above; never write NaN
        raise MeshError("sampling produced NaN/inf values")
    return pts, list(dict.fromkeys(warn))


# ---------------------------------------------------------------------------------- import

def _file_seed(seed: int, rel: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(rel.encode("utf-8"))) % (2 ** 32)


def _import_one(path: str, rel: str, num_points: int, views: int, image_size: int, seed: int,
                up_axis: str):
    """Worker: ("ok", points, images, warnings) or ("error", reason); never raises."""
    from .render import render_views

    try:
        pts, warn = sample_mesh(path, num_points, _file_seed(seed, rel), up_axis)
        images = render_views(pts, num_views=views, image_size=image_size)
        return "ok", pts, images, warn
    except MeshError as e:
        return "error", str(e)
    except MemoryError:
        return "error", "out of memory while reading the file"
    except Exception as e:  # noqa: BLE001 (any failure is this file's, not the import's)
        return "error", f"{type(e).__name__}: {e}"[:300]


def _pool_context():
    """Workers start from a clean interpreter, never a fork of a parent that may hold threads
    (torch, BLAS): ``forkserver`` where the OS has it (workers fork from one server that has
    imported this module once, so a fresh pool starts in milliseconds), else ``spawn``."""
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["mmmixlab.data.meshes", "trimesh"])
        return ctx
    return mp.get_context("spawn")


def _run_tasks(fn: Callable, tasks: list[tuple], workers: int
               ) -> Iterable[tuple[int, tuple]]:
    """Yield (task index, fn(*task)) in completion order.

    ``workers <= 1`` runs inline. With a pool, a worker that dies (killed for memory, a crash in
    native code) breaks the pool; the unfinished tasks are then run one at a time, each in a
    fresh single-process pool, so the task that kills its process is identified and reported
    as ("error", reason) while the others complete.
    """
    if workers <= 1:
        for i, t in enumerate(tasks):
            yield i, fn(*t)
        return
    ctx = _pool_context()
    remaining = set(range(len(tasks)))
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            futs = {ex.submit(fn, *tasks[i]): i for i in sorted(remaining)}
            for fut in as_completed(futs):
                i = futs[fut]
                res = fut.result()
                remaining.discard(i)
                yield i, res
    except BrokenProcessPool:
        pass
    for i in sorted(remaining):
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
                res = ex.submit(fn, *tasks[i]).result()
        except BrokenProcessPool:
            res = ("error", ("the worker process died while reading this file (out of memory "
                             "or a crash in the parser)"))
        yield i, res


def import_meshes(src, out, points: int = 2048, views: int = 2, image_size: int = 64,
                  captions=None, workers: int = 2, progress: bool = True, seed: int = 0,
                  up_axis: str = "y") -> dict:
    """Import every mesh below ``src`` into the triplet dataset folder ``out``.

    Returns the report (also written to ``out/import_report.json``): ``imported`` (file, name,
    caption source, warnings), ``skipped`` (file, reason), counts and settings. Raises only for
    bad arguments, an empty ``src``, an unreadable captions file, or when no file at all could
    be imported.
    """
    from ..progress import bar as tqdm
    from .triplets import TripletSet, write_triplets

    t0 = time.time()
    if int(points) < 1 or int(views) < 1:
        raise ValueError(f"points and views must be >= 1, got {points}, {views}")
    if up_axis not in ("y", "z"):
        raise ValueError(f"up_axis must be 'y' or 'z', got {up_axis!r}")
    src, out = Path(src), Path(out)
    if out.exists() and (not out.is_dir() or (not (out / "manifest.json").is_file()
                                               and any(out.iterdir()))):
        raise FileExistsError(f"{out} exists and is not a triplet dataset; refusing to "
                              f"overwrite it (choose a new or empty folder)")
    files = find_meshes(src)
    cap_map = read_captions(captions) if captions is not None else {}
    rels = [f.relative_to(src) for f in files]
    tasks = [(str(f), r.as_posix(), int(points), int(views), int(image_size), int(seed), up_axis)
             for f, r in zip(files, rels)]

    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.parent / f".{out.name}.import-tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        n = len(files)
        pts_mm = np.lib.format.open_memmap(scratch / "points.npy", mode="w+", dtype=np.float32,
                                           shape=(n, int(points), 6))
        img_mm = np.lib.format.open_memmap(scratch / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(n, int(views), int(image_size),
                                                  int(image_size), 3))
        results: dict[int, tuple] = {}
        bar = tqdm(total=n, desc="import meshes", unit="file", disable=not progress)
        for i, res in _run_tasks(_import_one, tasks, int(workers)):
            if res[0] == "ok":
                pts_mm[i] = res[1]
                img_mm[i] = res[2]
                results[i] = ("ok", res[3])
            else:
                results[i] = ("error", res[1])
            bar.update(1)
        bar.close()

        ok_idx = [i for i in range(n) if results[i][0] == "ok"]
        skipped = [{"file": rels[i].as_posix(), "reason": results[i][1]}
                   for i in range(n) if results[i][0] != "ok"]
        if not ok_idx:
            raise ValueError(f"{src}: none of the {n} mesh files could be imported: "
                             + "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:5]))
        for k, i in enumerate(ok_idx):  # compact in place (ascending, so no overwrite)
            if k != i:
                pts_mm[k] = pts_mm[i]
                img_mm[k] = img_mm[i]
        m = len(ok_idx)

        names, caps, imported, used_keys = [], [], [], set()
        cats = [rels[i].parts[0] if len(rels[i].parts) > 1 else None for i in ok_idx]
        class_names = sorted({c for c in cats if c is not None}) or None
        for i in ok_idx:
            rel = rels[i]
            key = next((k for k in _caption_keys(rel) if k in cap_map), None)
            if key is not None and cap_map[key]:
                c, source = list(cap_map[key]), "captions file"
                used_keys.add(key)
            else:
                c, source = captions_from_names(rel), "file and folder names"
            names.append(rel.with_suffix("").as_posix())
            caps.append(c)
            entry = {"file": rel.as_posix(), "name": names[-1], "captions": len(c),
                     "caption_source": source if c else "none (no meaningful name)"}
            if results[i][1]:
                entry["warnings"] = results[i][1]
            imported.append(entry)
        labels = None
        if class_names:
            index = {c: j for j, c in enumerate(class_names)}
            labels = np.array([index[c] if c is not None else -1 for c in cats], np.int64)
        settings = {"points": int(points), "views": int(views), "image_size": int(image_size),
                    "seed": int(seed), "up_axis": up_axis,
                    "captions": str(captions) if captions is not None else None}
        ts = TripletSet(points=pts_mm[:m], images=img_mm[:m], captions=caps, names=names,
                        labels=labels, class_names=class_names,
                        info={"source": "import-meshes", "src": str(src.resolve()),
                              **settings})
        write_triplets(ts, out)
        del ts, pts_mm, img_mm
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    report = {"source": str(src), "out": str(out), "num_files": n, "num_imported": m,
              "num_skipped": len(skipped), "imported": imported, "skipped": skipped,
              "settings": settings, "seconds": round(time.time() - t0, 2)}
    if cap_map:
        unused = sorted(set(cap_map) - used_keys)
        report["captions_unused"] = unused[:100]
        report["num_captions_unused"] = len(unused)
    (out / "import_report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False),
                                            encoding="utf-8")
    if progress:
        print(summarize_report(report))
    return report


def summarize_report(report: dict) -> str:
    """A few lines for the terminal: counts, then every skipped file with its reason."""
    lines = [(f"imported {report['num_imported']} of {report['num_files']} mesh files into "
              f"{report['out']} ({report['num_skipped']} skipped)")]
    for s in report["skipped"]:
        lines.append(f"  skipped {s['file']}: {s['reason']}")
    warned = [e for e in report["imported"] if e.get("warnings")]
    if warned:
        lines.append(f"  {len(warned)} imported files have warnings (see import_report.json)")
    return "\n".join(lines)
