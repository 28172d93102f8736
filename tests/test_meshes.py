"""import-meshes on a messy folder: textured OBJ+MTL+PNG, vertex-coloured PLY, GLB, OFF, STL,
a point-cloud PLY, missing textures, corrupt/empty/degenerate files, huge and tiny coordinates,
NaN vertices. Bad files are reported by name and skipped; no cloud holds NaN."""

import json
import os

import numpy as np
import pytest
import trimesh
from PIL import Image

from mmmixlab.data import load_triplets
from mmmixlab.data.meshes import (
    _run_tasks,
    captions_from_names,
    import_meshes,
    read_captions,
    sample_mesh,
)

PTS, VIEWS, SIZE = 256, 2, 32

CUBE_V = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0],
                   [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], float)
CUBE_F = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                   [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])


def write_textured_obj(folder, name="textured_chair", texture="red.png", make_texture=True):
    """OBJ + MTL + PNG as exporters write them: a textured top (red PNG) and green sides."""
    folder.mkdir(parents=True, exist_ok=True)
    if make_texture:
        Image.new("RGB", (8, 8), (255, 0, 0)).save(folder / texture)
    (folder / f"{name}.mtl").write_text(
        f"newmtl top\nKd 0.8 0.8 0.8\nmap_Kd {texture}\n\nnewmtl sides\nKd 0 1 0\n")
    lines = [f"mtllib {name}.mtl"] + [f"v {x} {y} {z}" for x, y, z in CUBE_V]
    lines += ["vt 0 0", "vt 1 0", "vt 1 1", "vt 0 1", "usemtl top",
              "f 5/1 6/2 7/3", "f 5/1 7/3 8/4", "usemtl sides"]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in CUBE_F[[0, 1, 4, 5, 6, 7, 8, 9, 10,
                                                                   11]]]
    (folder / f"{name}.obj").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def mesh_src(tmp_path_factory):
    src = tmp_path_factory.mktemp("meshes")
    write_textured_obj(src / "chairs")
    write_textured_obj(src / "chairs", name="office_chair_02", texture="lost.png",
                       make_texture=False)  # MTL names a texture that is not there
    box = trimesh.Trimesh(CUBE_V, CUBE_F, process=False)
    colored = box.copy()
    colored.visual.vertex_colors = np.tile([0, 255, 0, 255], (8, 1))
    (src / "tables").mkdir()
    colored.export(src / "tables" / "green_table.ply")
    scene = trimesh.Scene()
    blue = box.copy()
    blue.visual = trimesh.visual.TextureVisuals(
        material=trimesh.visual.material.PBRMaterial(baseColorFactor=[0, 0, 255, 255]))
    scene.add_geometry(blue, node_name="top")
    scene.add_geometry(trimesh.creation.icosphere(subdivisions=1), node_name="leg",
                       transform=trimesh.transformations.translation_matrix([3, 0, 0]))
    scene.export(src / "tables" / "scene.glb")
    (src / "tables" / "side_table").mkdir()
    for name, data in scene.export(file_type="gltf").items():  # .gltf JSON + external .bin
        (src / "tables" / "side_table" / name).write_bytes(data)
    (src / "lamps").mkdir()
    box.export(src / "lamps" / "desk_lamp.off")
    box.export(src / "lamps" / "LampShade.stl")
    trimesh.PointCloud(np.random.default_rng(0).uniform(size=(80, 3)),
                       colors=np.tile([255, 0, 0, 255], (80, 1))).export(src / "scan.ply")
    for name, scale, shift in (("huge", 1e12, 1e15), ("tiny", 1e-12, -5e-11)):
        v = CUBE_V * scale + shift  # written in %e notation, as CAD exporters do
        (src / f"{name}.obj").write_text("".join(f"v {x:.9e} {y:.9e} {z:.9e}\n" for x, y, z in v)
                                         + "".join(f"f {a + 1} {b + 1} {c + 1}\n"
                                                   for a, b, c in CUBE_F))
    (src / "bad").mkdir()
    (src / "bad" / "corrupt.ply").write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 100\nproperty float x\n"
        b"end_header\n\x00\x01")
    (src / "bad" / "empty.stl").write_bytes(b"")
    (src / "bad" / "flat.obj").write_text(  # every face degenerate (collinear vertices)
        "v 0 0 0\nv 1 0 0\nv 2 0 0\nv 3 0 0\nf 1 2 3\nf 2 3 4\n")
    (src / "nan_verts.off").write_text(
        "OFF\n5 2 0\n0 0 0\n1 0 0\n0 1 0\nnan 0 0\n1 1 0\n3 0 1 2\n3 1 3 4\n")
    (src / "notes.txt").write_text("not a mesh")
    return src


