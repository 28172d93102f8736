"""Each phase's loss is the paper's equation on a fixed draw, computed here by hand from
``mixing`` and ``losses`` (no trainer code)."""

import pytest
import torch
import torch.nn.functional as F

from mmmixlab.losses import stage1_loss, stage2_loss
from mmmixlab.mixing import feature_mix, input_mix, pair_indices, sample_lambda
from mmmixlab.train import Trainer
from tests.helpers.toy import toy_batches, toy_cfg


def draw(trainer, b):
    """The trainer's mixing draw, replayed from a copy of its generator."""
    g = torch.Generator()
    g.set_state(trainer.local_generator.get_state())
    mc = trainer.cfg.mix
    partner = pair_indices(b, mc.pairing, generator=g)
    lam = sample_lambda(mc.beta, b, generator=g)
    assert float(torch.rand((), generator=g)) < mc.mix_prob
    return partner, lam, g


def setup(variant, align_unmixed):
    cfg = toy_cfg(variant, **{"mix.align_unmixed": align_unmixed})
    trainer = Trainer(cfg, toy_batches(), embed_dim=16, progress=False)
    batch = trainer.batches.make_batch(torch.arange(8), torch.Generator().manual_seed(5))
    for e in trainer.encoders.values():
        e.eval()  # no dropout: the features below equal the trainer's
    return trainer, batch


@pytest.mark.parametrize("align_unmixed", [False, True])
def test_stage1_step_is_eq5_over_feature_mixing(align_unmixed):
    trainer, batch = setup("fm", align_unmixed)
    partner, lam, _ = draw(trainer, 8)
    loss, _ = trainer.compute_loss("stage1", batch)
    with torch.no_grad():
        f = F.normalize(trainer.encoders["A"](batch.points), dim=-1)
        scale = trainer.logit_scales["A"]()
        mix = lambda x: feature_mix(x, x[partner], lam)  # noqa: E731 (eq. 1)
        valid = batch.text_valid & batch.text_valid[partner]
        expected = stage1_loss(mix(f), mix(batch.image), mix(batch.text), scale,
                               text_mask=valid)
        if align_unmixed:
            plain = stage1_loss(f, batch.image, batch.text, scale, text_mask=batch.text_valid)
            expected = 0.5 * (expected + plain)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_stage2_step_is_eq6_over_input_mixing():
    trainer, batch = setup("mm-mixing", False)
    partner, lam, g = draw(trainer, 8)
    loss, terms = trainer.compute_loss("stage2", batch)
    with torch.no_grad():
        im = input_mix(batch.points, batch.points[partner], lam,
                       trainer.cfg.mix.input_variant, generator=g)
        m = F.normalize(trainer.encoders["B"](im.points), dim=-1)
        target = F.normalize(trainer.encoders["A"](batch.points), dim=-1)  # frozen stage 1
        mix = lambda x: feature_mix(x, x[partner], im.lam)  # noqa: E731 (exact lam_x)
        valid = batch.text_valid & batch.text_valid[partner]
        expected = stage2_loss(m, mix(target), mix(batch.image), mix(batch.text),
                               trainer.logit_scales["B"](), text_mask=valid)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(terms) == {"loss", "loss_stage2"}
