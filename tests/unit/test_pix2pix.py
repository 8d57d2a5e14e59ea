"""pix2pix: paired sampling really pairs, one grid or a refusal, the conditional discriminator, the loss terms,
2D/3D steps and inference, exact resume, the model file and the family contract."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from pipeline.config import to_dict
from pipeline.data.paired_sampler import PairedSampler
from pipeline.data.volumes import Volume
from pipeline.gan.checkpoint import load_checkpoint
from pipeline.gan.loop import LoopSettings, train
from pipeline.gan.seeding import seed_everything
from pipeline.io.nifti import load_nifti
from pipeline.models import build_model, family_of
from pipeline.models.pix2pix import Pix2Pix, Pix2PixConfig
from tests.unit.test_cyclegan import make_translation_dataset


def tiny_cfg(**overrides) -> Pix2PixConfig:
    """A pix2pix config small enough for unit tests (a step in a few tens of milliseconds)."""
    base = dict(ngf=4, n_blocks=1, ndf=4, d_layers=2, patch_size=16, batch_size=2, n_steps=3, n_steps_decay=3, log_every=1,
                checkpoint_every=2, sw_batch_size=8, tta=False)
    base.update(overrides)
    return Pix2PixConfig(**base)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_translation_dataset(tmp_path_factory.mktemp("pix2pix"))


def _run(data, out, cfg, seed=3, stop_after=None):
    """Build the model as `python -m pipeline train pix2pix` does and train (or stop early)."""
    seed_everything(seed)
    sampler, kwargs = Pix2Pix.prepare_data(cfg, data, seed)
    model = build_model("pix2pix", cfg, **kwargs)
    settings = LoopSettings(seed=seed, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every)
    result = train(model, sampler, out, settings, {"test": "pix2pix"}, stop_after=stop_after)
    sampler.close()
    return model, result


# ------------------------------------------------------------------------------------------ sampling
CODE_SUBJECT, CODE_X, CODE_Y = 1e6, 1e4, 1e2


def _coded_subjects(n: int, shape=(14, 12, 6), margin: int = 2) -> tuple[list[Volume], list[Volume]]:
    """Subject k's A voxel (x, y, z) holds (k+1) 1e6 + x 1e4 + y 1e2 + z + 1, its B voxel minus that: a crop says
    which subject and voxels it came from, and B == -A voxel for voxel exactly when the pair is aligned."""
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    mask = np.zeros(shape, dtype=bool)
    mask[margin:-margin, margin:-margin, 1:-1] = True
    a = [Volume(f"sub-{k:03d}", ((k + 1) * CODE_SUBJECT + x * CODE_X + y * CODE_Y + z + 1).astype(np.float32),
                mask, np.eye(4)) for k in range(n)]
    b = [Volume(v.subject, -v.image, mask, np.eye(4)) for v in a]
    return a, b


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_paired_sampler_takes_the_same_subject_and_slice_from_both(spatial_dims):
    a, b = _coded_subjects(3)
    b = b[::-1]  # the domains list the subjects in another order: pairing is by subject, not position
    cfg = tiny_cfg(spatial_dims=spatial_dims, patch_size=8, batch_size=6)
    sampler = PairedSampler({"A": a, "B": b}, cfg, seed=5)
    subjects_seen = set()
    for step in range(20):
        batch = sampler(step)
        assert batch["A"].shape == batch["B"].shape == (6, 1, *([8] * spatial_dims))
        assert torch.equal(batch["B"], -batch["A"])  # same subject, same voxels, same flips
        for crop, subject, centre in zip(batch["A"][:, 0].numpy().astype(np.float64), batch["subject"],
                                         batch["centre"], strict=True):
            inside = crop[crop > 0]  # (3D crops are zero-padded in z)
            k = np.floor(inside / CODE_SUBJECT) - 1
            assert (k == subject.item()).all() and sampler.subjects[subject] == a[int(k[0])].subject
            if spatial_dims == 2:  # every voxel of a 2D crop is on the slice of its centre
                assert (np.round(inside % CODE_Y) - 1 == centre[2].item()).all()
            assert sampler.centres[sampler.subjects[subject]].tolist().count(centre.tolist()) == 1
        subjects_seen |= set(batch["subject"].tolist())
    assert subjects_seen == {0, 1, 2}
    again = sampler(7)
    for k, v in sampler(7).items():
        assert torch.equal(v, again[k])  # a pure function of (seed, step)
    assert not torch.equal(sampler(8)["A"], again["A"])


def test_paired_sampler_crops_are_centred_and_flipped_alike():
    a, b = _coded_subjects(2, shape=(20, 20, 4), margin=5)
    sampler = PairedSampler({"A": a, "B": b}, tiny_cfg(patch_size=8, batch_size=8, flip=False), seed=0)
    batch = sampler(0)
    for crop, centre in zip(batch["A"][:, 0].numpy().astype(np.float64), batch["centre"], strict=True):
        x0 = np.floor((crop[0, 0] % CODE_SUBJECT) / CODE_X)
        y0 = np.floor((crop[0, 0] % CODE_X) / CODE_Y)
        assert (x0, y0) == (centre[0].item() - 4, centre[1].item() - 4)  # (the mask keeps the centres 4 voxels off the border)
    flipped = PairedSampler({"A": a, "B": b}, tiny_cfg(patch_size=8, batch_size=8), seed=0)
    assert any(not torch.equal(flipped(s)["A"], sampler(s)["A"]) for s in range(4))
    assert all(torch.equal(flipped(s)["B"], -flipped(s)["A"]) for s in range(4))


def test_paired_sampler_refuses_a_subject_off_the_grid():
    a, b = _coded_subjects(3)
    moved = np.eye(4)
    moved[0, 3] = 2.0  # shifted by 2 mm
    b[1] = Volume(b[1].subject, b[1].image, b[1].mask, moved)
    with pytest.raises(ValueError, match=r"sub-001: T2w and T1w are not on one voxel grid"):
        PairedSampler({"A": a, "B": b}, tiny_cfg(), seed=0)
    b[1] = Volume(b[1].subject, b[1].image[:-1], b[1].mask[:-1], np.eye(4))
    with pytest.raises(ValueError, match=r"sub-001: .*shapes \(13, 12, 6\) and \(14, 12, 6\)"):
        PairedSampler({"A": a, "B": b}, tiny_cfg(), seed=0)


def test_paired_sampler_leaves_out_unpaired_subjects_and_needs_one_pair():
    a, b = _coded_subjects(3)
    sampler = PairedSampler({"A": a, "B": b[1:]}, tiny_cfg(), seed=0)
    assert sampler.subjects == ["sub-001", "sub-002"]
    with pytest.raises(ValueError, match="with all of T1w, T2w"):
        PairedSampler({"A": a[:1], "B": b[1:]}, tiny_cfg(), seed=0)


# ------------------------------------------------------------------------------------------ model
def test_conditional_discriminator_sees_the_source():
    torch.manual_seed(0)
    model = Pix2Pix(tiny_cfg())
    first = next(m for m in model.networks["D"].modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 2
    image, src = torch.rand(2, 1, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        same = model.discriminate(src, image)
        other = model.discriminate(-src, image)
    assert same.shape[:2] == (2, 1)
    assert not torch.allclose(same, other)  # the same image judged differently under another source


def test_generator_loss_is_adversarial_plus_weighted_l1():
    torch.manual_seed(0)
    cfg = tiny_cfg(lambda_l1=7.0, gan_loss="lsgan", precision="fp32")  # by hand: no bf16 rounding
    model = Pix2Pix(cfg)
    batch = {"A": torch.rand(2, 1, 16, 16), "B": torch.rand(2, 1, 16, 16)}
    model.set_input(batch)
    d_before = {k: v.clone() for k, v in model.networks["D"].state_dict().items()}
    with torch.no_grad():
        fake = model.networks["G"](batch["A"] * 2 - 1)
        l1 = (fake - (batch["B"] * 2 - 1)).abs().mean()
        adv = 0.5 * (model.discriminate(batch["A"] * 2 - 1, fake) - 1).pow(2).mean()
    model.optimize_step(0)
    got = model.losses()
    assert got["L1"] == pytest.approx(l1.item(), rel=1e-5)
    assert got["G_adv"] == pytest.approx(adv.item(), rel=1e-5)
    assert got["G"] == pytest.approx(adv.item() + 7.0 * l1.item(), rel=1e-5)
    assert set(got) == set(Pix2Pix.loss_names)
    assert any(not torch.equal(d_before[k], v) for k, v in model.networks["D"].state_dict().items())
    # L1 only: the discriminator is neither trained nor asked
    l1_only = Pix2Pix(tiny_cfg(lambda_adv=0.0))
    d_before = {k: v.clone() for k, v in l1_only.networks["D"].state_dict().items()}
    l1_only.set_input(batch)
    l1_only.optimize_step(0)
    assert set(l1_only.losses()) == {"L1", "G"}
    assert all(torch.equal(d_before[k], v) for k, v in l1_only.networks["D"].state_dict().items())


@pytest.mark.parametrize(("dims", "generator"), [(2, "unet"), (3, "unet"), (2, "resnet")])
def test_one_step_in_2d_and_3d(dims, generator):
    cfg = tiny_cfg(spatial_dims=dims, generator=generator)
    model = Pix2Pix(cfg)
    shape = (2, 1, *([16] * dims))
    model.set_input({"A": torch.rand(shape), "B": torch.rand(shape)})
    model.optimize_step(0)
    assert all(np.isfinite(v) for v in model.losses().values())
    assert model.visuals()["fake_B"].shape == shape
    with pytest.raises(ValueError, match="too small"):
        Pix2Pix(Pix2PixConfig(**{**to_dict(cfg), "d_layers": 3}), roi_size=[16] * dims)


def test_config_rules():
    with pytest.raises(ValueError, match="both 'T1w'"):
        Pix2PixConfig(target="T1w")
    with pytest.raises(ValueError, match="learn nothing"):
        Pix2PixConfig(lambda_adv=0.0, lambda_l1=0.0)


def test_unet_patch_size_must_fit_the_generator(data):
    with pytest.raises(ValueError, match="not a multiple of 8"):
        Pix2Pix.prepare_data(tiny_cfg(generator="unet", patch_size=20), data, 0)


# ------------------------------------------------------------------------------------------ training + inference
def test_resume_is_exact(data, tmp_path):
    cfg = tiny_cfg(n_steps=3, n_steps_decay=3, checkpoint_every=2)
    straight, res = _run(data, tmp_path / "straight", cfg)
    assert res.steps == 6
    _run(data, tmp_path / "resumed", cfg, stop_after=3)  # killed after step 3: checkpoint at 2
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["step"] == 2
    resumed, res2 = _run(data, tmp_path / "resumed", cfg)
    assert res2.resumed_from == 2
    for name, net in straight.networks.items():
        for k, v in net.state_dict().items():
            assert torch.equal(v, resumed.networks[name].state_dict()[k]), f"{name}.{k} differs"
    a = load_checkpoint(tmp_path / "straight" / "model.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "resumed" / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_model_file_inference_and_contract(data, tmp_path):
    from pipeline.stages import infer

    cfg = tiny_cfg(n_steps=1, n_steps_decay=1, tta=True)
    _run(data, tmp_path / "m", cfg)
    model = tmp_path / "m" / "model.pt"
    blob = load_checkpoint(model)
    assert blob["family"] == "pix2pix" and family_of(blob) is Pix2Pix
    assert blob["translation"]["source"] == "T1w" and blob["translation"]["target"] == "T2w"
    assert blob["translation"]["paired"] is True and blob["inference"]["tta"] is True
    (src_mod, _), (dst_mod, dst_norm) = Pix2Pix.io_modalities(blob, None)
    assert (src_mod, dst_mod) == ("T1w", "T2w") and dst_norm["method"] == "percentile"
    [output] = Pix2Pix.outputs(cfg)
    assert (output.name, output.task, output.input, output.truth, output.desc) == (
        "pix2pix", "translation", "T1w", "T2w", "T2w")
    scan = data / "sub-006" / "T1w.nii.gz"
    src, affine = load_nifti(scan)
    out = tmp_path / "out.nii.gz"
    parser = argparse.ArgumentParser()
    infer.add_arguments(parser)
    args = parser.parse_args(["--model", str(model), "--input", str(scan), "--output", str(out), "--device", "cpu"])
    assert infer.main(args) == 0
    got, out_affine = load_nifti(out)
    assert got.shape == src.shape and 0.0 <= got.min() and got.max() <= 1.0
    np.testing.assert_allclose(out_affine, affine)
    net = Pix2Pix.load_generator(blob, None, "cpu")
    np.testing.assert_allclose(got, Pix2Pix.apply(net, src, blob, affine=affine), atol=1e-6)  # TTA, planes: the file
    assert np.abs(Pix2Pix.apply(net, src, blob, affine=affine, tta=False) - got).max() > 1e-5
    with pytest.raises(ValueError, match="one generator"):
        Pix2Pix.load_generator(blob, "B2A", "cpu")


@pytest.mark.parametrize(("dims", "generator", "roi"), [(2, "unet", [16, 16]), (3, "unet", [16, 16, 16]),
                                                         (2, "resnet", [12, 12]), (3, "resnet", [8, 8, 8])])
def test_whole_volume_inference_shapes(dims, generator, roi):
    vol = np.random.default_rng(0).random((21, 26, 10)).astype(np.float32)
    cfg = tiny_cfg(spatial_dims=dims, generator=generator)
    blob = Pix2Pix(cfg, roi_size=[16] * dims).model_file(0)
    net = Pix2Pix.load_generator(blob, None, "cpu")
    out = Pix2Pix.apply(net, vol, blob, roi_size=roi)
    assert out.shape == vol.shape and np.isfinite(out).all() and out.dtype == np.float32


def test_shipped_config_block_is_the_demo_recipe():
    """config.yaml's pix2pix block validates, keeps the default run to SRGAN + CycleGAN and is the family's defaults."""
    from pipeline.workflow_config import load_workflow_config
    from tests.conftest import REPO

    cfg = load_workflow_config(REPO / "config" / "config.yaml")
    assert "pix2pix" not in cfg.models
    assert cfg.pix2pix == Pix2PixConfig() and cfg.pix2pix.lambda_adv > 0 and cfg.pix2pix.lambda_l1 > 0
    assert load_workflow_config({"models": ["pix2pix"]}).models == ["pix2pix"]
