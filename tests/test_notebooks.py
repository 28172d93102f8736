"""The notebook series: committed clean, with one `parameters` cell each.

Running them top to bottom is nbmake's job: ``make test`` runs ``pytest --nbmake notebooks``
(``notebooks/conftest.py`` shrinks the parameters and shares one cache; the series' outputs are
checked by ``notebooks/test_series_outputs.py``).
"""

import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
SHARED = ("SMOKE", "DATA_ROOT", "BENCHMARKS", "CLASS_FEATURES", "CLIP", "BACKBONE",
          "EPOCHS_STAGE1", "EPOCHS_STAGE2", "BATCH_SIZE", "DEVICE", "SEED", "CACHE", "FIGURES")


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
    # no saved widget state or run metadata (`make strip` or `python -m mmmixlab.nbstrip` removes them)
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
    from mmmixlab.nbstrip import strip_notebook

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


# --- make lab-check's pieces that need no browser ---------------------------------------------

def _check_lab():
    import importlib.util

    path = NOTEBOOK_DIR.parent / "scripts" / "check_lab.py"
    spec = importlib.util.spec_from_file_location("check_lab", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # stdlib only at import; selenium is imported by browser()
    return mod


def test_lab_check_edits_only_its_copy_and_isolates_settings(tmp_path):
    lab = _check_lab()
    copy = tmp_path / "03.ipynb"
    copy.write_text((NOTEBOOK_DIR / "03_stage1_feature_mixing.ipynb").read_text())
    lab.set_parameters(copy, {"RETRAIN": "True"}, lab.LONGER_STAGE1)
    params = parameters(read(copy))
    assert params["RETRAIN"] == "True"  # the last assignment wins
    assert "epochs_stage1" in next(c.source for c in read(copy).cells
                                   if "parameters" in c.metadata.get("tags", []))
    venv = tmp_path / "venv"
    settings = venv / "share" / "jupyter" / "lab" / "settings"
    settings.mkdir(parents=True)
    (settings / "overrides.json").write_text('{"some:plugin": {"x": 1}}')
    merged = lab.app_settings(venv, tmp_path / "run")
    import json

    over = json.loads((merged / "overrides.json").read_text())
    assert over["some:plugin"] == {"x": 1}  # the venv's own overrides are kept
    assert over["@jupyter-widgets/jupyterlab-manager:plugin"]["saveState"] is True
    assert json.loads((settings / "overrides.json").read_text()) == {"some:plugin": {"x": 1}}


def test_lab_check_is_optional():
    """`make lab-check` exists and `make test` does not run it."""
    makefile = (NOTEBOOK_DIR.parent / "Makefile").read_text()
    assert "\nlab-check:" in makefile
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "check_lab" not in test_recipe and "lab-check" not in test_recipe