@pytest.fixture(scope="module")
def imported(mesh_src, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "ds"
    caps = tmp_path_factory.mktemp("caps") / "captions.json"
    caps.write_text(json.dumps({"tables/green_table.ply": ["a green table", "a box"],
                                "scene": "two parts", "unknown/file.obj": "never used"}))
    report = import_meshes(mesh_src, out, points=PTS, views=VIEWS, image_size=SIZE,
                           captions=caps, workers=2, progress=False)
    return out, report


def test_report_lists_imported_and_skipped(imported):
    out, report = imported
    on_disk = json.loads((out / "import_report.json").read_text())
    assert on_disk["num_imported"] == report["num_imported"] == 11
    skipped = {s["file"]: s["reason"] for s in on_disk["skipped"]}
    assert set(skipped) == {"bad/corrupt.ply", "bad/empty.stl", "bad/flat.obj"}
    assert skipped["bad/corrupt.ply"].startswith("could not parse")
    assert "empty file" in skipped["bad/empty.stl"]
    assert "degenerate" in skipped["bad/flat.obj"]
    warnings = {e["file"]: e.get("warnings", []) for e in on_disk["imported"]}
    assert any("lost.png" in w for w in warnings["chairs/office_chair_02.obj"])
    assert any("dropped" in w for w in warnings["nan_verts.off"])
    assert any("no faces" in w for w in warnings["scan.ply"])
    assert on_disk["captions_unused"] == ["unknown/file.obj"]


def test_dataset_reads_back(imported):
    out, _ = imported
    ts = load_triplets(out)
    assert len(ts) == 11 and ts.points.shape == (11, PTS, 6)
    assert ts.images.shape == (11, VIEWS, SIZE, SIZE, 3) and ts.images.dtype == np.uint8
    assert np.isfinite(ts.points).all()
    radius = np.linalg.norm(ts.points[..., :3], axis=-1).max(1)
    np.testing.assert_allclose(radius, 1.0, rtol=1e-5)
    assert (ts.points[..., 3:] >= 0).all() and (ts.points[..., 3:] <= 1).all()
    assert ts.class_names == ["chairs", "lamps", "tables"]  # bad/ had no importable file
    by_name = {ts[i]["name"]: ts[i] for i in range(len(ts))}
    assert by_name["tables/green_table"]["captions"] == ["a green table", "a box"]
    assert by_name["tables/scene"]["captions"] == ["two parts"]
    assert by_name["chairs/office_chair_02"]["captions"][0] == "office chair"
    assert by_name["huge"]["label"] is None and by_name["lamps/desk_lamp"]["label"] == 1
    # colours: vertex colours, texture + material colours, glTF base colour, default grey
    green = by_name["tables/green_table"]["points"][:, 3:]
    np.testing.assert_allclose(green, np.tile([0, 1, 0], (PTS, 1)), atol=1e-6)
    rgb = by_name["chairs/textured_chair"]["points"][:, 3:]  # red texture, green sides
    assert ((rgb == [1, 0, 0]).all(1)).any() and ((rgb == [0, 1, 0]).all(1)).any()
    assert ((rgb == [1, 0, 0]).all(1) | (rgb == [0, 1, 0]).all(1)).all()
    lost = by_name["chairs/office_chair_02"]["points"][:, 3:]
    assert not ((lost == [1, 0, 0]).all(1)).any()  # the missing texture fell back to Kd
    glb_item = by_name["tables/scene"]
    glb = glb_item["points"][:, 3:]
    assert ((glb == [0, 0, 1]).all(1)).any() and ((glb == 0.4).all(1)).any()
    gltf = by_name["tables/side_table/model"]
    blue_share = [((x["points"][:, 3:] == [0, 0, 1]).all(1)).mean() for x in (gltf, glb_item)]
    assert 0.15 < blue_share[0] < 0.6 and abs(blue_share[0] - blue_share[1]) < 0.1
    assert gltf["captions"][0] == "side table"  # "model" says nothing; its folder does
    np.testing.assert_allclose(by_name["lamps/LampShade"]["points"][:, 3:], 0.4)
    assert ((by_name["scan"]["points"][:, 3:] == [1, 0, 0]).all(1)).all()
    assert by_name["tables/scene"]["images"].std() > 5  # something was rendered


def test_huge_and_tiny_coordinates_give_the_unit_cloud(mesh_src):
    a, _ = sample_mesh(mesh_src / "huge.obj", 300, seed=1)
    b, _ = sample_mesh(mesh_src / "tiny.obj", 300, seed=1)
    c, _ = sample_mesh(mesh_src / "lamps" / "desk_lamp.off", 300, seed=1)
    np.testing.assert_allclose(a, c, atol=1e-5)
    np.testing.assert_allclose(b, c, atol=1e-5)


def test_up_axis(mesh_src):
    y_up, _ = sample_mesh(mesh_src / "chairs" / "textured_chair.obj", 400, seed=0)
    z_up, _ = sample_mesh(mesh_src / "chairs" / "textured_chair.obj", 400, seed=0, up_axis="z")
    red_y = y_up[(y_up[:, 3:] == [1, 0, 0]).all(1)]
    red_z = z_up[(z_up[:, 3:] == [1, 0, 0]).all(1)]
    # the red face is the file's z = 1 face: on top when kept z-up, at the front (-y) when
    # the file is read as y-up (+z front)
    assert np.allclose(red_z[:, 2], z_up[:, 2].max(), atol=1e-5)
    assert np.allclose(red_y[:, 1], y_up[:, 1].min(), atol=1e-5)


def test_inline_matches_parallel(mesh_src, imported, tmp_path):
    out, _ = imported
    report = import_meshes(mesh_src, tmp_path / "inline", points=PTS, views=VIEWS,
                           image_size=SIZE, workers=1, progress=False)
    a, b = load_triplets(out), load_triplets(tmp_path / "inline")
    assert a.names == b.names and report["num_skipped"] == 3
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.images, b.images)


