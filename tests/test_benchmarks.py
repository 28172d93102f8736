"""Evaluation-set readers on tiny files written in each release's exact on-disk format.

Formats: ModelNet40 HDF5 (PointNet), ModelNet40 normal-resampled txt (PointNet++), OpenShape's
ModelNet40 test file, ScanObjectNN HDF5 (OBJ-ONLY / OBJ-BG / PB-T50-RS, train and test),
OpenShape's ScanObjectNN file, Objaverse-LVIS (OpenShape's lvis.json + per-shape npy dicts).
Bad input: each case asserts the error names the file and the problem.
"""

import json

import h5py
import numpy as np
import pytest

from mmmixlab.data.benchmarks import (
    MODELNET40_CLASSES,
    SCANOBJECTNN_CLASSES,
    ULIP_TEMPLATES,
    LazyPoints,
    load_benchmark,
)

P = 64


def _cloud(rng, n, p=P, scale=3.0):
    return (rng.normal(size=(n, p, 3)) * scale + 5.0).astype(np.float32)


def write_h5(path, data, label, keys=("data", "label")):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset(keys[0], data=data)
        f.create_dataset(keys[1], data=label)
        f.create_dataset("normal", data=np.zeros_like(data))


# ------------------------------------------------------------------------------ ModelNet40 HDF5

