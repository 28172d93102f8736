"""Embeddings (UMAP), confusion matrices, hard-sample galleries and retrieval grids.

Image grids (galleries, retrieval) are matplotlib figures of clouds rendered with
:func:`mmmixlab.data.render_views`; :func:`save` writes any matplotlib figure as a PNG.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..data import render_views

MODALITY_COLORS = {"point": "#2ca02c", "image": "#9467bd", "text": "#8c564b"}
_SYMBOLS = {"point": ("circle", "o"), "image": ("square", "s"), "text": ("diamond", "D")}
_RIGHT, _WRONG = "#2ca02c", "#d62728"


def class_colors(n: int) -> list:
    """``n`` distinct hex colours (matplotlib's tab20, then tab20b)."""
    import matplotlib

    cmaps = [matplotlib.colormaps["tab20"], matplotlib.colormaps["tab20b"]]
    colors = [c for cm in cmaps for c in cm.colors]
    return [matplotlib.colors.to_hex(colors[i % len(colors)]) for i in range(n)]


class WrittenFigure(type(Path())):
    """The path of a figure :func:`save` wrote; shown as a sentence in a notebook."""

    def __repr__(self) -> str:
        return f"figure written to {self}"


def save(fig, folder, name: str, dpi: int = 110, show: bool = True) -> Path:
    """Write a matplotlib figure to ``folder/name`` (a PNG; the folder is created), then close
    it, so a notebook shows it once: here when ``show`` (the figure is the cell's picture), not
    at all with ``show=False`` (an interactive version was displayed already). Returns the
    path (its repr is a short sentence)."""
    import matplotlib.pyplot as plt

    path = WrittenFigure(Path(folder).expanduser() / name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    if show:
        _show_in_notebook(fig)
    plt.close(fig)
    return path


def _show_in_notebook(fig) -> None:
    """Display ``fig`` when running in an IPython kernel (never in a plain process)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is not None:
        display(fig)


@dataclass
class Embedding:
    """2-D coordinates of features from several modalities, one row per (shape, modality)."""

    xy: np.ndarray          # (M, 2)
    labels: np.ndarray      # (M,) class index
    modality: np.ndarray    # (M,) modality name
    index: np.ndarray       # (M,) shape index within its split
    class_names: list
    method: str


def embed_modalities(feats: dict, labels, class_names: Sequence[str], method: str = "umap",
                     seed: int = 0) -> Embedding:
    """One joint 2-D embedding of ``{modality: (N, D) features}`` (the 3D, image and text
    features live in one CLIP space). ``method``: ``"umap"`` (cosine metric) or ``"pca"``."""
    names = list(feats)
    x = np.concatenate([np.asarray(feats[m], dtype=np.float32) for m in names])
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(next(iter(feats.values())))
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), min_dist=0.2,
                            metric="cosine", random_state=seed, n_jobs=1)
        xy = reducer.fit_transform(x)
    elif method == "pca":
        centred = x - x.mean(0)
        xy = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    else:
        raise ValueError(f"method must be 'umap' or 'pca', got {method!r}")
    return Embedding(np.asarray(xy), np.tile(np.asarray(labels), len(names)),
                     np.repeat(names, n), np.tile(np.arange(n), len(names)),
                     list(class_names), method)


def umap_figure(emb: Embedding, title: str = "", backend: str = "plotly"):
    """Two panels of the same embedding: coloured by class (marker shape = modality) and
    coloured by modality. Plotly traces: one per class, then one per modality."""
    colors = class_colors(len(emb.class_names))
    mods = list(dict.fromkeys(emb.modality.tolist()))
    if backend != "plotly":
        return _umap_matplotlib(emb, title, colors, mods)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("by class", "by modality"))
    for c, name in enumerate(emb.class_names):
        sel = emb.labels == c
        if sel.any():
            fig.add_trace(go.Scatter(
                x=emb.xy[sel, 0], y=emb.xy[sel, 1], mode="markers", name=name,
                marker={"color": colors[c], "size": 6,
                            "symbol": [_SYMBOLS.get(m, ("circle",))[0] for m in emb.modality[sel]]},
                text=[f"{name} · {m} · #{i}" for m, i in zip(emb.modality[sel], emb.index[sel])],
                hoverinfo="text"), 1, 1)
    for m in mods:
        sel = emb.modality == m
        fig.add_trace(go.Scatter(x=emb.xy[sel, 0], y=emb.xy[sel, 1], mode="markers", name=m,
                                 marker={"color": MODALITY_COLORS.get(m, "#333"), "size": 6},
                                 text=[emb.class_names[c] for c in emb.labels[sel]],
                                 hoverinfo="text"), 1, 2)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(title=title or f"{emb.method.upper()} of the embeddings", height=460,
                      autosize=True, margin={"l": 10, "r": 10, "t": 60, "b": 10})
    return fig


def _umap_matplotlib(emb: Embedding, title: str, colors: list, mods: list):
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.8))
    for c, name in enumerate(emb.class_names):
        for m in mods:
            sel = (emb.labels == c) & (emb.modality == m)
            a.scatter(*emb.xy[sel].T, s=12, c=colors[c], marker=_SYMBOLS.get(m, ("", "o"))[1],
                      label=name if m == mods[0] else None)
    for m in mods:
        sel = emb.modality == m
        b.scatter(*emb.xy[sel].T, s=12, c=MODALITY_COLORS.get(m, "#333"), label=m)
    a.legend(fontsize=7, ncol=2, loc="best", markerscale=1.2)
    b.legend(fontsize=8)
    for ax, sub in ((a, "by class (o point, □ image, ◇ text)"), (b, "by modality")):
        ax.set(xticks=[], yticks=[], title=sub)
    fig.suptitle(title or f"{emb.method.upper()} of the embeddings")
    fig.tight_layout()
    return fig


def confusion_figure(cm, class_names: Sequence[str], title: str = "", normalize: bool = True,
                     backend: str = "plotly"):
    """Confusion matrix (rows: true class, columns: predicted), row-normalized by default;
    cells show counts."""
    cm = np.asarray(cm)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    if backend == "plotly":
        fig = go.Figure(go.Heatmap(z=shown, x=list(class_names), y=list(class_names),
                                   text=cm, texttemplate="%{text}", colorscale="Blues",
                                   hovertemplate="true %{y}<br>predicted %{x}<br>%{text}"))
        fig.update_layout(title=title, height=520, yaxis_autorange="reversed",
                          xaxis_title="predicted", yaxis_title="true",
                          autosize=True, margin={"l": 10, "r": 10, "t": 50, "b": 10})
        return fig
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(0.42 * len(class_names) + 2, 0.42 * len(class_names) + 1.5))
    ax.imshow(shown, cmap="Blues", vmin=0)
    for (i, j), v in np.ndenumerate(cm):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if shown[i, j] > 0.6 * shown.max() else "black")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig


def thumbnail(points, size: int = 96, azimuth: float = 30.0, elevation: float = 20.0):
    """A cloud rendered to a (size, size, 3) uint8 image (headless point splats)."""
    return render_views(np.asarray(points), azimuths=[azimuth], elevation=elevation,
                        image_size=size)[0]


def _tile(ax, image=None, text: str = "", frame: str | None = None, label: str = "",
          label_color: str = "black", wrap: int = 22) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if image is not None:
        ax.imshow(image)
    else:
        artist = ax.text(0.5, 0.5, "\n".join(textwrap.wrap(text, wrap)) if wrap else text,
                         ha="center", va="center", fontsize=7, transform=ax.transAxes)
        if wrap:  # re-wrapped to the tile's real size once the figure is laid out
            ax._mmmixlab_caption = (artist, text)
    for spine in ax.spines.values():
        spine.set_visible(frame is not None)
        if frame is not None:
            spine.set_edgecolor(frame)
            spine.set_linewidth(3)
    ax.set_xlabel(label, fontsize=7, color=label_color)


def fit_captions(fig, frame_pt: float = 3.0, pad_pt: float = 3.0,
                 sizes=(7, 6.5, 6, 5.5, 5)) -> None:
    """Re-wrap the text tiles of ``fig`` (captions as queries) so that each stays inside its
    box, its frame and a small padding included: the widest wrap that fits at the largest
    font size in ``sizes``; at the smallest one, the lines that fit and an ellipsis. Call it
    after the figure's layout is final (``tight_layout``)."""
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72
    for ax in fig.axes:
        item = getattr(ax, "_mmmixlab_caption", None)
        if item is None:
            continue
        artist, raw = item
        box = ax.get_window_extent(renderer)
        room_w = box.width - 2 * (frame_pt + pad_pt) * px
        room_h = box.height - 2 * (frame_pt + pad_pt) * px

        def fits(lines, size, artist=artist, room=(room_w, room_h)):
            artist.set_text("\n".join(lines))
            artist.set_fontsize(size)
            ext = artist.get_window_extent(renderer)
            return ext.width <= room[0], ext.height <= room[1]

        done = False
        for size in sizes:
            for width in range(max(len(raw), 1), 5, -1):
                lines = textwrap.wrap(raw, width) or [""]
                wide_ok, high_ok = fits(lines, size)
                if wide_ok and high_ok:
                    done = True
                    break
                if wide_ok:  # narrower only adds lines: try a smaller font
                    break
            if done:
                break
        if not done:  # the smallest font: as many lines as fit, then "…"
            while len(lines) > 1 and not all(fits(lines[:-1] + [lines[-1] + "…"], size)):
                lines = lines[:-1]
            fits(lines[:-1] + [lines[-1].rstrip(" ,.;") + "…"], size)


def hard_sample_gallery(points, indices: Sequence[int], labels, preds: dict,
                        class_names: Sequence[str], title: str = "", size: int = 112,
                        columns: int = 4):
    """Figure 3 analogue: each tile a rendered cloud with its true class and each method's
    zero-shot prediction (``preds``: ``{method: predictions}``), green when right."""
    import matplotlib.pyplot as plt

    indices = list(indices)
    if not indices:
        fig, ax = plt.subplots(figsize=(6, 1.2))
        _tile(ax, text="no shape here is wrong for the first method and right for the second")
        ax.set_title(title, fontsize=9)
        return fig
    cols = min(columns, len(indices))
    rows = -(-len(indices) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.9 * rows), squeeze=False,
                             layout="constrained")
    for ax, i in zip(axes.ravel(), indices):
        truth = int(labels[i])
        lines = [f"truth: {class_names[truth]}"] + [
            f"{m}: {class_names[int(p[i])]} {'✓' if int(p[i]) == truth else '✗'}"
            for m, p in preds.items()]
        _tile(ax, thumbnail(points[i], size))
        ax.set_xlabel("\n".join(lines), fontsize=8)
    for ax in axes.ravel()[len(indices):]:
        ax.axis("off")
    fig.suptitle(title)
    return fig


def retrieval_grid(queries: Sequence, hits, gallery_points, gallery_labels, query_labels,
                   class_names: Sequence[str], title: str = "", size: int = 96,
                   row_labels: Sequence[str] | None = None):
    """Figure 4 analogue: one row per query, the query then its top-k gallery clouds.

    A query is a cloud ((P, 3|6) array, rendered), an image ((H, W, 3) uint8) or a caption
    (str). ``hits`` is (Q, k) gallery indices (best first). A hit is framed green when its
    class is the query's, red otherwise. ``row_labels`` (e.g. the method) go left of each row.
    """
    import matplotlib.pyplot as plt

    hits = np.asarray(hits)
    q, k = hits.shape
    fig, axes = plt.subplots(q, k + 1, figsize=(1.35 * (k + 1) + 0.3, 1.5 * q + 0.4),
                             squeeze=False)
    for r, query in enumerate(queries):
        truth = int(query_labels[r])
        if isinstance(query, str):
            _tile(axes[r, 0], text=query, frame="#444", label=f"query: {class_names[truth]}")
        else:
            arr = np.asarray(query)
            img = arr if arr.dtype == np.uint8 and arr.ndim == 3 else thumbnail(arr, size)
            _tile(axes[r, 0], img, frame="#444", label=f"query: {class_names[truth]}")
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
        for c, h in enumerate(hits[r]):
            ok = int(gallery_labels[h]) == truth
            _tile(axes[r, c + 1], thumbnail(gallery_points[h], size),
                  frame=_RIGHT if ok else _WRONG, label=class_names[int(gallery_labels[h])],
                  label_color=_RIGHT if ok else _WRONG)
    for c in range(k):
        axes[0, c + 1].set_title(f"top {c + 1}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fit_captions(fig)
    return fig


def triplet_figure(triplets, indices: Sequence[int], size: int = 112, captions: int = 3):
    """One row per shape: the cloud (rendered), its stored views and its captions."""
    import matplotlib.pyplot as plt

    k = triplets.num_views
    fig, axes = plt.subplots(len(indices), k + 2, figsize=(1.9 * (k + 1) + 3.6,
                                                           1.9 * len(indices)),
                             squeeze=False, gridspec_kw={"width_ratios": [1] * (k + 1) + [2]})
    for r, i in enumerate(indices):
        _tile(axes[r, 0], thumbnail(triplets.points[i], size), label="cloud")
        for v in range(k):
            _tile(axes[r, v + 1], np.asarray(triplets.images[i, v]), label=f"view {v + 1}")
        text = "\n".join(textwrap.fill(f"“{c}”", 46) for c in triplets.captions[i][:captions])
        cat = triplets.category(i) if triplets.labels is not None else None
        _tile(axes[r, k + 1], text=f"{cat}\n{text}" if cat else text, wrap=0)
    fig.tight_layout()
    return fig
