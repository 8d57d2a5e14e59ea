"""CycleGAN: unpaired sampling, loss terms by hand, image pool, 2D/3D networks, inference both ways, resume."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.config import to_dict
from pipeline.data.unpaired_sampler import UnpairedSampler
from pipeline.data.volumes import Volume
from pipeline.gan.checkpoint import load_checkpoint
from pipeline.gan.image_pool import ImagePool
from pipeline.gan.loop import LoopSettings, train
from pipeline.gan.schedules import linear_decay
from pipeline.gan.seeding import seed_everything
from pipeline.io.nifti import load_nifti, save_nifti
from pipeline.models import build_model
from pipeline.models.cyclegan import CycleGAN, CycleGANConfig
from pipeline.models.translation import keep_background, translate
from pipeline.nets.resnet_generator import ResnetGenerator, TanhUNet, build_generator

SPLITS = ("train", "train", "train", "train", "val", "test")
SHAPE = (20, 24, 12)


def tiny_cfg(**overrides) -> CycleGANConfig:
    """A CycleGAN config small enough for unit tests (a step in a few tens of milliseconds)."""
    base = dict(ngf=4, n_blocks=1, ndf=4, d_layers=2, patch_size=16, batch_size=2, pool_size=2, n_steps=3, warmup_steps=0,
                warmup_ramp=0, n_steps_decay=3, log_every=1, checkpoint_every=2, sw_batch_size=8)
    base.update(overrides)
    return CycleGANConfig(**base)


def _volumes(i: int, shape=SHAPE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subject i: a 'T1w' that is a smooth field, a 'T2w' that is its inverse (inside an ellipsoid), the mask."""
    from scipy import ndimage

    rng = np.random.default_rng(i)
    field = ndimage.gaussian_filter(rng.random(shape), sigma=1.5)
    field = (field - field.min()) / (field.max() - field.min())
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    mask = (sum(g**2 for g in grid) < 0.8).astype(np.uint8)
    return (field * mask).astype(np.float32), ((1 - field) * mask).astype(np.float32), mask


