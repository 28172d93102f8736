"""The ablation protocol: epochs per row, paired seeds, intervals, and the bugs it exposed."""

import json

import numpy as np
import pytest
import torch
from scipy import stats as sps

from mmmixlab.config import preset
from mmmixlab.stats import binomial_se, mean_interval, paired_difference
from mmmixlab.train import Trainer, plan_phases
from tests.helpers.toy import toy_batches, toy_cfg


def epochs(variant, budget, e1=10, e2=10):
    return [(p.name, p.epochs) for p in plan_phases(variant, e1, e2, budget)]


def test_per_stage_protocol_gives_each_stage_a_full_schedule():
    assert epochs("baseline", "per-stage") == [("baseline", 10)]
    assert epochs("fm", "per-stage") == [("stage1", 10)]
    assert epochs("im", "per-stage") == [("im", 10)]
    assert epochs("mm-mixing", "per-stage") == [("stage1", 10), ("stage2", 10)]
    assert epochs("one-stage", "per-stage") == [("joint", 20)]
    assert epochs("baseline-2x", "per-stage") == [("baseline", 20)]
    # the old rule: equal totals
    assert epochs("baseline", "total") == [("baseline", 20)]
    assert epochs("mm-mixing", "total") == [("stage1", 10), ("stage2", 10)]
    assert epochs("baseline-2x", "total") == [("baseline", 40)]
    with pytest.raises(ValueError, match="unknown budget 'equal'"):
        preset("tiny").replace(**{"train.budget": "equal"}).validate()


def test_intervals_match_scipy():
    x = [0.61, 0.58, 0.66, 0.60, 0.63]
    b = [0.55, 0.57, 0.60, 0.58, 0.59]
    m = mean_interval(x)
    lo, hi = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert (m["lo"], m["hi"]) == pytest.approx((lo, hi))
    assert m["sd"] == pytest.approx(np.std(x, ddof=1))
    d = paired_difference(x, b)
    ci = sps.ttest_rel(x, b).confidence_interval(0.95)
    assert (d["lo"], d["hi"]) == pytest.approx((ci.low, ci.high))
    assert d["mean"] == pytest.approx(np.mean(np.subtract(x, b)))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        mean_interval([0.5])
    assert binomial_se(0.5, 1120) == pytest.approx(0.01494, abs=1e-4)


def test_paired_seeds_share_order_and_draws_across_variants():
    """Seed s: every variant sees the same epoch order and the same clouds in its first batch
    (the world and the evaluation clouds are shared by construction)."""
    orders, first = {}, {}
    for variant in ("baseline", "fm", "im", "mm-mixing", "one-stage"):
        t = Trainer(toy_cfg(variant, **{"train.seed": 3}), toy_batches(), embed_dim=16,
                    progress=False)
        order = t.batches.epoch_order(t.generator)
        orders[variant] = order
        first[variant] = next(iter(t.batches.iterate(order, t.local_generator))).points
    for v in orders:
        assert torch.equal(orders[v], orders["baseline"])
        assert torch.equal(first[v], first["baseline"])
    other = Trainer(toy_cfg("baseline", **{"train.seed": 4}), toy_batches(), embed_dim=16,
                    progress=False)
    assert not torch.equal(other.batches.epoch_order(other.generator), orders["baseline"])


def test_weight_decay_spares_only_embeddings_biases_and_norms():
    cfg = toy_cfg("baseline", **{"train.encoder": "pointbert-tiny"})
    t = Trainer(cfg, toy_batches(), embed_dim=16, progress=False)
    opt, _ = t._optimizer(t.phases[0])
    names = {id(p): n for n, p in t.encoders["A"].named_parameters()}
    no_decay = {names[id(p)] for p in opt.param_groups[1]["params"] if id(p) in names}
    decay = {names[id(p)] for p in opt.param_groups[0]["params"]}
    assert {"cls_token", "cls_pos"} <= no_decay
    assert "tokenizer.first.0.weight" in decay and "pos_embed.0.weight" in decay
    assert all(n.endswith(("bias", "cls_token", "cls_pos")) or "norm" in n or
               t.encoders["A"].get_parameter(n).dim() < 2 for n in no_decay)


def test_mm_mixing_without_stage_two_is_refused():
    with pytest.raises(ValueError, match="untrained stage-2 encoder B"):
        preset("tiny").replace(**{"train.epochs_stage2": 0}).validate()
    preset("tiny").replace(**{"train.epochs_stage2": 0, "train.variant": "fm"}).validate()


@pytest.mark.parametrize("field", ["epochs_stage2", "checkpoint_every", "eval_every",
                                   "log_every", "warmup_steps", "grad_cache_chunk"])
def test_negative_epochs_and_intervals_are_refused(field):
    with pytest.raises(ValueError, match=rf"train\.{field} must be >= 0"):
        preset("tiny").replace(**{f"train.{field}": -1, "train.variant": "fm"}).validate()


def test_faithful_reading_is_one_switch_away():
    from mmmixlab.cli import build_config, make_parser
    args = make_parser().parse_args(["train", "--out", "x", "--faithful"])
    cfg = build_config(args)
    assert (cfg.mix.align_unmixed, cfg.mix.normalize_before_mix, cfg.data.sampling) == (
        False, False, "fps")
    assert preset("paper-faithful").to_dict() == cfg.to_dict()
    t = Trainer(toy_cfg("mm-mixing", **{"data.sampling": "fps"}), toy_batches(sampling="fps"),
                embed_dim=16, progress=False)
    t.fit()  # stage 2 on FPS-resampled clouds, mixed terms only when configured so


