"""Figures for the notebooks: plotly for interactive views, matplotlib for the static PNGs in
``figures/`` (``fig.savefig``; no browser or kaleido needed).

* :mod:`.clouds`: ``cloud_figure``, ``mixing_figure`` (two sources and the mixed cloud coloured
  by source), ``mixing_figure_static``, ``feature_mix_figure``, ``MixingExplorer`` (widgets).
* :mod:`.curves`: ``training_curves``, ``LiveCurves``, ``ablation_chart``, ``per_class_figure``.
* :mod:`.embeddings`: ``embed_modalities``/``umap_figure``, ``confusion_figure``,
  ``hard_sample_gallery``, ``retrieval_grid``, ``triplet_figure``, ``thumbnail``, ``save``.
* :mod:`.display`: how figures are shown so they survive a page reload and a kernel-less
  reopen (plain plotly outputs, ``ipywidgets.Output`` for figures that change; no
  ``FigureWidget``).
"""

from .clouds import (
    MIXED_NAMES,
    SOURCE_COLORS,
    SOURCE_NAMES,
    MixingExplorer,
    cloud_figure,
    feature_mix_figure,
    mix_clouds,
    mixing_figure,
    mixing_figure_static,
)
from .curves import LiveCurves, ablation_chart, per_class_figure, training_curves
from .embeddings import (
    MODALITY_COLORS,
    Embedding,
    confusion_figure,
    embed_modalities,
    hard_sample_gallery,
    retrieval_grid,
    save,
    thumbnail,
    triplet_figure,
    umap_figure,
)

__all__ = [
    "MIXED_NAMES", "MODALITY_COLORS", "SOURCE_COLORS", "SOURCE_NAMES", "Embedding",
    "LiveCurves", "MixingExplorer", "ablation_chart", "cloud_figure", "confusion_figure",
    "embed_modalities", "feature_mix_figure", "hard_sample_gallery", "mix_clouds",
    "mixing_figure", "mixing_figure_static", "per_class_figure", "retrieval_grid", "save",
    "thumbnail", "training_curves", "triplet_figure", "umap_figure",
]
