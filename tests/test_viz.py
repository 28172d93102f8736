"""The figure functions behind the notebooks, called directly (no notebook, no world)."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmmixlab import viz, workbench
from mmmixlab.clip import TripletFeatures
from mmmixlab.data import TripletSet

N = 256


def cloud(seed, n=N, offset=0.0):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-0.5, 0.5, (n, 6)).astype(np.float32)
    pts[:, 0] += offset
    pts[:, 3:] = rng.uniform(0, 1, (n, 3))
    return pts


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def triplets():
    names = ["table", "desk", "cup"]
    labels = np.array([0, 0, 1, 1, 2, 2])
    return TripletSet(points=np.stack([cloud(i, offset=0.1 * i) for i in range(6)]),
                      images=np.zeros((6, 1, 16, 16, 3), np.uint8),
                      captions=[[f"a {names[lab]} number {i}"] for i, lab in enumerate(labels)],
                      names=[f"s{i}" for i in range(6)], labels=labels, class_names=names)


@pytest.fixture
def features():
    g = torch.Generator().manual_seed(0)
    return TripletFeatures(image=F.normalize(torch.randn(6, 1, 8, generator=g), dim=-1),
                           text=F.normalize(torch.randn(6, 1, 8, generator=g), dim=-1),
                           text_mask=torch.ones(6, 1, dtype=torch.bool))


def rows_of(points):
    return {tuple(np.round(p[:3], 5)) for p in np.asarray(points)}


# --- mixing_figure ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["knn", "random"])
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.77, 1.0])
def test_mixing_figure_traces_counts_and_colors(variant, lam):
    a, b = cloud(1), cloud(2, offset=2.0)  # b lies far from a: points are traceable
    fig = viz.mixing_figure(a, b, lam, variant, seed=3)
    assert [t.name for t in fig.data] == [viz.SOURCE_NAMES[0], viz.MIXED_NAMES[0],
                                          viz.MIXED_NAMES[1], viz.SOURCE_NAMES[1]]
    src1, mix1, mix2, src2 = fig.data
    keep = math.floor(lam * N)
    assert len(src1.x) == len(src2.x) == N
    assert len(mix1.x) == keep and len(mix2.x) == N - keep
    assert fig.layout.meta["from_first"] == keep and fig.layout.meta["lam"] == keep / N
    assert src1.marker.color == mix1.marker.color == viz.SOURCE_COLORS[0]
    assert src2.marker.color == mix2.marker.color == viz.SOURCE_COLORS[1]
    # points coloured as source 1 really come from source 1, and likewise for source 2
    m1 = rows_of(np.stack([mix1.x, mix1.y, mix1.z], 1)) if keep else set()
    m2 = rows_of(np.stack([mix2.x, mix2.y, mix2.z], 1)) if keep < N else set()
    assert m1 <= rows_of(a) and m2 <= rows_of(b)
    assert "mixed: λ = " in fig.layout.annotations[1].text


def test_knn_mix_replaces_a_contiguous_patch():
    a, b = cloud(1), cloud(2)
    m = viz.mix_clouds(a, b, 0.5, "knn", seed=0)
    replaced = a[~m.from_first, :3]
    kept = a[m.from_first, :3]
    centre = replaced.mean(0)
    # every replaced point of the first cloud is nearer the patch centre than the kept ones
    # are on average: a patch, not a scatter
    assert np.linalg.norm(replaced - centre, axis=1).mean() < np.linalg.norm(
        kept - centre, axis=1).mean()
    r = viz.mix_clouds(a, b, 0.5, "random", seed=0)
    assert not np.array_equal(r.from_first, m.from_first)


def test_mixing_figure_rgb_colors_and_subsampling():
    a, b = cloud(1, n=3000), cloud(2, n=3000)
    fig = viz.mixing_figure(a, b, 0.5, color_by="rgb", num_points=512)
    assert len(fig.data[0].x) == 512 and len(fig.data[1].x) + len(fig.data[2].x) == 512
    assert isinstance(fig.data[1].marker.color, tuple)
    assert fig.data[1].marker.color[0].startswith("rgb(")


def test_cloud_figure():
    fig = viz.cloud_figure(cloud(0, n=5000), max_points=1000, title="x")
    assert len(fig.data) == 1 and len(fig.data[0].x) == 1000
    assert fig.data[0].marker.color[0].startswith("rgb(")
    assert viz.cloud_figure(cloud(0)[:, :3], color="red").data[0].marker.color == "red"


def test_mixing_figure_static():
    fig = viz.mixing_figure_static(cloud(1), cloud(2), 0.4, variants=("knn", "random"))
    assert len(fig.axes) == 4
    assert fig.axes[2].get_title().startswith("knn mix")


# --- feature mixing ----------------------------------------------------------------------------

def test_feature_mix_figure_endpoints():
    g = torch.Generator().manual_seed(1)
    f1 = {"image": torch.randn(8, generator=g), "text": torch.randn(8, generator=g)}
    f2 = {"image": torch.randn(8, generator=g), "text": torch.randn(8, generator=g)}
    classes = F.normalize(torch.randn(3, 8, generator=g), dim=-1)
    fig = viz.feature_mix_figure(f1, f2, classes, (0, 2), ["a", "b", "c"], lam=0.3, steps=11)
    by_name = {t.name: t for t in fig.data}
    for m in ("image", "text"):
        s1, s2 = np.asarray(by_name[f"{m} · source 1"].y), np.asarray(by_name[f"{m} · source 2"].y)
        assert s1[-1] == pytest.approx(1.0, abs=1e-5) and s2[0] == pytest.approx(1.0, abs=1e-5)
        assert np.all(np.diff(s1) >= -1e-6)  # moves monotonically towards source 1
        assert f"{m} · a" in by_name and f"{m} · c" in by_name
    assert list(by_name["λ"].x) == [0.3, 0.3]


# --- MixingExplorer ----------------------------------------------------------------------------

def test_explorer_slider_updates_the_figure(triplets, features):
    ex = viz.MixingExplorer(triplets, features, F.normalize(torch.randn(3, 8), dim=-1),
                            first=0, second=2, lam=0.5, num_points=200)
    assert len(ex.cloud.data[1].x) == 100
    ex.set(lam_input=0.25)
    assert ex.controls["lam_input"].value == 0.25
    assert len(ex.cloud.data[1].x) == 50 and len(ex.cloud.data[2].x) == 150
    assert ex.cloud.layout.meta["from_first"] == 50
    assert "0.25" in ex.cloud.layout.annotations[1].text

    old_source = np.asarray(ex.cloud.data[0].x).copy()
    ex.set(first=4)
    assert not np.array_equal(np.asarray(ex.cloud.data[0].x), old_source)
    assert "cup" in ex.cloud.layout.annotations[0].text

    ex.set(variant="random")
    assert ex.cloud.layout.meta["variant"] == "random"

    before = len(ex.cloud.data[1].x)
    ex.set(lam_feature=0.8)  # feature lam leaves the clouds alone
    assert len(ex.cloud.data[1].x) == before
    lam_trace = next(t for t in ex.feature.data if t.name == "λ")
    assert list(lam_trace.x) == [0.8, 0.8]
    assert "<b>0.80</b>" in ex.captions.value and "<b>0.20</b>" in ex.captions.value
    assert "closest class prompts" in ex.captions.value

    ex.set(color_by="rgb")
    assert str(ex.cloud.data[1].marker.color[0]).startswith("rgb(")
    with pytest.raises(ValueError, match="unknown control"):
        ex.set(lam=0.1)


def test_explorer_without_features(triplets):
    ex = viz.MixingExplorer(triplets, num_points=128)
    assert ex.feature is None
    ex.set(lam_feature=0.1, lam_input=1.0)
    assert len(ex.cloud.data[2].x) == 0
    assert "<b>0.10</b>" in ex.captions.value


# --- curves and ablations ----------------------------------------------------------------------

HISTORY = [
    {"phase": "stage1", "epoch": 1, "loss": 3.0, "temperature": 0.07, "zero_shot_test_top1": 0.1,
     "zero_shot_scan_top1": 0.05},
    {"phase": "stage1", "epoch": 2, "loss": 2.5, "temperature": 0.06, "zero_shot_test_top1": 0.2,
     "zero_shot_scan_top1": 0.1},
    {"phase": "stage2", "epoch": 1, "loss": 4.0, "temperature": 0.07, "zero_shot_test_top1": 0.3,
     "zero_shot_scan_top1": 0.2},
]


def test_training_curves():
    fig = viz.training_curves(HISTORY)
    names = [t.name for t in fig.data]
    assert names == ["loss (stage1)", "temperature (stage1)", "loss (stage2)",
                     "temperature (stage2)", "zero-shot test", "zero-shot scan"]
    assert list(fig.data[2].x) == [3] and list(fig.data[0].y) == [3.0, 2.5]
    assert list(fig.data[4].y) == pytest.approx([10.0, 20.0, 30.0])  # %, as in the tables
    assert any(s.x0 == 2.5 for s in fig.layout.shapes)  # stage boundary marked
    assert len(viz.training_curves([]).data) == 0


def test_live_curves_grow():
    live = viz.LiveCurves()
    live(HISTORY[0])
    assert [t.name for t in live.figure.data][:2] == ["loss (stage1)", "temperature (stage1)"]
    live(HISTORY[1])
    live(HISTORY[2])
    assert len(live.figure.data[0].x) == 2 and len(live.figure.data[2].x) == 1
    live.show_history(HISTORY[:1])  # does not replace a live history
    assert len(live.history) == 3
    cached = viz.LiveCurves().show_history(HISTORY)
    assert len(cached.figure.data) == 6


def test_live_curves_move_within_the_first_stage1_epoch():
    """Trainer.fit(on_step=...) feeds the curves before any epoch ends (notebooks 00, 03, 04
    pass LiveCurves as on_epoch and its .step as on_step)."""
    from mmmixlab.train import Trainer
    from tests.helpers.toy import toy_batches, toy_cfg

    live = viz.LiveCurves()
    seen = []

    def on_step(record):
        live.step(record)
        seen.append((record["x"], len(live.history), len(live.figure.data[0].x)))

    Trainer(toy_cfg("mm-mixing"), toy_batches(), embed_dim=16, progress=False).fit(
        on_epoch=live, on_step=on_step)
    first = [s for s in seen if s[0] <= 1]  # stage 1, epoch 1: 3 steps of 8 of 24 shapes
    assert [round(x, 3) for x, _, _ in first] == [0.333, 0.667, 1.0]
    assert all(h == 0 for _, h, _ in first)  # no epoch had finished, the curve grew already
    assert [n for _, _, n in first] == [1, 2, 3]
    assert {t.name for t in live.figure.data} >= {"loss per step (stage1)",
                                                  "loss per step (stage2)", "loss (stage1)"}


SUMMARY = {"baseline": {"zs_test_top1": {"mean": 0.5, "lo": 0.4, "hi": 0.6},
                        "zs_scan_top1": {"mean": 0.3, "lo": 0.3, "hi": 0.3}},
           "mm-mixing": {"zs_test_top1": {"mean": 0.6, "lo": 0.55, "hi": 0.65},
                         "zs_scan_top1": {"mean": 0.4, "lo": 0.37, "hi": 0.42}}}


def test_ablation_chart_both_backends():
    fig = viz.ablation_chart(SUMMARY, labels={"mm-mixing": "FM+IM"})
    assert len(fig.data) == 2
    assert list(fig.data[0].x) == ["baseline", "FM+IM"]
    assert list(fig.data[0].y) == pytest.approx([50.0, 60.0])
    assert list(fig.data[1].error_y.array) == pytest.approx([0.0, 2.0])  # hi - mean
    assert list(fig.data[1].error_y.arrayminus) == pytest.approx([0.0, 3.0])  # mean - lo
    mpl = viz.ablation_chart(SUMMARY, rows=["mm-mixing"], backend="matplotlib")
    assert len(mpl.axes[0].patches) == 2


def test_ablation_tables():
    diffs = {"mm-mixing": {"zs_test_top1": {"mean": 0.1, "lo": 0.02, "hi": 0.18}}}
    tables = workbench.ablation_tables({"summary": SUMMARY, "diff_vs_baseline": diffs})
    t3 = tables["Table 3: mixing level"]
    assert list(t3.index) == ["Baseline", "FM+IM"]
    assert t3.loc["FM+IM", "zs_test_top1 mean"] == 60.0
    assert t3.loc["FM+IM", "zs_test_top1 lo"] == 55.0
    assert t3.loc["FM+IM", "zs_test_top1 Δ vs baseline"] == "+10.0 [+2.0, +18.0]"
    assert list(tables["Table 5: modality losses"].index) == ["T+I+P"]  # the mm-mixing row


# --- embeddings, confusion, galleries ----------------------------------------------------------

def test_umap_figure_pca_traces():
    g = torch.Generator().manual_seed(0)
    labels = np.array([0, 0, 1, 1, 2])
    feats = {m: torch.randn(5, 8, generator=g) for m in ("point", "image", "text")}
    emb = viz.embed_modalities(feats, labels, ["a", "b", "c"], method="pca")
    assert emb.xy.shape == (15, 2) and list(emb.modality[:5]) == ["point"] * 5
    fig = viz.umap_figure(emb)
    assert [t.name for t in fig.data] == ["a", "b", "c", "point", "image", "text"]
    assert sum(len(t.x) for t in fig.data[:3]) == 15
    assert fig.data[3].marker.color == viz.MODALITY_COLORS["point"]
    assert len(viz.umap_figure(emb, backend="matplotlib").axes) == 2
    with pytest.raises(ValueError):
        viz.embed_modalities(feats, labels, ["a", "b", "c"], method="tsne")


@pytest.mark.slow
def test_umap_embedding_runs():
    feats = {"point": torch.randn(30, 8), "text": torch.randn(30, 8)}
    emb = viz.embed_modalities(feats, np.arange(30) % 3, ["a", "b", "c"], method="umap")
    assert emb.xy.shape == (60, 2) and np.isfinite(emb.xy).all()


def test_confusion_figure():
    cm = np.array([[3, 1], [0, 4]])
    fig = viz.confusion_figure(cm, ["x", "y"])
    assert np.asarray(fig.data[0].z).sum(1) == pytest.approx([1.0, 1.0])
    assert np.asarray(fig.data[0].text).tolist() == cm.tolist()
    mpl = viz.confusion_figure(cm, ["x", "y"], backend="matplotlib")
    assert len(mpl.axes[0].texts) == 3  # one label per non-zero cell


def test_retrieval_grid_frames_hits_by_class():
    pts = np.stack([cloud(i) for i in range(4)])
    labels = np.array([0, 1, 0, 1])
    hits = np.array([[2, 1], [3, 0]])
    fig = viz.retrieval_grid(["a caption", pts[1]], hits, pts, labels, [0, 1], ["p", "q"])
    axes = np.array(fig.axes).reshape(2, 3)
    green, red = matplotlib.colors.to_rgba("#2ca02c"), matplotlib.colors.to_rgba("#d62728")
    assert axes[0, 1].spines["left"].get_edgecolor() == green   # class 0 hit for class 0
    assert axes[0, 2].spines["left"].get_edgecolor() == red
    assert axes[1, 1].spines["left"].get_edgecolor() == green
    assert len(axes[1, 0].images) == 1 and len(axes[0, 0].images) == 0  # cloud vs text query


def test_hard_sample_gallery():
    pts = np.stack([cloud(i) for i in range(5)])
    labels = np.array([0, 1, 0, 1, 0])
    preds = {"baseline": np.array([1, 1, 1, 0, 0]), "MM-Mixing": np.array([0, 1, 0, 1, 0])}
    idx = workbench.hard_samples(labels, preds["baseline"], preds["MM-Mixing"], ["table", "cup"])
    assert idx == [0, 2, 3]
    fig = viz.hard_sample_gallery(pts, idx, labels, preds, ["table", "cup"], columns=2)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 3
    assert "baseline: cup ✗" in shown[0].get_xlabel() and "MM-Mixing: table ✓" in \
        shown[0].get_xlabel()
    empty = viz.hard_sample_gallery(pts, [], labels, preds, ["table", "cup"])
    assert "no shape" in empty.axes[0].texts[0].get_text()


def test_thumbnail_and_save(tmp_path):
    img = viz.thumbnail(cloud(0), size=48)
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8 and img.min() < 255
    path = viz.save(viz.mixing_figure_static(cloud(1), cloud(2), 0.5), tmp_path / "f", "m.png")
    assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"


# --- workbench helpers -------------------------------------------------------------------------

def test_retrieve_excludes_self():
    x = F.normalize(torch.randn(6, 4), dim=-1)
    from mmmixlab.evaluate import top_k

    top = top_k(x, x, k=3, chunk=4).numpy()
    assert (top[:, 0] == np.arange(6)).all()
    top = top_k(x, x, k=3, exclude_self=True, chunk=4).numpy()
    assert (top != np.arange(6)[:, None]).all()


def test_notebook_config_smoke_and_key(tmp_path, capsys):
    cfg = workbench.notebook_config(cache=str(tmp_path), epochs=(3, 4), device="cpu")
    assert (cfg.train.epochs_stage1, cfg.train.epochs_stage2, cfg.train.eval_every) == (3, 4, 1)
    assert capsys.readouterr().out == ""  # no note outside smoke mode
    smoke = workbench.notebook_config(cache=str(tmp_path), smoke=True)
    assert smoke.train.epochs_stage1 == 1 and smoke.data.synth_train_per_class == 4
    note = capsys.readouterr().out.strip()  # the notebook's first output says what smoke is
    from mmmixlab.data import SynthConfig
    shapes = smoke.data.synth_train_per_class * len(SynthConfig().categories)
    assert note == workbench.SMOKE_NOTE and f"{shapes} training shapes" in note
    assert f"{smoke.train.epochs_stage1}+{smoke.train.epochs_stage2} epochs" in note
    assert f"{smoke.clip.tiny_steps} steps" in note and "chance" in note
    clip = workbench.notebook_config(cache=str(tmp_path), clip="ViT-B-32/openai")
    assert (clip.clip.model, clip.clip.pretrained) == ("ViT-B-32", "openai")
    # the run key ignores where and on what it runs, not what it learns
    assert workbench.config_key(cfg) == workbench.config_key(
        cfg.replace(**{"train.device": "cuda", "cache_dir": "/elsewhere"}))
    assert workbench.config_key(cfg) != workbench.config_key(cfg.replace(**{"mix.beta": 0.4}))
    assert workbench.run_dir(cfg).parent == tmp_path / "runs"


def test_retrieval_rows_and_examples(triplets, features):
    from types import SimpleNamespace

    world = SimpleNamespace(splits={"test": triplets}, features={"test": features},
                            class_names=triplets.class_names)
    assert workbench.pick_examples(triplets, 2) == [0, 4]  # first shapes of spread classes
    feats = {"a": {"test": F.normalize(torch.randn(6, 8), dim=-1)}}
    rows = workbench.retrieval_rows("pc2pc", feats, world, "test", [0, 2], k=3)
    assert rows["hits"].shape == (2, 3) and rows["row_labels"] == ["a", "a"]
    assert 0 not in rows["hits"][0] and 2 not in rows["hits"][1]  # the query left out
    assert rows["query_labels"] == [0, 1] and rows["queries"][0].shape == (N, 6)
    two = {"a": feats["a"], "b": {"test": F.normalize(torch.randn(6, 8), dim=-1)}}
    rows = workbench.retrieval_rows("pc2pc", two, world, "test", [0, 2], k=3)
    assert rows["row_labels"] == ["a", "b", "a", "b"]  # per query, the methods side by side
    assert rows["query_labels"] == [0, 0, 1, 1]
    text = workbench.retrieval_rows("text2pc", feats, world, "test", [3], k=2)
    assert text["queries"] == ["a desk number 3"]
    fig = viz.retrieval_grid(**text)
    assert len(fig.axes) == 3


def test_notebook_config_names_a_missing_data_root(tmp_path):
    from mmmixlab import workbench
    with pytest.raises(FileNotFoundError, match=r"DATA_ROOT '.*nowhere' does not exist"):
        workbench.notebook_config(str(tmp_path / "nowhere"))


# --- reload-proof display, responsive layouts, captions inside their boxes --------------------

def _plotly_factories(triplets, features):
    a, b = cloud(1), cloud(2)
    emb = viz.embed_modalities({"image": np.random.default_rng(0).normal(size=(6, 8))},
                               triplets.labels, triplets.class_names, method="pca")
    return {
        "cloud_figure": viz.cloud_figure(a, title="a long title for one cloud"),
        "mixing_figure": viz.mixing_figure(a, b, 0.5),
        "feature_mix_figure": viz.feature_mix_figure(
            {"image": features.image[0, 0]}, {"image": features.image[2, 0]},
            F.normalize(torch.randn(3, 8), dim=-1), (0, 1), triplets.class_names, lam=0.3),
        "training_curves": viz.training_curves(HISTORY, "baseline: loss, temperature"),
        "ablation_chart": viz.ablation_chart(SUMMARY),
        "per_class_figure": viz.per_class_figure({"m": {"a": 0.5, "b": 0.2}}, chance=0.3),
        "umap_figure": viz.umap_figure(emb),
        "confusion_figure": viz.confusion_figure(np.array([[3, 1], [0, 4]]), ["x", "y"]),
        "live_curves": viz.LiveCurves("t").show_history(HISTORY).figure,
    }


def test_every_plotly_figure_is_responsive(triplets, features):
    """No figure keeps a fixed width: each takes its output's width (autosize), and the bundle
    the notebooks display asks plotly.js to follow resizes."""
    from mmmixlab.viz.display import PLOTLY_MIME, figure_bundle

    for name, fig in _plotly_factories(triplets, features).items():
        assert fig.layout.autosize is True, name
        assert fig.layout.width is None, name
        bundle = figure_bundle(fig)
        assert bundle[PLOTLY_MIME]["config"]["responsive"] is True, name
        assert "width" not in bundle[PLOTLY_MIME]["layout"], name
        assert bundle[PLOTLY_MIME]["data"], name


def test_mixing_figure_titles_fit_three_columns():
    names = ["source 1: a rather long category (shape_000123)", "source 2: desk (shape_7)"]
    fig = viz.mixing_figure(cloud(1), cloud(2), 0.5, names=names)
    for ann in fig.layout.annotations:
        assert max(len(line) for line in ann.text.split("<br>")) <= 32, ann.text


class FakeHandle:
    def __init__(self, log):
        self.log = log

    def update(self, obj, raw=False):
        self.log.append(("update", obj))


def test_live_curves_are_one_output_replaced_in_place(monkeypatch):
    """LiveCurves shows one output (a display_id): an ipywidgets.Output whose figure changes
    while training, replaced at the end by the plain plotly figure, the output a page reload
    or a kernel-less reopen shows (a FigureWidget would come back empty)."""
    import IPython.display
    import ipywidgets as w

    from mmmixlab.viz import display as vd

    log = []
    monkeypatch.setattr(vd, "in_kernel", lambda: True)
    monkeypatch.setattr(IPython.display, "display",
                        lambda obj, raw=False, display_id=None: log.append(("show", obj))
                        or FakeHandle(log))
    live = viz.LiveCurves("t", min_interval=0.0)
    live._ipython_display_()  # what display(live) calls
    live.display()  # once only
    assert [k for k, _ in log] == ["show"] and isinstance(log[0][1], w.Output)
    view = live.output.view

    def shown():
        (out,) = view.outputs
        return {t["name"] for t in out["data"][vd.PLOTLY_MIME]["data"]}

    live.step({"phase": "stage1", "x": 0.5, "loss": 3.0, "temperature": 0.07})
    assert shown() == {"loss per step (stage1)", "temperature per step (stage1)"}
    live(HISTORY[0])
    assert {"loss per step (stage1)", "loss (stage1)"} <= shown()
    assert live.output.updates == 2 and [k for k, _ in log] == ["show"]
    live.show_history(HISTORY)  # training over: the display becomes the plain figure
    assert [k for k, _ in log] == ["show", "update"] and vd.PLOTLY_MIME in log[-1][1]
    assert live.output.view is None and view.comm is None  # the widget is closed
    assert len(live.history) == 1  # a live history is kept

    slow = viz.LiveCurves(min_interval=60.0)
    for k in range(5):
        slow.step({"phase": "stage1", "x": k / 5, "loss": 1.0, "temperature": 0.07})
    assert slow.output.updates == 1  # the first step, the next four merged ...
    slow(HISTORY[0])
    assert slow.output.updates == 2  # ... an epoch's end always redraws
    assert len(slow.figure.data[0].x) == 5


def test_live_curve_updates_are_sent_within_stage1():
    """The on_step callback reaches the displayed output before stage 1's first epoch ends."""
    from mmmixlab.train import Trainer
    from tests.helpers.toy import toy_batches, toy_cfg

    live = viz.LiveCurves(min_interval=0.0)
    sent = []

    def on_step(record):
        live.step(record)
        sent.append((record["phase"], record["x"], live.output.updates, len(live.history)))

    Trainer(toy_cfg("mm-mixing"), toy_batches(), embed_dim=16, progress=False).fit(
        on_epoch=live, on_step=on_step)
    stage1 = [s for s in sent if s[0] == "stage1" and s[1] <= 1]
    assert len(stage1) >= 2 and all(h == 0 for *_, h in stage1)
    assert [u for _, _, u, _ in stage1] == list(range(1, len(stage1) + 1))


