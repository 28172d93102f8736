import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, top_k_accuracy_score

from mmmixlab.evaluate import (
    confusion_matrix,
    linear_probe,
    most_confused_pairs,
    recall_at_k,
    retrieval,
    zero_shot,
)


def data(n=120, c=7, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(c, d))
    labels = rng.integers(0, c, n)
    feats = centers[labels] + rng.normal(scale=1.5, size=(n, d))
    return torch.tensor(feats, dtype=torch.float32), torch.tensor(centers, dtype=torch.float32), labels


def test_zero_shot_topk_matches_sklearn():
    feats, centers, labels = data()
    out = zero_shot(feats, centers, labels)
    scores = (torch.nn.functional.normalize(feats, dim=-1)
              @ torch.nn.functional.normalize(centers, dim=-1).t()).numpy()
    for k in (1, 3, 5):
        ref = top_k_accuracy_score(labels, scores, k=k, labels=np.arange(7))
        assert out[f"top{k}"] == pytest.approx(ref)
    assert out["top1"] == pytest.approx(accuracy_score(labels, out["predictions"]))
    # per-class accuracy = recall per class
    from sklearn.metrics import recall_score
    rec = recall_score(labels, out["predictions"], average=None, labels=np.arange(7))
    assert list(out["per_class"].values()) == pytest.approx(list(rec))
    assert out["mean_class_accuracy"] == pytest.approx(rec.mean())


def test_zero_shot_bad_input():
    feats, centers, labels = data()
    with pytest.raises(ValueError, match="labels must have shape"):
        zero_shot(feats, centers, labels[:-1])
    bad = labels.copy()
    bad[0] = 7
    with pytest.raises(ValueError, match="labels must lie"):
        zero_shot(feats, centers, bad)
    with pytest.raises(ValueError, match="widths differ"):
        zero_shot(feats, centers[:, :3], labels)


def test_linear_probe_matches_sklearn():
    feats, _, labels = data(seed=1)
    test_feats, _, test_labels = data(seed=1, n=60)
    out = linear_probe(feats[:100], labels[:100], {"test": (feats[100:], labels[100:])})
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=0))
    ref.fit(feats[:100].numpy(), labels[:100])
    assert out["test"]["accuracy"] == pytest.approx(
        accuracy_score(labels[100:], ref.predict(feats[100:].numpy())))
    with pytest.raises(ValueError, match="do not match"):
        linear_probe(feats[:100], labels[:99], {})


def brute_recall(q, g, relevant, k):
    hits = 0
    for i in range(q.shape[0]):
        sims = [float(torch.nn.functional.cosine_similarity(q[i], g[j], dim=0))
                for j in range(g.shape[0])]
        top = sorted(range(len(sims)), key=lambda j: -sims[j])[:k]
        hits += any(relevant[i][j] for j in top)
    return hits / q.shape[0]


@pytest.mark.parametrize("chunk", [1024, 7])
def test_recall_at_k_matches_brute_force(chunk):
    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(20, 8, generator=g), torch.randn(30, 8, generator=g)
    qk, gk = torch.randint(0, 6, (20,), generator=g), torch.randint(0, 6, (30,), generator=g)
    relevant = (qk[:, None] == gk[None]).tolist()
    out = recall_at_k(q, gal, qk, gk, chunk=chunk)
    for k in (1, 5, 10):
        assert out[f"R@{k}"] == pytest.approx(brute_recall(q, gal, relevant, k))
    # self excluded (one set): brute force without the query itself
    same = recall_at_k(gal, gal, gk, gk, exclude_self=True, chunk=chunk)
    rel = [[gk[i] == gk[j] and i != j for j in range(30)] for i in range(30)]
    masked = gal.clone()
    for k in (1, 5):
        hits = 0
        for i in range(30):
            sims = torch.nn.functional.cosine_similarity(gal[i:i + 1], masked)
            sims[i] = -float("inf")
            hits += any(rel[i][j] for j in sims.argsort(descending=True)[:k].tolist())
        assert same[f"R@{k}"] == pytest.approx(hits / 30)
    with pytest.raises(ValueError, match="keys"):
        recall_at_k(q, gal, qk[:-1], gk)


def test_retrieval_definitions():
    feats, _, labels = data(n=40)
    # image queries equal to the clouds themselves retrieve their own shape first
    out = retrieval(feats, feats.clone(), feats + 100.0 * torch.randn_like(feats), labels)
    assert out["img2pc"]["R@1"] == 1.0
    # pc2pc excludes the query itself: brute force over the gallery without it
    n = feats.shape[0]
    hits = 0
    for i in range(n):
        sims = torch.nn.functional.cosine_similarity(feats[i:i + 1], feats)
        sims[i] = -float("inf")
        hits += labels[int(sims.argmax())] == labels[i]
    assert out["pc2pc"]["R@1"] == pytest.approx(hits / n)
    with pytest.raises(ValueError, match="one image and one text"):
        retrieval(feats, feats[:-1], feats, labels)


def test_confusion_and_pairs():
    cm = confusion_matrix([0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 0, 0, 2], 3)
    from sklearn.metrics import confusion_matrix as sk_cm
    assert (cm == sk_cm([0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 0, 0, 2], labels=[0, 1, 2])).all()
    assert most_confused_pairs(cm, ["a", "b", "c"], top=2) == [("c", "a", 2), ("a", "b", 1)]


def test_linear_probe_cv_matches_sklearn_cross_validation():
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from mmmixlab.evaluate import linear_probe_cv
    feats, _, labels = data(n=90, c=3, seed=2)
    out = linear_probe_cv(feats, labels, folds=5)
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=0))
    scores = cross_val_score(clf, feats.numpy(), labels, cv=cv)
    # equal-sized folds: the pooled accuracy is the mean of the fold accuracies
    assert out["accuracy"] == pytest.approx(scores.mean(), abs=0.02)
    with pytest.raises(ValueError, match="2 samples per class"):
        linear_probe_cv(feats[:4], np.array([0, 1, 2, 2]))


def test_linear_probes_fit_on_one_thread(monkeypatch):
    """numpy's BLAS and scikit-learn's OpenMP pools hold one thread while a probe fits (on more,
    beside another run, OpenMP's spinning made a 5-fold probe 12x slower), and the limits are
    lifted afterwards."""
    from sklearn.base import BaseEstimator, ClassifierMixin
    from threadpoolctl import threadpool_info

    import mmmixlab.evaluate as ev

    seen = []

    class Recording(ClassifierMixin, BaseEstimator):
        def fit(self, x, y):
            seen.append(max(p["num_threads"] for p in threadpool_info()))
            self.classes_ = np.unique(y)
            return self

        def predict(self, x):
            return np.full(len(x), self.classes_[0])

    monkeypatch.setattr(ev, "probe_classifier", lambda *a, **k: Recording())
    rng = np.random.default_rng(0)
    feats, labels = rng.normal(size=(40, 4)), np.repeat([0, 1], 20)
    before = max(p["num_threads"] for p in threadpool_info())
    ev.linear_probe_cv(feats, labels, folds=2)
    ev.linear_probe(feats, labels, {"test": (feats, labels)})
    assert seen == [1, 1, 1]  # two folds, one plain fit
    assert max(p["num_threads"] for p in threadpool_info()) == before
