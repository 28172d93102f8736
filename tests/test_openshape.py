"""OpenShape per-shape .npy dicts: reading, text entries and masking, augmentations, Dataset."""

import math

import numpy as np
import pytest
import torch

from mmmixlab.data.openshape import (
    OpenShapeTriplets,
    default_collate,
    drop_rgb,
    normalize_unit_sphere,
    read_openshape_npy,
    rotate_z,
    subsample,
    swap_yz,
)

P, V, D = 200, 12, 16


def openshape_dict(rng, uid="abc", n_text=1, blip=True, msft=True, n_retrieval=2,
                   feat_shape=(1, D)):
    """A dict with every key of OpenShape's released files (README), small sizes."""
    def feat():
        return rng.normal(size=feat_shape).astype(np.float32)

    return {
        "dataset": "Objaverse", "group": "000-001", "id": uid,
        "xyz": rng.uniform(-1, 1, (P, 3)).astype(np.float32),
        "rgb": rng.uniform(0, 1, (P, 3)).astype(np.float32),
        "image_feat": rng.normal(size=(V, D)).astype(np.float32),
        "thumbnail_feat": feat(),
        "text": [f"name {i}" for i in range(n_text)],
        "text_feat": [{"original": feat(), "prompt_avg": feat()} for _ in range(n_text)],
        "blip_caption": "a blip caption" if blip else "",
        "blip_caption_feat": {"original": feat(), "prompt_avg": feat()},
        "msft_caption": "a msft caption" if msft else "",
        "msft_caption_feat": {"original": feat(), "prompt_avg": feat()},
        "retrieval_text": [f"retrieved {i}" for i in range(n_retrieval)],
        "retrieval_text_feat": [{"original": feat()} for _ in range(n_retrieval)],
    }


def save(path, d):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, d, allow_pickle=True)
    return path


@pytest.fixture
def shapes(tmp_path):
    rng = np.random.default_rng(0)
    dicts = [openshape_dict(rng, "full"),
             openshape_dict(rng, "notext", n_text=0, blip=False, msft=False, n_retrieval=0),
             openshape_dict(rng, "flat", feat_shape=(D,))]
    paths = [save(tmp_path / "data" / f"{i}.npy", d) for i, d in enumerate(dicts)]
    return paths, dicts


def test_read_full_record(shapes):
    paths, dicts = shapes
    rec = read_openshape_npy(paths[0])
    d = dicts[0]
    assert rec.name == "full" and rec.dataset == "Objaverse" and rec.group == "000-001"
    np.testing.assert_array_equal(rec.points, np.concatenate([d["xyz"], d["rgb"]], 1))
    assert rec.image_feat.shape == (V, D) and rec.thumbnail_feat.shape == (D,)
    assert rec.text_sources == ["text", "blip_caption", "msft_caption", "retrieval_text",
                                "retrieval_text"]
    assert rec.texts == ["name 0", "a blip caption", "a msft caption", "retrieved 0",
                         "retrieved 1"]
    np.testing.assert_array_equal(rec.text_feats[0], d["text_feat"][0]["prompt_avg"][0])
    np.testing.assert_array_equal(rec.text_feats[3], d["retrieval_text_feat"][0]["original"][0])
    orig = read_openshape_npy(paths[0], text_version="original")
    np.testing.assert_array_equal(orig.text_feats[1], d["blip_caption_feat"]["original"][0])
    assert read_openshape_npy(paths[2]).text_feats.shape == (5, D)  # (D,) features too


def test_shape_without_text_is_masked(shapes):
    paths, _ = shapes
    rec = read_openshape_npy(paths[1])
    assert rec.text_feats.shape == (0, D) and not rec.has_text and rec.texts == []
    ds = OpenShapeTriplets([paths[1]], num_points=64)
    item = ds[0]
    assert item["has_text"].item() is False
    assert torch.count_nonzero(item["text_feat"]) == 0 and item["text_feat"].shape == (D,)


def test_dataset_items_and_batches(shapes):
    paths, dicts = shapes
    ds = OpenShapeTriplets(paths[0].parent, num_points=64, seed=3)  # a folder of files
    assert len(ds) == 3
    item = ds[0]
    assert item["points"].shape == (64, 6) and item["points"].dtype == torch.float32
    assert item["image_feat"].shape == (D,) and item["has_text"].item() is True
    assert torch.isfinite(item["points"]).all()
    # the image feature is one of the 12 views; the text feature one of the 5 entries
    views = torch.from_numpy(dicts[0]["image_feat"])
    assert (views == item["image_feat"]).all(1).any()
    # same (seed, epoch, index) -> same item, whatever the worker; a new epoch -> new draws
    again = OpenShapeTriplets(paths[0].parent, num_points=64, seed=3)[0]
    assert torch.equal(item["points"], again["points"])
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=default_collate)
    batch = next(iter(loader))
    assert batch["points"].shape == (3, 64, 6) and batch["has_text"].tolist() == [True, False,
                                                                                 True]
    assert batch["name"] == ["full", "notext", "flat"]