def make_translation_dataset(root: Path, splits=SPLITS, ct: bool = False, spacing: float = 2.0) -> Path:
    """`root/subjects.tsv` + per subject T1w, T2w (or CT), mask and normalisation.json; returns `root`."""
    root = Path(root)
    target = "CT" if ct else "T2w"
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = [-20.0, 4.0, 7.0]
    lines = [f"subject\tsplit\tT1w\t{target}\tmask"]
    norm = {"T1w": {"method": "percentile", "percentiles": [0.5, 99.5], "low": 1.0, "high": 9.0, "range": [0, 1]},
            target: ({"method": "window", "window": [-1000.0, 2000.0], "unit": "HU", "low": -1000.0, "high": 2000.0}
                     if ct else {"method": "percentile", "percentiles": [0.5, 99.5], "low": 2.0, "high": 5.0})}
    for i, split in enumerate(splits):
        sub = f"sub-{i + 1:03d}"
        a, b, mask = _volumes(i)
        d = root / sub
        pa = save_nifti(a, affine, d / "T1w.nii.gz")
        pb = save_nifti(b, affine, d / f"{target}.nii.gz")
        pm = save_nifti(mask, affine, d / "mask.nii.gz", dtype=np.uint8)
        (d / "normalisation.json").write_text(json.dumps(norm))
        lines.append(f"{sub}\t{split}\t{pa}\t{pb}\t{pm}")
    (root / "subjects.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_translation_dataset(tmp_path_factory.mktemp("cyclegan"))


def _run(data, out, cfg, seed=3, stop_after=None):
    """Build the model as `python -m pipeline train cyclegan` does and train (or stop early)."""
    seed_everything(seed)
    sampler, kwargs = CycleGAN.prepare_data(cfg, data, seed)
    model = build_model("cyclegan", cfg, **kwargs)
    settings = LoopSettings(seed=seed, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every)
    result = train(model, sampler, out, settings, {"test": "cyclegan"}, stop_after=stop_after)
    return model, sampler, result


# ------------------------------------------------------------------------------------------ sampling
def _constant_subjects(n: int, shape=(12, 12, 6)) -> tuple[list[Volume], list[Volume]]:
    """Subject k has value (k+1)/10 in A and (k+1)/10 + 0.05 in B everywhere (to recognise the source)."""
    mask = np.ones(shape, dtype=bool)
    a = [Volume(f"s{k}", np.full(shape, (k + 1) / 10, np.float32), mask, np.eye(4)) for k in range(n)]
    b = [Volume(f"s{k}", np.full(shape, (k + 1) / 10 + 0.05, np.float32), mask, np.eye(4)) for k in range(n)]
    return a, b


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_sampler_draws_a_and_b_from_disjoint_subjects(spatial_dims):
    a, b = _constant_subjects(5)
    cfg = tiny_cfg(spatial_dims=spatial_dims, patch_size=8, batch_size=4)
    sampler = UnpairedSampler(a, b, cfg, seed=11)
    seen_a, seen_b = set(), set()
    for step in range(40):
        batch = sampler(step)
        assert batch["A"].shape == (4, 1, *([8] * spatial_dims))
        ids_a, ids_b = set(batch["A_subject"].tolist()), set(batch["B_subject"].tolist())
        assert not ids_a & ids_b, f"step {step}: subjects {ids_a & ids_b} on both sides"
        # the reported subjects are the ones the crops came from
        for dom, offset in (("A", 0.0), ("B", 0.05)):
            values = batch[dom].flatten(1).max(1).values.numpy()  # (3D crops are zero-padded in z)
            expected = (batch[f"{dom}_subject"].numpy() + 1) / 10 + offset
            np.testing.assert_allclose(values, expected, atol=1e-6)
        seen_a |= ids_a
        seen_b |= ids_b
    assert seen_a == seen_b == set(range(5))  # every subject serves both domains over time, never together
    again = sampler(7)
    for k, v in sampler(7).items():
        assert torch.equal(v, again[k])  # a pure function of (seed, step)


def test_sampler_needs_two_subjects():
    a, b = _constant_subjects(1)
    with pytest.raises(ValueError, match="at least 2"):
        UnpairedSampler(a, b, tiny_cfg(), seed=0)


def test_sampler_whole_slices_downsample_and_warmup():
    a, b = _constant_subjects(3, shape=(18, 22, 5))
    sampler = UnpairedSampler(a, b, tiny_cfg(patch_size=0, train_downsample=2), seed=0)
    assert sampler(0)["A"].shape == (2, 1, 12, 12)  # (9, 11) in-plane after /2, rounded up to 4
    # resolution curriculum: whole slices at /4 (5, 6 -> 8, 8) for 3 steps, then at /2
    sampler = UnpairedSampler(a, b, tiny_cfg(patch_size=0, train_downsample=2, warmup_steps=3), seed=0)
    assert [tuple(sampler(s)["B"].shape[2:]) for s in (0, 2, 3, 9)] == [(8, 8), (8, 8), (12, 12), (12, 12)]
    # crops larger than the warm-up grid's slices shrink to them there (9, 11 -> 12, 12), not mostly padding
    sampler = UnpairedSampler(a, b, tiny_cfg(patch_size=16, warmup_steps=2), seed=0)
    assert [tuple(sampler(s)["A"].shape[2:]) for s in (0, 1, 2)] == [(12, 12), (12, 12), (16, 16)]


def test_sampler_ramps_from_the_warmup_grid_to_the_training_grid():
    a, b = _constant_subjects(3, shape=(18, 22, 5))
    cfg = tiny_cfg(patch_size=16, warmup_steps=10, warmup_ramp=400)
    sampler = UnpairedSampler(a, b, cfg, seed=0)
    coarse = [sampler(s)["A"].shape[2] == 12 for s in range(10, 410)]  # 12: the warm-up grid's whole slices
    first, last = sum(coarse[:100]), sum(coarse[300:])
    assert all(sampler(s)["A"].shape[2] == 12 for s in range(10))
    assert 60 < first < 95 and 5 < last < 40  # its share falls from 1 to 0 (expected 87.5 and 12.5)
    assert all(sampler(s)["A"].shape[2] == 16 for s in range(410, 430))
    again = UnpairedSampler(a, b, cfg, seed=0)
    assert [again(s)["A"].shape[2] == 12 for s in range(10, 410)] == coarse  # a pure function of (seed, step)


# ------------------------------------------------------------------------------------------ losses
class _Affine(nn.Module):
    """y = scale * x + shift with learnable scalars (so the optimizer has something to hold)."""

    def __init__(self, scale: float, shift: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))
        self.shift = nn.Parameter(torch.tensor(shift))

    def forward(self, x):
        return self.scale * x + self.shift


