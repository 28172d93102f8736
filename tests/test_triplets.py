"""The on-disk triplet format: round trip, atomic overwrite rules, and clear corruption errors."""

import json
import os

import numpy as np
import pytest

from mmmixlab.data.triplets import TripletSet, load_triplets, write_triplets

S, P, K, H = 5, 32, 2, 8


def make_set(seed=0, labels=True):
    rng = np.random.default_rng(seed)
    pts = np.concatenate([rng.uniform(-1, 1, (S, P, 3)), rng.uniform(0, 1, (S, P, 3))], axis=2)
    return TripletSet(
        points=pts.astype(np.float32),
        images=rng.integers(0, 256, (S, K, H, H, 3), dtype=np.uint8),
        captions=[[f"a thing {i}", f"another caption {i}"] for i in range(S)],
        names=[f"shape-{i}" for i in range(S)],
        labels=np.array([0, 1, 2, 1, 0]) if labels else None,
        class_names=["chair", "table", "flower_pot"] if labels else None,
        info={"source": "unit-test", "seed": seed},
    )


@pytest.fixture
def written(tmp_path):
    ts = make_set()
    root = write_triplets(ts, tmp_path / "ds")
    return ts, root


def test_round_trip(written):
    ts, root = written
    assert sorted(os.listdir(root)) == ["images.npy", "manifest.json", "meta.jsonl", "points.npy"]
    man = json.loads((root / "manifest.json").read_text())
    assert man["format"] == "mmmixlab-triplets" and man["version"] == 1
    dims = (man["num_shapes"], man["points_per_shape"], man["views"], man["image_size"])
    assert dims == (S, P, K, H)
    back = load_triplets(root)
    assert isinstance(back.points, np.memmap)
    np.testing.assert_array_equal(back.points, ts.points)
    np.testing.assert_array_equal(back.images, ts.images)
    assert back.captions == ts.captions and back.names == ts.names
    np.testing.assert_array_equal(back.labels, ts.labels)
    assert back.labels.dtype == np.int64
    assert back.class_names == ts.class_names and back.info == ts.info
    item = back[-1]
    assert item["name"] == "shape-4" and item["label"] == 0 and item["points"].shape == (P, 6)
    assert item["images"].shape == (K, H, H, 3)
    meta = [json.loads(x) for x in (root / "meta.jsonl").read_text().splitlines()]
    assert meta[2]["category"] == "flower_pot" and meta[2]["label"] == 2
    # no mmap: plain arrays, same content
    plain = load_triplets(root, mmap=False)
    assert not isinstance(plain.points, np.memmap)
    np.testing.assert_array_equal(plain.points, ts.points)


def test_round_trip_unlabelled_and_empty(tmp_path):
    ts = make_set(labels=False)
    back = load_triplets(write_triplets(ts, tmp_path / "u"))
    assert back.labels is None and back.class_names is None and back[0]["label"] is None
    empty = TripletSet(points=np.zeros((0, P, 6), np.float32),
                       images=np.zeros((0, K, H, H, 3), np.uint8), captions=[], names=[])
    back = load_triplets(write_triplets(empty, tmp_path / "e"))
    assert len(back) == 0 and back.points.shape == (0, P, 6)


def test_overwrite_rules(tmp_path, written):
    _, root = written
    # an existing dataset (it has a manifest) is replaced atomically
    ts2 = make_set(seed=1)
    write_triplets(ts2, root)
    np.testing.assert_array_equal(load_triplets(root).points, ts2.points)
    leftovers = [p.name for p in root.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    # an unrelated, non-empty folder is never touched
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.txt").write_text("do not delete")
    with pytest.raises(FileExistsError, match="precious"):
        write_triplets(ts2, other)
    assert (other / "thesis.txt").read_text() == "do not delete"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_overwrite_while_memory_mapped(written):
    _, root = written
    old = load_triplets(root)
    write_triplets(old, root)  # rewrite from its own memory map
    np.testing.assert_array_equal(load_triplets(root).points, make_set().points)


def test_missing_folder_and_manifest(tmp_path, written):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_triplets(tmp_path / "nowhere")
    _, root = written
    (root / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_triplets(root)


def test_wrong_format_tag(written):
    _, root = written
    man = json.loads((root / "manifest.json").read_text())
    man["format"] = "something-else"
    (root / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="manifest.json.*format"):
        load_triplets(root)


@pytest.mark.parametrize("mmap", [True, False])
def test_truncated_points(written, mmap):
    _, root = written
    f = root / "points.npy"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="points.npy"):
        load_triplets(root, mmap=mmap)


def test_garbage_npy(written):
    _, root = written
    (root / "images.npy").write_bytes(b"this is not a numpy file at all")
    with pytest.raises(ValueError, match="images.npy"):
        load_triplets(root)


def test_shape_mismatch_with_manifest(written):
    _, root = written
    man = json.loads((root / "manifest.json").read_text())
    man["points_per_shape"] = P + 1
    (root / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match=rf"points.npy.*points_per_shape={P + 1}"):
        load_triplets(root)


def test_meta_line_missing(written):
    _, root = written
    lines = (root / "meta.jsonl").read_text().splitlines()
    (root / "meta.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match=rf"meta.jsonl.*{S - 1} lines.*num_shapes={S}"):
        load_triplets(root)


def test_label_out_of_range(written):
    _, root = written
    lines = (root / "meta.jsonl").read_text().splitlines()
    rec = json.loads(lines[3])
    rec["label"], rec["category"] = 7, None
    lines[3] = json.dumps(rec)
    (root / "meta.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"meta.jsonl: line 4: label 7 is out of range"):
        load_triplets(root)


def test_nan_point_on_disk(written):
    ts, root = written
    pts = np.array(ts.points)
    pts[2, 5, 1] = np.nan
    np.save(root / "points.npy", pts)
    with pytest.raises(ValueError, match=r"points.npy: NaN or inf values in shapes \[2\]"):
        load_triplets(root)


def test_in_memory_validation():
    ts = make_set()
    with pytest.raises(ValueError, match="points has 5 shapes but captions has 4"):
        TripletSet(ts.points, ts.images, ts.captions[:4], ts.names)
    with pytest.raises(ValueError, match="images has 3"):
        TripletSet(ts.points, ts.images[:3], ts.captions, ts.names)
    with pytest.raises(ValueError, match=r"shape \(S, P, 6\)"):
        TripletSet(ts.points[..., :3], ts.images, ts.captions, ts.names)
    with pytest.raises(ValueError, match="uint8"):
        TripletSet(ts.points, ts.images.astype(np.float32), ts.captions, ts.names)
    bad = ts.points.copy()
    bad[1, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        TripletSet(bad, ts.images, ts.captions, ts.names)
    with pytest.raises(ValueError, match=r"labels\[2\] = 3 is out of range"):
        TripletSet(ts.points, ts.images, ts.captions, ts.names, labels=np.array([0, 1, 3, 0, 0]),
                   class_names=["a", "b", "c"])
    # float64 points are converted, not rejected
    ok = TripletSet(ts.points.astype(np.float64), ts.images, ts.captions, ts.names)
    assert ok.points.dtype == np.float32
    with pytest.raises(IndexError):
        ts[S]


def test_select(written):
    _, root = written
    sub = load_triplets(root).select([4, 1])
    assert sub.names == ["shape-4", "shape-1"] and sub.labels.tolist() == [0, 1]
    assert not isinstance(sub.points, np.memmap)
