import math

import numpy as np
import pytest
import torch
from scipy import stats

from mmmixlab.mixing import feature_mix, input_mix, pair_indices, sample_lambda


def clouds(b=4, n=256, c=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, c, generator=g) * 2 - 1


# --- sample_lambda -------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.2, 1.0, 4.0])
def test_sample_lambda_matches_beta_distribution(beta):
    lam = sample_lambda(beta, 4000, generator=torch.Generator().manual_seed(1)).numpy()
    assert lam.shape == (4000,)
    assert ((lam >= 0) & (lam <= 1)).all()
    # Kolmogorov-Smirnov against scipy's Beta(beta, beta)
    assert stats.kstest(lam, stats.beta(beta, beta).cdf).pvalue > 1e-3


def test_sample_lambda_reproducible_and_shapes():
    a = sample_lambda(1.0, (3, 2), generator=torch.Generator().manual_seed(5))
    b = sample_lambda(1.0, (3, 2), generator=torch.Generator().manual_seed(5))
    assert a.shape == (3, 2) and torch.equal(a, b)
    assert sample_lambda(1.0).shape == ()


@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan"), float("inf")])
def test_sample_lambda_rejects_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        sample_lambda(beta, 3)


# --- feature_mix ---------------------------------------------------------------------------
def test_feature_mix_scalar_and_rows():
    fi, fj = torch.randn(5, 8), torch.randn(5, 8)
    assert torch.allclose(feature_mix(fi, fj, 0.3), 0.3 * fi + 0.7 * fj)
    lam = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    out = feature_mix(fi, fj, lam)
    for r in range(5):
        assert torch.allclose(out[r], lam[r] * fi[r] + (1 - lam[r]) * fj[r])
    assert torch.equal(feature_mix(fi, fj, 1.0), fi)


@pytest.mark.parametrize("lam", [-0.1, 1.5, float("nan"), torch.tensor([0.2, 2.0, 0.1, 0.1, 0.1])])
def test_feature_mix_rejects_lam_outside_unit_interval(lam):
    with pytest.raises(ValueError, match="lam"):
        feature_mix(torch.randn(5, 4), torch.randn(5, 4), lam)


def test_feature_mix_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="equal shape"):
        feature_mix(torch.randn(5, 4), torch.randn(4, 4), 0.5)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        feature_mix(torch.randn(5, 4), torch.randn(5, 4), torch.rand(3))


# --- input_mix -----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["random", "knn"])
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 0.77, 1.0])
def test_input_mix_exact_share_and_membership(variant, lam):
    p1, p2 = clouds(seed=1), clouds(seed=2)
    n = p1.shape[1]
    out = input_mix(p1, p2, lam, variant=variant, generator=torch.Generator().manual_seed(0))
    k = math.floor(lam * n)
    assert out.points.shape == p1.shape and out.from_first.shape == p1.shape[:2]
    assert (out.from_first.sum(1) == k).all()
    assert torch.allclose(out.lam, torch.full((4,), k / n))
    # points flagged from_first are p1's points at the same position
    assert torch.equal(out.points[out.from_first], p1[out.from_first])
    # every other point is a point of p2, each p2 point used at most once
    for b in range(4):
        rest = out.points[b][~out.from_first[b]]
        d = torch.cdist(rest, p2[b], compute_mode="donot_use_mm_for_euclid_dist")
        nearest = d.min(1)
        assert torch.all(nearest.values < 1e-6)
        assert len(set(nearest.indices.tolist())) == rest.shape[0]


def test_input_mix_per_row_lambda():
    p1, p2 = clouds(b=3, n=100, seed=3), clouds(b=3, n=100, seed=4)
    lam = torch.tensor([0.1, 0.555, 0.9])
    out = input_mix(p1, p2, lam, variant="knn", generator=torch.Generator().manual_seed(0))
    assert out.from_first.sum(1).tolist() == torch.floor(lam * 100).long().tolist() == [10, 55, 90]