def test_cycle_and_identity_losses_by_hand():
    cfg = tiny_cfg(lambda_cycle=10.0, lambda_identity=0.5, precision="fp32")  # by hand: no bf16 rounding
    model = CycleGAN(cfg, seed=0)
    model.networks["G_AB"] = _Affine(0.5, 0.0)   # A -> B
    model.networks["G_BA"] = _Affine(1.0, 0.1)   # B -> A
    # inputs in [0, 1]; the model works in [-1, 1]: A = 0.7 -> 0.4, B = 0.25 -> -0.5
    model.set_input({"A": torch.full((1, 1, 16, 16), 0.7), "B": torch.full((1, 1, 16, 16), 0.25)})
    with torch.no_grad():  # the discriminator's logits for fake_B = G_AB(A) = 0.2, before its own update
        logits = model.networks["D_B"](torch.full((1, 1, 16, 16), 0.2))[-1]
    model.optimize_step(0)
    got = model.losses()
    a, b = 0.4, -0.5
    assert got["cycle_A"] == pytest.approx(abs((0.5 * a + 0.1) - a), abs=1e-6)        # 0.1
    assert got["cycle_B"] == pytest.approx(abs(0.5 * (b + 0.1) - b), abs=1e-6)        # 0.3
    assert got["idt_A"] == pytest.approx(abs((a + 0.1) - a), abs=1e-6)                # 0.1
    assert got["idt_B"] == pytest.approx(abs(0.5 * b - b), abs=1e-6)                  # 0.25
    expected_g = got["G_AB"] + got["G_BA"] + 10 * (0.1 + 0.3) + 5 * (0.1 + 0.25)
    assert got["G"] == pytest.approx(expected_g, rel=1e-5)
    # the least-squares generator term is the reference's MSE(D(G(x)), 1): twice our g_loss
    assert got["G_AB"] == pytest.approx(float(((logits - 1) ** 2).mean()), rel=1e-5)


def test_identity_loss_off_when_weight_zero():
    model = CycleGAN(tiny_cfg(lambda_identity=0.0), seed=0)
    model.set_input({"A": torch.rand(1, 1, 16, 16), "B": torch.rand(1, 1, 16, 16)})
    model.optimize_step(0)
    assert "idt_A" not in model.losses() and "cycle_A" in model.losses()


def test_learning_rate_constant_then_linear_decay():
    f = linear_decay(10, 4)
    assert [f(s) for s in (0, 9, 10)] == [1.0, 1.0, 1.0]
    assert f(12) == pytest.approx(1 - 2 / 5) and f(14) == pytest.approx(1 / 5)


# ------------------------------------------------------------------------------------------ image pool
def _fakes(n: int):
    return [torch.full((1, 1, 2, 2), float(i)) for i in range(n)]


def test_image_pool_fills_then_swaps_half_the_time():
    pool = ImagePool(size=3, seed=5)
    fakes = _fakes(400)
    out = [pool.query(f) for f in fakes]
    assert all(torch.equal(o, f) for o, f in zip(out[:3], fakes[:3], strict=True))  # filling: as given
    assert len(pool) == 3
    swapped = [i for i in range(3, 400) if not torch.equal(out[i], fakes[i])]
    assert 0.4 < len(swapped) / 397 < 0.6
    # a swapped-in image is a past fake
    assert all(out[i].flatten()[0].item() < i for i in swapped)


def test_image_pool_keeps_a_history_per_fake_size():
    pool = ImagePool(size=3, seed=5)
    for _ in range(5):
        pool.query(torch.rand(2, 1, 8, 8))
    assert len(pool) == 3
    larger = torch.rand(2, 1, 16, 16)
    out = pool.query(larger)  # no stored 8x8 fake can be returned for a 16x16 batch: its history starts empty
    assert torch.equal(out, larger)
    assert len(pool) == 5 and sorted(pool.buffers) == [(1, 8, 8), (1, 16, 16)]
    for _ in range(20):  # back on the small grid: stored 8x8 fakes (not the 16x16 ones) are swapped in
        small = torch.rand(2, 1, 8, 8)
        assert pool.query(small).shape == small.shape
    assert len(pool.buffers[(1, 16, 16)]) == 2
    restored = ImagePool(size=3)
    restored.load_state_dict(pool.state_dict())  # both histories travel
    assert {k: len(b) for k, b in restored.buffers.items()} == {(1, 8, 8): 3, (1, 16, 16): 2}


def test_image_pool_is_deterministic_and_resumable():
    fakes = _fakes(30)
    p1, p2 = ImagePool(4, seed=9), ImagePool(4, seed=9)
    a = [p1.query(f) for f in fakes]
    b = [p2.query(f) for f in fakes[:17]]
    p3 = ImagePool(4, seed=123)
    p3.load_state_dict(p2.state_dict())  # images and RNG state travel
    b += [p3.query(f) for f in fakes[17:]]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert ImagePool(0).query(fakes[3]) is fakes[3]
    with pytest.raises(ValueError, match="size mismatch"):
        ImagePool(5).load_state_dict(p1.state_dict())


