"""Zero-shot classification, linear probing and cross-modal retrieval.

* Zero-shot: cosine similarity of a cloud's feature to each category's text feature (the mean
  of the unit features of a set of prompt templates, renormalized: ULIP/OpenShape); top-1/3/5,
  per-class accuracy and its mean.
* Linear probe: the 3D encoder frozen, one linear (multinomial logistic) classifier fit on the
  train split's features, accuracy on each eval split.
* Retrieval, recall@k: ``img2pc`` and ``text2pc`` are instance-level (a hit when the query's
  own shape is among the top k clouds); ``pc2pc`` is category-level with the query removed from
  the gallery (a hit when a top-k cloud shares the query's category), since an instance query
  would trivially retrieve itself.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops import farthest_point_sample


@torch.no_grad()
def encode_points(encoder: nn.Module, points, num_points: int = 1024, in_channels: int = 6,
                  batch_size: int = 64, device=None) -> torch.Tensor:
    """Unit features (S, D) of clouds (S, P, 6), subsampled to ``num_points`` by FPS from
    index 0 so evaluation is deterministic. ``points`` may be a lazily read array
    (:class:`mmmixlab.data.LazyPoints`): it is read one batch at a time, never whole."""
    device = device or next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    shape = tuple(getattr(points, "shape", np.shape(points)))
    if len(shape) != 3 or shape[0] == 0:
        raise ValueError(f"points must be a non-empty (S, P, C) array, got {shape}")
    out = []
    for s in range(0, shape[0], batch_size):
        chunk = torch.as_tensor(np.array(points[s:s + batch_size], dtype=np.float32))
        if not torch.isfinite(chunk).all():
            raise ValueError(f"clouds {s}..{s + len(chunk) - 1} hold NaN or inf coordinates")
        if chunk.shape[1] > num_points:
            idx = farthest_point_sample(chunk[..., :3], num_points)
            chunk = torch.gather(chunk, 1, idx.unsqueeze(-1).expand(-1, -1, chunk.shape[-1]))
        feats = encoder(chunk[..., :in_channels].contiguous().to(device)).float()
        out.append(F.normalize(feats, dim=-1).cpu())
    encoder.train(was_training)
    return torch.cat(out)


def _check_labels(labels, n: int, num_classes: int) -> torch.Tensor:
    labels = torch.as_tensor(np.asarray(labels)).long()
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return labels


def zero_shot(point_feats: torch.Tensor, class_feats: torch.Tensor, labels,
              ks: Sequence[int] = (1, 3, 5), class_names: Optional[Sequence[str]] = None) -> dict:
    """Top-k accuracies, per-class accuracy and the predictions of zero-shot classification."""
    if point_feats.dim() != 2 or class_feats.dim() != 2:
        raise ValueError("point_feats and class_feats must be 2-D (N, D) and (C, D)")
    if point_feats.shape[1] != class_feats.shape[1]:
        raise ValueError(f"feature widths differ: points {point_feats.shape[1]}, "
                         f"classes {class_feats.shape[1]}")
    c = class_feats.shape[0]
    labels = _check_labels(labels, point_feats.shape[0], c)
    logits = F.normalize(point_feats.float(), dim=-1) @ F.normalize(class_feats.float(), dim=-1).t()
    ranked = logits.argsort(dim=1, descending=True)
    out = {}
    for k in ks:
        hit = (ranked[:, :min(k, c)] == labels.unsqueeze(1)).any(1)
        out[f"top{k}"] = float(hit.float().mean())
    pred = ranked[:, 0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    per_class = {}
    for i in range(c):
        sel = labels == i
        if sel.any():
            per_class[names[i]] = float((pred[sel] == i).float().mean())
    out["per_class"] = per_class
    out["mean_class_accuracy"] = float(np.mean(list(per_class.values()))) if per_class else 0.0
    out["predictions"] = pred.tolist()
    return out


def probe_classifier(C: float = 1.0, max_iter: int = 2000, seed: int = 0):
    """One linear layer (multinomial logistic regression) on standardized features.

    Standardizing matters: the features are unit vectors, whose per-dimension scale is about
    1/sqrt(D), and an L2-penalized classifier on them underfits badly (measured on the tiny
    world: 0.44 -> 0.69 cross-validated accuracy). The scaler is affine, so the probe stays a
    single linear classifier.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(),
                         LogisticRegression(C=C, max_iter=max_iter, random_state=seed))


