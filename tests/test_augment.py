"""One augmentation for both data paths: the same shape and seed give the same training cloud
in memory (TripletBatches) and streamed (StreamBatches over OpenShape's files)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmmixlab.augment import augment_clouds, shape_generator, subsample
from mmmixlab.batches import TripletBatches
from mmmixlab.clip import TripletFeatures
from mmmixlab.data.openshape import normalize_unit_sphere, read_openshape_npy, swap_yz
from mmmixlab.streaming import StreamBatches, open_shape_source
from tests.helpers import realdata


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    info = realdata.write_openshape_training(tmp_path_factory.mktemp("os"), per_kind=2)
    source = open_shape_source(info["folder"])
    return source


def in_memory_cloud(source, i):
    """Shape i as a triplet folder holds it: z-up, on the unit sphere (what the streamed path
    computes from the file at read time)."""
    rec = read_openshape_npy(source.describe(i))
    xyz = normalize_unit_sphere(swap_yz(rec.xyz))
    return np.concatenate([xyz, rec.rgb], 1).astype(np.float32), rec


@pytest.mark.parametrize("sampling", ["random", "fps"])
def test_both_paths_augment_a_shape_alike(shapes, sampling):
    seed, epoch, i = 7, 3, 5
    stream = StreamBatches(shapes, num_points=realdata.POINTS, batch_size=1, seed=seed,
                           num_workers=0, sampling=sampling, rgb_dropout=0.5)
    streamed = stream.make_batch([i], epoch=epoch).points[0]
    cloud, rec = in_memory_cloud(shapes, i)
    d = rec.image_feat.shape[1]
    feats = TripletFeatures(image=F.normalize(torch.randn(1, 2, d), dim=-1),
                            text=F.normalize(torch.randn(1, 1, d), dim=-1),
                            text_mask=torch.ones(1, 1, dtype=torch.bool))
    memory = TripletBatches(cloud[None], feats, num_points=realdata.POINTS, batch_size=1,
                            sampling=sampling, rgb_dropout=0.5)
    held = memory.make_batch(torch.tensor([0]), shape_generator(seed, epoch, i)).points[0]
    # normalising the kept points (streamed) vs the stored cloud (in memory): a permutation of
    # the same points, so the same values up to the summation order of the mean
    torch.testing.assert_close(streamed, held, rtol=0, atol=1e-6)
    assert not torch.allclose(streamed[:, :3], torch.from_numpy(cloud[:, :3]))  # augmented


def test_augmentation_draws_rotation_scale_and_colour():
    g = torch.Generator().manual_seed(0)
    clouds = torch.rand(64, 50, 6)
    out = augment_clouds(clouds, g, rgb_dropout=0.5)
    ratio = out[..., :3].norm(dim=-1) / clouds[..., :3].norm(dim=-1)
    scale = ratio.mean(1)
    assert torch.allclose(ratio, scale[:, None], atol=1e-5)  # a rotation times one scale
    assert 0.9 <= scale.min() and scale.max() <= 1.1 and scale.std() > 0.02
    torch.testing.assert_close(out[..., 2] / scale[:, None], clouds[..., 2])  # about z
    dropped = (out[..., 3:] == 0.4).all(-1).all(-1)
    assert 10 < dropped.sum() < 54
    same = augment_clouds(clouds, torch.Generator().manual_seed(0), 0.5, rotate=False)
    assert torch.equal(same[..., 3:], out[..., 3:])  # the switch does not shift the draws


def test_subsample_short_clouds_and_names():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(10.0).view(1, 10, 1).expand(2, 10, 3).contiguous()
    out = subsample(x, 16, "random", g)
    assert out.shape == (2, 16, 3)
    assert all(set(out[b, :, 0].tolist()) == set(range(10)) for b in range(2))
    with pytest.raises(ValueError, match="sampling must be one of random, fps"):
        subsample(x, 4, "poisson", g)


@pytest.mark.parametrize("stored,keep", [(2048, 1024), (300, 1024), (1024, 1024)])
def test_random_subsample_is_torchs_bit_for_bit(monkeypatch, stored, keep):
    """ops.argsort_rows in subsample gives torch's unstable argsort's subset and order, ties
    included (at 32 x 2,048 random keys most batches hold one), and short clouds likewise."""
    from mmmixlab import ops
    clouds = torch.randn(32, stored, 6, generator=torch.Generator().manual_seed(0))
    fast = [subsample(clouds, keep, "random", torch.Generator().manual_seed(s))
            for s in range(5)]
    monkeypatch.setattr(ops, "argsort_rows",
                        lambda keys, stable=False: torch.argsort(keys, dim=1))  # the rule
    for s, got in enumerate(fast):
        want = subsample(clouds, keep, "random", torch.Generator().manual_seed(s))
        assert torch.equal(got, want)
