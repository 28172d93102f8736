"""Every training phase against a hand computation from the paper's equations.

The reference below is written here from the equations, not from ``mmmixlab.losses`` or
``mmmixlab.objectives``: InfoNCE as cross-entropy over a cosine-similarity matrix with the
positives on the diagonal (eq. 4; rows without a caption left out of the text terms' mean but
kept as negatives), eq. 1's feature mix ``lam f_i + (1 - lam) f_partner(i)``, the input mix's
exact ratio ``lam_x = floor(lam N) / N`` (eqs. 2-3), eq. 5 (the mean of P<->I and P<->T) and
eq. 6 (the mean of M<->I, M<->T, M<->P), with mmmixlab's ``align_unmixed`` averaging the
unmixed alignment in. Each phase's gradient must reach exactly the encoders it trains.
"""

import math

import pytest
import torch

from mmmixlab.mixing import input_mix
from mmmixlab.objectives import FeatureMixing, Joint, Stage2
from mmmixlab.train import Trainer
from tests.helpers.toy import toy_batches, toy_cfg
from tests.test_objectives import draw  # the trainer's mixing draw, replayed

N_POINTS = 64  # toy_batches' clouds per step

VARIANT_OF = {"baseline": "baseline", "stage1": "fm", "im": "im", "stage2": "mm-mixing",
              "joint": "one-stage"}


# ------------------------------------------------------------------ the reference

def unit(x):
    """Rows scaled to length 1; a zero row (a shape without a caption) stays zero."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def nce(x, y, scale, weights=None):
    """Rows of x pick their partner among the rows of y (float64)."""
    logits = scale * unit(x) @ unit(y).t()
    per_row = torch.logsumexp(logits, 1) - logits.diagonal()
    if weights is None:
        return per_row.mean()
    w = weights.double()
    return (per_row * w).sum() / w.sum()


def alignment(anchor, targets: dict, scale, text_rows):
    """The mean over both directions of every target modality."""
    terms = []
    for name, t in targets.items():
        w = text_rows if name == "text" else None
        terms += [nce(anchor, t, scale, w), nce(t, anchor, scale, w)]
    return sum(terms) / len(terms)


def mix(x, partner, lam):
    lam = lam.double()[:, None]
    return lam * x + (1 - lam) * x[partner]


def reference(phase, feats, batch, partner, lam, lam_x, scales, align_unmixed):
    """The phase's loss from the equations. ``feats``: float64 unit features by role."""
    img, txt = batch.image.double(), batch.text.double()
    has_text = batch.text_valid
    both_text = has_text & has_text[partner]

    def mixed_and_plain(anchor_mixed, anchor_plain, targets, ratio, scale):
        loss = alignment(anchor_mixed, {k: mix(v, partner, ratio) for k, v in targets.items()},
                         scale, both_text)
        if align_unmixed:
            loss = 0.5 * (loss + alignment(anchor_plain, targets, scale, has_text))
        return loss

    if phase == "baseline":
        return alignment(feats["A"], {"image": img, "text": txt}, scales["A"], has_text)
    stage1 = mixed_and_plain(mix(feats["A"], partner, lam), feats["A"],
                             {"image": img, "text": txt}, lam, scales.get("A"))
    if phase == "stage1":
        return stage1
    if phase == "im":
        return mixed_and_plain(feats["A mixed"], feats["A"], {"image": img, "text": txt},
                               lam_x, scales["A"])
    stage2 = mixed_and_plain(feats["B mixed"], feats["B"],
                             {"point": feats["A"], "image": img, "text": txt}, lam_x,
                             scales["B"])
    return stage2 if phase == "stage2" else stage1 + stage2


# ------------------------------------------------------------------ the setting

def setting(phase, align_unmixed=True, **extra):
    # fp32 steps (train.amp=off): the losses are checked against float64 to 1e-5, which a
    # bf16 step on an AMX CPU (auto's choice for pointbert-tiny there) is not held to
    cfg = toy_cfg(VARIANT_OF[phase], **{"mix.align_unmixed": align_unmixed,
                                        "train.amp": "off",
                                        "train.encoder": "pointbert-tiny",
                                        "train.encoder_overrides": {"num_groups": 16,
                                                                    "group_size": 16},
                                        **extra})
    trainer = Trainer(cfg, toy_batches(d=16), embed_dim=16, progress=False)
    with torch.no_grad():  # distinct temperatures: a mixed-up scale shows
        for i, s in enumerate(trainer.logit_scales.values()):
            s.log_scale.fill_(math.log(10.0 + 5 * i))
    batch = trainer.batches.make_batch(torch.arange(8), torch.Generator().manual_seed(5))
    step = next(p for p in trainer.phases if p.name == phase)
    trainer.enter_phase(step)
    return trainer, batch, step