def test_knn_variant_takes_contiguous_patch_random_does_not():
    # p2's patch in the knn variant is the set of p2 points nearest one location: its spread is
    # far smaller than that of a random subset of the same size.
    p1, p2 = clouds(b=8, n=512, c=3, seed=5), clouds(b=8, n=512, c=3, seed=6)
    g = torch.Generator().manual_seed(0)
    spread = {}
    for variant in ("knn", "random"):
        out = input_mix(p1, p2, 0.9, variant=variant, generator=g)
        patch = [out.points[b][~out.from_first[b]] for b in range(8)]
        spread[variant] = np.mean([(p - p.mean(0)).norm(dim=1).mean().item() for p in patch])
    assert spread["knn"] < 0.6 * spread["random"]


def test_knn_variant_patches_replace_the_same_region():
    # p2 points fill the region that was removed from p1: the removed p1 points and the p2 points
    # that replaced them have nearby centroids.
    p1 = clouds(b=6, n=400, c=3, seed=7)
    p2 = clouds(b=6, n=400, c=3, seed=8)
    out = input_mix(p1, p2, 0.8, variant="knn", generator=torch.Generator().manual_seed(1))
    for b in range(6):
        removed = p1[b][~out.from_first[b]].mean(0)
        added = out.points[b][~out.from_first[b]].mean(0)
        assert (removed - added).norm() < 0.25


def test_input_mix_reproducible_with_generator():
    p1, p2 = clouds(seed=1), clouds(seed=2)
    a = input_mix(p1, p2, 0.4, "knn", generator=torch.Generator().manual_seed(3))
    b = input_mix(p1, p2, 0.4, "knn", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.points, b.points)


@pytest.mark.parametrize("variant", ["random", "knn"])
def test_input_mix_sorts_as_torch_does(monkeypatch, variant):
    """The fast sort (ops.argsort_rows) gives the mix that torch's stable argsort gives (the
    rule: tied keys keep their index order), bit for bit, at the training size (32 x 1,024:
    ties among the random keys occur) and with repeated points (ties among the distances)."""
    from mmmixlab import ops
    p1 = clouds(b=32, n=1024, seed=1)
    p1[:, 512:] = p1[:, :512]  # every point twice: equal distances to the seed
    p2 = clouds(b=32, n=1024, seed=2)
    lam = torch.rand(32, generator=torch.Generator().manual_seed(4))
    fast = input_mix(p1, p2, lam, variant, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(ops, "argsort_rows",
                        lambda keys, stable=False: torch.argsort(keys, dim=1, stable=True))
    torch_sorted = input_mix(p1, p2, lam, variant, generator=torch.Generator().manual_seed(3))
    assert torch.equal(fast.points, torch_sorted.points)
    assert torch.equal(fast.from_first, torch_sorted.from_first)


def test_input_mix_bad_input():
    p1, p2 = clouds(), clouds(seed=9)
    with pytest.raises(ValueError, match="variant"):
        input_mix(p1, p2, 0.5, variant="emd")
    with pytest.raises(ValueError, match="lam"):
        input_mix(p1, p2, 1.2)
    with pytest.raises(ValueError, match="equal shape"):
        input_mix(p1, p2[:, :100], 0.5)
    with pytest.raises(ValueError, match=r"\(B, N, C\)"):
        input_mix(p1[0], p2[0], 0.5)
    bad = p1.clone()
    bad[1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        input_mix(bad, p2, 0.5)
    with pytest.raises(ValueError, match="empty"):
        input_mix(p1[:, :0], p2[:, :0], 0.5)


# --- pairing -------------------------------------------------------------------------------
def test_pairings():
    g = torch.Generator().manual_seed(0)
    perm = pair_indices(16, "shuffle", generator=g)
    assert sorted(perm.tolist()) == list(range(16))
    der = pair_indices(16, "derangement", generator=g)
    assert sorted(der.tolist()) == list(range(16)) and (der != torch.arange(16)).all()
    assert pair_indices(4, "flip").tolist() == [3, 2, 1, 0]
    with pytest.raises(ValueError, match="pairing"):
        pair_indices(4, "nearest")