def _one_thread():
    """numpy's BLAS and scikit-learn's OpenMP pools limited to one thread while a probe fits.

    The probe's matrices are small (~1,000 x 64): threads only add hand-offs, and beside
    another run (``ablate --jobs``) or any other job they oversubscribe the cores, where
    OpenMP's spinning made one 5-fold probe take 17-21 s instead of 1.4 s (measured on the
    2-core AMD VM, ``benchmarks/RESULTS.md``). One thread also makes the probe's numbers
    independent of the machine's core count."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def linear_probe(train_feats, train_labels, eval_sets: dict, max_iter: int = 2000,
                 C: float = 1.0, seed: int = 0) -> dict:
    """Fit one linear classifier on frozen train features; report the accuracy on each
    ``{name: (feats, labels)}`` eval set."""

    x = np.asarray(train_feats, dtype=np.float64)
    y = np.asarray(train_labels)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"train features {x.shape} and labels {y.shape} do not match")
    clf = probe_classifier(C, max_iter, seed)
    with _one_thread():
        clf.fit(x, y)
    out = {}
    for name, (feats, labels) in eval_sets.items():
        feats = np.asarray(feats, dtype=np.float64)
        labels = np.asarray(labels)
        if feats.shape[0] != labels.shape[0]:
            raise ValueError(f"{name}: {feats.shape[0]} features but {labels.shape[0]} labels")
        out[name] = {"accuracy": float((clf.predict(feats) == labels).mean())}
    return out


def linear_probe_cv(feats, labels, folds: int = 5, max_iter: int = 2000, C: float = 1.0,
                    seed: int = 0) -> dict:
    """Linear probe on a split without its own training set: stratified k-fold
    cross-validation, every sample predicted by a classifier that never saw it."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = np.asarray(feats, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features {x.shape} and labels {y.shape} do not match")
    smallest = np.bincount(y).min() if len(y) else 0
    folds = int(min(folds, smallest))
    if folds < 2:
        raise ValueError(f"cross-validated linear probe needs >= 2 samples per class, got "
                         f"{smallest}")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with _one_thread():
        pred = cross_val_predict(probe_classifier(C, max_iter, seed), x, y, cv=cv)
    return {"accuracy": float((pred == y).mean()), "folds": folds}


def top_k(queries: torch.Tensor, gallery: torch.Tensor, k: int, exclude_self: bool = False,
          chunk: int = 1024) -> torch.Tensor:
    """(Q, k) indices of the gallery items most similar (cosine) to each query, best first,
    over chunks of queries (a 46k-shape gallery never needs its full similarity matrix).
    ``exclude_self`` leaves gallery item ``i`` out of query ``i``'s results (queries and
    gallery are the same set: PC -> PC)."""
    q = F.normalize(torch.as_tensor(queries).float(), dim=-1)
    g = F.normalize(torch.as_tensor(gallery).float(), dim=-1)
    if exclude_self and q.shape[0] != g.shape[0]:
        raise ValueError(f"exclude_self needs queries and gallery of one set, got {q.shape[0]} "
                         f"queries and {g.shape[0]} gallery items")
    k = min(int(k), g.shape[0] - int(exclude_self))
    out = []
    for s in range(0, q.shape[0], chunk):
        sims = q[s:s + chunk] @ g.t()
        if exclude_self:
            rows = torch.arange(sims.shape[0])
            sims[rows, rows + s] = float("-inf")
        out.append(sims.topk(k, dim=1).indices)
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long)


def recall_at_k(queries: torch.Tensor, gallery: torch.Tensor, query_keys, gallery_keys,
                ks: Sequence[int] = (1, 5, 10), exclude_self: bool = False,
                chunk: int = 1024) -> dict:
    """Recall@k: the share of queries with a relevant gallery item among their top k, where
    an item is relevant when its key equals the query's (a class label for category-level
    retrieval, a shape index for instance-level). The one retrieval metric: the tiny world
    (:func:`retrieval`), the benchmarks and the notebooks use it."""
    qk = torch.as_tensor(np.asarray(query_keys)).long()
    gk = torch.as_tensor(np.asarray(gallery_keys)).long()
    if qk.shape[0] != len(queries) or gk.shape[0] != len(gallery):
        raise ValueError(f"{len(queries)} queries with {qk.shape[0]} keys, {len(gallery)} "
                         f"gallery items with {gk.shape[0]} keys")
    top = top_k(queries, gallery, max(ks), exclude_self, chunk)
    rel = gk[top] == qk.unsqueeze(1)
    return {f"R@{k}": float(rel[:, :k].any(1).float().mean()) if len(qk) else 0.0 for k in ks}


def retrieval(point_feats: torch.Tensor, image_feats: torch.Tensor, text_feats: torch.Tensor,
              labels, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """pc2pc (category-level, self excluded), img2pc and text2pc (instance-level)."""
    n = point_feats.shape[0]
    if image_feats.shape[0] != n or text_feats.shape[0] != n:
        raise ValueError(f"retrieval needs one image and one text query per cloud: {n} clouds, "
                         f"{image_feats.shape[0]} images, {text_feats.shape[0]} texts")
    labels, shapes = np.asarray(labels), np.arange(n)
    return {"pc2pc": recall_at_k(point_feats, point_feats, labels, labels, ks, exclude_self=True),
            "img2pc": recall_at_k(image_feats, point_feats, shapes, shapes, ks),
            "text2pc": recall_at_k(text_feats, point_feats, shapes, shapes, ks)}


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(predictions)), 1)
    return cm


def most_confused_pairs(cm: np.ndarray, class_names: Sequence[str], top: int = 5) -> list:
    """The off-diagonal (true, predicted) pairs with the most errors."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None)[::-1][:top]
    pairs = []
    for f in flat:
        i, j = np.unravel_index(f, off.shape)
        if off[i, j] > 0:
            pairs.append((class_names[i], class_names[j], int(off[i, j])))
    return pairs