def hand_features(trainer, batch, phase, partner, lam, g):
    """Unit features (float64) of what each role's clouds are, and the exact lam_x."""
    mc = trainer.cfg.mix

    def enc(name, x):
        with torch.no_grad():
            return unit(trainer.encoders[name](x).double())

    feats = {"A": enc("A", batch.points)}
    lam_x = None
    if phase in ("im", "stage2", "joint"):
        im = input_mix(batch.points, batch.points[partner], lam, mc.input_variant, generator=g)
        lam_x = torch.floor(lam * N_POINTS) / N_POINTS
        assert torch.equal(im.lam, lam_x.to(im.lam.dtype))  # eqs. 2-3: floor(lam N) points kept
        kept = (im.points == batch.points).all(-1).sum(1)  # points of the first cloud, in place
        assert (kept >= torch.floor(lam * N_POINTS)).all()
        who = "A" if phase == "im" else "B"
        feats[f"{who} mixed"] = enc(who, im.points)
    if phase in ("stage2", "joint"):
        feats["B"] = enc("B", batch.points)
    return feats, lam_x


PHASE_CASES = [("baseline", True), ("stage1", True), ("stage1", False), ("im", True),
               ("im", False), ("stage2", True), ("stage2", False), ("joint", True),
               ("joint", False)]


@pytest.mark.parametrize("phase,align_unmixed", PHASE_CASES)
def test_phase_loss_equals_the_equations(phase, align_unmixed):
    trainer, batch, _ = setting(phase, align_unmixed)
    for e in trainer.encoders.values():
        e.eval()
    b = batch.points.shape[0]
    partner, lam, g = draw(trainer, b) if phase != "baseline" else (None, None, None)
    assert phase == "baseline" or not torch.equal(partner, torch.arange(b))
    feats, lam_x = (hand_features(trainer, batch, phase, partner, lam, g) if phase != "baseline"
                    else ({"A": unit(trainer.encoders["A"](batch.points).double().detach())},
                          None))
    scales = {n: float(s().detach()) for n, s in trainer.logit_scales.items()}
    expected = reference(phase, feats, batch, partner, lam, lam_x, scales, align_unmixed)
    with torch.no_grad():
        loss, terms = trainer.compute_loss(phase, batch)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert terms["loss"] is loss or terms["loss"].item() == loss.item()


def test_text_masks_matter():
    """Rows without a caption: out of the text terms' mean, still negatives (two toy rows)."""
    trainer, batch, _ = setting("baseline")
    assert not batch.text_valid.all()
    feats = {"A": unit(trainer.encoders["A"].eval()(batch.points).double().detach())}
    s = {"A": float(trainer.logit_scales["A"]().detach())}
    with torch.no_grad():
        loss, _ = trainer.compute_loss("baseline", batch)
    assert loss.item() == pytest.approx(reference("baseline", feats, batch, None, None, None, s,
                                                  True).item(), rel=1e-5)
    batch.text_valid = torch.ones_like(batch.text_valid)  # pretend every row has text
    unmasked = reference("baseline", feats, batch, None, None, None, s, True)
    assert abs(unmasked.item() - loss.item()) > 1e-4


# ------------------------------------------------------------------ gradients

def grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("phase", ["baseline", "stage1", "im", "stage2", "joint"])
def test_gradient_reaches_exactly_the_trained_encoders(phase):
    trainer, batch, step = setting(phase)
    for e in trainer.encoders.values():  # even if asked to, a frozen A gets nothing
        e.requires_grad_(True)
    plan, step_loss = trainer._plan(step, batch)
    loss, _ = step_loss({n: trainer.encode(n, x, plan) for n, x in plan.inputs.items()})
    loss.backward()
    for name, enc in trainer.encoders.items():
        got = grads(enc)
        if name in step.trains:
            missing = [n for n, p in enc.named_parameters() if n not in got or not got[n].any()]
            assert not missing, f"{phase}: no gradient into {name}.{missing[:3]}"
        else:
            assert not got, f"{phase}: gradient leaked into the frozen encoder {name}"


