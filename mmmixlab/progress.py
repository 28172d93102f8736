"""Progress output that reads well wherever it lands.

In a terminal or a notebook: tqdm bars (``tqdm.auto``: widgets in Jupyter). Anywhere else (CI,
``nohup``, ``make demo > log``): no carriage-return redraws; a bar prints at most one line every
``LOG_INTERVAL`` seconds, and the trainer prints one plain line per epoch instead of a bar.
``MMMIXLAB_PROGRESS=bar|lines`` forces either mode.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm as _plain_tqdm
from tqdm.auto import tqdm

__all__ = ["bar", "interactive", "write"]

LOG_INTERVAL = 30.0  # seconds between progress lines when the output is a log


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        ip = shell.get_ipython() if shell is not None else None
    except Exception:  # noqa: BLE001 (any IPython oddity means: not a notebook)
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def interactive() -> bool:
    """True when progress can be redrawn in place: a terminal or a notebook."""
    forced = os.environ.get("MMMIXLAB_PROGRESS", "").strip().lower()
    if forced in ("bar", "lines"):
        return forced == "bar"
    stream = sys.stderr
    return _in_notebook() or bool(getattr(stream, "isatty", lambda: False)())


class _LogBar(_plain_tqdm):
    """A bar for log files: a postfix update waits for the next timed line, no forced redraw."""

    def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)


def bar(iterable=None, **kwargs):
    """``tqdm`` in a terminal or notebook; outside them the same counter, but printed as a
    plain line at most every ``LOG_INTERVAL`` seconds (and at the end)."""
    if not interactive():
        kwargs.setdefault("mininterval", LOG_INTERVAL)
        kwargs.setdefault("maxinterval", LOG_INTERVAL * 2)
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("dynamic_ncols", False)
        kwargs.setdefault("ncols", 100)
        return _LogBar(iterable, **kwargs)
    if _in_notebook():
        try:
            return _notebook_bar()(iterable, **kwargs)
        except ImportError:  # no ipywidgets: tqdm.auto falls back to text
            pass
    return tqdm(iterable, **kwargs)


_NOTEBOOK_BAR = None


def _notebook_bar():
    """tqdm's notebook bar, shown with a ``display_id``: a bar that goes away when done
    (``leave=False``) also empties its output, so the saved notebook keeps no view of a closed
    widget ("Error displaying widget: model not found" after a page reload)."""
    global _NOTEBOOK_BAR
    if _NOTEBOOK_BAR is not None:
        return _NOTEBOOK_BAR
    from IPython.display import display
    from tqdm.notebook import tqdm_notebook

    class NotebookBar(tqdm_notebook):
        def __init__(self, *args, **kwargs):
            kwargs["display"] = False
            self._handle = None
            super().__init__(*args, **kwargs)
            if not self.disable and getattr(self, "container", None) is not None:
                self._handle = display(self.container, display_id=True)
                self.displayed = True

        def close(self):
            super().close()
            if self._handle is not None and not self.leave and not (
                    self.total and self.n < self.total):
                self._handle.update({"text/plain": ""}, raw=True)
                self._handle = None
                for child in getattr(self.container, "children", ()):  # tqdm closes the box only
                    child.close()

    _NOTEBOOK_BAR = NotebookBar
    return NotebookBar


def write(line: str) -> None:
    """One line that does not break a bar being drawn."""
    tqdm.write(line)