@pytest.fixture
def mn_h5(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "modelnet40_ply_hdf5_2048"
    shards = []
    for k, n in enumerate((5, 3)):
        data = _cloud(rng, n)
        label = rng.integers(0, 40, (n, 1)).astype(np.uint8)  # PointNet stores (N, 1) uint8
        write_h5(d / f"ply_data_test{k}.h5", data, label)
        shards.append((data, label[:, 0]))
    # list lines are relative to PointNet's repository, as in the release
    (d / "test_files.txt").write_text("".join(
        f"data/modelnet40_ply_hdf5_2048/ply_data_test{k}.h5\n" for k in range(2)))
    (d / "shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")
    return d, shards


def test_modelnet40_hdf5(mn_h5):
    d, shards = mn_h5
    ds = load_benchmark("modelnet40", d.parent)  # found one folder below root
    raw = np.concatenate([s[0] for s in shards])
    assert len(ds) == 8 and ds.points.shape == (8, P, 3) and ds.points.dtype == np.float32
    assert ds.labels.tolist() == np.concatenate([s[1] for s in shards]).tolist()
    assert ds.class_names == MODELNET40_CLASSES and ds.info["format"] == "hdf5"
    assert len(ds.prompt_templates) == 64 and ds.prompt_templates == ULIP_TEMPLATES
    np.testing.assert_allclose(np.linalg.norm(ds.points, axis=-1).max(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ds.points.mean(1), 0.0, atol=1e-5)
    plain = load_benchmark("modelnet40", d, swap_yz=False, normalize=False)
    np.testing.assert_array_equal(plain.points, raw)
    swapped = load_benchmark("modelnet40", d, normalize=False)
    np.testing.assert_array_equal(swapped.points, raw[..., [0, 2, 1]])
    item = ds[3]
    assert item["points"].shape == (P, 3) and item["label"] == ds.labels[3]
    assert ds.prompts()[15][0] == "a point cloud model of flower pot."
    assert ds.with_rgb(0.4).points.shape == (8, P, 6)


def test_modelnet40_hdf5_num_points(mn_h5):
    d, _ = mn_h5
    ds = load_benchmark("modelnet40", d, num_points=16)
    assert ds.points.shape == (8, 16, 3)


def test_modelnet40_hdf5_bad_inputs(mn_h5, tmp_path):
    d, shards = mn_h5
    # a class-name file that does not match the labels
    (d / "shape_names.txt").write_text("\n".join(MODELNET40_CLASSES[:5]) + "\n")
    assert max(s[1].max() for s in shards) >= 5
    with pytest.raises(ValueError, match=r"ply_data_test\d\.h5.*out of range.*shape_names"):
        load_benchmark("modelnet40", d)
    (d / "shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")
    # labels out of range
    write_h5(d / "ply_data_test1.h5", _cloud(np.random.default_rng(1), 2),
             np.array([[3], [45]], np.uint8))
    with pytest.raises(ValueError, match=r"ply_data_test1\.h5: labels span \[3, 45\]"):
        load_benchmark("modelnet40", d)
    # wrong keys
    write_h5(d / "ply_data_test1.h5", _cloud(np.random.default_rng(1), 2),
             np.zeros((2, 1), np.uint8), keys=("points", "label"))
    with pytest.raises(ValueError, match=r"ply_data_test1\.h5: missing key\(s\) \['data'\]"):
        load_benchmark("modelnet40", d)
    # mixed point counts between shards
    write_h5(d / "ply_data_test1.h5", _cloud(np.random.default_rng(1), 2, p=32),
             np.zeros((2, 1), np.uint8))
    with pytest.raises(ValueError, match=r"ply_data_test1\.h5: 32 points.*mixed point counts"):
        load_benchmark("modelnet40", d)
    # truncated file
    write_h5(d / "ply_data_test1.h5", _cloud(np.random.default_rng(1), 200),
             np.zeros((200, 1), np.uint8))
    raw = (d / "ply_data_test1.h5").read_bytes()
    (d / "ply_data_test1.h5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"ply_data_test1\.h5.*(truncated|corrupt)"):
        load_benchmark("modelnet40", d)
    # a listed shard that does not exist
    (d / "ply_data_test1.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_files\.txt: line 2 .*ply_data_test1"):
        load_benchmark("modelnet40", d)


def test_label_shape_mismatch(tmp_path):
    d = tmp_path / "mn"
    write_h5(d / "ply_data_test0.h5", _cloud(np.random.default_rng(0), 4),
             np.zeros((3, 1), np.uint8))
    with pytest.raises(ValueError, match=r"ply_data_test0\.h5: 'label' has shape \(3,\) but "
                                         r"'data' holds 4"):
        load_benchmark("modelnet40", d)


def test_empty_and_unknown_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty.*is empty"):
        load_benchmark("modelnet40", tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.md").write_text("hi")
    with pytest.raises(FileNotFoundError, match=r"junk: no ModelNet40 release found"):
        load_benchmark("modelnet40", tmp_path / "junk")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_benchmark("modelnet40", tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("shapenet", tmp_path)


# ------------------------------------------------------------------------------ ModelNet40 txt

@pytest.fixture
def mn_txt(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "modelnet40_normal_resampled"
    d.mkdir()
    (d / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")
    ids = ["airplane_0627", "flower_pot_0150", "night_stand_0201", "airplane_0628"]
    clouds = {}
    for sid in ids:
        cls = sid.rsplit("_", 1)[0]
        (d / cls).mkdir(exist_ok=True)
        arr = np.concatenate([rng.normal(size=(40, 3)), rng.normal(size=(40, 3))], 1)
        np.savetxt(d / cls / f"{sid}.txt", arr, fmt="%.6f", delimiter=",")
        clouds[sid] = np.loadtxt(d / cls / f"{sid}.txt", delimiter=",", dtype=np.float32)
    (d / "modelnet40_test.txt").write_text("\n".join(ids) + "\n")
    (d / "modelnet40_train.txt").write_text("airplane_0628\n")
    return d, ids, clouds


def test_modelnet40_normal_resampled(mn_txt):
    d, ids, clouds = mn_txt
    ds = load_benchmark("modelnet40", d, swap_yz=False, normalize=False)
    assert ds.info["format"] == "normal_resampled" and ds.names == ids
    names = [ds.class_names[i] for i in ds.labels]
    assert names == ["airplane", "flower_pot", "night_stand", "airplane"]
    np.testing.assert_array_equal(ds.points[1], clouds[ids[1]][:, :3])
    np.testing.assert_array_equal(ds.normals[1], clouds[ids[1]][:, 3:])
    assert len(load_benchmark("modelnet40", d, split="train")) == 1
    first = load_benchmark("modelnet40", d, num_points=10, swap_yz=False, normalize=False)
    np.testing.assert_array_equal(first.points[0], clouds[ids[0]][:10, :3])


def test_modelnet40_txt_bad_inputs(mn_txt):
    d, ids, _ = mn_txt
    path = d / "flower_pot" / "flower_pot_0150.txt"
    good = path.read_text()
    path.write_text(good.replace(",", " ", 3))
    with pytest.raises(ValueError, match=r"flower_pot_0150\.txt: not 'x,y,z,nx,ny,nz' lines"):
        load_benchmark("modelnet40", d)
    path.write_text("\n".join(good.splitlines()[:30]) + "\n")
    with pytest.raises(ValueError, match=r"flower_pot_0150\.txt: 30 points.*mixed point counts"):
        load_benchmark("modelnet40", d)
    path.write_text(good)
    (d / "modelnet40_test.txt").write_text("\n".join(ids + ["spaceship_0001"]) + "\n")
    with pytest.raises(ValueError, match=r"modelnet40_test\.txt: line 5.*'spaceship'"):
        load_benchmark("modelnet40", d)
    (d / "modelnet40_test.txt").write_text("\n".join(ids + ["airplane_0999"]) + "\n")
    with pytest.raises(FileNotFoundError, match=r"airplane_0999\.txt: shape file missing"):
        load_benchmark("modelnet40", d)


# ------------------------------------------------------------------------------ OpenShape MN40

def write_openshape_mn40(d, rng, n=4, p=P):
    d.mkdir(parents=True, exist_ok=True)
    cats = ["airplane", "flower_pot", "night_stand", "xbox"][:n]
    split = [{"name": f"{c}_{i:04d}", "category": c} for i, c in enumerate(cats)]
    (d / "test_split.json").write_text(json.dumps(split))
    pcs = np.empty(n, dtype=object)
    for i in range(n):
        pcs[i] = {"xyz": rng.normal(size=(p, 3)).astype(np.float32),
                  "rgb": np.full((p, 3), 100.0, np.float32)}
    np.save(d / "test_pc.npy", pcs, allow_pickle=True)
    return pcs


def test_modelnet40_openshape(tmp_path):
    d = tmp_path / "meta_data" / "modelnet40"
    pcs = write_openshape_mn40(d, np.random.default_rng(2))
    ds = load_benchmark("modelnet40", tmp_path)  # found under meta_data/modelnet40
    assert ds.info["format"] == "openshape" and ds.points.shape == (4, P, 6)
    assert [ds.class_names[i] for i in ds.labels] == ["airplane", "flower_pot", "night_stand",
                                                       "xbox"]
    np.testing.assert_allclose(ds.points[..., 3:], 100 / 255, rtol=1e-6)  # OpenShape's grey 0.4
    plain = load_benchmark("modelnet40", d, swap_yz=False, normalize=False)
    np.testing.assert_array_equal(plain.points[2, :, :3], pcs[2]["xyz"])
    with pytest.raises(ValueError, match=r"only the test split"):
        load_benchmark("modelnet40", d, split="train")


def test_modelnet40_openshape_bad_inputs(tmp_path):
    d = tmp_path / "mn"
    write_openshape_mn40(d, np.random.default_rng(2))
    split = json.loads((d / "test_split.json").read_text())
    split[1]["category"] = "spaceship"
    (d / "test_split.json").write_text(json.dumps(split))
    with pytest.raises(ValueError, match=r"test_split\.json: entry 1 .*'spaceship'"):
        load_benchmark("modelnet40", d)
    write_openshape_mn40(d, np.random.default_rng(2), n=3)
    (d / "test_split.json").write_text(json.dumps(split))
    with pytest.raises(ValueError, match=r"test_pc\.npy: 3 point clouds but .*test_split\.json "
                                         r"lists 4"):
        load_benchmark("modelnet40", d)
    write_openshape_mn40(d, np.random.default_rng(2))
    raw = (d / "test_pc.npy").read_bytes()
    (d / "test_pc.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"test_pc\.npy: corrupt or truncated"):
        load_benchmark("modelnet40", d)


# ------------------------------------------------------------------------------ ScanObjectNN

@pytest.fixture
def scan_root(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "h5_files"
    made = {}
    for variant, folder, stem in (("obj_only", "main_split_nobg", "objectdataset"),
                                  ("obj_bg", "main_split", "objectdataset"),
                                  ("pb_t50_rs", "main_split", "objectdataset_augmentedrot_scale75")):
        for split, prefix, n in (("train", "training", 6), ("test", "test", 4)):
            data = _cloud(rng, n)
            label = rng.integers(0, 15, n).astype(np.int64)  # (N,) in ScanObjectNN's files
            write_h5(root / folder / f"{prefix}_{stem}.h5", data, label)
            made[variant, split] = (data, label)
    return root, made


@pytest.mark.parametrize("variant", ["obj_only", "obj_bg", "pb_t50_rs"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_scanobjectnn_variants(scan_root, variant, split):
    root, made = scan_root
    ds = load_benchmark("scanobjectnn", root, split=split, variant=variant, swap_yz=False,
                        normalize=False)
    data, label = made[variant, split]
    np.testing.assert_array_equal(ds.points, data)
    assert ds.labels.tolist() == label.tolist() and ds.class_names == SCANOBJECTNN_CLASSES
    assert ds.split == split and ds.info["variant"] == variant


def test_scanobjectnn_paths_and_errors(scan_root, tmp_path):
    root, _ = scan_root
    # root given as the variant folder itself
    ds = load_benchmark("scanobjectnn", root / "main_split_nobg", variant="obj_only")
    assert len(ds) == 4
    # and as the parent of h5_files/
    assert len(load_benchmark("scanobjectnn", root.parent, variant="pb-t50-rs")) == 4
    with pytest.raises(ValueError, match=r"needs variant="):
        load_benchmark("scanobjectnn", root)
    with pytest.raises(ValueError, match=r"unknown ScanObjectNN variant 'hardest'"):
        load_benchmark("scanobjectnn", root, variant="hardest")
    write_h5(root / "main_split" / "test_objectdataset.h5", _cloud(np.random.default_rng(0), 3),
             np.array([0, 15, 2]))
    with pytest.raises(ValueError, match=r"test_objectdataset\.h5: labels span \[0, 15\].*15 "
                                         r"classes"):
        load_benchmark("scanobjectnn", root, variant="obj_bg")
    (root / "main_split" / "test_objectdataset.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_objectdataset\.h5 not found"):
        load_benchmark("scanobjectnn", root, variant="obj_bg")


def test_scanobjectnn_openshape(tmp_path):
    d = tmp_path / "meta_data" / "scanobjectnn"
    d.mkdir(parents=True)
    rng = np.random.default_rng(4)
    xyz = _cloud(rng, 5)
    np.save(d / "xyz_label.npy", {"xyz": xyz, "label": np.arange(5)}, allow_pickle=True)
    ds = load_benchmark("scanobjectnn", tmp_path, rgb_fill=0.4)  # variant detected
    assert ds.info["variant"] == "openshape" and ds.points.shape == (5, P, 6)
    np.testing.assert_allclose(ds.points[..., 3:], 0.4)
    np.save(d / "xyz_label.npy", {"xyz": xyz}, allow_pickle=True)
    with pytest.raises(ValueError, match=r"xyz_label\.npy: expected keys 'xyz' and 'label'"):
        load_benchmark("scanobjectnn", tmp_path)


# ------------------------------------------------------------------------------ Objaverse-LVIS

def write_shape(path, rng, p=P, dim=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    d = {"xyz": rng.uniform(-1, 1, (p, 3)).astype(np.float32),
         "rgb": rng.uniform(0, 1, (p, 3)).astype(np.float32),
         "image_feat": rng.normal(size=(12, dim)).astype(np.float32),
         "thumbnail_feat": rng.normal(size=(1, dim)).astype(np.float32),
         "text": [], "text_feat": [], "blip_caption": "", "msft_caption": "",
         "retrieval_text": [], "retrieval_text_feat": [], "dataset": "Objaverse",
         "group": "000-000", "id": path.stem}
    np.save(path, d, allow_pickle=True)
    return d


@pytest.fixture
def lvis_root(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "openshape"
    entries, shapes = [], {}
    for i, cat in enumerate(["zebra", "apple", "zebra", "bicycle", "apple"]):
        uid = f"{i:032x}"
        shapes[uid] = write_shape(root / "Objaverse" / "000-000" / f"{uid}.npy", rng)
        # OpenShape's split file holds paths from its own machines
        entries.append({"uid": uid, "category": cat, "group": "000-000", "data_path":
                        f"/mnt/data/objaverse-processed/merged_for_training_final/Objaverse/"
                        f"000-000/{uid}.npy"})
    (root / "meta_data" / "split").mkdir(parents=True)
    (root / "meta_data" / "split" / "lvis.json").write_text(json.dumps(entries))
    return root, entries, shapes


def test_objaverse_lvis(lvis_root):
    root, entries, shapes = lvis_root
    ds = load_benchmark("objaverse_lvis", root, swap_yz=False, normalize=False)
    assert isinstance(ds.points, LazyPoints) and ds.points.shape == (5, P, 6)
    assert ds.class_names == ["apple", "bicycle", "zebra"]
    assert ds.labels.tolist() == [2, 0, 2, 1, 0]
    uid = entries[3]["uid"]
    np.testing.assert_array_equal(ds[3]["points"][:, :3], shapes[uid]["xyz"])
    np.testing.assert_array_equal(ds[3]["points"][:, 3:], shapes[uid]["rgb"])
    assert ds[3]["name"] == uid and ds.points[1:3].shape == (2, P, 6)
    assert np.asarray(ds.points).shape == (5, P, 6)
    assert "1156" in ds.info["note"]  # a subset is flagged, not silently accepted
    norm = load_benchmark("lvis", root, num_points=20)
    pts = norm.points[0]
    assert pts.shape == (20, 6)
    np.testing.assert_allclose(np.linalg.norm(pts[:, :3], axis=1).max(), 1.0, rtol=1e-5)


def test_objaverse_lvis_bad_inputs(lvis_root):
    root, entries, _ = lvis_root
    split = root / "meta_data" / "split" / "lvis.json"
    bad = [dict(e) for e in entries]
    bad[2]["data_path"] = "/mnt/data/Objaverse/000-009/missing.npy"
    split.write_text(json.dumps(bad))
    with pytest.raises(FileNotFoundError, match=r"lvis\.json: 1 of 5 shape files not found.*"
                                                r"missing\.npy"):
        load_benchmark("objaverse_lvis", root)
    split.write_text(json.dumps([{"uid": "x", "data_path": "a.npy"}]))
    with pytest.raises(ValueError, match=r"lvis\.json: entry 0 lacks \['category'\]"):
        load_benchmark("objaverse_lvis", root)
    split.write_text(json.dumps(entries))
    target = root / "Objaverse" / "000-000" / f"{entries[1]['uid']}.npy"
    raw = target.read_bytes()
    target.write_bytes(raw[: len(raw) // 3])
    ds = load_benchmark("objaverse_lvis", root)  # lazily read: the error comes on access
    with pytest.raises(ValueError, match=rf"{entries[1]['uid']}\.npy: corrupt or truncated"):
        ds.points[1]
    write_shape(target, np.random.default_rng(0), p=P // 2)
    with pytest.raises(ValueError, match=rf"{entries[1]['uid']}\.npy: 32 points, fewer"):
        ds.points[1]
