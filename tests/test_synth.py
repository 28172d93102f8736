"""SynthShapes: determinism, splits, ranges, scans, renders, confusable pairs, captions."""

import json

import numpy as np
import pytest

from mmmixlab.data import synth as synth_mod
from mmmixlab.data.captions import make_captions
from mmmixlab.data.prompts import PROMPT_TEMPLATES, class_prompts, display_name
from mmmixlab.data.render import render_views, visible_mask
from mmmixlab.data.shapes import ellipsoid, normalize_cloud, sample_parts
from mmmixlab.data.synth import (
    CATEGORIES,
    CONFUSABLE_PAIRS,
    SynthConfig,
    build_world,
    generate_shape,
    generate_split,
    instance_rng,
    make_scan,
)
from mmmixlab.data.triplets import load_triplets

SIZE_WORDS = {"small", "large", "tall", "short", "wide"}


@pytest.fixture(scope="module")
def tiny():
    return SynthConfig(seed=3, train_per_class=2, test_per_class=1, scan_per_class=1,
                       num_points=256, views=2, image_size=32, captions_per_shape=3)


@pytest.fixture(scope="module")
def tiny_splits(tiny):
    return {s: generate_split(tiny, s) for s in ("train", "test", "scan")}


# ---------------------------------------------------------------------------- config

def test_config_validation_and_key():
    a, b = SynthConfig(), SynthConfig()
    assert a.key() == b.key() and len(a.key()) == 12
    assert SynthConfig(seed=1).key() != a.key()
    assert SynthConfig(num_points=1024).key() != a.key()
    assert len(CATEGORIES) == 16 and len(set(CATEGORIES)) == 16
    for p, q in CONFUSABLE_PAIRS:
        assert p in CATEGORIES and q in CATEGORIES
    with pytest.raises(ValueError, match="unknown category"):
        SynthConfig(categories=("chair", "spaceship"))
    with pytest.raises(ValueError, match="num_points"):
        SynthConfig(num_points=10001)
    with pytest.raises(ValueError, match="seed"):
        SynthConfig(seed=-1)


# ---------------------------------------------------------------------------- shapes

def test_every_category_shapes_ranges_and_attributes():
    for cat in CATEGORIES:
        pts, attrs = generate_shape(cat, instance_rng(0, "train", cat, 0))
        assert pts.shape == (2048, 6) and pts.dtype == np.float32, cat
        assert np.isfinite(pts).all()
        norms = np.linalg.norm(pts[:, :3], axis=1)
        assert norms.max() <= 1.0 + 1e-6 and norms.max() > 0.99, cat
        assert np.abs(pts[:, :3].mean(0)).max() < 1e-4, cat
        assert pts[:, 3:].min() >= 0 and pts[:, 3:].max() <= 1, cat
        assert pts[:, 3:].std(0).max() > 0.01, f"{cat} is a single flat colour"
        assert attrs["category"] == cat and attrs["size"] in SIZE_WORDS
        assert isinstance(attrs["color"], str) and attrs["color"] in attrs["colors"]
        assert isinstance(attrs["material"], str) and isinstance(attrs["parts"], list)


def test_instances_vary_within_a_category():
    a, _ = generate_shape("chair", instance_rng(0, "train", "chair", 0))
    b, _ = generate_shape("chair", instance_rng(0, "train", "chair", 1))
    assert not np.allclose(a, b)
    ext = [np.ptp(generate_shape("table", instance_rng(0, "train", "table", i), 256)[0][:, :3],
                  axis=0) for i in range(8)]
    assert np.std(np.array(ext), axis=0).max() > 0.02  # proportions differ between instances


@pytest.mark.parametrize("n", [16, 2048, 10000])
def test_point_count_honoured(n):
    pts, _ = generate_shape("lamp", instance_rng(0, "test", "lamp", 0), num_points=n)
    assert pts.shape == (n, 6)


@pytest.mark.parametrize("n", [15, 10001, 0, 2048.5])
def test_point_count_out_of_range_refused(n):
    with pytest.raises(ValueError, match="num_points"):
        generate_shape("lamp", instance_rng(0, "test", "lamp", 0), num_points=n)