def test_a_finished_run_is_reused_only_against_the_same_frozen_encoders(tmp_path, monkeypatch):
    import json as _json

    from mmmixlab import ablation
    from mmmixlab.config import preset as _preset
    cfg = _preset("tiny")
    quality = {"caption_top1": 0.9, "image_top1": 0.6, "digest": "abc"}
    folder = tmp_path / "run"
    folder.mkdir()
    trained = []
    monkeypatch.setattr(ablation, "run", lambda c, f, **kw: trained.append(f) or {"new": 1})
    for theirs, reused in (({"digest": "abc"}, True), ({"digest": "xyz"}, False),
                           ({"caption_top1": 0.9, "image_top1": 0.6}, True),   # before digests
                           ({"caption_top1": 0.8, "image_top1": 0.6}, False)):
        (folder / "metrics.json").write_text(_json.dumps(
            {"config": cfg.to_dict(), "frozen_encoders": theirs, "old": 1}))
        out = ablation._load_or_run(cfg, folder, world=None, progress=False, quality=quality)
        assert ("old" in out) == reused, theirs
    assert len(trained) == 2


def test_one_stage_matched_trains_b_as_long_as_two_stage_b():
    assert epochs("one-stage-matched", "per-stage", 10, 7) == [("joint", 7)]
    two = dict(epochs("mm-mixing", "per-stage", 10, 7))
    assert two["stage2"] == dict(epochs("one-stage-matched", "per-stage", 10, 7))["joint"]
    assert epochs("one-stage", "per-stage", 10, 7) == [("joint", 17)]  # the paper's reading


@pytest.mark.parametrize("per_encoder", [True, False])
def test_joint_gradient_clipping_per_encoder_or_together(per_encoder):
    clip = 1e-3  # far below the raw norms: every step is clipped
    cfg = toy_cfg("one-stage", **{"train.grad_clip": clip,
                                  "train.clip_per_encoder": per_encoder})
    trainer = Trainer(cfg, toy_batches(), embed_dim=16, progress=False)
    trainer.fit()  # the last step's clipped gradients stay on the parameters

    def norm(name):
        params = list(trainer.encoders[name].parameters()) + [
            trainer.logit_scales[name].log_scale]
        return float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params
                                    if p.grad is not None)))

    a, b = norm("A"), norm("B")
    if per_encoder:
        assert a == pytest.approx(clip, rel=1e-3) and b == pytest.approx(clip, rel=1e-3)
    else:
        assert (a * a + b * b) ** 0.5 == pytest.approx(clip, rel=1e-3)
        assert a < clip and b < clip


def test_table5_scope_switch():
    from mmmixlab.objectives import Phase

    class Ctx:
        mix = preset("tiny").replace(**{"mix.modalities": ("text",)}).mix

    assert Phase.first_stage_modalities(Ctx) == ("text",)  # both stages (default)
    Ctx.mix = preset("tiny").replace(**{"mix.modalities": ("text",),
                                        "mix.modality_scope": "stage2"}).mix
    assert set(Phase.first_stage_modalities(Ctx)) == {"image", "text", "point"}
    with pytest.raises(ValueError, match="modality_scope"):
        preset("tiny").replace(**{"mix.modality_scope": "stage1"}).validate()


def test_mm_mixing_from_a_finished_fm_run_equals_a_full_run(tmp_path):
    """fm is stage 1 of mm-mixing (same seed, same streams); stage 2 started from the fm run's
    folder continues its random streams, so the result is the full run's, bit for bit."""
    from mmmixlab.checkpoints import save_final

    base = {"train.encoder": "pointbert-tiny",
            "train.encoder_overrides": {"num_groups": 16, "group_size": 16}}
    full = Trainer(toy_cfg("mm-mixing", **base), toy_batches(d=16), embed_dim=16,
                   progress=False).fit()
    fm_cfg = toy_cfg("fm", **base)
    fm = Trainer(fm_cfg, toy_batches(d=16), embed_dim=16, out_dir=tmp_path / "fm",
                 progress=False).fit()
    save_final(fm, fm_cfg, tmp_path / "fm" / "final.pt")
    for k, v in full.encoders["A"].state_dict().items():  # fm's A is mm-mixing's stage 1
        assert torch.equal(v, fm.encoders["A"].state_dict()[k]), k
    reuse = Trainer(toy_cfg("mm-mixing", **base, **{"train.stage1_checkpoint":
                                                     str(tmp_path / "fm")}),
                    toy_batches(d=16), embed_dim=16, out_dir=tmp_path / "mm", progress=False)
    assert [p.name for p in reuse.phases] == ["stage2"]
    out = reuse.fit()
    for name in ("A", "B"):
        for k, v in full.encoders[name].state_dict().items():
            assert torch.equal(v, out.encoders[name].state_dict()[k]), (name, k)
    assert [h["phase"] for h in out.history] == [h["phase"] for h in full.history]
    assert "continued from" in json.loads((tmp_path / "mm" / "stage1.json").read_text())["streams"]
    # another stage-1 config (beta): A is still taken, the streams start fresh, and it says so
    other = Trainer(toy_cfg("mm-mixing", **base, **{"train.stage1_checkpoint":
                                                     str(tmp_path / "fm"), "mix.beta": 0.4}),
                    toy_batches(d=16), embed_dim=16, out_dir=tmp_path / "mm2", progress=False)
    assert "fresh" in json.loads((tmp_path / "mm2" / "stage1.json").read_text())["streams"]
    assert other.phases[0].name == "stage2"


def test_plan_estimates_read_in_their_unit():
    from mmmixlab.ablation import duration_text

    assert [duration_text(x) for x in (0.2, 48, 61, 42 * 60, 3 * 3600)] == \
        ["1 s", "48 s", "1 min", "42 min", "3.0 h"]