def test_image_pool_batches():
    pool = ImagePool(2, seed=0)
    out = pool.query(torch.arange(3.0).reshape(3, 1, 1, 1))
    # the first two fill the pool; the third (the pool is now full) is either itself or a stored one
    assert out.flatten().tolist()[:2] == [0.0, 1.0] and out.flatten()[2].item() in (0.0, 1.0, 2.0)
    assert len(pool) == 2 and out.shape == (3, 1, 1, 1)


# ------------------------------------------------------------------------------------------ networks
@pytest.mark.parametrize(("dims", "shape"), [(2, (2, 1, 24, 32)), (3, (1, 1, 16, 12, 8))])
def test_generators_keep_shape_in_2d_and_3d(dims, shape):
    x = torch.rand(shape) * 2 - 1
    for net in (ResnetGenerator(dims, ngf=4, n_blocks=2), build_generator("resnet_6blocks", dims, ngf=2)):
        y = net(x)
        assert y.shape == x.shape and y.abs().max() <= 1
    assert isinstance(build_generator("unet", dims, ngf=4), TanhUNet)
    if dims == 3:
        assert build_generator("unet", dims, ngf=4)(torch.rand(1, 1, 16, 16, 16)).shape == (1, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="divisible by 4"):
        ResnetGenerator(dims, ngf=2, n_blocks=0)(torch.rand(*shape[:-1], 6))
    with pytest.raises(ValueError, match="unknown generator"):
        build_generator("resnet", dims)


def test_networks_have_the_reference_sizes():
    """The reference prints 11.378 M parameters for resnet_9blocks and 2.765 M for the basic D (RGB, 64 filters)."""
    from pipeline.models.cyclegan import build_discriminator

    net = ResnetGenerator(2, 3, 3, ngf=64, n_blocks=9)
    assert sum(p.numel() for p in net.parameters()) == 11_378_179
    assert any(isinstance(m, nn.ReflectionPad2d) for m in net.modules())
    assert any(isinstance(m, nn.InstanceNorm2d) for m in net.modules())
    d = build_discriminator(tiny_cfg(ndf=64, d_layers=3))
    d.initial_conv.conv = nn.Conv2d(3, 64, 4, 2, 1)  # the reference counts RGB inputs
    assert sum(p.numel() for p in d.parameters()) == 2_764_737
    assert any(isinstance(m, nn.InstanceNorm2d) for m in d.modules())


@pytest.mark.parametrize("dims", [2, 3])
def test_one_step_in_2d_and_3d(dims):
    cfg = tiny_cfg(spatial_dims=dims, patch_size=12, gan_loss="nonsaturating")
    model = CycleGAN(cfg, seed=0, roi_size=[cfg.patch_size] * dims)
    shape = (2, 1, *([cfg.patch_size] * dims))
    before = {k: v.clone() for k, v in model.networks["D_A"].state_dict().items()}
    model.set_input({"A": torch.rand(shape), "B": torch.rand(shape)})
    model.optimize_step(0)
    assert all(np.isfinite(v) for v in model.losses().values())
    assert set(model.visuals()) == {"real_A", "real_B", "fake_A", "fake_B", "rec_A", "rec_B"}
    assert model.visuals()["fake_B"].shape == shape
    assert any(not torch.equal(before[k], v) for k, v in model.networks["D_A"].state_dict().items())
    with pytest.raises(ValueError, match="too small"):
        CycleGAN(CycleGANConfig(**{**to_dict(cfg), "d_layers": 3}), roi_size=[12] * dims)


# ------------------------------------------------------------------------------------------ training + inference
def test_resume_is_exact_including_the_image_pools(data, tmp_path):
    # resumes inside the coarse warm-up (steps 0-2) and crosses into full resolution after it
    cfg = tiny_cfg(n_steps=3, n_steps_decay=3, checkpoint_every=2, pool_size=2, warmup_steps=3)
    straight, _, res = _run(data, tmp_path / "straight", cfg)
    assert res.steps == 6
    _run(data, tmp_path / "resumed", cfg, stop_after=3)  # killed after step 3: checkpoint at 2
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["step"] == 2
    resumed, _, res2 = _run(data, tmp_path / "resumed", cfg)
    assert res2.resumed_from == 2
    for name, net in straight.networks.items():
        for k, v in net.state_dict().items():
            assert torch.equal(v, resumed.networks[name].state_dict()[k]), f"{name}.{k} differs"
    for dom in ("A", "B"):
        s1, s2 = straight.pools[dom].state_dict(), resumed.pools[dom].state_dict()
        assert len(s1["images"]) == 4  # 2 fakes of each grid (warm-up and full resolution)
        assert all(torch.equal(x, y) for x, y in zip(s1["images"], s2["images"], strict=True))
        assert torch.equal(s1["rng"], s2["rng"])
    a = load_checkpoint(tmp_path / "straight" / "model.pt")["state_dicts"]
    b = load_checkpoint(tmp_path / "resumed" / "model.pt")["state_dicts"]
    assert all(torch.equal(a[d][k], b[d][k]) for d in a for k in a[d])


