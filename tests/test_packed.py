"""The packed store: one streaming pass, lazy reads, same items as the per-file dataset,
resumable, atomic, and clear about what it skipped or truncated."""

import json
import pickle

import numpy as np
import pytest
import torch

from mmmixlab.data import packed
from mmmixlab.data.openshape import OpenShapeTriplets
from mmmixlab.data.packed import PackedTriplets, pack_triplets

P, V, D = 100, 12, 16


def shape_dict(rng, uid, n_text):
    def feat():
        return rng.normal(size=(1, D)).astype(np.float32)

    return {"id": uid, "dataset": "ShapeNet", "group": "g",
            "xyz": rng.uniform(-1, 1, (P, 3)).astype(np.float32),
            "rgb": rng.uniform(0, 1, (P, 3)).astype(np.float32),
            "image_feat": rng.normal(size=(V, D)).astype(np.float32),
            "thumbnail_feat": feat(),
            "text": [f"t{i}" for i in range(n_text)],
            "text_feat": [{"original": feat(), "prompt_avg": feat()} for _ in range(n_text)],
            "blip_caption": "", "msft_caption": "", "retrieval_text": [],
            "retrieval_text_feat": []}


@pytest.fixture
def src(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "shapes"
    folder.mkdir()
    counts = [1, 0, 3, 2, 11, 1, 0, 4, 2, 1]  # shapes without text, and one over max_texts
    for i, n in enumerate(counts):
        np.save(folder / f"{i:03d}.npy", shape_dict(rng, f"uid{i}", n), allow_pickle=True)
    return folder, counts


def test_pack_round_trip(src, tmp_path):
    folder, counts = src
    with pytest.warns(UserWarning, match="3 text entries beyond max_texts=8"):
        man = pack_triplets(folder, tmp_path / "store", points_dtype="float32",
                            feat_dtype="float32", progress=False)
    assert man["num_shapes"] == 10 and man["views"] == V and man["dim"] == D
    assert man["text_entries_truncated"] == 3 and man["shapes_without_text"] == 2
    store = tmp_path / "store"
    assert sorted(p.name for p in store.iterdir()) == [
        "image_feat.npy", "index.jsonl", "manifest.json", "points.npy", "text_feat.npy",
        "text_mask.npy", "thumbnail_feat.npy", "thumbnail_mask.npy"]
    assert np.load(store / "points.npy", mmap_mode="r").shape == (10, P, 6)
    assert np.load(store / "text_mask.npy").sum(1).tolist() == [min(c, 8) for c in counts]
    ds = PackedTriplets(store, num_points=40, seed=7)
    ref = OpenShapeTriplets(folder, num_points=40, seed=7)
    assert len(ds) == len(ref) == 10
    for i in (0, 1, 2, 9):  # identical items, augmentation included
        a, b = ds[i], ref[i]
        for k in ("points", "image_feat", "text_feat", "has_text"):
            assert torch.equal(a[k], b[k]), (i, k)
        assert a["name"] == b["name"] == f"uid{i}"
    # shape 4 had 11 text entries: its text is drawn from the 8 packed ones
    kept = torch.from_numpy(ds.read(4)["text_feats"])
    assert kept.shape == (8, D) and (kept == ds[4]["text_feat"]).all(1).any()
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["points"], ref[0]["points"])
    assert ds.entry(4)["num_texts"] == 11
    raw = ds.read_batch([5, 2, 5])
    np.testing.assert_array_equal(raw["points"][0], raw["points"][2])
    np.testing.assert_array_equal(raw["points"][1], ds.read(2)["points"])


def test_float16_store_and_lazy_pickling(src, tmp_path):
    folder, _ = src
    pack_triplets(folder, tmp_path / "s16", progress=False, max_texts=16)
    ds = PackedTriplets(tmp_path / "s16", augment=False)
    assert np.load(tmp_path / "s16" / "points.npy", mmap_mode="r").dtype == np.float16
    ref = np.load(folder / "003.npy", allow_pickle=True).item()
    np.testing.assert_allclose(ds.read(3)["points"][:, :3], ref["xyz"], atol=1e-3)
    blob = pickle.dumps(ds)
    assert len(blob) < 5000  # the memory maps are not pickled to DataLoader workers
    clone = pickle.loads(blob)
    assert torch.equal(clone[3]["points"], ds[3]["points"])
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    batch = next(iter(loader))
    assert batch["points"].shape == (4, P, 6) and batch["has_text"].tolist() == [True, False,
                                                                                 True, True]


