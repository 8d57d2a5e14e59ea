"""StarGAN: the code selects the output contrast, the classifier head, reconstruction back to the source code, the
frozen networks of each step, unpaired per-target sampling, 2D/3D steps and inference, exact resume, inference of
every target through the CLI, the model file and the family contract."""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.gan.checkpoint import load_checkpoint
from pipeline.gan.loop import LoopSettings, train
from pipeline.gan.seeding import seed_everything
from pipeline.io.nifti import load_nifti, save_nifti
from pipeline.models import build_model, family_of
from pipeline.models.stargan import CodedGenerator, StarGAN, StarGANConfig, build_networks
from pipeline.nets.resnet_generator import ResnetGenerator
from tests.unit.test_cyclegan import make_translation_dataset


def tiny_cfg(**overrides) -> StarGANConfig:
    """A StarGAN config small enough for unit tests (a step in a few tens of milliseconds)."""
    base = dict(ngf=4, n_blocks=1, ndf=4, d_layers=2, patch_size=16, batch_size=2, pool_size=2, n_steps=3,
                n_steps_decay=3, warmup_steps=0, log_every=1, checkpoint_every=2, sw_batch_size=8, tta=False,
                precision="fp32")
    base.update(overrides)
    return StarGANConfig(**base)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """make_translation_dataset's T1w/T2w subjects plus a PDw: (T1w + 1) / 2 inside the mask."""
    root = make_translation_dataset(tmp_path_factory.mktemp("stargan"))
    lines = (root / "subjects.tsv").read_text().splitlines()
    out = [lines[0].replace("\tmask", "\tPDw\tmask")]
    for line in lines[1:]:
        cells = line.split("\t")
        t1, affine = load_nifti(cells[2])
        mask = load_nifti(cells[4])[0] > 0
        pd = save_nifti(((t1 + 1.0) / 2.0 * mask).astype(np.float32), affine, root / cells[0] / "PDw.nii.gz")
        norm = json.loads((root / cells[0] / "normalisation.json").read_text())
        norm["PDw"] = {**norm["T2w"], "low": 3.0, "high": 7.0}
        (root / cells[0] / "normalisation.json").write_text(json.dumps(norm))
        out.append("\t".join([*cells[:4], str(pd), cells[4]]))
    (root / "subjects.tsv").write_text("\n".join(out) + "\n")
    return root


def _run(data, out, cfg, seed=3, stop_after=None):
    """Build the model as `python -m pipeline train stargan` does and train (or stop early)."""
    seed_everything(seed)
    sampler, kwargs = StarGAN.prepare_data(cfg, data, seed)
    model = build_model("stargan", cfg, **kwargs)
    settings = LoopSettings(seed=seed, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every)
    result = train(model, sampler, out, settings, {"test": "stargan"}, stop_after=stop_after)
    sampler.close()
    return model, result


def _batch(dims=2, side=16, n=2, codes=(1, 2)):
    shape = (n * len(codes), 1, *([side] * dims))
    return {"A": torch.rand(shape), "B": torch.rand(shape),
            "code": torch.tensor([c for c in codes for _ in range(n)])}


# ------------------------------------------------------------------------------------------ networks
def test_the_code_selects_the_output_contrast():
    torch.manual_seed(0)
    _, nets = build_networks(tiny_cfg())
    gen = nets["G"]
    assert isinstance(gen.net, ResnetGenerator) and gen.net.model[1].in_channels == 1 + 3  # image + 3 contrasts
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        to_t2, to_pd = gen(x, torch.tensor([1, 1])), gen(x, torch.tensor([2, 2]))
        mixed = gen(x, torch.tensor([1, 2]))
    assert not torch.allclose(to_t2, to_pd, atol=1e-4)
    torch.testing.assert_close(mixed[0], to_t2[0])  # each sample follows its own code
    torch.testing.assert_close(mixed[1], to_pd[1])
    fixed = CodedGenerator(ResnetGenerator(2, in_channels=4, ngf=4, n_blocks=1), 3, fixed=2)
    fixed.load_state_dict(gen.state_dict())  # (the per-contrast norm scales and shifts are in the state too)
    with torch.no_grad():
        torch.testing.assert_close(fixed(x), to_pd)