def _infer_args(model, scan, out, direction, **kw):
    """The infer stage's arguments as its own parser gives them (every flag at its default), then `kw`."""
    from pipeline.stages import infer

    parser = argparse.ArgumentParser()
    infer.add_arguments(parser)
    args = parser.parse_args(["--model", str(model), "--input", str(scan), "--output", str(out),
                              "--direction", direction, "--device", "cpu"])
    for key, value in kw.items():
        setattr(args, key, value)
    return args


def test_inference_both_directions_in_input_geometry(data, tmp_path):
    from pipeline.stages import infer

    cfg = tiny_cfg(n_steps=1, n_steps_decay=1)
    _run(data, tmp_path / "m", cfg)
    model = tmp_path / "m" / "model.pt"
    blob = load_checkpoint(model)
    assert blob["task"] == "translation" and blob["translation"]["source"] == "T1w"
    scan = data / "sub-006" / "T1w.nii.gz"
    src, affine = load_nifti(scan)
    outs = {}
    for direction in ("A2B", "B2A"):
        out = tmp_path / f"{direction}.nii.gz"
        assert infer.main(_infer_args(model, scan, out, direction)) == 0
        outs[direction], out_affine = load_nifti(out)
        assert outs[direction].shape == src.shape
        np.testing.assert_allclose(out_affine, affine)
        assert 0.0 <= outs[direction].min() and outs[direction].max() <= 1.0
    assert not np.allclose(outs["A2B"], outs["B2A"])  # two different generators
    # the same as calling the generator by hand
    direct = CycleGAN.apply(CycleGAN.load_generator(blob, "A2B", "cpu"), src, blob, affine=affine)
    np.testing.assert_allclose(direct, outs["A2B"], atol=1e-6)
    with pytest.raises(ValueError, match="direction"):
        infer.main(_infer_args(model, scan, tmp_path / "x.nii.gz", "sideways"))


def test_whole_slice_3d_and_downsampled_inference_shapes():
    vol = np.random.default_rng(0).random((21, 26, 10)).astype(np.float32)
    for dims, factor, roi in ((2, 1, [12, 12]), (2, 2, [8, 8]), (3, 2, [8, 8, 8]), (3, 1, [16, 16, 16])):
        net = ResnetGenerator(dims, ngf=2, n_blocks=1).eval()
        blob = {"translation": {"spatial_dims": dims, "slice_axis": 2 if dims == 2 else None,
                                "train_downsample": factor},
                "inference": {"roi_size": roi, "sw_batch_size": 4, "overlap": 0.25}}
        out = CycleGAN.apply(net, vol, blob)
        assert out.shape == vol.shape and np.isfinite(out).all()


def test_blank_slices_translate_to_background():
    vol = np.zeros((12, 16, 4), np.float32)
    vol[2:10, 3:13, 1:3] = np.random.default_rng(2).random((8, 10, 2))
    torch.manual_seed(0)
    net = ResnetGenerator(2, ngf=2, n_blocks=1).eval()  # instance norm: a blank slice would give its bias
    blob = {"translation": {"spatial_dims": 2, "slice_axis": 2, "train_downsample": 1},
            "inference": {"roi_size": [12, 16], "sw_batch_size": 4, "overlap": 0.0, "tta": False}}
    out = CycleGAN.apply(net, vol, blob, precision="fp32")
    assert np.all(out[..., [0, 3]] == 0)
    assert out[..., 1:3].std() > 0 and np.all(out[2:10, 3:13, 1:3] > 0)