def test_bad_files_are_skipped_with_reasons(src, tmp_path):
    folder, _ = src
    raw = (folder / "002.npy").read_bytes()
    (folder / "002.npy").write_bytes(raw[: len(raw) // 2])
    rng = np.random.default_rng(1)
    other = shape_dict(rng, "few", 1)
    other["xyz"], other["rgb"] = other["xyz"][:50], other["rgb"][:50]
    np.save(folder / "005.npy", other, allow_pickle=True)
    man = pack_triplets(folder, tmp_path / "store", progress=False, max_texts=16)
    assert man["num_shapes"] == 8 and man["num_files"] == 10
    reasons = {s["path"].split("/")[-1]: s["reason"] for s in man["skipped"]}
    assert "corrupt or truncated" in reasons["002.npy"]
    assert "50 points" in reasons["005.npy"] and "mixed point counts" in reasons["005.npy"]
    # the arrays were cut to the packed shapes
    assert np.load(tmp_path / "store" / "points.npy", mmap_mode="r").shape[0] == 8
    assert PackedTriplets(tmp_path / "store").names == [f"uid{i}" for i in (0, 1, 3, 4, 6, 7,
                                                                             8, 9)]
    with pytest.raises(ValueError, match=r"002\.npy: corrupt or truncated"):
        pack_triplets(folder, tmp_path / "strict", progress=False, on_error="raise")
    # subsampling makes mixed counts packable
    man = pack_triplets(folder, tmp_path / "sub", num_points=40, progress=False, max_texts=16)
    assert man["num_shapes"] == 9 and man["points_per_shape"] == 40


def test_float16_range_is_checked(tmp_path):
    rng = np.random.default_rng(2)
    d = shape_dict(rng, "huge", 1)
    d["xyz"] = d["xyz"] * 1e6
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "a.npy", shape_dict(rng, "ok", 1), allow_pickle=True)
    np.save(tmp_path / "in" / "b.npy", d, allow_pickle=True)
    man = pack_triplets(tmp_path / "in", tmp_path / "out", progress=False)
    assert man["num_shapes"] == 1 and "float16 range" in man["skipped"][0]["reason"]
    man = pack_triplets(tmp_path / "in", tmp_path / "out32", points_dtype="float32",
                        progress=False)
    assert man["num_shapes"] == 2


def test_resume_after_interruption(src, tmp_path, monkeypatch):
    folder, _ = src
    clean = pack_triplets(folder, tmp_path / "clean", progress=False, max_texts=16)
    real = packed._read_one
    calls = []

    def flaky(path, index, *args):
        calls.append(index)
        if index == 7:
            raise KeyboardInterrupt  # the user stops the pack
        return real(path, index, *args)

    monkeypatch.setattr(packed, "_read_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        pack_triplets(folder, tmp_path / "store", progress=False, max_texts=16,
                      checkpoint_every=3)
    assert not (tmp_path / "store").exists()  # never a half-written store
    progress = json.loads((tmp_path / ".store.partial" / "progress.json").read_text())
    assert progress["done"] == 6
    monkeypatch.setattr(packed, "_read_one", real)
    calls.clear()
    monkeypatch.setattr(packed, "_read_one", lambda p, i, *a: (calls.append(i), real(p, i, *a))[1])
    man = pack_triplets(folder, tmp_path / "store", progress=False, max_texts=16,
                        checkpoint_every=3)
    assert calls == [6, 7, 8, 9]  # resumed from the checkpoint
    assert man["num_shapes"] == clean["num_shapes"]
    for name in ("points", "image_feat", "text_feat", "text_mask", "thumbnail_feat"):
        np.testing.assert_array_equal(np.load(tmp_path / "store" / f"{name}.npy"),
                                      np.load(tmp_path / "clean" / f"{name}.npy"))
    assert (tmp_path / "store" / "index.jsonl").read_text() == \
        (tmp_path / "clean" / "index.jsonl").read_text()
    assert not (tmp_path / ".store.partial").exists()


def test_parallel_pack_matches_inline(src, tmp_path):
    folder, _ = src
    pack_triplets(folder, tmp_path / "a", progress=False, max_texts=16)
    pack_triplets(folder, tmp_path / "b", progress=False, max_texts=16, workers=2)
    for name in ("points", "image_feat", "text_feat"):
        np.testing.assert_array_equal(np.load(tmp_path / "a" / f"{name}.npy"),
                                      np.load(tmp_path / "b" / f"{name}.npy"))


def test_store_errors(src, tmp_path):
    folder, _ = src
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a packed store"):
        pack_triplets(folder, tmp_path / "busy", progress=False)
    pack_triplets(folder, tmp_path / "store", progress=False, max_texts=16)
    with pytest.raises(FileExistsError, match="already holds a packed store"):
        pack_triplets(folder, tmp_path / "store", progress=False)
    pts = tmp_path / "store" / "points.npy"
    raw = pts.read_bytes()
    pts.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"points\.npy"):
        PackedTriplets(tmp_path / "store")
    (tmp_path / "store" / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"manifest\.json is missing"):
        PackedTriplets(tmp_path / "store")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: folder holds no \.npy"):
        pack_triplets(tmp_path / "empty", tmp_path / "x", progress=False)


def test_dataloader_workers_give_the_same_batches(src, tmp_path):
    folder, _ = src
    pack_triplets(folder, tmp_path / "store", progress=False, max_texts=16)
    ds = PackedTriplets(tmp_path / "store", num_points=50, seed=1)
    runs = [[b["points"] for b in torch.utils.data.DataLoader(ds, batch_size=4, num_workers=w)]
            for w in (0, 2)]
    assert len(runs[0]) == 3 and all(torch.equal(a, b) for a, b in zip(*runs))
