"""The notebooks' ``RELEASED`` cells (tagged ``released`` in 02, 05, 06 and 07) run with two
imported releases and a benchmark on disk. nbmake runs the series with ``RELEASED = {}``; this
runs the same cells, read from the notebooks, with the parameter set."""

import json
from pathlib import Path

import numpy as np
import pytest

from mmmixlab import viz, workbench
from mmmixlab.released import import_checkpoint
from tests.helpers import realdata
from tests.test_released import TINY, write_release

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def released_cells(name: str) -> list:
    nb = json.loads(next(NOTEBOOKS.glob(f"{name}_*.ipynb")).read_text())
    cells = ["".join(c["source"]) for c in nb["cells"]
             if "released" in c.get("metadata", {}).get("tags", [])]
    assert cells, f"notebook {name} has no cell tagged 'released'"
    return cells


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = tmp_path_factory.mktemp("released-nb")
    size = dict(TINY, out=realdata.D)  # the benchmark class features' width
    runs = {}
    for label, seed in (("OpenShape", 1), ("MM-Mixing", 2)):
        write_release(root / f"{label}.pt", size, seed=seed)
        runs[label] = str(import_checkpoint(root / f"{label}.pt", root / label,
                                            clip="synth-tiny"))
    mn = realdata.write_modelnet40_hdf5(root)
    cf = realdata.write_class_features(root)
    shown = []
    return {"RELEASED": runs, "BENCHMARKS": {"modelnet40": str(mn)},
            "CLASS_FEATURES": {"modelnet40": str(cf["modelnet40"])},
            "FIGURES": str(root / "figures"), "QUERIES": 2, "TOP_K": 3,
            "workbench": workbench, "viz": viz, "display": shown.append, "shown": shown}


@pytest.mark.parametrize("name", ["05", "06", "07"])
def test_released_benchmark_cells(setting, name):
    ns = dict(setting, shown=[])
    ns["display"] = ns["shown"].append
    for cell in released_cells(name):
        exec(compile(cell, f"{name}-released", "exec"), ns)
    assert set(ns["bench" if name != "05" else "bench_released"]["modelnet40"]) == \
        {"OpenShape", "MM-Mixing"}
    if name == "05":
        table = ns["shown"][0]
        assert list(table.index.get_level_values(1)) == ["OpenShape", "MM-Mixing"]
        assert {"reported top1", "measured - reported", "top1"} <= set(table.columns)
    if name == "06":
        assert (Path(setting["FIGURES"]) / "hard_samples_modelnet40.png").is_file()
    if name == "07":
        assert (Path(setting["FIGURES"]) / "retrieval_modelnet40.png").is_file()


def test_released_mixing_cell(setting):
    from mmmixlab.data import load_benchmark

    ds = load_benchmark("modelnet40", setting["BENCHMARKS"]["modelnet40"], "test", rgb_fill=0.4)

    class Split:  # the explorer's split: clouds by index
        points = np.asarray(ds.points)

    ns = dict(setting, test=Split, i=0, j=5, shown=[])
    ns["display"] = ns["shown"].append
    for cell in released_cells("02"):
        exec(compile(cell, "02-released", "exec"), ns)
    table = ns["shown"][0]
    assert set(table.index.get_level_values(0)) == {"OpenShape", "MM-Mixing"}
    assert ((table.to_numpy() >= -1.0001) & (table.to_numpy() <= 1.0001)).all()


def test_missing_released_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="mmmixlab download checkpoint"):
        workbench.released_runs({"OpenShape": str(tmp_path / "nope")})
