import math

import pytest
import torch
import torch.nn.functional as F

from mmmixlab.losses import LogitScale, info_nce, stage1_loss, stage2_loss


def hand_info_nce(x, y, scale):
    """InfoNCE computed row by row with plain Python floats."""
    xs = [[v / math.sqrt(sum(a * a for a in row)) for v in row] for row in x.tolist()]
    ys = [[v / math.sqrt(sum(a * a for a in row)) for v in row] for row in y.tolist()]
    total = 0.0
    for i, xi in enumerate(xs):
        logits = [scale * sum(a * b for a, b in zip(xi, yj)) for yj in ys]
        m = max(logits)
        log_z = m + math.log(sum(math.exp(l - m) for l in logits))
        total += -(logits[i] - log_z)
    return total / len(xs)


def test_info_nce_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    for scale in (1.0, 14.28):
        assert info_nce(x, y, scale).item() == pytest.approx(hand_info_nce(x, y, scale), rel=1e-5)


def test_info_nce_tiny_hand_value():
    # two orthogonal unit pairs at scale 1: each row: -log(e / (e + 1))
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert info_nce(x, x, 1.0).item() == pytest.approx(-math.log(math.e / (math.e + 1)), rel=1e-6)


def test_info_nce_is_one_directional():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    assert info_nce(x, y, 10.0).item() != pytest.approx(info_nce(y, x, 10.0).item())


def test_stage1_is_mean_of_four_terms():
    g = torch.Generator().manual_seed(2)
    p, i, t = (torch.randn(7, 6, generator=g) for _ in range(3))
    s = 12.0
    expected = (info_nce(p, i, s) + info_nce(i, p, s) + info_nce(p, t, s) + info_nce(t, p, s)) / 4
    assert stage1_loss(p, i, t, s).item() == pytest.approx(expected.item(), rel=1e-6)
    only_text = (info_nce(p, t, s) + info_nce(t, p, s)) / 2
    assert stage1_loss(p, i, t, s, modalities=("text",)).item() == pytest.approx(
        only_text.item(), rel=1e-6)


def test_stage2_is_mean_of_six_terms_and_toggles():
    g = torch.Generator().manual_seed(3)
    m, p, i, t = (torch.randn(7, 6, generator=g) for _ in range(4))
    s = 5.0
    pair = lambda a, b: info_nce(a, b, s) + info_nce(b, a, s)
    expected = (pair(m, i) + pair(m, t) + pair(m, p)) / 6
    assert stage2_loss(m, p, i, t, s).item() == pytest.approx(expected.item(), rel=1e-6)
    tp = (pair(m, t) + pair(m, p)) / 4
    assert stage2_loss(m, p, i, t, s, modalities=("text", "point")).item() == pytest.approx(
        tp.item(), rel=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        stage2_loss(m, p, i, t, s, modalities=())
    with pytest.raises(ValueError, match="unknown modality"):
        stage2_loss(m, p, i, t, s, modalities=("audio",))


def test_text_mask_removes_rows_but_keeps_them_as_negatives():
    g = torch.Generator().manual_seed(4)
    p, t = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    mask = torch.tensor([True, False, True, True, False])
    logits = 7.0 * F.normalize(p, dim=-1) @ F.normalize(t, dim=-1).t()
    per_row = F.cross_entropy(logits, torch.arange(5), reduction="none")
    assert info_nce(p, t, 7.0, mask).item() == pytest.approx(per_row[mask].mean().item(), rel=1e-6)


def test_losses_reject_bad_input():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="batch sizes differ"):
        info_nce(x, torch.randn(5, 3), 1.0)
    with pytest.raises(ValueError, match="widths differ"):
        info_nce(x, torch.randn(4, 2), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        info_nce(x, torch.full((4, 3), float("nan")), 1.0)
    with pytest.raises(ValueError, match="batch sizes differ"):
        stage1_loss(x, x, torch.randn(3, 3), 1.0)


def test_logit_scale_init_and_clamp():
    s = LogitScale()
    assert s().item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert s.log_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)
    with torch.no_grad():
        s.log_scale.fill_(10.0)
    assert s().item() == pytest.approx(100.0)
