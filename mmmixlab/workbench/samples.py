"""Which shapes the notebooks show: predictions and confusions on a split, hard samples
(Figure 3), retrieval rows (Figure 4), example and confusable pairs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .. import pipeline
from ..data import CONFUSABLE_PAIRS
from ..evaluate import confusion_matrix, top_k, zero_shot


def modality_features(point_feats: dict, world: pipeline.World, split: str) -> dict:
    """``{"point", "image", "text"}`` features of ``split`` (first view, first caption)."""
    f = world.features[split]
    return {"point": point_feats[split], "image": f.image[:, 0], "text": f.text[:, 0]}


def predictions(feats: torch.Tensor, world: pipeline.World, split: str) -> np.ndarray:
    """Zero-shot predicted class per shape of ``split``."""
    zs = zero_shot(feats, world.class_feats, world.splits[split].labels)
    return np.asarray(zs["predictions"])


def confusion(feats: torch.Tensor, world: pipeline.World, split: str) -> np.ndarray:
    """The zero-shot confusion matrix (rows: truth, columns: prediction) of ``split``."""
    return confusion_matrix(world.splits[split].labels, predictions(feats, world, split),
                            len(world.class_names))


def hard_samples(labels, wrong_pred, right_pred, class_names: Sequence[str],
                 limit: int = 8) -> list:
    """Indices that ``wrong_pred`` gets wrong and ``right_pred`` gets right (Figure 3), those
    whose true class is in a confusable pair (table/desk, cup/vase, ...) first."""
    labels = np.asarray(labels)
    hit = np.flatnonzero((np.asarray(wrong_pred) != labels) & (np.asarray(right_pred) == labels))
    hard = {c for pair in CONFUSABLE_PAIRS for c in pair}
    order = sorted(hit, key=lambda i: (class_names[labels[i]] not in hard, i))
    return [int(i) for i in order[:limit]]


def pick_examples(triplets, n: int = 4) -> list:
    """``n`` shapes from classes spread over the class list (the first shape of each)."""
    labels = np.asarray(triplets.labels)
    classes = np.unique(labels)
    picks = classes[np.linspace(0, len(classes) - 1, min(n, len(classes))).round().astype(int)]
    return [int(np.flatnonzero(labels == c)[0]) for c in picks]


def retrieval_rows(task: str, point_feats: dict, world: pipeline.World, split: str,
                   queries: Sequence[int], k: int = 5) -> dict:
    """Arguments for ``viz.retrieval_grid``: for each query and method (``{name: {split:
    feats}}``), the query item (cloud, image or caption) and its top-k clouds of ``split``,
    the methods of one query in adjacent rows so they compare at a glance. ``task``:
    ``pc2pc`` (the query left out of the gallery), ``img2pc`` or ``text2pc``."""
    t, f = world.splits[split], world.features[split]
    tops = {}
    for name, feats in point_feats.items():
        gallery = feats[split]
        q = {"pc2pc": gallery, "img2pc": f.image[:, 0], "text2pc": f.text[:, 0]}[task]
        tops[name] = top_k(q, gallery, k, exclude_self=task == "pc2pc").numpy()
    items, hits, row_labels, qlabels = [], [], [], []
    for i in queries:
        for name, top in tops.items():
            items.append({"pc2pc": t.points[i], "img2pc": t.images[i, 0],
                          "text2pc": (t.captions[i] or [""])[0]}[task])
            hits.append(list(top[i]))
            row_labels.append(name)
            qlabels.append(int(t.labels[i]))
    return {"queries": items, "hits": np.asarray(hits), "query_labels": qlabels,
                "row_labels": row_labels, "gallery_points": t.points, "gallery_labels": t.labels,
                "class_names": world.class_names}


def confusable_pair(triplets) -> tuple:
    """Indices of one shape from each class of the first confusable pair in ``triplets``."""
    names = list(triplets.class_names)
    labels = np.asarray(triplets.labels)
    for a, b in CONFUSABLE_PAIRS:
        if a in names and b in names:
            return (int(np.flatnonzero(labels == names.index(a))[0]),
                    int(np.flatnonzero(labels == names.index(b))[0]))
    return 0, min(1, len(labels) - 1)