def test_a_generator_trained_on_two_codes_maps_each_to_its_own_target():
    """Code 1 -> the identity, code 2 -> the negative (of smooth images): after a short L1 fit each code gives its
    own mapping."""

    def smooth(n):
        return F.interpolate(torch.rand(n, 1, 4, 4), size=16, mode="bilinear", align_corners=False) * 1.6 - 0.8

    torch.manual_seed(0)
    gen = CodedGenerator(ResnetGenerator(2, in_channels=4, ngf=8, n_blocks=1), 3)
    opt = torch.optim.Adam(gen.parameters(), lr=3e-3)
    for _ in range(200):
        x = smooth(8)
        code = torch.tensor([1, 2] * 4)
        target = torch.where(code.view(-1, 1, 1, 1) == 1, x, -x)
        loss = F.l1_loss(gen(x, code), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = smooth(4)
    with torch.no_grad():
        ident, neg = gen(x, torch.full((4,), 1)), gen(x, torch.full((4,), 2))
    assert F.l1_loss(ident, x) < 0.15 and F.l1_loss(neg, -x) < 0.15
    assert F.l1_loss(ident, -x) > 0.4 and F.l1_loss(neg, x) > 0.4


@pytest.mark.parametrize("targets", [["T2w", "PDw"], ["T2w"], ["T2w", "PDw", "FLAIR"]])
@pytest.mark.parametrize("per_contrast", [True, False])
def test_the_discriminator_has_one_class_logit_per_contrast(targets, per_contrast):
    torch.manual_seed(0)
    _, nets = build_networks(tiny_cfg(targets=targets, d_per_contrast=per_contrast, d_mismatch=per_contrast))
    x, n = torch.rand(5, 1, 16, 16), 1 + len(targets)
    with torch.no_grad():
        logits, classes = nets["D"](x, torch.zeros(5, dtype=torch.long))
        other, classes_again = nets["D"](x, torch.full((5,), n - 1))
    assert classes.shape == (5, n) and torch.equal(classes, classes_again)  # the classifier ignores the code
    assert logits.shape[:2] == (5, 1) and logits.dim() == 4  # a PatchGAN map of real/fake logits
    # one map per contrast (the image's own is used), or one map for all
    assert nets["D"].body.final_conv.out_channels == (n if per_contrast else 1)
    assert torch.equal(logits, other) is not per_contrast


# ------------------------------------------------------------------------------------------ the step
def test_reconstruction_goes_back_to_the_source_code_and_losses_add_up():
    torch.manual_seed(0)
    model = StarGAN(tiny_cfg(lambda_rec=7.0, lambda_cls=0.5))
    batch = _batch()
    model.set_input(batch)
    gen, disc = model.networks["G"], model.networks["D"]
    a, b, code = batch["A"] * 2 - 1, batch["B"] * 2 - 1, batch["code"]
    zero = torch.zeros_like(code)
    with torch.no_grad():
        fake_t, fake_s = gen(a, code), gen(b, zero)
        rec = F.l1_loss(gen(fake_t, zero), a) + F.l1_loss(gen(fake_s, code), b)
        logits, classes = disc(torch.cat([fake_t, fake_s]), torch.cat([code, zero]))
        adv = 2 * 0.5 * (logits - 1).pow(2).mean()  # lsgan, doubled as CycleGAN's
        cls = F.cross_entropy(classes, torch.cat([code, zero]))
    calls = []
    gen.register_forward_hook(lambda m, args, out: calls.append(args[1].tolist()))
    model.optimize_step(0)
    got = model.losses()
    assert got["rec"] == pytest.approx(rec.item(), rel=1e-5)
    assert got["G_cls"] == pytest.approx(cls.item(), rel=1e-5)
    assert got["G"] == pytest.approx(adv.item() + 0.5 * cls.item() + 7.0 * rec.item(), rel=1e-5)
    # the generator's calls: to the targets, to the source, then the reconstructions back to the source code (0)
    # and back to each target crop's own code
    assert calls == [[1, 1, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 2, 2]]
    assert set(got) == set(StarGAN.loss_names) - {"gp"}


def test_each_network_is_frozen_during_the_other_ones_step():
    torch.manual_seed(0)
    model = StarGAN(tiny_cfg())
    seen = {"G": [], "D": []}
    for name, net in model.networks.items():
        net.register_forward_hook(lambda m, a, o, name=name: seen[name].append(
            [all(p.requires_grad for p in model.networks[n].parameters()) for n in ("G", "D")]))
    before = {n: [p.clone() for p in net.parameters()] for n, net in model.networks.items()}
    model.set_input(_batch())
    model.optimize_step(0)
    # D in G's step (D frozen), then D on reals and pooled fakes (G frozen, D trainable)
    assert seen["D"] == [[True, False], [False, True], [False, True]]
    # G: the translations, then the reconstructions in its own step (D frozen); never while G is frozen
    assert seen["G"] == [[True, True], [True, True], [True, False], [True, False]]
    for n, net in model.networks.items():
        assert any(not torch.equal(p, q) for p, q in zip(before[n], net.parameters(), strict=True)), n


def test_wgan_gp_and_n_critic():
    torch.manual_seed(0)
    model = StarGAN(tiny_cfg(gan_loss="wgan-gp", n_critic=2, lambda_gp=10.0))
    model.set_input(_batch())
    g_before = [p.clone() for p in model.networks["G"].parameters()]
    model.optimize_step(1)  # not a generator step
    assert set(model.losses()) == {"D_adv", "D_cls", "gp", "D"}
    assert all(torch.equal(p, q) for p, q in zip(g_before, model.networks["G"].parameters(), strict=True))
    model.optimize_step(2)
    got = model.losses()
    assert {"G", "rec", "gp"} <= set(got) and all(np.isfinite(v) for v in got.values())
    assert got["gp"] >= 0


def test_mismatch_judges_real_crops_under_another_contrasts_map_as_fakes():
    torch.manual_seed(0)
    model = StarGAN(tiny_cfg(d_mismatch=True, pool_size=0))
    model.set_input(_batch())
    disc = model.networks["D"]
    before = copy.deepcopy(disc)  # (the step updates D after judging)
    seen = []
    disc.register_forward_hook(lambda m, args, out: seen.append((args[0].detach().clone(), args[1].clone(), out[0])))
    model.optimize_step(0)
    _, (reals, judge_by, real_logits), (_, _, fake_logits) = seen  # G's step, then D's: reals, pooled fakes
    codes, wrong = judge_by[:, 0], judge_by[:, 1]
    assert torch.equal(codes, torch.tensor([0, 0, 0, 0, 1, 1, 2, 2]))
    assert ((wrong != codes) & (wrong >= 0) & (wrong < 3)).all()  # every real crop under another contrast's map too
    with torch.no_grad():  # one pass gives both maps, as two calls would
        assert torch.allclose(real_logits[:, :1], before(reals, codes)[0], atol=1e-6)
        assert torch.allclose(real_logits[:, 1:], before(reals, wrong)[0], atol=1e-6)

    def lsgan(real, fake):  # the D term of `_adv_d`
        return 0.5 * (0.5 * (real - 1).pow(2).mean() + 0.5 * fake.pow(2).mean())

    want = 0.5 * (lsgan(real_logits[:, :1], fake_logits) + lsgan(real_logits[:, :1], real_logits[:, 1:]))
    assert model.losses()["D_adv"] == pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(ValueError, match="d_mismatch.*needs d_per_contrast"):
        StarGANConfig(d_mismatch=True, d_per_contrast=False)


@pytest.mark.parametrize("dims", [2, 3])
def test_one_step_and_whole_volume_inference_in_2d_and_3d(dims):
    cfg = tiny_cfg(spatial_dims=dims)
    model = StarGAN(cfg, roi_size=[16] * dims)
    model.set_input(_batch(dims))
    model.optimize_step(0)
    assert all(np.isfinite(v) for v in model.losses().values())
    assert model.visuals()["fake_t"].shape == (4, 1, *([16] * dims))
    blob = model.model_file(1)
    vol = np.random.default_rng(0).random((21, 26, 10)).astype(np.float32)
    outs = [StarGAN.apply(StarGAN.load_generator(blob, t, "cpu"), vol, blob, roi_size=[12] * dims) for t in cfg.targets]
    assert all(o.shape == vol.shape and o.dtype == np.float32 and np.isfinite(o).all() for o in outs)
    assert np.abs(outs[0] - outs[1]).max() > 1e-4


def test_config_rules():
    with pytest.raises(ValueError, match="also one of the targets"):
        StarGANConfig(targets=["T2w", "T1w"])
    with pytest.raises(ValueError, match="stargan.targets: lists the contrast 'T2w' twice"):
        StarGANConfig(targets=["T2w", "T2w"])
    with pytest.raises(ValueError):
        StarGANConfig(targets=[])
    assert StarGANConfig().contrasts == ["T1w", "T2w", "PDw"]


# ------------------------------------------------------------------------------------------ data
def test_sampler_draws_each_targets_crops_unpaired_with_their_codes(data):
    cfg = tiny_cfg(batch_size=3)
    sampler, kwargs = StarGAN.prepare_data(cfg, data, seed=5)
    try:
        batch = sampler(4)
        assert batch["A"].shape == batch["B"].shape == (6, 1, 16, 16)
        assert batch["code"].tolist() == [1, 1, 1, 2, 2, 2]
        for pair in sampler.samplers:  # in each (source, target) pair, A and B crops come from disjoint subjects
            for step in range(10):
                part = pair(step)
                assert not set(part["A_subject"].tolist()) & set(part["B_subject"].tolist())
        again = sampler(4)
        assert all(torch.equal(v, again[k]) for k, v in batch.items())  # a pure function of (seed, step)
        assert not torch.equal(sampler(5)["A"], batch["A"])
        assert not torch.equal(sampler.samplers[0](4)["A"], sampler.samplers[1](4)["A"])  # own seeds
        assert set(kwargs["meta"]["normalisation"]) == {"T1w", "T2w", "PDw"}
    finally:
        sampler.close()


def test_warmup_ramp_draws_one_grid_for_every_pair(data):
    # each pair's sampler has its own seed; during a ramp they must still draw the same grid in each step, or
    # their crops (44 and 48 voxels on the demo) could not be stacked into one batch
    sampler, _ = StarGAN.prepare_data(tiny_cfg(patch_size=32, warmup_steps=3, warmup_ramp=30), data, seed=5)
    try:
        assert all(pair.warmup_ramp == 30 for pair in sampler.samplers)
        shapes = [tuple(sampler(step)["A"].shape[2:]) for step in range(40)]  # stacking fails on a mismatch
        assert len(set(shapes[:3])) == 1 and shapes[-1] != shapes[0]
        ramp = shapes[3:33]
        assert ramp.count(shapes[0]) and ramp.count(shapes[-1])  # both grids during the ramp
        assert set(shapes[33:]) == {shapes[-1]}
    finally:
        sampler.close()


def test_no_ramp_switches_every_pair_at_once(data):
    sampler, _ = StarGAN.prepare_data(tiny_cfg(patch_size=32, warmup_steps=3, warmup_ramp=0), data, seed=5)
    try:
        assert all(pair.warmup_ramp == 0 for pair in sampler.samplers)
        shapes = [tuple(sampler(step)["A"].shape[2:]) for step in range(40)]
        assert len(set(shapes[:3])) == 1 and len(set(shapes[3:])) == 1 and shapes[0] != shapes[3]
    finally:
        sampler.close()


# ------------------------------------------------------------------------------------------ training + inference
def test_resume_is_exact(data, tmp_path):
    cfg = tiny_cfg()
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


def test_model_file_cli_inference_of_every_target_and_contract(data, tmp_path):
    from pipeline.stages import infer

    cfg = tiny_cfg(n_steps=1, n_steps_decay=1, tta=True)
    _run(data, tmp_path / "m", cfg)
    model = tmp_path / "m" / "model.pt"
    blob = load_checkpoint(model)
    assert blob["family"] == "stargan" and family_of(blob) is StarGAN
    info = blob["translation"]
    assert (info["source"], info["targets"], info["contrasts"]) == ("T1w", ["T2w", "PDw"], ["T1w", "T2w", "PDw"])
    assert StarGAN.io_modalities(blob, "PDw")[1][0] == "PDw" and StarGAN.io_modalities(blob, None)[1][0] == "T2w"
    outputs = StarGAN.outputs(cfg)
    assert [(o.name, o.task, o.input, o.truth, o.desc, o.infer_args) for o in outputs] == [
        ("stargan_T2w", "translation", "T1w", "T2w", "T2w", ("--direction", "T2w")),
        ("stargan_PDw", "translation", "T1w", "PDw", "PDw", ("--direction", "PDw"))]
    scan = data / "sub-006" / "T1w.nii.gz"
    src, affine = load_nifti(scan)
    parser = argparse.ArgumentParser()
    infer.add_arguments(parser)
    got = {}
    for option, target in (("--target", "T2w"), ("--direction", "PDw")):
        out = tmp_path / f"{target}.nii.gz"
        args = parser.parse_args(["--model", str(model), "--input", str(scan), "--output", str(out), "--device", "cpu",
                                  option, target])
        assert infer.main(args) == 0
        got[target], out_affine = load_nifti(out)
        assert got[target].shape == src.shape and 0.0 <= got[target].min() and got[target].max() <= 1.0
        np.testing.assert_allclose(out_affine, affine)
        net = StarGAN.load_generator(blob, target, "cpu")
        np.testing.assert_allclose(got[target], StarGAN.apply(net, src, blob, affine=affine), atol=1e-6)  # as the file says
    assert np.abs(got["T2w"] - got["PDw"]).max() > 1e-4  # one model, two contrasts
    with pytest.raises(ValueError, match="maps T1w to T2w, PDw; --direction/--target 'FLAIR'"):
        StarGAN.load_generator(blob, "FLAIR", "cpu")


def test_shipped_config_block():
    """config.yaml's stargan block validates, keeps the default run to SRGAN + CycleGAN and is the family's defaults."""
    from pipeline.workflow_config import load_workflow_config
    from tests.conftest import REPO

    cfg = load_workflow_config(REPO / "config" / "config.yaml")
    assert "stargan" not in cfg.models
    assert cfg.stargan == StarGANConfig() and cfg.stargan.targets == ["T2w", "PDw"]
    assert load_workflow_config({"models": ["stargan"]}).models == ["stargan"]


def test_checkpoint_selection_scores_every_target(data):
    cfg = tiny_cfg()
    sampler, kwargs = StarGAN.prepare_data(cfg, data, 0)
    sampler.close()
    scored = [d for d, *_ in StarGAN(cfg, **kwargs).selection.data()]
    assert sorted(set(scored)) == sorted(cfg.targets) and len(scored) == len(cfg.targets)  # 1 subject each