def test_random_view_and_text_per_step(shapes):
    paths, dicts = shapes
    ds = OpenShapeTriplets([paths[0]], num_points=32, seed=0)
    views = torch.from_numpy(dicts[0]["image_feat"])
    rec = read_openshape_npy(paths[0])
    seen_views, seen_texts = set(), set()
    for epoch in range(60):
        ds.set_epoch(epoch)
        it = ds[0]
        seen_views.add(int((views == it["image_feat"]).all(1).nonzero()[0]))
        seen_texts.add(int((torch.from_numpy(rec.text_feats) == it["text_feat"]).all(1)
                           .nonzero()[0]))
    assert len(seen_views) >= 8 and seen_texts == set(range(5))


def test_eval_transform_is_deterministic(shapes):
    paths, dicts = shapes
    ds = OpenShapeTriplets([paths[0]], num_points=P, augment=False)
    it = ds[0]
    xyz = normalize_unit_sphere(swap_yz(dicts[0]["xyz"]))
    np.testing.assert_allclose(it["points"][:, :3].numpy(), xyz, atol=1e-6)
    np.testing.assert_array_equal(it["points"][:, 3:].numpy(), dicts[0]["rgb"])
    assert torch.equal(it["image_feat"], torch.from_numpy(dicts[0]["image_feat"][0]))


def test_augmentations():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(100, 3)).astype(np.float32) * 1e6 + 3e6
    np.testing.assert_array_equal(swap_yz(xyz), xyz[:, [0, 2, 1]])
    n = normalize_unit_sphere(xyz)
    assert np.isclose(np.linalg.norm(n, axis=1).max(), 1.0) and np.abs(n.mean(0)).max() < 1e-5
    assert not np.isnan(normalize_unit_sphere(np.ones((5, 3)))).any()  # all points coincide
    r = rotate_z(n, math.pi / 3)
    np.testing.assert_allclose(r[:, 2], n[:, 2], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), np.linalg.norm(n, axis=1), atol=1e-5)
    assert not np.allclose(r[:, :2], n[:, :2])
    rgb = rng.uniform(0, 1, (100, 3)).astype(np.float32)
    drops = [np.all(drop_rgb(rgb, rng) == 0.4) for _ in range(400)]
    assert 0.4 < np.mean(drops) < 0.6
    assert not np.all(drop_rgb(rgb, rng, p=0.0) == 0.4)
    idx = subsample(100, 30, rng)
    assert len(set(idx.tolist())) == 30
    assert sorted(set(subsample(10, 25, rng).tolist())) == list(range(10))


def test_rgb_dropout_in_dataset(shapes):
    paths, _ = shapes
    ds = OpenShapeTriplets([paths[0]], num_points=32, rgb_drop_prob=1.0)
    assert torch.all(ds[0]["points"][:, 3:] == 0.4)
    ds = OpenShapeTriplets([paths[0]], num_points=32, rgb_drop_prob=0.0)
    assert not torch.all(ds[0]["points"][:, 3:] == 0.4)


@pytest.mark.parametrize("mutate, pattern", [
    (lambda d: d.pop("xyz"), r"missing key\(s\) \['xyz'\]"),
    (lambda d: d.update(rgb=np.zeros((P - 1, 3), np.float32)), r"'rgb' has shape \(199, 3\)"),
    (lambda d: d["xyz"].__setitem__((3, 1), np.nan), r"'xyz' holds NaN"),
    (lambda d: d.update(rgb=np.full((P, 3), 200.0, np.float32)), r"'rgb' must lie in \[0, 1\]"),
    (lambda d: d.update(image_feat=np.zeros((V, D + 1), np.float32)),
     r"thumbnail_feat'?: feature of width 16, expected 17"),
    (lambda d: d["text_feat"][0].pop("prompt_avg"), r"text_feat\[0\] lacks 'prompt_avg'"),
])
def test_bad_dicts_name_file_and_problem(tmp_path, mutate, pattern):
    d = openshape_dict(np.random.default_rng(1))
    mutate(d)
    path = save(tmp_path / "bad_shape.npy", d)
    with pytest.raises(ValueError, match=r"bad_shape\.npy.*" + pattern):
        read_openshape_npy(path)


def test_corrupt_files(tmp_path):
    path = save(tmp_path / "trunc.npy", openshape_dict(np.random.default_rng(1)))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"trunc\.npy: corrupt or truncated"):
        read_openshape_npy(path)
    np.save(tmp_path / "plain.npy", np.zeros((P, 3), np.float32))
    with pytest.raises(ValueError, match=r"plain\.npy: expected a pickled dict"):
        read_openshape_npy(tmp_path / "plain.npy")
    with pytest.raises(FileNotFoundError, match=r"gone\.npy"):
        read_openshape_npy(tmp_path / "gone.npy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: folder holds no \.npy"):
        OpenShapeTriplets(tmp_path / "empty")