def test_unknown_category_refused():
    with pytest.raises(ValueError, match="unknown category"):
        generate_shape("spaceship", np.random.default_rng(0))


def _chamfer_matrix(clouds):
    x = clouds.astype(np.float64)
    sq = (x ** 2).sum(-1)
    d = sq[:, None, :, None] + sq[None, :, None, :] - 2 * np.einsum("ipd,jqd->ijpq", x, x)
    return d.min(3).mean(2) + d.min(2).mean(2)


def test_confusable_pairs_are_geometrically_close():
    """Mean Chamfer distance between the instances of two classes: each confusable pair must be
    closer than the partner's class is, on average, to a random other class."""
    n, p = 5, 64
    cats = list(CATEGORIES)
    clouds = np.stack([generate_shape(c, instance_rng(0, "test", c, i), p)[0][:, :3]
                       for c in cats for i in range(n)])
    k = len(cats)
    m = _chamfer_matrix(clouds).reshape(k, n, k, n).mean((1, 3))
    for a, b in CONFUSABLE_PAIRS:
        for x, y in ((cats.index(a), cats.index(b)), (cats.index(b), cats.index(a))):
            others = np.delete(m[x], [x, y])
            assert m[x, y] < others.mean(), (cats[x], cats[y], m[x, y], others.mean())
    # and the statistic is not trivially small everywhere: far classes are far
    assert m[cats.index("bottle"), cats.index("bed")] > 2 * m[cats.index("table"),
                                                             cats.index("desk")]


# ---------------------------------------------------------------------------- splits

def test_split_contents(tiny, tiny_splits):
    for split, ts in tiny_splits.items():
        n = tiny.per_class(split) * 16
        assert len(ts) == n
        assert ts.points.shape == (n, 256, 6) and ts.points.dtype == np.float32
        assert ts.images.shape == (n, 2, 32, 32, 3) and ts.images.dtype == np.uint8
        assert ts.class_names == list(CATEGORIES)
        assert sorted(set(ts.labels.tolist())) == list(range(16))  # every category generated
        assert np.linalg.norm(ts.points[..., :3], axis=-1).max() <= 1 + 1e-6
        assert all(len(c) == 3 for c in ts.captions)
        assert ts.info["synth_key"] == tiny.key() and ts.info["split"] == split
        json.dumps(ts.info)  # the manifest must be able to hold it
    assert np.all(tiny_splits["train"].points[..., 3:] >= 0)


def test_determinism(tiny, tiny_splits):
    again = generate_split(tiny, "train")
    np.testing.assert_array_equal(again.points, tiny_splits["train"].points)
    np.testing.assert_array_equal(again.images, tiny_splits["train"].images)
    assert again.captions == tiny_splits["train"].captions
    other = generate_split(SynthConfig(**{**tiny.__dict__, "seed": 4}), "train")
    assert not np.allclose(other.points, tiny_splits["train"].points)
    assert other.captions != tiny_splits["train"].captions


def test_each_instance_reproducible_on_its_own(tiny, tiny_splits):
    ts = tiny_splits["train"]
    j = ts.names.index("synth-train-vase-0001")
    pts, _ = generate_shape("vase", instance_rng(tiny.seed, "train", "vase", 1), tiny.num_points)
    np.testing.assert_array_equal(pts, ts.points[j])
    # a config with fewer categories yields the very same vase
    sub = generate_split(SynthConfig(**{**tiny.__dict__, "categories": ("vase", "cup")}), "train")
    np.testing.assert_array_equal(sub.points[sub.names.index("synth-train-vase-0001")],
                                  ts.points[j])
    assert sub.labels[sub.names.index("synth-train-vase-0001")] == 0


def test_splits_disjoint(tiny_splits):
    names = [set(ts.names) for ts in tiny_splits.values()]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    tr, te = tiny_splits["train"].points, tiny_splits["test"].points
    # no test cloud equals (or nearly equals) any training cloud
    for i in range(len(te)):
        d = np.abs(tr[:, :, :3] - te[i, :, :3]).mean(axis=(1, 2))
        assert d.min() > 1e-3
    te_img, tr_img = tiny_splits["test"].images, tiny_splits["train"].images
    for i in range(len(te_img)):
        assert not any(np.array_equal(te_img[i], t) for t in tr_img)


