"""The notebook series: committed clean, one `parameters` cell each, and runnable top to bottom.

The run tests execute every notebook in order (as `nbmake` would: a fresh kernel per notebook,
working directory `notebooks/`) with ``MMMIXLAB_SMOKE=1`` and one temporary cache shared by
the whole series, so each notebook also proves it reuses what the earlier ones built. Set
``MMMIXLAB_TEST_CACHE`` to keep that cache between sessions; figures go to a temporary folder.
"""

import ast
import os
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
SHARED = ("SMOKE", "DATA_ROOT", "CLIP", "BACKBONE", "EPOCHS_STAGE1", "EPOCHS_STAGE2",
          "BATCH_SIZE", "DEVICE", "SEED", "CACHE", "FIGURES")
TIMINGS: dict = {}


def read(path):
    return nbformat.read(path, as_version=4)


def parameters(nb) -> dict:
    """The source of each assignment in the notebook's `parameters` cell, by name."""
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    tree = ast.parse(cells[0].source)
    return {t.id: ast.get_source_segment(cells[0].source, node.value)
            for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}


def test_series_is_numbered_and_complete():
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers == [f"{k:02d}" for k in range(len(NOTEBOOKS))] and len(NOTEBOOKS) >= 9


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_with_one_parameters_cell(path):
    nb = read(path)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged `parameters`"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    # no saved widget state or run metadata (`python -m mmmixlab.workbench strip` removes them)
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, set(nb.metadata)
    assert all(set(c.metadata) <= {"tags"} for c in nb.cells)
    assert path.stat().st_size < 30_000
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "outputs not stripped"
            # notebooks call the library; logic lives in mmmixlab
            if cell not in tagged:
                assert len(cell.source.splitlines()) <= 12, cell.source
            defs = [n for n in ast.walk(ast.parse(cell.source))
                    if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
            assert not defs, "define functions in mmmixlab, not in a notebook"


def test_shared_parameters_are_the_same_everywhere():
    # identical parameters -> identical configs -> one cache entry per world/run for the series
    first = parameters(read(NOTEBOOKS[0]))
    assert set(SHARED) <= set(first)
    assert "MMMIXLAB_SMOKE" in first["SMOKE"] and "MMMIXLAB_CACHE" in first["CACHE"]
    for path in NOTEBOOKS[1:]:
        params = parameters(read(path))
        assert {k: params.get(k) for k in SHARED} == {k: first[k] for k in SHARED}, path.name


def test_strip_notebook(tmp_path):
    from mmmixlab.workbench import strip_notebook

    nb = read(NOTEBOOKS[0])
    nb.metadata["widgets"] = {"state": {"x": 1}}
    code = next(c for c in nb.cells if c.cell_type == "code" and not c.metadata.get("tags"))
    code.outputs = [nbformat.v4.new_output("stream", text="hi")]
    code.execution_count = 3
    code.metadata["execution"] = {"shell.execute_reply": "now"}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert strip_notebook(path) and not strip_notebook(path)
    assert nbformat.reads(path.read_text(), as_version=4) == read(NOTEBOOKS[0])


@pytest.fixture(scope="module")
def smoke_env(tmp_path_factory):
    cache = os.environ.get("MMMIXLAB_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    env = {"MMMIXLAB_SMOKE": "1", "MMMIXLAB_CACHE": cache, "HF_HUB_OFFLINE": "1",
           "MMMIXLAB_FIGURES": str(tmp_path_factory.mktemp("figures")),
           # idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning
           # threads made a tiny-CLIP step ~10x slower (the Makefile exports the same)
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if TIMINGS:
        print("\nnotebook seconds (smoke): " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                        TIMINGS.items()))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, smoke_env):
    from nbclient import NotebookClient

    nb = read(path)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    TIMINGS[path.stem] = time.perf_counter() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    assert nb.cells[-1].cell_type == "markdown" or nb.cells[-1].outputs


@pytest.mark.slow
def test_series_shared_its_cache_and_wrote_its_figures(smoke_env):
    if len(TIMINGS) < len(NOTEBOOKS):
        pytest.skip("needs the whole series run in this session")
    if not os.environ.get("MMMIXLAB_TEST_CACHE"):  # a fresh cache: every run trained once
        runs = sorted(p.name.split("-s")[0] for p in
                      (Path(smoke_env["MMMIXLAB_CACHE"]) / "runs").iterdir())
        assert runs == ["baseline", "mm-mixing"], runs
        assert len(list((Path(smoke_env["MMMIXLAB_CACHE"]) / "clip").glob("*.pt"))) == 1
    written = {p.name for p in Path(smoke_env["MMMIXLAB_FIGURES"]).glob("*.png")}
    expected = {"mixing.png", "triplets_train.png", "umap_mmmixing.png", "umap_baseline.png",
                "confusion_mmmixing.png", "hard_samples.png", "retrieval_pc2pc.png",
                "retrieval_img2pc.png", "retrieval_text2pc.png", "ablation_table3.png",
                "ablation_table4.png", "ablation_table5.png"}
    assert expected <= written, expected - written