def test_explorer_figures_are_kernel_set_outputs(triplets, features):
    """The explorer's figures are Output widgets' outputs set from the kernel (core ipywidgets
    models, restored after a reload), updated by a slider change."""
    import ipywidgets as w

    from mmmixlab.viz.display import PLOTLY_MIME

    ex = viz.MixingExplorer(triplets, features, F.normalize(torch.randn(3, 8), dim=-1),
                            first=0, second=2, lam=0.5, num_points=200)
    assert isinstance(ex.cloud_view, w.Output) and isinstance(ex.feature_view, w.Output)
    assert not any(type(c).__name__ == "FigureWidget" for c in ex.widget.children)

    def shown(view):  # the traces' x, as a browser decodes them from the stored output
        import base64

        (out,) = view.outputs
        assert out["output_type"] == "display_data"
        return {t["name"]: (np.frombuffer(base64.b64decode(t["x"]["bdata"]), t["x"]["dtype"])
                            if isinstance(t["x"], dict) else np.asarray(t["x"]))
                for t in out["data"][PLOTLY_MIME]["data"]}

    assert len(shown(ex.cloud_view)[viz.MIXED_NAMES[0]]) == 100
    ex.set(lam_input=0.25)
    assert len(shown(ex.cloud_view)[viz.MIXED_NAMES[0]]) == 50
    ex.set(lam_feature=0.8)
    assert shown(ex.feature_view)["λ"].tolist() == [0.8, 0.8]


