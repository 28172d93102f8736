"""Downloads the user asks for: OpenShape's training data and the evaluation sets.

Nothing here runs at import or test time; only ``mmmixlab download ...`` (or a call to
:func:`download`) touches the network, through ``huggingface_hub`` (an optional dependency,
imported inside the function: ``pip install 'mmmixlab[hub]'``).

Source: OpenShape's Hugging Face dataset ``OpenShape/openshape-training-data`` (the repo id and
file names are those of OpenShape's own ``download_data.py`` and README): ``meta_data.zip``
(splits, ModelNet40 test clouds, ScanObjectNN test clouds, Objaverse-LVIS split; ~small),
``ShapeNet.tar.gz``, ``ABO.tar.gz``, ``3D-FUTURE.tar.gz`` and ``Objaverse/000-000.tar.gz`` ...
``Objaverse/000-159.tar.gz`` (~185 GB; the Objaverse-LVIS eval shapes live in these too).

Resumable at two levels: ``huggingface_hub`` resumes a partly downloaded file, and a file that
was downloaded and verified before (recorded in ``DEST/.mmmixlab-download.json`` with its size
and sha256) is skipped. Checksums: the sha256 the Hub publishes for each LFS file (read from the
repo's metadata before downloading), or the user's ``checksums`` (a JSON ``{file: sha256}`` or a
``sha256sum``-style file), which take precedence; a mismatch keeps the bad file aside as
``FILE.sha256-mismatch`` and raises. Offline (``HF_HUB_OFFLINE=1``, or the Hub unreachable),
the error names the repository and every file to fetch by hand, with URLs and target paths.

ModelNet40's HDF5 / normal-resampled releases and ScanObjectNN's HDF5 files are not published
on the Hub by their authors (ScanObjectNN asks users to accept its terms of use); asking for
them gives the hand-fetch instructions instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import zipfile
from pathlib import Path

from .fileio import atomic_write

__all__ = ["OPENSHAPE_REPO", "OPENSHAPE_SUBSETS", "download", "plan_files"]

OPENSHAPE_REPO = "OpenShape/openshape-training-data"
OBJAVERSE_SHARDS = 160
OPENSHAPE_SUBSETS: dict[str, list[str]] = {
    "meta": ["meta_data.zip"],
    "shapenet": ["ShapeNet.tar.gz"],
    "abo": ["ABO.tar.gz"],
    "3d-future": ["3D-FUTURE.tar.gz"],
    "objaverse": [f"Objaverse/000-{i:03d}.tar.gz" for i in range(OBJAVERSE_SHARDS)],
}
STATE_FILE = ".mmmixlab-download.json"

MANUAL_SOURCES = {
    "modelnet40": (
        "ModelNet40 (modelnet40_ply_hdf5_2048 or modelnet40_normal_resampled) is not on the "
        "Hugging Face Hub from its authors. OpenShape's copy of the test set comes with "
        "`mmmixlab download eval` (meta_data/modelnet40/). For the HDF5 release, fetch "
        "modelnet40_ply_hdf5_2048.zip (PointNet's release, formerly "
        "https://shapenet.cs.stanford.edu/media/modelnet40_ply_hdf5_2048.zip; mirrors exist) "
        "and unzip it; then load_benchmark('modelnet40', 'path/to/modelnet40_ply_hdf5_2048')."),
    "scanobjectnn": (
        "ScanObjectNN's HDF5 files are distributed by its authors after accepting their terms "
        "of use: https://hkust-vgd.github.io/scanobjectnn/ . Download h5_files.zip there, unzip "
        "it (main_split/, main_split_nobg/) and call load_benchmark('scanobjectnn', "
        "'path/to/h5_files', variant='obj_bg'). OpenShape's test copy comes with "
        "`mmmixlab download eval` (meta_data/scanobjectnn/xyz_label.npy)."),
}


def _parse_subset(subset: str | None) -> list[str]:
    """``"shapenet,abo"``, ``"all"``, ``"objaverse"`` or ``"objaverse:0-9"`` -> file names."""
    if not subset:
        raise ValueError(f"choose --subset from {', '.join(OPENSHAPE_SUBSETS)}, all, or "
                         f"objaverse:A-B (shards A..B of 0-{OBJAVERSE_SHARDS - 1})")
    files: list[str] = []
    for item in (s.strip().lower() for s in subset.split(",") if s.strip()):
        if item == "all":
            for v in OPENSHAPE_SUBSETS.values():
                files.extend(v)
        elif item.startswith("objaverse:"):
            rng = item.split(":", 1)[1]
            try:
                a, _, b = rng.partition("-")
                lo, hi = int(a), int(b or a)
            except ValueError:
                raise ValueError(f"objaverse shard range must look like objaverse:0-9, got "
                                 f"{item!r}") from None
            if not 0 <= lo <= hi < OBJAVERSE_SHARDS:
                raise ValueError(f"objaverse shards run from 0 to {OBJAVERSE_SHARDS - 1}, got "
                                 f"{lo}-{hi}")
            files.extend(OPENSHAPE_SUBSETS["objaverse"][lo:hi + 1])
        elif item in OPENSHAPE_SUBSETS:
            files.extend(OPENSHAPE_SUBSETS[item])
        else:
            raise ValueError(f"unknown OpenShape subset {item!r}; choose from "
                             f"{', '.join(OPENSHAPE_SUBSETS)}, all, or objaverse:A-B")
    return list(dict.fromkeys(files))


RUN_FILES = ["encoders.safetensors", "config.json", "metrics.json"]


def repo_type_of(what: str) -> str:
    """Hub repository type: trained runs are model repos, data are dataset repos."""
    return "model" if what.lower() == "run" else "dataset"


def plan_files(what: str, subset: str | None = None) -> tuple[str, list[str]]:
    """(repo id, file names) that ``download(what, subset)`` fetches. ``what="run"``:
    ``subset`` is the Hub model repo (``user/name``) of a shared run: its safetensors
    encoders, config and metrics (never a pickle)."""
    what = what.lower()
    if what == "run":
        if not subset or "/" not in subset:
            raise ValueError(f"download run needs --subset USER/NAME (a Hub model repo), got "
                             f"{subset!r}")
        return subset, list(RUN_FILES)
    if what == "openshape":
        return OPENSHAPE_REPO, _parse_subset(subset)
    if what == "eval":
        return OPENSHAPE_REPO, ["meta_data.zip"]
    if what in MANUAL_SOURCES:
        raise RuntimeError(MANUAL_SOURCES[what])
    raise ValueError(f"unknown download {what!r}; choose openshape (with --subset) or eval "
                     f"(or see modelnet40 / scanobjectnn for hand-fetch instructions)")


def _url(repo: str, filename: str, revision: str | None, repo_type: str = "dataset") -> str:
    kind = "datasets/" if repo_type == "dataset" else ""
    return f"https://huggingface.co/{kind}{repo}/resolve/{revision or 'main'}/{filename}"


def _manual_message(reason: str, repo: str, files: list[str], dest: Path,
                    revision: str | None, repo_type: str = "dataset") -> str:
    lines = [reason, (f"Fetch these files of the Hugging Face dataset {repo} by hand on a "
                      f"connected machine and place them under {dest}:")]
    for f in files[:8]:
        lines.append(f"  {_url(repo, f, revision, repo_type)}\n      -> {dest / f}")
    if len(files) > 8:
        lines.append(f"  ... and {len(files) - 8} more ({files[8]} ... {files[-1]})")
    lines.append("Then run the same command again: files already in place are verified and "
                 "skipped (or run `huggingface-cli download --repo-type dataset "
                 f"{repo} FILE --local-dir {dest}` where you are online).")
    return "\n".join(lines)


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _read_checksums(checksums) -> dict[str, str]:
    if checksums is None:
        return {}
    if isinstance(checksums, dict):
        return {str(k): str(v).lower() for k, v in checksums.items()}
    path = Path(checksums)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checksums file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: expected {{file: sha256}}")
        return {str(k): str(v).lower() for k, v in obj.items()}
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ValueError(f"{path}: line {n}: expected 'SHA256  FILE' (sha256sum format)")
        out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def _load_state(dest: Path) -> dict:
    p = dest / STATE_FILE
    if not p.is_file():
        return {}
    try:
        state = json.loads(p.read_text(encoding="utf-8"))
        return state if isinstance(state, dict) else {}
    except ValueError:
        return {}


def _save_state(dest: Path, state: dict) -> None:
    atomic_write(dest / STATE_FILE, json.dumps(state, indent=1))


def _is_offline_error(err: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(err)}
    offline = {"OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectionError",
               "ConnectTimeout", "ConnectError", "ReadTimeout", "Timeout", "TimeoutException",
               "NameResolutionError", "MaxRetryError", "NewConnectionError", "gaierror",
               "ProxyError", "SSLError"}
    return bool(names & offline) or isinstance(err, (ConnectionError, TimeoutError))


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _published_checksums(api, repo: str, files: list[str], revision, token,
                         repo_type: str = "dataset") -> dict:
    """{file: (sha256 or None, size or None)} from the Hub's LFS metadata."""
    out = {}
    infos = api.get_paths_info(repo, files, repo_type=repo_type, revision=revision,
                               token=token)
    for info in infos:
        lfs = getattr(info, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        size = getattr(info, "size", None)
        out[info.path] = (sha, size)
    return out


def _safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a .tar.gz / .zip into ``dest``, refusing members that would land outside it."""
    root = dest.resolve()
    if archive.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive) as tar:
            for m in tar.getmembers():
                target = (root / m.name).resolve()
                if root not in target.parents and target != root:
                    raise ValueError(f"{archive}: member {m.name!r} would extract outside "
                                     f"{dest}; refusing")
                if m.issym() or m.islnk():
                    raise ValueError(f"{archive}: member {m.name!r} is a link; refusing")
            try:
                tar.extractall(dest, filter="data")
            except TypeError:  # Python without extraction filters
                tar.extractall(dest)
    elif archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                target = (root / name).resolve()
                if root not in target.parents and target != root:
                    raise ValueError(f"{archive}: member {name!r} would extract outside "
                                     f"{dest}; refusing")
            z.extractall(dest)
    else:
        raise ValueError(f"{archive}: unknown archive type (expected .tar.gz or .zip)")


def download(what: str, subset: str | None = None, dest: str | Path = "data/openshape",
             *, extract: bool = False, checksums=None, revision: str | None = None,
             token=None, progress: bool = True) -> list[Path]:
    """Download (and optionally unpack) ``what`` into ``dest``; returns the local file paths.

    what: ``openshape`` with ``subset`` = meta | shapenet | abo | 3d-future | objaverse |
      objaverse:A-B | all (comma-separated allowed), or ``eval`` (OpenShape's meta_data.zip,
      which holds the ModelNet40 / ScanObjectNN test clouds and the Objaverse-LVIS split).
    Raises RuntimeError naming what to fetch by hand when offline or when huggingface_hub is
    missing; ValueError on a checksum mismatch.
    """
    repo, files = plan_files(what, subset)
    repo_type = repo_type_of(what)
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    state = _load_state(dest)
    user_sums = _read_checksums(checksums)

    def verified(f: str) -> bool:
        rec = state.get(f)
        p = dest / f
        return bool(rec and rec.get("verified") and p.is_file()
                    and p.stat().st_size == rec.get("size")
                    and (f not in user_sums or user_sums[f] == rec.get("sha256")))

    def record(f: str, digest: str | None, how: str, ok: bool = True) -> None:
        state[f] = {"size": (dest / f).stat().st_size, "sha256": digest, "verified": ok,
                    "checksum": how}
        _save_state(dest, state)

    def mismatch(local: Path, digest: str, expected: str, source: str):
        bad = local.with_name(local.name + ".sha256-mismatch")
        os.replace(local, bad)
        return ValueError(f"{local}: sha256 {digest} does not match the {source} {expected}; "
                          f"the file was moved to {bad.name}; run the command again to "
                          f"re-download it")

    todo = []
    for f in files:
        if verified(f):
            continue
        local = dest / f
        if local.is_file() and f in user_sums:  # placed by hand: check it here
            digest = sha256_file(local)
            if digest != user_sums[f]:
                raise mismatch(local, digest, user_sums[f], "given checksum")
            record(f, digest, "user")
            continue
        todo.append(f)
    if todo:
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in (
            "1", "true", "yes", "on")
        if offline:
            absent = [f for f in todo if not (dest / f).is_file()]
            if absent:
                raise RuntimeError(_manual_message(
                    "offline: HF_HUB_OFFLINE is set, so nothing can be downloaded.", repo,
                    absent, dest, revision, repo_type))
            for f in todo:  # all present, none checkable offline: accepted, marked unverified
                print(f"warning: {dest / f} is present but unverified (no checksum offline; "
                      f"pass checksums= or run again online)")
                record(f, None, "unverified (offline)", ok=False)
            todo = []
    if todo:
        try:
            import huggingface_hub
        except ImportError:
            raise RuntimeError(_manual_message(
                "huggingface_hub is not installed (pip install huggingface_hub, or "
                "pip install 'mmmixlab[hub]').", repo, todo, dest, revision, repo_type)) from None
        api = huggingface_hub.HfApi()
        try:
            published = _published_checksums(api, repo, todo, revision, token, repo_type)
        except Exception as e:
            if _is_offline_error(e):
                raise RuntimeError(_manual_message(
                    f"cannot reach the Hugging Face Hub ({type(e).__name__}: {e}).", repo,
                    todo, dest, revision, repo_type)) from e
            raise RuntimeError(f"could not read the file list of dataset {repo}: "
                               f"{type(e).__name__}: {e}") from e
        missing = [f for f in todo if f not in published]
        if missing:
            raise RuntimeError(f"dataset {repo} has no file(s) {missing[:5]}; the repository "
                               f"layout may have changed (see its page on the Hub)")
        for n, f in enumerate(todo):
            expected = user_sums.get(f) or published[f][0]
            source = "given checksum" if f in user_sums else "Hub's published sha256"
            local = dest / f
            if local.is_file() and expected and sha256_file(local) == expected.lower():
                record(f, expected.lower(), "user" if f in user_sums else "hub-lfs")
                continue  # already complete (placed by hand, or an earlier unverified run)
            if progress:
                print(f"[{n + 1}/{len(todo)}] {repo}/{f}")
            try:
                local = Path(huggingface_hub.hf_hub_download(
                    repo, f, repo_type=repo_type, revision=revision, local_dir=dest,
                    token=token))
            except Exception as e:
                if _is_offline_error(e):
                    raise RuntimeError(_manual_message(
                        f"download of {f} failed: the Hub is unreachable "
                        f"({type(e).__name__}: {e}).", repo, todo[n:], dest, revision, repo_type)) from e
                raise RuntimeError(f"download of {repo}/{f} failed: {type(e).__name__}: {e}"
                                   ) from e
            digest = sha256_file(local) if expected else None
            if expected and digest != expected.lower():
                raise mismatch(local, digest, expected, source)
            record(f, digest, ("user" if f in user_sums else "hub-lfs") if expected
                   else "none published")
    paths = [dest / f for f in files]
    if extract:
        for f, p in zip(files, paths):
            if state.get(f, {}).get("extracted"):
                continue
            if progress:
                print(f"extracting {p.name} -> {dest}")
            _safe_extract(p, dest)
            state.setdefault(f, {})["extracted"] = True
            _save_state(dest, state)
    return paths


def download_checkpoint(name: str, out, *, revision: str | None = None, token=None,
                        size: str | None = None, overwrite: bool = False) -> Path:
    """A released checkpoint (a name of :data:`mmmixlab.released.RELEASES`, or any Hub model
    repo ``OWNER/REPO`` holding a ``model.pt``) fetched through ``huggingface_hub`` into its
    cache, then imported into the run folder ``out`` (:func:`mmmixlab.released.import_checkpoint`).

    Offline, or without ``huggingface_hub``: RuntimeError naming the repo, the file, its URL
    and the ``mmmixlab import-checkpoint`` command to run after fetching it by hand.
    """
    from .released import import_checkpoint, release_of

    repo, release_name, release = release_of(name)
    filename = release.file if release else "model.pt"
    url = _url(repo, filename, revision, "model")
    by_hand = (f"Fetch {filename} of the Hugging Face model repo {repo} by hand on a connected "
               f"machine:\n  {url}\nthen run:\n  mmmixlab import-checkpoint PATH/TO/{filename} "
               f"--out {out}" + (f" --name {release_name}" if release_name else ""))
    try:
        import huggingface_hub
    except ImportError as e:
        raise RuntimeError(f"huggingface_hub is not installed (pip install huggingface_hub).\n"
                           f"{by_hand}") from e
    try:
        local = huggingface_hub.hf_hub_download(repo, filename, repo_type="model",
                                                revision=revision, token=token)
    except Exception as e:
        if _is_offline_error(e):
            raise RuntimeError(f"cannot reach the Hugging Face Hub ({type(e).__name__}).\n"
                               f"{by_hand}") from e
        raise RuntimeError(f"download of {repo}/{filename} failed: {type(e).__name__}: {e}\n"
                           f"{by_hand}") from e
    return import_checkpoint(local, out, name=release_name, size=size, repo=repo,
                             overwrite=overwrite)
