"""Training curves (static and live) and ablation bar charts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .display import LiveDisplay, figure_bundle

PHASE_COLORS = {"baseline": "#7f7f7f", "stage1": "#1f77b4", "stage2": "#2ca02c",
                "im": "#9467bd", "joint": "#d62728"}
SPLIT_COLORS = {"test": "#1f77b4", "scan": "#d62728"}
METRIC_LABELS = {
    "zs_test_top1": "zero-shot top-1, test", "zs_test_top5": "zero-shot top-5, test",
    "zs_scan_top1": "zero-shot top-1, scan", "zs_scan_top5": "zero-shot top-5, scan",
    "lp_test": "linear probe, test", "lp_scan": "linear probe, scan",
    "text2pc_R@1": "text→PC R@1", "img2pc_R@1": "image→PC R@1",
}


def training_curves(history: Sequence[dict], title: str | None = None,
                    height: int = 320, steps: Sequence[dict] = ()) -> go.Figure:
    """Loss, temperature and per-epoch zero-shot top-1 (%) against the running epoch.

    One trace per phase for loss and temperature (``"loss (stage1)"``, ...), one per eval
    split for zero-shot (``"zero-shot test"``); dotted lines mark where a phase starts.
    ``steps``: per-step records (``x`` = epochs done as a fraction, ``loss``, ``temperature``),
    drawn as thin lines, so a curve grows from the first steps of an epoch.
    """
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08,
                        subplot_titles=("loss", "temperature", "zero-shot top-1 (%)"))
    x = np.arange(1, len(history) + 1)
    for phase in dict.fromkeys(r["phase"] for r in steps):
        sel = [r for r in steps if r["phase"] == phase]
        color = PHASE_COLORS.get(phase, "#333333")
        for col, key in ((1, "loss"), (2, "temperature")):
            fig.add_trace(go.Scatter(x=[r["x"] for r in sel], y=[r[key] for r in sel],
                                     mode="lines", name=f"{key} per step ({phase})",
                                     line={"color": color, "width": 1}, opacity=0.5,
                                     legendgroup=phase, showlegend=col == 1), 1, col)
    phases = list(dict.fromkeys(r["phase"] for r in history))
    for phase in phases:
        sel = [k for k, r in enumerate(history) if r["phase"] == phase]
        color = PHASE_COLORS.get(phase, "#333333")
        for col, key in ((1, "loss"), (2, "temperature")):
            fig.add_trace(go.Scatter(x=x[sel], y=[history[k][key] for k in sel],
                                     mode="lines+markers", name=f"{key} ({phase})",
                                     line={"color": color}, legendgroup=phase), 1, col)
        if sel[0] > 0:
            fig.add_vline(x=sel[0] + 0.5, line={"dash": "dot", "color": "#999"}, row="all",
                          col="all")
    for split, color in SPLIT_COLORS.items():
        key = f"zero_shot_{split}_top1"
        if any(key in r for r in history):
            fig.add_trace(go.Scatter(x=x, y=[100 * r[key] if r.get(key) is not None else None
                                             for r in history],
                                     name=f"zero-shot {split}", mode="lines+markers",
                                     line={"color": color}), 1, 3)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=title, height=height, autosize=True,
                      margin={"l": 40, "r": 10, "t": 60, "b": 40})
    return fig


class LiveCurves:
    """:func:`training_curves` that grow as steps and epochs finish, in one notebook output.

    Pass the object as ``on_epoch`` (and its :meth:`step` as ``on_step``) to a training call;
    display it first (``display(live)`` or ``live`` as a cell's last expression). While it
    trains, the figure is an ``ipywidgets.Output``'s output; :meth:`show_history` (or
    :meth:`finish`) turns the display into the plain plotly figure (see :mod:`.display`), which
    survives a page reload and shows in a saved notebook opened without a kernel. Step updates
    closer than ``min_interval`` seconds are merged into the next one; every epoch redraws.
    When nothing was trained (a cached run), :meth:`show_history` draws the stored history.
    ``figure`` is the current :class:`plotly.graph_objects.Figure`.
    """

    def __init__(self, title: str | None = None, min_interval: float = 0.25):
        self.title = title
        self.history: list = []
        self.steps: list = []
        self.output = LiveDisplay(min_interval)
        self._figure, self._stale = training_curves([], title), False

    @property
    def figure(self) -> go.Figure:
        if self._stale:
            self._figure = training_curves(self.history, self.title, steps=self.steps)
            self._stale = False
        return self._figure

    def display(self) -> LiveCurves:
        """Show the figure (once) in the running cell's output; later changes replace it."""
        self.output.show(self.figure)
        return self

    def _ipython_display_(self) -> None:
        self.display()

    def __call__(self, record: dict) -> None:
        self.history.append(dict(record))
        self._redraw(force=True)

    def step(self, record: dict) -> None:
        """A logged step (``Trainer.fit(on_step=...)``): the curves move within an epoch."""
        self.steps.append(dict(record))
        self._redraw()

    def show_history(self, history: Sequence[dict]) -> LiveCurves:
        """Draw ``history`` when nothing was trained live, then :meth:`finish`."""
        if not self.history:
            self.history = [dict(r) for r in history]
        self._stale = True
        return self.finish()

    def finish(self) -> LiveCurves:
        """Training is over: the output becomes the plain figure the notebook stores."""
        self.output.finish(self.figure)
        return self

    def _redraw(self, force: bool = False) -> None:
        self._stale = True
        if force or self.output.due():
            self.output.update(self.figure, force=True)

    def _repr_mimebundle_(self, **kwargs):
        return figure_bundle(self.figure)