def test_voxels_far_from_any_signal_translate_to_background():
    """A slice with a few voxels of head in air (not blank, so instance norm paints its windows grey) keeps the
    translation near them and background (0) further than `keep_background`'s radius; a source with signal
    everywhere is left as translated."""
    vol = np.zeros((24, 24, 3), np.float32)
    vol[10:12, 10:12, 1] = 0.8  # four voxels of signal in the middle slice
    torch.manual_seed(0)
    net = ResnetGenerator(2, ngf=2, n_blocks=1).eval()
    blob = {"translation": {"spatial_dims": 2, "slice_axis": 2, "train_downsample": 1},
            "inference": {"roi_size": [24, 24], "sw_batch_size": 4, "overlap": 0.0, "tta": False}}
    out = CycleGAN.apply(net, vol, blob, precision="fp32")
    assert out[10:12, 10:12, 1].min() > 0 and out[7, 10, 1] > 0  # the signal and its neighbourhood (3 voxels off)
    assert np.all(out[:5] == 0) and np.all(out[17:] == 0) and np.all(out[..., 1][:, :5] == 0)  # far: background
    assert keep_background(np.ones((4, 4, 4), np.float32), np.full((4, 4, 4), 0.1)).min() == 1.0  # signal everywhere


def test_tta_averages_the_flipped_and_transposed_translations():
    vol = np.random.default_rng(1).random((12, 16, 3)).astype(np.float32)
    torch.manual_seed(0)
    net = nn.Conv2d(1, 1, 3, padding=1, bias=False).eval()  # not flip-equivariant (random kernel)
    blob = {"translation": {"spatial_dims": 2, "slice_axis": 2, "train_downsample": 1},
            "inference": {"roi_size": [12, 16], "sw_batch_size": 4, "overlap": 0.0, "tta": True}}
    slices = torch.from_numpy(np.moveaxis(vol, 2, 0)[:, None].copy()) * 2 - 1
    with torch.no_grad():
        flips = ([], [2], [3], [2, 3])
        mean = (sum(net(slices.flip(f)).flip(f) for f in flips)
                + sum(net(slices.transpose(2, 3).flip(f)).flip(f).transpose(2, 3) for f in flips)) / 8
    expected = np.moveaxis(((mean + 1) / 2)[:, 0].numpy(), 0, 2)
    np.testing.assert_allclose(CycleGAN.apply(net, vol, blob, precision="fp32"), expected, atol=1e-5)  # tta from the file
    plain = CycleGAN.apply(net, vol, blob, tta=False, precision="fp32")
    assert not np.allclose(plain, expected, atol=1e-3)
    # tta_views 2 (the workflow's default; a file without the key averages all 8): the identity and the 180-degree turn
    with torch.no_grad():
        two = (net(slices) + net(slices.flip([2, 3])).flip([2, 3])) / 2
    np.testing.assert_allclose(CycleGAN.apply(net, vol, blob, tta_views=2, precision="fp32"),
                               np.moveaxis(((two + 1) / 2)[:, 0].numpy(), 0, 2), atol=1e-5)


@pytest.mark.parametrize("key, overrides", [("tta", {}), ("detail_transfer", {"train_downsample": 2, "patch_size": 12}),
                                            ("planes", {})])
def test_infer_inference_flags_change_a_cyclegan_output(data, tmp_path, key, overrides):
    """`python -m pipeline infer --no-tta` / `--no-detail-transfer` / `--no-planes` reach CycleGAN inference
    (--no-tta used to be ignored for translation)."""
    from pipeline.cli import main as cli

    cfg = tiny_cfg(n_steps=1, n_steps_decay=1, **overrides)
    _run(data, tmp_path / "m", cfg)
    model = tmp_path / "m" / "model.pt"
    assert load_checkpoint(model)["inference"][key] is True
    scan = data / "sub-006" / "T1w.nii.gz"
    outs = {}
    for on in (True, False):
        out = tmp_path / f"{on}.nii.gz"
        flag = "--" + ("" if on else "no-") + key.replace("_", "-")
        assert cli(["infer", "--model", str(model), "--input", str(scan), "--output", str(out), flag]) == 0
        outs[on] = load_nifti(out)[0]
    blob = load_checkpoint(model)
    net = CycleGAN.load_generator(blob, "A2B", "cpu")
    src, affine = load_nifti(scan)
    for on in (True, False):
        np.testing.assert_allclose(outs[on], CycleGAN.apply(net, src, blob, affine=affine, **{key: on}), atol=1e-6)
    assert np.abs(outs[True] - outs[False]).max() > 1e-4


def test_infer_tta_views_reaches_the_translation(data, tmp_path):
    """The model file records `tta_views` (default 2) and `infer --tta-views 8` overrides it."""
    from pipeline.cli import main as cli

    _run(data, tmp_path / "m", tiny_cfg(n_steps=1, n_steps_decay=1))
    model = tmp_path / "m" / "model.pt"
    blob = load_checkpoint(model)
    assert blob["inference"]["tta"] is True and blob["inference"]["tta_views"] == 2
    scan = data / "sub-006" / "T1w.nii.gz"
    out = tmp_path / "v8.nii.gz"
    assert cli(["infer", "--model", str(model), "--input", str(scan), "--output", str(out), "--tta-views", "8"]) == 0
    net = CycleGAN.load_generator(blob, "A2B", "cpu")
    src, affine = load_nifti(scan)
    eight, two = (CycleGAN.apply(net, src, blob, affine=affine, tta_views=n) for n in (8, 2))
    np.testing.assert_allclose(load_nifti(out)[0], eight, atol=1e-6)
    assert np.abs(eight - two).max() > 1e-4


