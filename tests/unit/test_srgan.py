"""SRGAN: generator and discriminator shapes in 2D/3D at scale 2 and 4, the interpolation skip, sampling
inside the mask, the two phases and the two exported generators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.gan.checkpoint import load_checkpoint
from pipeline.gan.schedules import cosine_factor
from pipeline.imaging.degrade import upsample
from pipeline.models import FAMILIES, build_model
from pipeline.models.srgan import SRGAN
from pipeline.nets.discriminators import VGGStyleDiscriminator
from pipeline.nets.interp import INTERP_METHODS, interpolate
from pipeline.nets.srresnet import SRResNet, pixel_shuffle_nd, upsample_stages
from tests.unit.sr_helpers import make_sr_dataset, tiny_cfg


@pytest.mark.parametrize(
    ("dims", "factors", "lr_shape"),
    [(2, (2, 2), (10, 12)), (2, (4, 4), (6, 5)), (3, (2, 2, 2), (6, 5, 4)), (3, (4, 4, 4), (4, 4, 3)),
     (3, (4, 4, 1), (5, 4, 6)), (2, (1, 4), (6, 5))],
)
@pytest.mark.parametrize(("norm", "upsampler"), [("batch", "stages"), ("none", "stages"), ("none", "final")])
def test_generator_output_shape_and_interpolation_start(dims, factors, lr_shape, norm, upsampler):
    torch.manual_seed(0)
    g = SRResNet(dims, factors, channels=8, n_blocks=2, norm=norm, interp_skip="zerofill", outer_kernel=3,
                 upsampler=upsampler).eval()
    lr = torch.rand(2, 1, *lr_shape)
    out = g(lr)
    assert out.shape == (2, 1, *(n * f for n, f in zip(lr_shape, factors, strict=True)))
    # the tail starts at zero: an untrained generator is exactly its interpolation skip
    assert torch.allclose(out, interpolate(lr, factors, "zerofill"))
    assert torch.count_nonzero(g.residual(lr)) == 0


def test_generator_without_skip_is_the_papers_network():
    torch.manual_seed(0)
    g = SRResNet(2, (4, 4), channels=8, n_blocks=1, interp_skip="none")
    assert g.skip(torch.rand(1, 1, 4, 4)) is None
    out = g(torch.rand(1, 1, 4, 4))
    assert out.shape == (1, 1, 16, 16) and out.abs().sum() > 0


def test_upsampling_stages_and_shuffle():
    assert upsample_stages((4, 4)) == [(2, 2), (2, 2)]
    assert upsample_stages((4, 4, 1)) == [(2, 2, 1), (2, 2, 1)]
    assert upsample_stages((2, 2, 2)) == [(2, 2, 2)]
    with pytest.raises(ValueError, match="powers of two"):
        upsample_stages((3, 3))
    x = torch.rand(2, 12, 3, 5)
    assert torch.equal(pixel_shuffle_nd(x, (2, 2)), torch.nn.functional.pixel_shuffle(x, 2))
    y = pixel_shuffle_nd(torch.arange(4.0).reshape(1, 4, 1, 1, 1), (2, 2, 1))
    assert y.shape == (1, 1, 2, 2, 1) and y.flatten().tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("method", INTERP_METHODS)
def test_interpolation_skip_equals_the_classical_baseline(method):
    lr = np.random.default_rng(0).random((6, 7, 5)).astype(np.float32)
    expected = upsample(lr, 4, method, (0, 1))
    got = interpolate(torch.from_numpy(lr)[None, None], (4, 4, 1), method)[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=2e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_discriminators_return_features_and_logits(dims):
    from monai.networks.nets import PatchDiscriminator

    x = torch.rand(2, 1, *([16] * dims))
    vgg = VGGStyleDiscriminator(dims, channels=4, levels=2)(x)
    assert vgg[-1].shape == (2, 1) and len(vgg) == 4
    patch = PatchDiscriminator(spatial_dims=dims, channels=4, in_channels=1, num_layers_d=2)(x)
    assert patch[-1].shape[:2] == (2, 1)


def test_build_model_names_the_choices():
    assert "srgan" in FAMILIES
    with pytest.raises(ValueError, match="srgan"):
        build_model("nosuchfamily", tiny_cfg())


@pytest.mark.parametrize(("spatial_dims", "scale", "axes", "shape"),
                         [(2, 4, (0, 1), (32, 32, 8)), (2, 2, (0, 1), (32, 32, 8)), (3, 2, (0, 1, 2), (16, 16, 16))])
def test_sampler_batches_and_crops_centred_in_the_mask(tmp_path, spatial_dims, scale, axes, shape):
    data = make_sr_dataset(tmp_path, shape=shape, scale=scale, axes=axes)
    cfg = tiny_cfg(spatial_dims=spatial_dims, patch_size=8, batch_size=6)
    sampler, kwargs = SRGAN.prepare_data(cfg, data, seed=1)
    assert kwargs["factors"] == [scale if a in axes else 1 for a in range(3)]
    batch = sampler(0)
    lr_side = [8 // f for a, f in enumerate(kwargs["factors"]) if spatial_dims == 3 or a != 2]
    n_in = 1 + 2 * cfg.context_slices if spatial_dims == 2 else 1  # 2.5D: neighbouring slices as channels
    assert batch["lr"].shape == (6, n_in, *lr_side)
    assert batch["hr"].shape == batch["skip"].shape == (6, 1, *([8] * spatial_dims))
    # every candidate centre is an LR voxel whose HR block centre lies in the mask
    f = sampler.factors
    for i, cands in enumerate(sampler.centres):
        hr_centre = cands * np.array(f) + np.array(f) // 2
        assert all(sampler_mask_at(data, i, c) for c in hr_centre[:50])
    # the skip crop is the crop of the whole-volume interpolation, aligned with the HR crop
    assert torch.isfinite(batch["skip"]).all()


def sampler_mask_at(data, i, c):
    from pipeline.io.nifti import load_nifti

    mask, _ = load_nifti(data / f"sub-{[1, 2][i]:03d}" / "mask.nii.gz")
    return mask[tuple(c)] > 0


@pytest.mark.parametrize("flip", [False, True])
def test_crop_lr_hr_and_skip_are_aligned(flip):
    from pipeline.data.sr_sampler import SRPatchSampler
    from pipeline.data.volumes import SRPair

    f = 4
    i, j = np.meshgrid(np.arange(32.0), np.arange(24.0), indexing="ij")
    hr = np.repeat((i * 100 + j)[..., None], 3, axis=2).astype(np.float32)
    lr = hr.reshape(8, f, 6, f, 3).mean(axis=(1, 3))  # area: LR voxel = mean of its HR block
    pair = SRPair("s", lr, hr, np.ones(hr.shape, bool), np.eye(4), np.eye(4))
    sampler = SRPatchSampler([pair], 2, patch_size=16, batch_size=8, seed=0, interp="nearest", flip=flip)
    b = sampler(0)
    for n in range(8):
        h, low = b["hr"][n, 0].numpy(), b["lr"][n, 0].numpy()
        np.testing.assert_allclose(low, h.reshape(4, f, 4, f).mean(axis=(1, 3)), rtol=1e-6)
        # the skip crop (cut from the whole-volume interpolation) is the crop's own nearest upsampling
        np.testing.assert_array_equal(b["skip"][n, 0].numpy(), np.repeat(np.repeat(low, f, 0), f, 1))
    if flip:
        corner = b["hr"][:, 0, 1, 0] - b["hr"][:, 0, 0, 0]
        assert (corner < 0).any(), "no flipped crop in the batch"


def test_cosine_schedule():
    assert cosine_factor(0, 10, 0.1) == pytest.approx(1.0)
    assert cosine_factor(5, 10, 0.1) == pytest.approx(0.55)
    assert cosine_factor(10, 10, 0.1) == pytest.approx(0.1)


@pytest.mark.parametrize(("spatial_dims", "disc"), [(2, "patch"), (3, "vgg")])
def test_two_phases_and_both_generators_exported(tmp_path, spatial_dims, disc):
    from pipeline.gan.loop import LoopSettings, train
    from pipeline.gan.seeding import seed_everything

    shape, axes, scale = ((32, 32, 8), (0, 1), 4) if spatial_dims == 2 else ((16, 16, 16), (0, 1, 2), 2)
    data = make_sr_dataset(tmp_path / "d", shape=shape, scale=scale, axes=axes)
    cfg = tiny_cfg(spatial_dims=spatial_dims, discriminator=disc, patch_size=8 if spatial_dims == 3 else 16,
                   pretrain_steps=2, gan_steps=2, lr_gan=1e-2)
    seed_everything(0)
    sampler, kwargs = SRGAN.prepare_data(cfg, data, 0)
    model = build_model("srgan", cfg, **kwargs)
    train(model, sampler, tmp_path / "m", LoopSettings(0, 1, 2), {})
    pre = torch.load(tmp_path / "m" / "srresnet.pt", weights_only=True)
    fin = load_checkpoint(tmp_path / "m" / "model.pt")
    assert pre["kind"] == "srresnet" and fin["kind"] == "srgan"
    assert fin["sr"]["factors"] == kwargs["factors"] and fin["sr"]["spatial_dims"] == spatial_dims
    assert fin["normalisation"]["method"] == "percentile" and fin["degradation"]["scale"] == scale
    assert fin["package_version"] and fin["generator"]["class"] == "SRResNet"
    changed = [k for k in pre["state_dict"] if not torch.equal(pre["state_dict"][k], fin["state_dict"][k])]
    assert changed, "the adversarial phase did not change the generator"
    import csv

    rows = list(csv.DictReader(open(tmp_path / "m" / "history.csv")))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["adv"] == "" and float(rows[-1]["adv"]) > 0 and float(rows[-1]["D"]) > 0


def test_2d_needs_a_free_slice_axis(tmp_path):
    data = make_sr_dataset(tmp_path, shape=(16, 16, 16), scale=2, axes=(0, 1, 2))
    with pytest.raises(ValueError, match="spatial_dims: 3"):
        SRGAN.prepare_data(tiny_cfg(spatial_dims=2, patch_size=8), data, 0)


def test_context_slices_are_the_neighbours_in_order_with_edges_repeated():
    """2.5D input: channel c of slice k is LR slice k + c - context (clamped), the centre channel is the slice
    itself, and the skip interpolates only the centre channel."""
    from pipeline.data.sr_sampler import SRPatchSampler
    from pipeline.data.volumes import SRPair
    from pipeline.nets.srresnet import SRResNet

    f, n_z, context = 2, 3, 2
    lr = np.broadcast_to(np.arange(n_z, dtype=np.float32), (4, 4, n_z)).copy()  # value = slice index
    hr = np.repeat(np.repeat(lr, f, 0), f, 1)
    pair = SRPair("s", lr, hr, np.ones(hr.shape, bool), np.eye(4), np.eye(4))
    sampler = SRPatchSampler([pair], 2, patch_size=0, batch_size=16, seed=0, interp="nearest", flip=False,
                             context_slices=context)
    b = sampler(0)
    assert b["lr"].shape == (16, 2 * context + 1, 4, 4)
    for lr_k, hr_k in zip(b["lr"], b["hr"], strict=True):
        k = int(hr_k[0, 0, 0])
        expected = np.clip(np.arange(k - context, k + context + 1), 0, n_z - 1)
        assert lr_k[:, 0, 0].tolist() == expected.tolist()
    net = SRResNet(2, (f, f), in_channels=2 * context + 1, channels=4, n_blocks=1, interp_skip="nearest")
    assert torch.equal(net.skip(b["lr"]), b["hr"])  # nearest upsampling of the centre channel = hr here
    with pytest.raises(ValueError, match="odd number of input channels"):
        SRResNet(2, (f, f), in_channels=4, interp_skip="nearest")
