"""3D views of clouds and of mixing: plain functions returning figures, and a widget that
only wires sliders to them.

Colours: points from the first source are blue, from the second orange, in the source clouds
and in the mixed cloud alike (``SOURCE_COLORS``). ``lam`` is always the share taken from the
first source, at both levels: ``m = lam * f1 + (1 - lam) * f2`` (eq. 1) and ``floor(lam * N)``
points of the first cloud (eqs. 2-3).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from plotly.subplots import make_subplots

from ..mixing import feature_mix, input_mix
from .display import fit_title, set_output

SOURCE_COLORS = ("#1f77b4", "#ff7f0e")
SOURCE_NAMES = ("source 1", "source 2")
MIXED_NAMES = ("mixed: from source 1", "mixed: from source 2")
# z up, objects face -y: look from the front-right, a little above
_CAMERA = {"eye": {"x": 1.1, "y": -1.7, "z": 0.8}, "up": {"x": 0, "y": 0, "z": 1}}


def _subsample(points, n: int, seed: int = 0) -> np.ndarray:
    """At most ``n`` points of a cloud, a fixed random subset for a given seed."""
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"a cloud must be (P, 3+) xyz[+rgb], got shape {pts.shape}")
    if len(pts) <= n:
        return pts
    idx = np.sort(np.random.default_rng(seed).choice(len(pts), n, replace=False))
    return pts[idx]


def _rgb(points: np.ndarray) -> list:
    rgb = np.clip(points[:, 3:6] * 255, 0, 255).astype(int)
    return [f"rgb({r},{g},{b})" for r, g, b in rgb]


def _scatter(points: np.ndarray, name: str, color, size: float = 2.5) -> go.Scatter3d:
    return go.Scatter3d(x=points[:, 0], y=points[:, 1], z=points[:, 2], mode="markers",
                        name=name, marker={"size": size, "color": color, "line": {"width": 0}},
                        hoverinfo="name")


def _style_scenes(fig: go.Figure, height: int) -> go.Figure:
    axis = {"visible": False, "range": [-1.05, 1.05]}
    fig.update_scenes(aspectmode="cube", xaxis=axis, yaxis=axis, zaxis=axis, camera=_CAMERA)
    # autosize: the figure follows its output's width (a FigureWidget otherwise stays 700 px
    # and cuts the subplot titles); titles get a smaller font so three fit side by side
    fig.update_layout(height=height, autosize=True, margin={"l": 0, "r": 0, "t": 40, "b": 0},
                      legend={"orientation": "h", "y": -0.02}, paper_bgcolor="white")
    fig.update_annotations(font_size=12)
    return fig


def cloud_figure(points, color="rgb", title: str | None = None, max_points: int = 2048,
                 size: float = 2.5, seed: int = 0) -> go.Figure:
    """One cloud as a 3D scatter. ``color``: ``"rgb"`` (the cloud's own colours) or any
    plotly colour. At most ``max_points`` points are drawn."""
    pts = _subsample(points, max_points, seed)
    c = _rgb(pts) if color == "rgb" and pts.shape[1] >= 6 else (
        "#555555" if color == "rgb" else color)
    fig = go.Figure(_scatter(pts, title or "cloud", c, size))
    fig.update_layout(title=title, showlegend=False)
    return _style_scenes(fig, 420)


@dataclass
class MixedPair:
    """Two equal-size source clouds and their input-level mix (see :func:`mix_clouds`)."""

    first: np.ndarray       # (N, C)
    second: np.ndarray      # (N, C)
    points: np.ndarray      # (N, C) mixed cloud
    from_first: np.ndarray  # (N,) bool, True where the point comes from ``first``
    lam: float              # exact share from ``first``: floor(lam * N) / N


def mix_clouds(p1, p2, lam: float, variant: str = "knn", seed: int = 0,
               num_points: int = 1024) -> MixedPair:
    """``mixing.input_mix`` of two single clouds, each first cut to ``num_points`` points."""
    a, b = _subsample(p1, num_points, seed), _subsample(p2, num_points, seed + 1)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    g = torch.Generator().manual_seed(int(seed))
    # torch.tensor copies: a read-only memory map must not reach torch.from_numpy (warning)
    mix = input_mix(torch.tensor(a)[None], torch.tensor(b)[None], float(lam),
                    variant, generator=g)
    return MixedPair(a, b, mix.points[0].numpy(), mix.from_first[0].numpy(),
                     float(mix.lam[0]))


def mixing_figure(p1, p2, lam: float, variant: str = "knn", seed: int = 0,
                  num_points: int = 1024, names: Sequence[str] = SOURCE_NAMES,
                  color_by: str = "source", height: int = 420) -> go.Figure:
    """Source 1 | mixed cloud | source 2, side by side.

    Traces (in order): ``source 1``, ``mixed: from source 1``, ``mixed: from source 2``,
    ``source 2``. ``color_by="source"`` paints them blue/orange; ``"rgb"`` keeps the clouds'
    colours. ``fig.layout.meta`` holds the exact ``lam``, the variant and the point counts.
    """
    m = mix_clouds(p1, p2, lam, variant, seed, num_points)

    def paint(pts, k):
        return _rgb(pts) if color_by == "rgb" and pts.shape[1] >= 6 else SOURCE_COLORS[k]

    titles = tuple(fit_title(t) for t in (names[0], f"mixed: λ = {m.lam:.2f} ({variant})",
                                            names[1]))
    fig = make_subplots(rows=1, cols=3, specs=[[{"type": "scene"}] * 3], subplot_titles=titles,
                        horizontal_spacing=0.0)
    fig.add_trace(_scatter(m.first, SOURCE_NAMES[0], paint(m.first, 0)), 1, 1)
    for k, sel in enumerate((m.from_first, ~m.from_first)):
        fig.add_trace(_scatter(m.points[sel], MIXED_NAMES[k], paint(m.points[sel], k)), 1, 2)
    fig.add_trace(_scatter(m.second, SOURCE_NAMES[1], paint(m.second, 1)), 1, 3)
    fig.update_layout(meta={"lam": m.lam, "variant": variant, "num_points": len(m.points),
                                "from_first": int(m.from_first.sum())})
    return _style_scenes(fig, height)


def mixing_figure_static(p1, p2, lam: float, variants: Sequence[str] = ("knn", "random"),
                         seed: int = 0, num_points: int = 1024,
                         names: Sequence[str] = SOURCE_NAMES, size: float = 3.0):
    """Matplotlib version for PNGs: the two sources, then one mixed cloud per variant,
    coloured by source."""
    import matplotlib.pyplot as plt

    mixes = [mix_clouds(p1, p2, lam, v, seed, num_points) for v in variants]
    panels = [(mixes[0].first, [SOURCE_COLORS[0]], names[0]),
              (mixes[0].second, [SOURCE_COLORS[1]], names[1])]
    for v, m in zip(variants, mixes):
        colors = np.where(m.from_first, SOURCE_COLORS[0], SOURCE_COLORS[1])
        panels.append((m.points, colors, f"{v} mix, λ = {m.lam:.2f}"))
    fig = plt.figure(figsize=(2.8 * len(panels), 3.0))
    for k, (pts, colors, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1, projection="3d")
        ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=colors if len(colors) > 1 else colors[0],
                   s=size, linewidths=0, depthshade=True)
        ax.set(xlim=(-0.8, 0.8), ylim=(-0.8, 0.8), zlim=(-0.8, 0.8))
        ax.set_title(title, y=1.0, pad=0)
        ax.set_box_aspect((1, 1, 1), zoom=1.15)
        ax.view_init(elev=20, azim=-60)
        ax.set_axis_off()
    fig.subplots_adjust(left=0, right=1, top=0.9, bottom=0, wspace=0)
    return fig


def _unit(x) -> torch.Tensor:
    return F.normalize(torch.as_tensor(x).float().reshape(-1), dim=0)


def feature_mix_figure(first: dict, second: dict, class_feats, classes: Sequence[int],
                       class_names: Sequence[str], lam: float | None = None,
                       steps: int = 21, height: int = 340) -> go.Figure:
    """How a feature-mixed (eq. 1) image/text feature moves as ``lam`` goes from 0 to 1.

    ``first``/``second``: ``{modality: feature}`` of the two sources; ``classes``: their class
    indices into ``class_feats`` (C, D). Left: cosine of the normalized mix to each source's
    feature (traces ``"{modality} · source k"``); right: cosine to each source's class prompt
    (``"{modality} · {class}"``). A ``λ`` trace marks ``lam`` in each panel.
    """
    lams = torch.linspace(0, 1, steps)
    cf = F.normalize(torch.as_tensor(class_feats).float(), dim=-1)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("cosine to each source's feature",
                                        "cosine to each source's class prompt"))
    for modality, dash in zip(first, ("solid", "dot", "dash")):
        a, b = _unit(first[modality]), _unit(second[modality])
        mixed = F.normalize(feature_mix(a.expand(steps, -1), b.expand(steps, -1), lams), dim=-1)
        for k, (ref, cls) in enumerate(((a, classes[0]), (b, classes[1]))):
            line = {"color": SOURCE_COLORS[k], "dash": dash}
            fig.add_trace(go.Scatter(x=lams.numpy(), y=(mixed @ ref).numpy(),
                                     name=f"{modality} · source {k + 1}",
                                     line=line, legendgroup=modality), 1, 1)
            fig.add_trace(go.Scatter(x=lams.numpy(), y=(mixed @ cf[cls]).numpy(), line=line,
                                     legendgroup=modality,
                                     name=f"{modality} · {class_names[cls]}"), 1, 2)
    if lam is not None:
        for col in (1, 2):
            fig.add_trace(go.Scatter(x=[lam, lam], y=[-0.2, 1.0], mode="lines", name="λ",
                                     showlegend=col == 1, line={"color": "#888", "width": 1}),
                          1, col)
    fig.update_xaxes(title_text="λ (share of source 1)", range=[0, 1])
    fig.update_layout(height=height, autosize=True,
                      margin={"l": 40, "r": 10, "t": 40, "b": 40})
    return fig


class MixingExplorer:
    """Sliders for the input-level and feature-level ``lam``, the input-mixing variant, the
    pair of shapes, the seed and the colouring, wired to :func:`mixing_figure` and
    :func:`feature_mix_figure`: the figures are the outputs of ``ipywidgets.Output``
    widgets (``cloud_view``, ``feature_view``), so the explorer comes back after a page reload.
    ``cloud``/``feature`` are the current figures. Each change draws the figure anew (the 3D
    camera returns to its default; every 3D panel takes a fresh WebGL context, and after many
    changes the browser drops the oldest, so an older 3D figure elsewhere on the page shows
    its stored PNG until the pointer enters it).

    ``triplets``: a :class:`~mmmixlab.data.TripletSet`; ``features``: its frozen
    :class:`~mmmixlab.clip.TripletFeatures` and ``class_feats`` the category prompts (both
    optional: without them only the clouds are shown). Display it as the last expression of a
    cell; :meth:`set` changes controls from code (what a slider drag does).
    """

    def __init__(self, triplets, features=None, class_feats=None, first: int | None = None,
                 second: int | None = None, lam: float = 0.5, variant: str = "knn",
                 seed: int = 0, num_points: int = 1024, per_class: int = 2):
        import ipywidgets as w

        self.triplets, self.features, self.class_feats = triplets, features, class_feats
        self.num_points = num_points
        choices = _choices(triplets, per_class)
        values = [v for _, v in choices]
        first = values[0] if first is None else first
        second = values[min(1, len(values) - 1)] if second is None else second
        for i in (first, second):
            if i not in values:
                choices.append((triplets.names[i], i))
        slider = {"min": 0.0, "max": 1.0, "step": 0.01, "continuous_update": False,
                      "readout_format": ".2f"}
        self.controls = {
            "lam_input": w.FloatSlider(value=lam, description="input λ", **slider),
            "lam_feature": w.FloatSlider(value=lam, description="feature λ", **slider),
            "variant": w.ToggleButtons(options=["knn", "random"], value=variant,
                                       description="variant"),
            "first": w.Dropdown(options=choices, value=first, description="shape 1"),
            "second": w.Dropdown(options=choices, value=second, description="shape 2"),
            "seed": w.IntSlider(value=seed, min=0, max=20, description="seed",
                                continuous_update=False),
            "color_by": w.ToggleButtons(options=["source", "rgb"], value="source",
                                        description="colour"),
        }
        # the figures are outputs of Output widgets set from the kernel (see .display): core
        # ipywidgets models restore after a page reload, unlike plotly's FigureWidget
        self.cloud = self.cloud_figure()
        self.feature = self.feature_figure() if self._has_features else None
        self.cloud_view = w.Output(layout={"width": "100%"})
        self.feature_view = w.Output(layout={"width": "100%"}) if self._has_features else None
        set_output(self.cloud_view, self.cloud)
        if self.feature_view is not None:
            set_output(self.feature_view, self.feature)
        self.captions = w.HTML(self.captions_html())
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        c = self.controls
        rows = [w.HBox([c["first"], c["second"], c["seed"]]),
                w.HBox([c["lam_input"], c["variant"], c["color_by"]]), self.cloud_view,
                w.HBox([c["lam_feature"]]), self.captions]
        self.widget = w.VBox(rows + ([self.feature_view] if self.feature_view else []),
                             layout={"width": "100%"})

    @property
    def _has_features(self) -> bool:
        return self.features is not None and self.class_feats is not None

    def value(self, name: str):
        return self.controls[name].value

    def set(self, **values) -> MixingExplorer:
        """Set controls by name (``lam_input``, ``lam_feature``, ``variant``, ``first``,
        ``second``, ``seed``, ``color_by``); the figures update as after a slider drag."""
        for name, v in values.items():
            if name not in self.controls:
                raise ValueError(f"unknown control {name!r}; choose from {list(self.controls)}")
            self.controls[name].value = v
        return self

    def cloud_figure(self) -> go.Figure:
        t, v = self.triplets, self.value
        names = [f"source 1: {_label(t, v('first'))}", f"source 2: {_label(t, v('second'))}"]
        return mixing_figure(t.points[v("first")], t.points[v("second")], v("lam_input"),
                             v("variant"), v("seed"), self.num_points, names, v("color_by"))

    def _pair_features(self) -> tuple:
        f, i, j = self.features, self.value("first"), self.value("second")
        first, second = {"image": f.image[i, 0]}, {"image": f.image[j, 0]}
        if bool(f.text_mask[i, 0]) and bool(f.text_mask[j, 0]):
            first["text"], second["text"] = f.text[i, 0], f.text[j, 0]
        return first, second

    def feature_figure(self) -> go.Figure:
        first, second = self._pair_features()
        labels = self.triplets.labels
        return feature_mix_figure(first, second, self.class_feats,
                                  (int(labels[self.value("first")]),
                                   int(labels[self.value("second")])),
                                  self.triplets.class_names, lam=self.value("lam_feature"))

    def captions_html(self) -> str:
        """The mixed caption pair and the zero-shot class of each mixed feature."""
        lam, t = self.value("lam_feature"), self.triplets
        lines = []
        for k, (i, weight) in enumerate(((self.value("first"), lam),
                                         (self.value("second"), 1 - lam))):
            cap = t.captions[i][0] if t.captions[i] else "(no caption)"
            lines.append(f"<b>{weight:.2f}</b> × <span style='color:{SOURCE_COLORS[k]}'>"
                         f"“{html.escape(cap)}”</span>")
        if self._has_features:
            first, second = self._pair_features()
            cf = F.normalize(torch.as_tensor(self.class_feats).float(), dim=-1)
            for modality in first:
                mixed = F.normalize(lam * _unit(first[modality])
                                    + (1 - lam) * _unit(second[modality]), dim=0)
                sims = cf @ mixed
                top = sims.topk(min(3, len(sims)))
                guesses = ", ".join(f"{t.class_names[c]} {s:.2f}"
                                    for s, c in zip(top.values.tolist(), top.indices.tolist()))
                lines.append(f"mixed {modality} feature → closest class prompts: {guesses}")
        return "<br>".join(lines)

    def _on_change(self, change) -> None:
        if change["owner"] is not self.controls["lam_feature"]:
            self.cloud = self.cloud_figure()
            set_output(self.cloud_view, self.cloud)
        if self.feature is not None:
            self.feature = self.feature_figure()
            set_output(self.feature_view, self.feature)
        self.captions.value = self.captions_html()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _label(triplets, i: int) -> str:
    cat = triplets.category(i) if triplets.labels is not None else None
    return f"{cat} ({triplets.names[i]})" if cat else triplets.names[i]


def _choices(triplets, per_class: int) -> list:
    """Dropdown options ``(text, index)``: the first ``per_class`` shapes of every class."""
    if triplets.labels is None or triplets.class_names is None:
        return [(n, i) for i, n in enumerate(triplets.names[:50])]
    out, seen = [], {}
    for i, lab in enumerate(np.asarray(triplets.labels).tolist()):
        if lab >= 0 and seen.get(lab, 0) < per_class:
            seen[lab] = seen.get(lab, 0) + 1
            out.append((f"{triplets.class_names[lab]} #{seen[lab]}", i))
    return out