def test_ct_output_is_written_in_hounsfield_units(tmp_path):
    from pipeline.stages import infer

    data = make_translation_dataset(tmp_path / "ct", splits=("train", "train", "test"), ct=True)
    cfg = tiny_cfg(target="CT", n_steps=1, n_steps_decay=0)
    _run(data, tmp_path / "m", cfg)
    model = tmp_path / "m" / "model.pt"
    assert load_checkpoint(model)["normalisation"]["CT"]["window"] == [-1000.0, 2000.0]
    scan = data / "sub-003" / "T1w.nii.gz"
    out = tmp_path / "ct.nii.gz"
    assert infer.main(_infer_args(model, scan, out, "A2B")) == 0
    hu, _ = load_nifti(out)
    assert hu.min() >= -1000.0 and hu.max() <= 2000.0 and hu.max() - hu.min() > 1.0
    # and back: a CT in HU is windowed by the recorded window before B2A
    ct_hu = tmp_path / "ct_hu.nii.gz"
    ct01, aff = load_nifti(data / "sub-003" / "CT.nii.gz")
    save_nifti(-1000.0 + ct01 * 3000.0, aff, ct_hu)
    assert infer.main(_infer_args(model, ct_hu, tmp_path / "b1.nii.gz", "B2A")) == 0
    assert infer.main(_infer_args(model, data / "sub-003" / "CT.nii.gz", tmp_path / "b2.nii.gz", "B2A")) == 0
    np.testing.assert_allclose(load_nifti(tmp_path / "b1.nii.gz")[0], load_nifti(tmp_path / "b2.nii.gz")[0], atol=1e-4)


def test_full_config_file_is_valid():
    """config/cyclegan_full.yaml validates against the schema (merged into config.yaml) and parses as --params."""
    import jsonschema
    import yaml

    from pipeline.config import load_params
    from tests.conftest import REPO

    full = REPO / "config" / "cyclegan_full.yaml"
    merged = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    merged.update(yaml.safe_load(full.read_text()))
    jsonschema.validate(merged, yaml.safe_load((REPO / "config" / "config.schema.yaml").read_text()))
    cfg = load_params(str(full), CycleGANConfig, "cyclegan")
    demo = CycleGANConfig()  # the full run: the demo's recipe with wider nets and more steps
    assert cfg.generator == "resnet" and cfg.ngf > demo.ngf and cfg.n_blocks > demo.n_blocks and cfg.tta
    assert cfg.n_steps + cfg.n_steps_decay > demo.n_steps + demo.n_steps_decay and cfg.warmup_steps > 0


@pytest.mark.parametrize(("spacing", "setting", "factor"), [(2.0, 0, 1), (1.0, 0, 2), (0.7, 0, 3), (1.0, 1, 1)])
def test_auto_train_downsample_works_near_2_mm_and_the_model_file_records_it(tmp_path, spacing, setting, factor):
    data = make_translation_dataset(tmp_path / "d", spacing=spacing)
    cfg = tiny_cfg(train_downsample=setting, patch_size=12)
    sampler, kwargs = CycleGAN.prepare_data(cfg, data, 0)
    sampler.close()
    assert kwargs["train_downsample"] == factor and sampler.factor == factor
    model = build_model("cyclegan", cfg, **kwargs)
    assert model.model_file(0)["translation"]["train_downsample"] == factor
    assert model.model_file(0)["inference"]["detail_transfer"] is True


@pytest.mark.parametrize("dims", [2, 3])
def test_detail_transfer_restores_the_source_detail_with_the_outputs_contrast(dims):
    from pipeline.nets.interp import detail_transfer, downsample, upsample

    rng = np.random.default_rng(4)
    shape = (2, 1, 24, 20) if dims == 2 else (1, 1, 16, 12, 10)
    guide = torch.from_numpy(rng.random(shape).astype(np.float32))
    # a translation that inverts the contrast, made on a 2x coarser grid and interpolated back
    inverted = 1.0 - 0.8 * guide
    output = upsample(downsample(inverted, 2, dims), 2, shape[2:])
    restored = detail_transfer(output, guide, 2, radius=2, eps=1e-8)
    assert (restored - inverted).abs().max() < 1e-3 < (output - inverted).abs().max()
    shrunk = detail_transfer(output, guide, 2, radius=2, eps=10.0)  # flat-guide regularisation: little detail
    assert (shrunk - output).abs().max() < 0.1 * (restored - output).abs().max()
    assert torch.equal(detail_transfer(output, guide, 1), output)  # trained on the input grid: nothing lost


