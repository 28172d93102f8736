"""Showing plotly figures so that they survive a page reload and a kernel-less reopen.

A plotly ``FigureWidget`` (an anywidget in plotly 6+) does not come back reliably: measured
with ``make lab-check`` on the notebooks as they were (JupyterLab 4.6, ipywidgets 8.1,
anywidget 0.11, plotly 7.1), 00's live-curve FigureWidgets came back as empty axes after a
reload with the kernel alive, and reopening with a fresh kernel logged "[anywidget] Failed to
initialize model" (the issue also saw "Error displaying widget: model not found"); ipywidgets'
own models do come back. So the notebooks never display one:

* a figure is an output with plotly's mimetype (``application/vnd.plotly.v1+json``), stored
  in the notebook like any output and drawn by JupyterLab's plotly renderer with or without a
  kernel; :func:`figure_bundle` builds it (``autosize``, ``config.responsive``: the figure
  follows its output's width);
* a figure that changes while its cell runs (live training curves) is an ``ipywidgets.Output``
  while it changes, and its display (a ``display_id``) is replaced by the plain figure when
  training ends (:class:`LiveDisplay`): that figure is what the notebook stores;
* a figure that changes from a widget callback (the mixing explorer) is the single output of
  an ``ipywidgets.Output`` whose ``outputs`` the kernel sets (:func:`set_output`): a core
  ipywidgets model, restored from the kernel after a reload, and from the notebook's saved
  widget state (``saveState``, set by ``make install``) when the kernel is gone.
"""

from __future__ import annotations

import json
import time

PLOTLY_MIME = "application/vnd.plotly.v1+json"
CONFIG = {"responsive": True, "displaylogo": False}


def responsive(fig):
    """``fig`` with no fixed width (``autosize``): it takes its output's width."""
    fig.update_layout(autosize=True, width=None)
    return fig


def fit_title(text: str, width: int = 32) -> str:
    """``text`` wrapped to lines of at most ``width`` characters (plotly's ``<br>``), so a
    subplot title fits its column instead of running into its neighbours'."""
    import textwrap

    return "<br>".join(textwrap.wrap(text, width)) or text


def figure_bundle(fig) -> dict:
    """The mimebundle of a plotly figure: plotly's mimetype (JSON, numpy arrays as lists) with
    a responsive config, and a one-line text fallback."""
    import plotly.io as pio

    spec = json.loads(pio.to_json(responsive(fig), validate=False))
    title = (spec.get("layout", {}).get("title") or {}).get("text") or "plotly figure"
    return {PLOTLY_MIME: {"data": spec.get("data", []), "layout": spec.get("layout", {}),
                          "config": dict(CONFIG)},
            "text/plain": f"<figure: {title}>"}


def in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class LiveDisplay:
    """A figure that changes while its cell runs, then stays as a plain figure output.

    :meth:`show` displays an ``ipywidgets.Output`` holding the figure (with a ``display_id``);
    :meth:`update` replaces the Output's figure (JupyterLab's plotly renderer never redraws an
    output replaced in place by ``update_display_data``, but it draws an Output widget's new
    output); :meth:`finish` replaces the whole display by the figure itself, the stored output
    that a reload or a kernel-less reopen shows, and closes the widget. ``min_interval``:
    updates closer together than this (seconds) are skipped unless ``force``. Outside a kernel
    nothing is displayed; ``updates`` still counts what would have been sent.
    """

    def __init__(self, min_interval: float = 0.25):
        self.min_interval = min_interval
        self.handle = None
        self.view = None
        self.updates = 0
        self.finished = False
        self._last = 0.0

    def show(self, fig) -> None:
        if self.handle is None and in_kernel():
            import ipywidgets as w
            from IPython.display import display

            self.view = w.Output(layout={"width": "100%"})
            set_output(self.view, fig)
            self.handle = display(self.view, display_id=True)
        self._last = time.monotonic()

    def due(self) -> bool:
        """Whether an unforced :meth:`update` now would be sent."""
        return time.monotonic() - self._last >= self.min_interval

    def update(self, fig, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and not self.due():
            return False
        self._last = now
        self.updates += 1
        if self.view is not None:
            set_output(self.view, fig)
        elif self.handle is not None:  # after finish: what the notebook stores
            self.handle.update(figure_bundle(fig), raw=True)
        return True

    def finish(self, fig) -> None:
        """The display becomes ``fig`` as a plain figure output; the widget is closed."""
        self.finished = True
        if self.handle is not None:
            self.handle.update(figure_bundle(fig), raw=True)
        if self.view is not None:
            self.view.close()
            self.view = None


def output_dict(fig) -> dict:
    """``fig`` as one stored output (what ``ipywidgets.Output.outputs`` holds)."""
    return {"output_type": "display_data", "data": figure_bundle(fig), "metadata": {}}


def set_output(out, fig) -> None:
    """Make ``fig`` the only output of the ``ipywidgets.Output`` ``out``, set from the kernel
    (no capture context, so it works from a widget callback)."""
    out.outputs = (output_dict(fig),)