def _bars(summary: dict, metrics, rows):
    """Means and their error bars in %: the 95% interval over seeds (``lo``/``hi``)."""
    rows = [r for r in (rows or summary) if summary.get(r)]
    mean = np.array([[100 * summary[r][m]["mean"] for r in rows] for m in metrics])
    lo = np.array([[100 * summary[r][m]["lo"] for r in rows] for m in metrics])
    hi = np.array([[100 * summary[r][m]["hi"] for r in rows] for m in metrics])
    return rows, mean, (mean - lo, hi - mean)


def ablation_chart(summary: dict, metrics: Sequence[str] = ("zs_test_top1", "zs_scan_top1"),
                   rows: Sequence[str] | None = None, labels: dict | None = None,
                   title: str = "", backend: str = "plotly"):
    """Grouped bars (mean over seeds with its 95% interval as error bars, %) of ablation rows
    from ``ablation.ablate``'s summary. ``rows`` picks and orders rows; ``labels`` renames
    them. ``backend``: ``"plotly"`` (interactive) or ``"matplotlib"`` (for a PNG)."""
    rows, mean, (below, above) = _bars(summary, metrics, rows)
    names = [(labels or {}).get(r, r) for r in rows]
    if backend == "plotly":
        fig = go.Figure([go.Bar(x=names, y=mean[k], name=METRIC_LABELS.get(m, m),
                                error_y={"type": "data", "array": above[k],
                                         "arrayminus": below[k]})
                         for k, m in enumerate(metrics)])
        fig.update_layout(barmode="group", title=title, yaxis_title="%", height=360,
                          autosize=True, margin={"l": 40, "r": 10, "t": 50, "b": 40})
        return fig
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(rows), 3.4))
    width = 0.8 / len(metrics)
    for k, m in enumerate(metrics):
        pos = np.arange(len(rows)) + (k - (len(metrics) - 1) / 2) * width
        ax.bar(pos, mean[k], width, yerr=[below[k], above[k]], capsize=3,
               label=METRIC_LABELS.get(m, m))
    ax.set_xticks(np.arange(len(rows)), names, rotation=15)
    ax.set(ylabel="%", title=title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def per_class_figure(per_class: dict, chance: float | None = None, title: str = ""):
    """Grouped bars of zero-shot accuracy per class, one group per class and one bar per
    method (``{method: {class: accuracy}}``, accuracies in [0, 1]); a line at chance."""
    fig = go.Figure([go.Bar(x=list(acc), y=[100 * v for v in acc.values()], name=name)
                     for name, acc in per_class.items()])
    if chance is not None:
        fig.add_hline(y=100 * chance, line={"dash": "dot", "color": "#999"},
                      annotation_text="chance")
    fig.update_layout(barmode="group", title=title, yaxis_title="zero-shot top-1 (%)",
                      height=360, autosize=True, margin={"l": 40, "r": 10, "t": 50, "b": 80})
    return fig