def test_captions_files_and_names(tmp_path):
    csv = tmp_path / "caps.csv"
    csv.write_text('file,caption\nchairs/a.obj,"a chair, red"\nchairs/a.obj,second\nb,bee\n')
    assert read_captions(csv) == {"chairs/a.obj": ["a chair, red", "second"], "b": ["bee"]}
    tsv = tmp_path / "caps.tsv"
    tsv.write_text("x.ply\tan x\n")
    assert read_captions(tsv) == {"x.ply": ["an x"]}
    bad = tmp_path / "bad.csv"
    bad.write_text("only-a-key\n")
    with pytest.raises(ValueError, match=r"bad\.csv: line 1: expected 'file,caption'"):
        read_captions(bad)
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        (tmp_path / "broken.json").write_text("{")
        read_captions(tmp_path / "broken.json")
    from pathlib import Path
    assert captions_from_names(Path("chairs/office_chair_02.obj"))[:2] == [
        "office chair", "a 3D model of an office chair"]
    shapenet = Path("03001627/1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d/models/model_normalized.obj")
    assert captions_from_names(shapenet) == []  # ids only: nothing meaningful to say
    assert captions_from_names(Path("Lamps/tallFloorLamp.glb"))[0] == "tall floor lamp"


def test_empty_folder_and_nothing_importable(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no meshes")
    with pytest.raises(FileNotFoundError, match=r"empty: no mesh or point files found"):
        import_meshes(tmp_path / "empty", tmp_path / "out", progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.stl").write_bytes(b"")
    with pytest.raises(ValueError, match=r"none of the 1 mesh files could be imported: x\.stl: "
                                         r"empty file"):
        import_meshes(tmp_path / "bad", tmp_path / "out", progress=False, workers=1)
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_a_foreign_folder(mesh_src, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match=r"mine exists and is not a triplet dataset"):
        import_meshes(mesh_src / "lamps", tmp_path / "mine", progress=False, workers=1)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def _crash_on_two(i):
    if i == 2:
        os._exit(3)  # a worker killed mid-file (out of memory, a native crash)
    return ("ok", i)


def test_worker_crash_is_reported_not_fatal():
    results = dict(_run_tasks(_crash_on_two, [(i,) for i in range(5)], workers=2))
    assert sorted(results) == [0, 1, 2, 3, 4]
    assert results[2][0] == "error" and "worker process died" in results[2][1]
    assert all(results[i] == ("ok", i) for i in (0, 1, 3, 4))


def test_cli_import_meshes(mesh_src, tmp_path, capsys):
    import argparse

    from mmmixlab.cli_data import add_subcommands, dispatch

    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["import-meshes", str(mesh_src / "lamps"), str(tmp_path / "o"),
                              "--points", "64", "--views", "1", "--image-size", "16",
                              "--workers", "1"])
    assert dispatch(args) == 0
    assert "imported 2 of 2 mesh files" in capsys.readouterr().out
    assert len(load_triplets(tmp_path / "o")) == 2
    assert dispatch(argparse.Namespace(command="train")) is None  # not a data command


def test_scans_and_point_files_are_read_with_open3d(tmp_path):
    """Point files a user has on disk (.pcd, .xyz, .xyzrgb, .pts) import like meshes; bad ones
    (empty, NaN, wrong fields) are named in the report with the reason."""
    import open3d as o3d

    from mmmixlab.data import import_meshes, load_triplets
    rng = np.random.default_rng(0)
    src = tmp_path / "scans"
    (src / "rock").mkdir(parents=True)
    xyz, rgb = rng.normal(size=(400, 3)), rng.uniform(size=(400, 3))
    pcd = o3d.geometry.PointCloud()
    pcd.points, pcd.colors = o3d.utility.Vector3dVector(xyz), o3d.utility.Vector3dVector(rgb)
    o3d.io.write_point_cloud(str(src / "rock" / "a.pcd"), pcd)
    np.savetxt(src / "rock" / "b.xyzrgb", np.hstack([xyz, rgb]))
    np.savetxt(src / "rock" / "c.xyz", xyz * 5 + 3)
    bad_nan = xyz.copy()
    bad_nan[7] = np.nan
    np.savetxt(src / "rock" / "nan.xyz", bad_nan)
    (src / "rock" / "fields.xyz").write_text("1 2\n3 4\n")
    (src / "rock" / "empty.pcd").write_text("")
    report = import_meshes(src, tmp_path / "out", points=256, views=1, workers=1,
                           progress=False)
    assert report["num_imported"] == 3
    reasons = {s["file"]: s["reason"] for s in report["skipped"]}
    assert "NaN or inf" in reasons["rock/nan.xyz"]
    assert "no points read" in reasons["rock/fields.xyz"]
    assert "empty file" in reasons["rock/empty.pcd"]
    ts = load_triplets(tmp_path / "out")
    pts = np.asarray(ts.points)
    assert pts.shape == (3, 256, 6) and np.isfinite(pts).all()
    radius = np.linalg.norm(pts[..., :3], axis=-1).max(1)
    np.testing.assert_allclose(radius, 1.0, atol=1e-5)  # unit sphere, whatever the file scale
    colours = {n.split("/")[-1]: pts[i, :, 3:].std() for i, n in enumerate(ts.names)}
    assert colours["a"] > 0.1 and colours["b"] > 0.1 and colours["c"] < 1e-6  # grey: no colour