def test_joint_point_target_is_detached():
    """A's gradient in the joint phase is its stage-1 gradient alone: nothing flows back from
    B's loss through the point targets."""
    trainer, batch, step = setting("joint")
    state = trainer.local_generator.get_state()
    plan = step.plan(batch, trainer)
    scales = {n: s() for n, s in trainer.logit_scales.items()}
    loss, _ = step.loss(plan, {n: trainer.encode(n, x) for n, x in plan.inputs.items()},
                        scales, trainer)
    loss.backward()
    joint = grads(trainer.encoders["A"])
    for e in trainer.encoders.values():
        e.zero_grad(set_to_none=True)
    trainer.local_generator.set_state(state)
    plan = step.plan(batch, trainer)
    feats = {n: trainer.encode(n, x) for n, x in plan.inputs.items()}
    scales = {n: s() for n, s in trainer.logit_scales.items()}
    FeatureMixing.stage1_term(step, plan, feats, scales, trainer).backward()
    alone = grads(trainer.encoders["A"])
    assert set(joint) == set(alone)
    for n in joint:
        torch.testing.assert_close(joint[n], alone[n], rtol=1e-6, atol=1e-9)


def test_stage2_target_is_the_one_method_to_change(monkeypatch):
    """The stage-2 point target is built in Stage2.point_target: replacing it there changes the
    trainer's loss, and the joint phase keeps its own (the live A, detached)."""
    trainer, batch, _ = setting("stage2")
    state = trainer.local_generator.get_state()
    with torch.no_grad():
        before, _ = trainer.compute_loss("stage2", batch)
    monkeypatch.setattr(Stage2, "point_target",
                        lambda self, plan, feats, ctx: torch.zeros_like(feats["B"][:8]) + 1.0)
    trainer.local_generator.set_state(state)
    with torch.no_grad():
        after, _ = trainer.compute_loss("stage2", batch)
    assert after.item() != before.item()
    assert Joint.point_target is not Stage2.point_target


# ------------------------------------------------------------------ one_step (notebooks 03/04)

@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from mmmixlab import workbench

    cfg = workbench.notebook_config(cache=str(tmp_path_factory.mktemp("cache")), smoke=True,
                                    device="cpu")
    return cfg, workbench.get_world(cfg, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["baseline", "stage1", "im", "stage2", "joint"])
def test_one_step_is_the_trainers_own_step(smoke, phase):
    """What notebooks 03/04 show (workbench.one_step) is the loss the trainer's step computes
    for the same batch and draw, bit for bit on CPU."""
    from mmmixlab import pipeline, workbench
    from mmmixlab.batches import check_batch

    cfg, world = smoke
    run = workbench.get_run(cfg, VARIANT_OF[phase], progress=False)
    trainer = Trainer(run.cfg, pipeline.training_batches(run.cfg, world), embed_dim=world.dim,
                      progress=False)
    for name, enc in trainer.encoders.items():
        enc.load_state_dict(run.encoders[name].state_dict())
    step = next(p for p in trainer.phases if p.name == phase)
    trainer.enter_phase(step)
    batch = next(trainer.batches.iterate(trainer.batches.epoch_order(trainer.generator),
                                         trainer.local_generator))
    check_batch(batch)
    state = trainer.local_generator.get_state()
    loss, _ = trainer._forward_backward(step, batch)  # what fit() runs for this step
    shown = workbench.one_step(run, world, phase, batch=batch, draw_state=state)
    assert shown["loss"] == loss.item() and shown["trainer_loss"] == loss.item()
    assert shown["phase"].name == phase
    if phase in ("im", "stage2", "joint"):
        assert "lam_x (points kept)" in shown["pairs"]
    else:
        assert "lam_x (points kept)" not in shown["pairs"]
    if phase in ("stage2", "joint"):
        assert shown["features"]["target"].shape == shown["features"]["plain"].shape


@pytest.mark.parametrize("encoder", ["pointbert-tiny", "pointnet"])
def test_one_pass_over_mixed_and_unmixed_clouds_equals_two(encoder):
    """Stage 2 runs B once over [mixed; unmixed] clouds: for an encoder whose feature of a cloud
    does not depend on the rest of its batch, the same features and gradients as two passes.
    (OpenShape's Point-BERT normalises by batch statistics in training: there the one pass is
    the computation, as in OpenShape's own batches.)"""
    from mmmixlab.encoders import create_point_encoder

    torch.manual_seed(0)
    overrides = {"num_groups": 16, "group_size": 16} if encoder == "pointbert-tiny" else {}
    enc = create_point_encoder(encoder, 16, **overrides).train().double()
    mixed, plain = torch.randn(2, 6, 128, 6, dtype=torch.float64).unbind(0)
    weights = torch.randn(12, 16, dtype=torch.float64)

    def loss_of(feats):
        return (feats * weights).sum()

    one = enc(torch.cat([mixed, plain]))
    g_one = torch.autograd.grad(loss_of(one), list(enc.parameters()))
    two = torch.cat([enc(mixed), enc(plain)])
    g_two = torch.autograd.grad(loss_of(two), list(enc.parameters()))
    torch.testing.assert_close(one, two, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_one, g_two):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