# ---------------------------------------------------------------------------- scans

def test_scan_split_is_grey_and_partial(tiny_splits):
    scan = tiny_splits["scan"]
    assert np.all(scan.points[..., 3:] == np.float32(0.4))
    assert np.linalg.norm(scan.points[..., :3], axis=-1).max() <= 1 + 1e-6
    # the images still come from the clean, coloured cloud
    assert scan.images.reshape(len(scan), -1, 3).std(axis=1).max() > 10


def test_make_scan_removes_the_far_side():
    # a full sphere renormalizes to norms ~1 everywhere; a one-view cap does not
    rng = np.random.default_rng(0)
    sphere = normalize_cloud(sample_parts([ellipsoid("s", (0, 0, 0), (1, 1, 1), (1, 1, 1))],
                                          4096, rng))
    full_norms = np.linalg.norm(sphere[:, :3], axis=1)
    assert full_norms.std() < 0.01
    scan, info = make_scan(sphere, rng, 1024, noise=0.0, clutter=0.0, return_info=True)
    assert scan.shape == (1024, 6)
    assert 0.2 < info["visible_fraction"] < 0.6
    assert np.linalg.norm(scan[:, :3], axis=1).std() > 0.1
    # one side is missing: some direction has (almost) no points beyond the centroid's plane
    # in the original frame (no rotation, no clutter)
    scan_nr = make_scan(sphere, np.random.default_rng(1), 1024, noise=0.0, clutter=0.0,
                        rotate=False)
    dirs = np.random.default_rng(2).normal(size=(500, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    proj = scan_nr[:, :3] @ dirs.T  # how far the cloud extends along each direction
    assert proj.min(axis=0).max() > -0.4  # along the view axis it barely reaches back
    assert (sphere[:, :3] @ dirs.T).min(axis=0).max() < -0.95


def test_make_scan_on_categories():
    for cat in ("chair", "cup", "cabinet", "plant"):
        rng = instance_rng(0, "scan", cat, 0)
        clean, _ = generate_shape(cat, rng, 4096)
        scan, info = make_scan(clean, rng, 2048, return_info=True)
        assert scan.shape == (2048, 6) and scan.dtype == np.float32
        assert np.all(scan[:, 3:] == np.float32(0.4))
        assert 0.05 < info["visible_fraction"] < 0.7, (cat, info)
        assert info["clutter_points"] == round(0.15 * 2048)
        assert abs(np.linalg.norm(scan[:, :3], axis=1).max() - 1) < 1e-3
    with pytest.raises(ValueError, match="num_points"):
        make_scan(clean, rng, 20000)


# ---------------------------------------------------------------------------- renders

def test_render_views():
    pts, _ = generate_shape("sofa", instance_rng(0, "train", "sofa", 0), 4096)
    imgs = render_views(pts, num_views=3, image_size=64)
    assert imgs.shape == (3, 64, 64, 3) and imgs.dtype == np.uint8
    fg = (imgs != 255).any(-1)
    assert 0.05 < fg.mean() < 0.9  # an object, not a blank or a full frame
    assert imgs[fg].std() > 5  # shading varies
    np.testing.assert_array_equal(imgs, render_views(pts, num_views=3, image_size=64))
    assert not np.array_equal(imgs[0], imgs[1])  # different azimuths
    dark = render_views(pts, num_views=1, image_size=48, background=0.0, azimuths=[90.0])
    assert dark.shape == (1, 48, 48, 3) and (dark == 0).all(-1).mean() > 0.1


def test_render_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(P, 6\)"):
        render_views(np.zeros((10, 4)))
    bad = np.zeros((10, 6))
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        render_views(bad)
    with pytest.raises(ValueError, match="image_size"):
        render_views(np.zeros((10, 6)), image_size=2)


def test_visible_mask_half_of_a_closed_surface():
    rng = np.random.default_rng(0)
    sphere = normalize_cloud(sample_parts([ellipsoid("s", (0, 0, 0), (1, 1, 1), (1, 1, 1))],
                                          4096, rng))
    m = visible_mask(sphere, azimuth=0.0, elevation=0.0)  # camera at -y
    assert 0.2 < m.mean() < 0.6
    assert (sphere[m, 1] > 0.3).mean() < 0.02  # (almost) only the near (-y) side is visible
    assert (sphere[m, 1] < 0).mean() > 0.95


# ---------------------------------------------------------------------------- text

def test_captions_content(tiny_splits):
    ts = tiny_splits["train"]
    attrs = ts.info["attributes"]
    for i in range(len(ts)):
        cat = ts.class_names[ts.labels[i]]
        caps = ts.captions[i]
        assert len(set(caps)) == len(caps) == 3
        for c in caps:
            assert display_name(cat) in c, (cat, c)
            assert attrs[i]["color"] in c, (attrs[i], c)
            assert "  " not in c and " a o" not in c and " a a" not in c
    every = [c for caps in ts.captions for c in caps]
    assert "flower pot" in " ".join(every)
    assert any("wooden" in c for c in every)


def test_make_captions_uses_attributes():
    attrs = {"color": "red", "material": "wood", "parts": ["four legs", "armrests"],
             "size": "small", "colors": ["red"]}
    caps = make_captions("chair", attrs, n=6, rng=np.random.default_rng(0))
    assert len(set(caps)) == 6
    text = " ".join(caps)
    assert "four legs" in text and "wooden" in text and "small" in text
    assert make_captions("chair", attrs, n=6, rng=np.random.default_rng(0)) == caps


def test_prompts():
    assert len(PROMPT_TEMPLATES) >= 16
    ps = class_prompts("flower_pot")
    assert len(ps) == len(PROMPT_TEMPLATES) and all("flower pot" in p for p in ps)
    assert "a point cloud model of a flower pot." in ps
    assert "a 3D model of an airplane." in class_prompts("airplane")
    assert display_name("night_stand") == "night stand"


# ---------------------------------------------------------------------------- world

def test_build_world_writes_and_reuses(tmp_path, tiny, monkeypatch):
    cfg = SynthConfig(**{**tiny.__dict__, "categories": ("cup", "vase", "table")})
    paths = build_world(cfg, tmp_path / "w")
    assert set(paths) == {"train", "test", "scan"}
    ts = load_triplets(paths["scan"])
    assert len(ts) == 3 and ts.info["synth_key"] == cfg.key()
    assert np.all(np.asarray(ts.points[..., 3:]) == np.float32(0.4))

    def boom(*a, **k):
        raise AssertionError("regenerated a cached split")

    monkeypatch.setattr(synth_mod, "generate_split", boom)
    monkeypatch.setattr("mmmixlab.run_pool.available_cores", lambda: 1)  # boom in this process
    assert build_world(cfg, tmp_path / "w") == paths  # cache hit: nothing regenerated
    cfg2 = SynthConfig(**{**cfg.__dict__, "seed": cfg.seed + 1})
    with pytest.raises(AssertionError, match="regenerated"):
        build_world(cfg2, tmp_path / "w")  # a different config is not served from the cache


def test_splits_generated_side_by_side_equal_one_after_another(tmp_path, tiny, monkeypatch):
    """A cold world's splits are generated in parallel processes; each split comes from its
    own seed, so the files equal a one-process build's byte for byte."""
    from mmmixlab import run_pool

    if run_pool.available_cores() < 2:
        pytest.skip("one core: the splits are generated in this process")
    parallel = build_world(tiny, tmp_path / "par")
    monkeypatch.setattr(run_pool, "available_cores", lambda: 1)
    serial = build_world(tiny, tmp_path / "ser")
    assert list(parallel) == list(serial) == ["train", "test", "scan"]
    for split in serial:
        files = sorted(p.relative_to(serial[split]) for p in serial[split].rglob("*")
                       if p.is_file())
        assert files and files == sorted(p.relative_to(parallel[split])
                                         for p in parallel[split].rglob("*") if p.is_file())
        for f in files:
            a, b = (serial[split] / f).read_bytes(), (parallel[split] / f).read_bytes()
            if f.name == "manifest.json":  # records how long it took
                a, b = json.loads(a), json.loads(b)
                assert a["info"].pop("seconds") >= 0 and b["info"].pop("seconds") >= 0
            assert a == b, (split, f)
