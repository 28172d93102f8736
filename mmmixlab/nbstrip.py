"""Keeping the committed notebooks small: outputs, execution counts, saved widget state and
cell metadata other than ``tags`` removed (``make strip``).

    python -m mmmixlab.nbstrip notebooks/*.ipynb
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["KEEP_NOTEBOOK_METADATA", "strip_notebook"]

KEEP_NOTEBOOK_METADATA = ("kernelspec", "language_info")


def strip_notebook(path) -> bool:
    """Remove outputs, execution counts, saved widget state and cell metadata other than
    ``tags`` from a notebook file, in place. Returns whether the file changed."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in KEEP_NOTEBOOK_METADATA}
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k == "tags"}
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    after = nbformat.writes(nb)
    if after != before:
        path.write_text(after)
    return after != before


if __name__ == "__main__":  # python -m mmmixlab.nbstrip notebooks/*.ipynb
    import sys

    if len(sys.argv) < 2:
        sys.exit("usage: python -m mmmixlab.nbstrip NOTEBOOK.ipynb ...")
    for name in sys.argv[1:]:
        print(("stripped " if strip_notebook(name) else "clean    ") + name)