def test_long_captions_stay_inside_their_boxes():
    pts = np.stack([cloud(i) for i in range(3)])
    long = ("a very long caption about a wooden table with four legs, a drawer, a glass top "
            "and a lamp standing on it next to a pile of books and a small plant in a pot")
    fig = viz.retrieval_grid([long, "short one", long[:60]], np.array([[1, 2]] * 3), pts,
                             np.array([0, 1, 0]), [0, 1, 0], ["p", "q"], row_labels=["a"] * 3)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72
    for ax in np.array(fig.axes).reshape(3, 3)[:, 0]:
        (text,) = ax.texts
        box, ext = ax.get_window_extent(renderer), text.get_window_extent(renderer)
        inset = 3 * px  # the 3 pt frame
        assert ext.x0 >= box.x0 + inset and ext.x1 <= box.x1 - inset, text.get_text()
        assert ext.y0 >= box.y0 + inset and ext.y1 <= box.y1 - inset, text.get_text()
    assert "short one" == np.array(fig.axes).reshape(3, 3)[1, 0].texts[0].get_text()


def test_notebook_progress_bar_leaves_no_dead_widget(monkeypatch):
    """A notebook bar that goes away (leave=False, the trainer's per-epoch bars) empties its
    output: a saved view of the closed widget would read "Error displaying widget: model not
    found" after a page reload. A bar that stays (leave=True) keeps its widget."""
    import IPython.display

    from mmmixlab import progress

    log = []
    monkeypatch.setattr(progress, "_in_notebook", lambda: True)
    monkeypatch.setattr(progress, "_NOTEBOOK_BAR", None)
    monkeypatch.setattr(IPython.display, "display",
                        lambda obj, raw=False, display_id=None: log.append(("show", obj))
                        or FakeHandle(log))
    for _ in progress.bar(range(3), leave=False, desc="epoch"):
        pass
    assert [k for k, _ in log] == ["show", "update"] and log[-1][1] == {"text/plain": ""}
    log.clear()
    for _ in progress.bar(range(3), leave=True):
        pass
    assert [k for k, _ in log] == ["show"]
