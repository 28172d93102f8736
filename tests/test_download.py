"""Downloads without a network: offline messages, missing huggingface_hub, resumability,
checksums and safe extraction, all against a fake hub module (nothing is fetched)."""

import argparse
import hashlib
import io
import json
import sys
import tarfile
import types
import zipfile

import pytest

from mmmixlab import download as dl
from mmmixlab.cli_data import add_subcommands, dispatch


def fake_hub(files: dict, calls: list, fail=None):
    """A stand-in for huggingface_hub serving ``files`` {name: bytes}."""
    mod = types.ModuleType("huggingface_hub")

    class HfApi:
        def get_paths_info(self, repo_id, paths, repo_type=None, revision=None, token=None):
            if fail == "connect":
                raise ConnectionError("Failed to resolve 'huggingface.co'")
            out = []
            for p in paths:
                if p in files:
                    lfs = types.SimpleNamespace(sha256=hashlib.sha256(files[p]).hexdigest())
                    out.append(types.SimpleNamespace(path=p, size=len(files[p]), lfs=lfs))
            return out

    def hf_hub_download(repo_id, filename, repo_type=None, revision=None, local_dir=None,
                        token=None):
        calls.append((repo_id, filename, repo_type))
        target = local_dir / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        data = files[filename]
        target.write_bytes(data[:-3] + b"XXX" if fail == "corrupt" else data)
        return str(target)

    mod.HfApi, mod.hf_hub_download = HfApi, hf_hub_download
    return mod


def zip_bytes(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_offline_names_repo_files_and_targets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError) as err:
        dl.download("openshape", "shapenet,abo", tmp_path / "d", progress=False)
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" in msg and "OpenShape/openshape-training-data" in msg
    assert ("https://huggingface.co/datasets/OpenShape/openshape-training-data/resolve/main/"
            "ShapeNet.tar.gz") in msg
    assert str(tmp_path / "d" / "ABO.tar.gz") in msg


def test_offline_with_many_files_summarizes(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"and 152 more \(Objaverse/000-008\.tar\.gz \.\.\. "
                                           r"Objaverse/000-159\.tar\.gz\)"):
        dl.download("openshape", "objaverse", tmp_path, progress=False)


def test_connection_error_is_offline_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub({}, [], fail="connect"))
    with pytest.raises(RuntimeError, match=r"cannot reach the Hugging Face Hub.*"
                                           r"(?s:.*)meta_data\.zip"):
        dl.download("eval", dest=tmp_path, progress=False)


def test_missing_huggingface_hub(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import raises ImportError
    with pytest.raises(RuntimeError, match=r"huggingface_hub is not installed.*mmmixlab\[hub\]"
                                           r"(?s:.*)meta_data\.zip"):
        dl.download("eval", dest=tmp_path, progress=False)


def test_download_verify_resume_extract(tmp_path, monkeypatch):
    files = {"meta_data.zip": zip_bytes({"meta_data/split/lvis.json": "[]"})}
    calls = []
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub(files, calls))
    paths = dl.download("eval", dest=tmp_path, extract=True, progress=False)
    assert paths == [tmp_path / "meta_data.zip"] and len(calls) == 1
    assert calls[0] == ("OpenShape/openshape-training-data", "meta_data.zip", "dataset")
    assert (tmp_path / "meta_data" / "split" / "lvis.json").read_text() == "[]"
    state = json.loads((tmp_path / dl.STATE_FILE).read_text())
    assert state["meta_data.zip"]["checksum"] == "hub-lfs"
    assert state["meta_data.zip"]["sha256"] == hashlib.sha256(files["meta_data.zip"]).hexdigest()
    # a second run finds the verified file and fetches nothing, even offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert dl.download("eval", dest=tmp_path, extract=True, progress=False) == paths
    assert len(calls) == 1


def test_checksum_mismatch_names_file(tmp_path, monkeypatch):
    files = {"ABO.tar.gz": b"0123456789" * 10}
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub(files, [], fail="corrupt"))
    with pytest.raises(ValueError, match=r"ABO\.tar\.gz: sha256 [0-9a-f]{64} does not match the "
                                         r"Hub's published sha256"):
        dl.download("openshape", "abo", tmp_path, progress=False)
    assert (tmp_path / "ABO.tar.gz.sha256-mismatch").is_file()
    assert not (tmp_path / "ABO.tar.gz").exists()


def test_hand_placed_file_with_user_checksum_needs_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = b"shapenet archive bytes"
    (tmp_path / "ShapeNet.tar.gz").write_bytes(data)
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{hashlib.sha256(data).hexdigest()}  ShapeNet.tar.gz\n")
    assert dl.download("openshape", "shapenet", tmp_path, checksums=sums,
                       progress=False) == [tmp_path / "ShapeNet.tar.gz"]
    sums.write_text(f"{'0' * 64}  ShapeNet.tar.gz\n")
    (tmp_path / dl.STATE_FILE).unlink()
    with pytest.raises(ValueError, match=r"ShapeNet\.tar\.gz: sha256 .* given checksum"):
        dl.download("openshape", "shapenet", tmp_path, checksums=sums, progress=False)


def test_subsets_and_manual_sources():
    repo, files = dl.plan_files("openshape", "objaverse:3-5, shapenet")
    assert repo == "OpenShape/openshape-training-data"
    assert files == ["Objaverse/000-003.tar.gz", "Objaverse/000-004.tar.gz",
                     "Objaverse/000-005.tar.gz", "ShapeNet.tar.gz"]
    assert len(dl.plan_files("openshape", "all")[1]) == 164
    with pytest.raises(ValueError, match="unknown OpenShape subset 'modelnet'"):
        dl.plan_files("openshape", "modelnet")
    with pytest.raises(ValueError, match="shards run from 0 to 159"):
        dl.plan_files("openshape", "objaverse:150-170")
    with pytest.raises(ValueError, match="choose --subset"):
        dl.plan_files("openshape", None)
    with pytest.raises(RuntimeError, match="hkust-vgd.github.io/scanobjectnn"):
        dl.plan_files("scanobjectnn")


def test_extraction_refuses_escaping_members(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    (tmp_path / "bad.tar.gz").write_bytes(buf.getvalue())
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match=r"bad\.tar\.gz: member '\.\./evil\.txt' would extract "
                                         r"outside"):
        dl._safe_extract(tmp_path / "bad.tar.gz", tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_cli_download_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["download", "openshape", "--subset", "meta", "--dest",
                              str(tmp_path)])
    with pytest.raises(RuntimeError, match=r"meta_data\.zip"):
        dispatch(args)
    args = parser.parse_args(["download", "modelnet40"])
    with pytest.raises(RuntimeError, match="modelnet40_ply_hdf5_2048"):
        dispatch(args)