def test_detail_transfer_is_an_inference_setting_of_downsampled_translation(monkeypatch):
    from pipeline.models import translation

    vol = np.random.default_rng(0).random((20, 24, 6)).astype(np.float32)
    net = ResnetGenerator(2, ngf=2, n_blocks=1).eval()
    outs = {}
    for factor in (1, 2):
        blob = {"translation": {"spatial_dims": 2, "slice_axis": 2, "train_downsample": factor},
                "inference": {"roi_size": [8, 8], "sw_batch_size": 4, "overlap": 0.25, "detail_transfer": True}}
        outs[factor] = (CycleGAN.apply(net, vol, blob), CycleGAN.apply(net, vol, blob, detail_transfer=False))
        assert 0.0 <= outs[factor][0].min() and outs[factor][0].max() <= 1.0
    np.testing.assert_array_equal(*outs[1])  # no coarse grid, nothing to transfer
    assert np.abs(outs[2][0] - outs[2][1]).max() > 1e-3
    monkeypatch.setattr(translation, "DETAIL_SLICES", 4)  # slices filtered a few at a time: the same result
    np.testing.assert_array_equal(CycleGAN.apply(net, vol, blob), outs[2][0])


def test_plane_axes_are_all_three_only_for_cubic_voxels():
    from pipeline.models.translation import plane_axes

    assert plane_axes(2, np.diag([1.0, 1.05, 0.98, 1.0])) == [2, 0, 1]
    assert plane_axes(0, np.diag([-2.0, 2.0, 2.0, 1.0])) == [0, 1, 2]  # sizes, whatever the orientation
    assert plane_axes(2, np.diag([0.5, 0.5, 5.0, 1.0])) == [2]  # 0.5 x 5 mm pixels across the other axes
    assert plane_axes(1, None) == [1]


def test_planes_average_the_translations_across_each_axis():
    """Tri-planar inference is the mean of the translations across each axis (each as its own 2D pass), only
    for cubic voxels; `planes` off, or a scan with thick slices, gives the model's own axis alone."""
    rng = np.random.default_rng(1)
    vol = np.zeros((16, 20, 12), np.float32)
    vol[2:14, 3:17, 2:10] = rng.random((12, 14, 8))
    net = ResnetGenerator(2, ngf=2, n_blocks=1).eval()
    blob = {"translation": {"spatial_dims": 2, "slice_axis": 2},
            "inference": {"roi_size": [8, 8], "sw_batch_size": 4, "overlap": 0.25, "planes": True}}
    cube, thick = np.diag([1.0, 1.0, 1.0, 1.0]), np.diag([1.0, 1.0, 3.0, 1.0])
    alone = {a: translate(vol, net, blob, roi_size=[8, 8], sw_batch_size=4, overlap=0.25, axes=[a]) for a in range(3)}
    three = CycleGAN.apply(net, vol, blob, affine=cube)
    np.testing.assert_allclose(three, np.mean([alone[a] for a in (2, 0, 1)], axis=0), atol=1e-6)
    assert np.abs(alone[0] - alone[2]).max() > 1e-3  # the axes do give different translations
    np.testing.assert_array_equal(CycleGAN.apply(net, vol, blob, affine=thick), alone[2])
    np.testing.assert_array_equal(CycleGAN.apply(net, vol, blob, affine=cube, planes=False), alone[2])
    np.testing.assert_array_equal(CycleGAN.apply(net, vol, blob), alone[2])  # no voxel sizes: the model's axis


def test_cyclegan_weight_average_is_what_the_model_file_holds(data, tmp_path):
    cfg = tiny_cfg(n_steps=2, n_steps_decay=2, ema=0.5, select_best=False)
    model, _, _ = _run(data, tmp_path / "m", cfg)
    exported = load_checkpoint(tmp_path / "m" / "model.pt")["state_dicts"]
    for direction, g in (("A2B", "G_AB"), ("B2A", "G_BA")):
        average, trained = model.averages[g].weights, model.networks[g].state_dict()
        assert model.averages[g].updates == 4
        assert all(torch.equal(exported[direction][k], average[k]) for k in average)
        assert any(not torch.equal(average[k], trained[k]) for k in average if trained[k].dtype.is_floating_point)
