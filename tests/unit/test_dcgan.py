"""The conditional DCGAN family (pipeline.models.dcgan) and its judge (pipeline.models.synthesis_eval)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.slice_bank import SliceBank, slice_stack
from pipeline.gan.checkpoint import load_checkpoint
from pipeline.gan.loop import LoopSettings, train
from pipeline.gan.seeding import seed_everything
from pipeline.io.nifti import save_nifti
from pipeline.models import FAMILIES, build_model
from pipeline.models.dcgan import DCGAN, DCGANConfig
from pipeline.models.synthesis_eval import classified_rate, frechet_distance, halvings, split_distances
from pipeline.nets.dcgan import Discriminator, Generator, sample

CONTRASTS = ("T1w", "T2w", "PDw")
SHAPE = (16, 14, 10)
Z_FIRST, Z_LAST = 2, 7  # the mask's extent along axis 2


def _value(ci: int, k: int) -> float:
    """The toy data's code: slice k of contrast ci is constant (ci + 1) / 4 + k / 500."""
    return (ci + 1) / 4 + k / 500


def make_synthesis_dataset(root: Path, splits=("train", "train", "train", "val", "val", "test", "test")) -> Path:
    """`root/subjects.tsv` + per subject T1w, T2w, PDw (each slice a constant coding contrast and slice), mask."""
    root = Path(root)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    lines = ["subject\tsplit\t" + "\t".join(CONTRASTS) + "\tmask"]
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:14, 2:12, Z_FIRST:Z_LAST + 1] = 1
    for i, split in enumerate(splits):
        sub = f"sub-{i + 1:03d}"
        paths = []
        for ci, c in enumerate(CONTRASTS):
            vol = np.zeros(SHAPE, np.float32)
            for k in range(SHAPE[2]):
                vol[:, :, k] = _value(ci, k)
            paths.append(save_nifti(vol, affine, root / sub / f"{c}.nii.gz"))
        pm = save_nifti(mask, affine, root / sub / "mask.nii.gz", dtype=np.uint8)
        (root / sub / "normalisation.json").write_text(json.dumps(
            {c: {"method": "percentile", "percentiles": [0.5, 99.5], "range": [0, 1]} for c in CONTRASTS}))
        lines.append(f"{sub}\t{split}\t" + "\t".join(str(p) for p in paths) + f"\t{pm}")
    (root / "subjects.tsv").write_text("\n".join(lines) + "\n")
    return root


def tiny_cfg(**overrides) -> DCGANConfig:
    base = dict(image_size=32, nz=8, ngf=4, ndf=4, batch_size=4, n_steps=4, log_every=1, checkpoint_every=2,
                classifier_steps=60, grid_positions=3, precision="fp32")
    base.update(overrides)
    return DCGANConfig(**base)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthesis_dataset(tmp_path_factory.mktemp("dcgan"))


def _run(data, out, cfg, seed=3, stop_after=None):
    """Build the model as `python -m pipeline train dcgan` does and train (or stop early)."""
    seed_everything(seed)
    sampler, kwargs = DCGAN.prepare_data(cfg, data, seed)
    model = build_model("dcgan", cfg, **kwargs)
    settings = LoopSettings(seed=seed, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every)
    result = train(model, sampler, out, settings, {"test": "dcgan"}, stop_after=stop_after)
    return model, result


# ------------------------------------------------------------------------------------------ slices, sampler
def test_slice_stack_keeps_the_masks_extent_and_positions():
    image = np.zeros(SHAPE, np.float32)
    for k in range(SHAPE[2]):
        image[:, :, k] = k / 10
    mask = np.zeros(SHAPE, bool)
    mask[5, 5, Z_FIRST:Z_LAST + 1] = True
    slices, pos = slice_stack(image, mask, 2, 32)
    assert slices.shape == (Z_LAST - Z_FIRST + 1, 32, 32) and slices.dtype == np.float32
    np.testing.assert_allclose(pos, np.linspace(0, 1, Z_LAST - Z_FIRST + 1), atol=1e-6)
    np.testing.assert_allclose(slices[:, 16, 16], np.arange(Z_FIRST, Z_LAST + 1) / 10, atol=1e-6)
    assert slices[:, 16, :2].max() == 0 and slices[:, 16, 2].min() > 0  # 14 -> 16 columns: zero padding
    with pytest.raises(ValueError, match="fewer than 2 slices"):
        slice_stack(image, np.zeros(SHAPE, bool), 2, 32)


def test_sampler_is_a_pure_function_of_seed_and_step_with_the_right_condition(data):
    cfg = tiny_cfg(batch_size=24)
    s1, kwargs = DCGAN.prepare_data(cfg, data, 11)
    s2, _ = DCGAN.prepare_data(cfg, data, 11)
    other, _ = DCGAN.prepare_data(cfg, data, 12)
    assert kwargs["meta"]["n_train_slices"] == {c: 3 * (Z_LAST - Z_FIRST + 1) for c in CONTRASTS}
    for step in (0, 5):
        a, b = s1(step), s2(step)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(s1(5)["z"], other(5)["z"])
    batch = s1(3)
    assert batch["image"].shape == (24, 1, 32, 32) and batch["z"].shape == (24, 8)
    assert set(batch["contrast"].tolist()) == {0, 1, 2}
    for img, ci, pos in zip(batch["image"], batch["contrast"], batch["position"], strict=True):
        v = float(img[0, 16, 16])
        k = round((v - _value(int(ci), 0)) * 500)
        assert abs(v - _value(int(ci), k)) < 1e-5, "image is not of the batch's contrast"
        assert pos == pytest.approx((k - Z_FIRST) / (Z_LAST - Z_FIRST)), "position is not the image's"


def test_missing_contrast_is_a_clear_error(data, tmp_path):
    with pytest.raises(ValueError, match="no column 'FLAIR'"):
        DCGAN.prepare_data(tiny_cfg(contrasts=["T1w", "FLAIR"]), data, 0)


def test_config_rules():
    with pytest.raises(ValueError, match="contrast .T1w. twice"):
        tiny_cfg(contrasts=["T1w", "T1w"])
    with pytest.raises(ValueError, match="eval_splits"):
        tiny_cfg(eval_splits=["train"])
    with pytest.raises(ValueError):
        tiny_cfg(image_size=48)


# ------------------------------------------------------------------------------------------ networks
def test_generator_condition_is_wired_and_shapes():
    torch.manual_seed(0)
    g = Generator(nz=8, n_contrasts=3, ngf=4, size=32).eval()
    z = torch.randn(1, 8).repeat(3, 1)
    with torch.no_grad():
        by_contrast = g(z, torch.tensor([0, 1, 2]), torch.full((3,), 0.5))
        by_position = g(z[:2], torch.tensor([1, 1]), torch.tensor([0.1, 0.9]))
    assert by_contrast.shape == (3, 1, 32, 32) and by_contrast.abs().max() <= 1
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert (by_contrast[i] - by_contrast[j]).abs().max() > 1e-4, f"contrasts {i} and {j} give the same slice"
    assert (by_position[0] - by_position[1]).abs().max() > 1e-4
    assert Generator(8, 3, 4, 64)(torch.randn(2, 8), torch.tensor([0, 2]), torch.rand(2)).shape == (2, 1, 64, 64)
    # sampling: the requested contrast index, one sample per position, noise from the seed
    a, b = sample(g, 2, [0.2, 0.8], seed=5), sample(g, 2, [0.2, 0.8], seed=5)
    assert a.shape == (2, 32, 32) and np.array_equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert not np.array_equal(a, sample(g, 1, [0.2, 0.8], seed=5))


def test_conditional_batchnorm_scales_and_shifts_by_the_condition():
    from pipeline.nets.dcgan import (
        ConditionalBatchNorm2d,
        condition_vector,
        init_dcgan,
        recalibrate_batchnorm,
    )

    torch.manual_seed(0)
    norm = ConditionalBatchNorm2d(2, cdim=4)
    with torch.no_grad():
        norm.affine.weight.normal_()
        norm.affine.bias.normal_()
    x, code = torch.randn(3, 2, 5, 5), condition_vector(torch.tensor([0, 1, 2]), torch.tensor([0.0, 0.5, 1.0]), 3)
    gamma, beta = norm.affine(code)[:, :, None, None].chunk(2, dim=1)
    plain = torch.nn.functional.batch_norm(x, None, None, training=True)
    assert torch.allclose(norm(x, code), plain * (1 + gamma) + beta, atol=1e-5)
    # the generator with it: its batch norms are conditional, the condition changes the output, the model file's
    # kwargs rebuild it, and the averaged weights' statistics are re-estimated as for plain batch norm
    g = init_dcgan(Generator(nz=8, n_contrasts=3, ngf=4, size=32, conditional_norm=True))
    norms = [m for m in g.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert len(norms) == 3 and not any(isinstance(m, torch.nn.BatchNorm2d) and m.affine for m in g.modules())
    recalibrate_batchnorm(g, batches=2, batch_size=6)
    assert int(norms[0].norm.num_batches_tracked) == 2
    z = torch.randn(1, 8).repeat(3, 1)
    with torch.no_grad():
        out = g(z, torch.tensor([0, 1, 2]), torch.full((3,), 0.5))
    assert (out[0] - out[1]).abs().max() > 1e-4 and (out[1] - out[2]).abs().max() > 1e-4
    cfg = tiny_cfg(generator_norm="conditional")
    blob = DCGAN(cfg).model_file()
    rebuilt = DCGAN.build_generator(blob["generator"]["kwargs"])
    rebuilt.load_state_dict(blob["state_dict"])
    assert rebuilt.conditional_norm and not DCGAN(tiny_cfg()).networks["G"].conditional_norm


def test_batchnorm_recalibration_is_deterministic_and_sets_the_statistics():
    from pipeline.nets.dcgan import recalibrate_batchnorm

    torch.manual_seed(0)
    a = Generator(8, 3, 4, 32)
    b = Generator(8, 3, 4, 32)
    b.load_state_dict(a.state_dict())
    recalibrate_batchnorm(a, batches=3, batch_size=8)
    recalibrate_batchnorm(b, batches=3, batch_size=8)
    bn = a.net[1]
    assert not a.training and bn.momentum == 0.1 and int(bn.num_batches_tracked) == 3
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_exported_generator_is_the_average_or_the_last(data):
    """ema 0 exports the last weights as they are; ema > 0 the average, with statistics re-estimated."""
    for ema in (0.0, 0.9):
        cfg = tiny_cfg(ema=ema)
        sampler, kwargs = DCGAN.prepare_data(cfg, data, 0)
        model = build_model("dcgan", cfg, **kwargs)
        for step in range(3):
            model.set_input(sampler(step))
            model.optimize_step(step)
        last = model.networks["G"].state_dict()
        exported = model.model_file()["state_dict"]
        same = all(torch.equal(exported[k], v) for k, v in last.items())
        assert same == (ema == 0.0)


@pytest.mark.parametrize("condition", ["concat", "projection"])
def test_discriminator_sees_the_condition(condition):
    torch.manual_seed(0)
    d = Discriminator(3, 4, 32, condition).eval()
    x = torch.rand(1, 1, 32, 32).repeat(2, 1, 1, 1)
    with torch.no_grad():
        out, classes = d(x, torch.tensor([0, 2]), torch.tensor([0.5, 0.5]))
        pos, _ = d(x, torch.tensor([1, 1]), torch.tensor([0.0, 1.0]))
    assert out.shape == (2,) and classes is None
    assert abs(float(out[0] - out[1])) > 1e-6 and abs(float(pos[0] - pos[1])) > 1e-6


# ------------------------------------------------------------------------------------------ training
def test_resume_is_exact(data, tmp_path):
    cfg = tiny_cfg(n_steps=4, checkpoint_every=2)
    straight, res = _run(data, tmp_path / "straight", cfg)
    assert res.steps == 4
    _run(data, tmp_path / "resumed", cfg, stop_after=3)  # killed after step 3: checkpoint at 2
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["step"] == 2
    resumed, res2 = _run(data, tmp_path / "resumed", cfg)
    assert res2.resumed_from == 2
    for name, net in straight.networks.items():
        for k, v in net.state_dict().items():
            assert torch.equal(v, resumed.networks[name].state_dict()[k]), f"{name}.{k} differs"
    a = load_checkpoint(tmp_path / "straight" / "model.pt")
    b = load_checkpoint(tmp_path / "resumed" / "model.pt")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["family"] == "dcgan" and a["synthesis"]["contrasts"] == list(CONTRASTS)
    g = DCGAN.load_generator(a, None, "cpu")
    assert sample(g, 0, [0.5], seed=0).shape == (1, 32, 32)


def test_a_checkpoint_of_the_earlier_average_format_resumes_its_average(data):
    sampler, kwargs = DCGAN.prepare_data(tiny_cfg(), data, 0)
    model = build_model("dcgan", tiny_cfg(), **kwargs)
    old = {k: v + 1.0 if v.dtype.is_floating_point else v for k, v in model.networks["G"].state_dict().items()}
    model.load_extra_state({"ema": old})  # extra state as written before pipeline.gan.ema
    assert all(torch.equal(model.average.weights[k], v) for k, v in old.items())


@pytest.mark.parametrize("loss", ["nonsaturating", "minimax", "lsgan", "hinge"])
def test_one_step_with_each_loss(data, loss):
    cfg = tiny_cfg(gan_loss=loss, condition="projection" if loss == "hinge" else "concat")
    sampler, kwargs = DCGAN.prepare_data(cfg, data, 0)
    model = build_model("dcgan", cfg, **kwargs)
    before = {k: [p.detach().clone() for p in n.parameters()] for k, n in model.networks.items()}
    model.set_input(sampler(0))
    model.optimize_step(0)
    assert set(model.losses()) == set(DCGAN.loss_names) - {"G_cls", "D_cls"}
    assert all(np.isfinite(list(model.losses().values())))
    for k, net in model.networks.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[k], net.parameters(), strict=True)), f"{k} did not learn"


@pytest.mark.parametrize("augment", [[], ["cutout"]])
def test_discriminator_sees_augmented_slices_only_when_asked(data, augment):
    cfg = tiny_cfg(augment=augment)
    sampler, kwargs = DCGAN.prepare_data(cfg, data, 0)
    model = build_model("dcgan", cfg, **kwargs)
    seen = []
    model.networks["D"].register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    torch.manual_seed(0)
    model.set_input(sampler(0))
    model.optimize_step(0)
    fake_for_g, real, fake_for_d = seen  # the generator's step, then the discriminator's on real and fake
    assert torch.equal(fake_for_d, fake_for_g) == (not augment)  # a fresh draw of the transform in each step
    assert torch.equal(real, model.real["image"]) == (not augment)
    # the toy slices' foreground is a constant above 0: a cut-out square is background (-1) inside it
    centre = (real[:, :, 12:20, 12:20] == -1).any()
    assert bool(centre) == bool(augment)


def test_auxiliary_classifier_trains_on_real_contrasts_and_pushes_the_generator(data):
    cfg = tiny_cfg(condition="projection", lambda_cls=1.0)
    sampler, kwargs = DCGAN.prepare_data(cfg, data, 0)
    model = build_model("dcgan", cfg, **kwargs)
    head = model.networks["D"].classify
    assert head is not None and head.out_channels == len(CONTRASTS)
    batch = sampler(0)
    model.set_input(batch)
    model.optimize_step(0)
    losses = model.losses()
    assert set(losses) == set(DCGAN.loss_names) and all(np.isfinite(list(losses.values())))
    # an untrained 3-way classifier starts near chance: cross-entropy about log 3
    assert abs(losses["D_cls"] - np.log(3)) < 0.5 and abs(losses["G_cls"] - np.log(3)) < 0.5
    # the generator's loss includes the classification term: G = adversarial + lambda_cls * G_cls
    assert losses["G"] > losses["G_cls"]
    # the discriminator's classifier learns the real contrasts: its loss on a fixed batch falls over a few steps
    d = model.networks["D"]
    image = batch["image"].float() * 2 - 1

    def cls_loss() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(
                d(image, batch["contrast"], batch["position"].float())[1], batch["contrast"].long()))

    first = cls_loss()
    for step in range(1, 8):
        model.set_input(batch)
        model.optimize_step(step)
    assert cls_loss() < first


def test_auxiliary_classifier_needs_the_projection_condition():
    with pytest.raises(ValueError, match="projection"):
        tiny_cfg(condition="concat", lambda_cls=1.0)
    with pytest.raises(ValueError, match="projection"):
        Discriminator(3, 4, 32, "concat", classifier=True)


def test_family_contract_has_no_per_subject_output():
    assert FAMILIES["dcgan"] is DCGAN
    assert DCGAN.outputs(DCGANConfig()) == []
    with pytest.raises(ValueError, match="no whole-volume inference"):
        DCGAN.apply(None, np.zeros((4, 4, 4)), {})
    from pipeline.workflow import outputs, trained_families

    config = {"models": ["srgan", "dcgan"]}
    names = [o.name for o in outputs(config)]
    assert names and {o.family for o in outputs(config)} == {"srgan"}
    assert trained_families(config, {}) == ["srgan", "dcgan"]
    assert trained_families(config, {names[0]: "no test subject has T1w"}) == ["srgan", "dcgan"]
    assert trained_families(config, dict.fromkeys(names, "no training subject has T1w")) == ["dcgan"]


# ------------------------------------------------------------------------------------------ the judge
def test_frechet_distance_known_values():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 6))
    a -= a.mean(axis=0)  # so that 2 a has the same (zero) mean
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    assert frechet_distance(a + shift, a) == pytest.approx(float(shift @ shift), rel=1e-6)
    # same mean, covariance S and 4 S: tr S + tr 4S - 2 tr 2S = tr S
    assert frechet_distance(2 * a, a) == pytest.approx(float(np.trace(np.cov(a, rowvar=False))), rel=1e-6)
    with pytest.raises(ValueError, match="feature sets"):
        frechet_distance(a, a[:, :3])


def test_classified_rate():
    logits = np.array([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 0.0, 0.5], [0.0, 0.0, 9.0]])
    assert classified_rate(logits, 0) == 0.5
    assert classified_rate(logits, 2) == 0.25
    assert classified_rate(logits, np.array([0, 1, 0, 2])) == 1.0
    with pytest.raises(ValueError, match="no samples"):
        classified_rate(np.zeros((0, 3)), 0)


def test_halvings_split_held_out_slices_by_subject(data):
    bank = SliceBank.read(data, list(CONTRASTS), ["val", "test"], 2, 32)
    owner = bank.owner["T2w"]
    splits = halvings(bank, "T2w", 20, seed=3)
    assert len(splits) == 20
    for a, b in splits:
        assert len(a) + len(b) == bank.count("T2w") and not set(a) & set(b)
        assert set(owner[a]).isdisjoint(owner[b]) and len(set(owner[a])) == 2 and len(set(owner[b])) == 2
    assert len({tuple(sorted(set(owner[a]))) for a, _ in splits}) > 1, "every halving put the same subjects together"
    again = halvings(bank, "T2w", 20, seed=3)
    assert all(np.array_equal(a, a2) for (a, _), (a2, _) in zip(splits, again, strict=True)), "not seeded"
    one = SliceBank.read(data, ["T1w"], ["val"], 2, 32)
    one.subjects["T1w"] = one.subjects["T1w"][:1]
    with pytest.raises(ValueError, match="at least 2"):
        halvings(one, "T1w", 5, seed=0)


def test_split_distances_compare_samples_and_real_slices_on_the_same_split():
    """Samples equal to the real slices they stand for score exactly the real-vs-real distance on every split;
    samples shifted in feature space score more."""
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 4))
    owner = np.repeat(np.arange(6), 10)
    splits = [(np.flatnonzero(np.isin(owner, s)), np.flatnonzero(~np.isin(owner, s))) for s in ([0, 1, 2], [0, 3, 5])]
    d_real = split_distances(real, real, splits)
    assert np.array_equal(split_distances(real.copy(), real, splits), d_real) and len(d_real) == 2
    assert d_real[0] != d_real[1]
    d_shifted = split_distances(real + 1.0, real, splits)
    # a shift changes only the mean term |mu_B + 1 - mu_A|^2 = |mu_B - mu_A|^2 + 2 sum(mu_B - mu_A) + 4
    expected = [d + 2.0 * (real[b].mean(0) - real[a].mean(0)).sum() + 4.0 for d, (a, b) in zip(d_real, splits, strict=True)]
    np.testing.assert_allclose(d_shifted, expected, rtol=1e-6)


def test_validate_writes_synthesis_json_and_grids(data, tmp_path):
    cfg = tiny_cfg(n_steps=2)
    model, _ = _run(data, tmp_path, cfg)
    result = model.validate(data, tmp_path)
    written = json.loads((tmp_path / "synthesis.json").read_text())
    assert set(written["contrasts"]) == set(CONTRASTS) and result["contrasts"] == written["contrasts"]
    for c, v in written["contrasts"].items():
        assert v["real_classified_rate"] == 1.0, f"the judge does not tell {c} on real held-out slices"
        assert 0.0 <= v["classified_rate"] <= 1.0 and v["fd_real"] >= 0 and v["fd_synthetic"] >= 0
        assert v["n_samples"] == 4 * (Z_LAST - Z_FIRST + 1) and v["n_subjects"] == 4 and v["n_halvings"] == 50
        assert v["fd_real_min"] <= v["fd_real"] <= v["fd_real_max"] and 0.0 <= v["fd_ratio_below_criterion"] <= 1.0
        assert v["passes"] == (v["classified_rate"] >= 0.95 and v["fd_ratio"] is not None and v["fd_ratio"] < 3)
    assert written["passes"] == all(v["passes"] for v in written["contrasts"].values())
    figures = [written["figures"]["grid"], *written["figures"]["per_contrast"].values()]
    assert len(figures) == 4 and all((tmp_path / f).is_file() for f in figures)
    assert str(data) not in json.dumps(written)  # no input paths


# ------------------------------------------------------------------------------------------ report
def test_report_shows_the_synthesis_section_escaped(tmp_path):
    """A run of only dcgan: evaluation has nothing per subject (an empty summary), the report renders the family's
    synthesis.json (numbers, criteria, grids copied into the report) with every string from it escaped."""
    from PIL import Image

    from pipeline import cli
    from pipeline.report.inputs import synthesis_results
    from tests.unit.eval_helpers import XSS_IMG, evaluate_args, make_cohort, working_dir

    make_cohort(tmp_path)
    models = tmp_path / "results" / "models" / "dcgan"
    models.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(models / "synthesis_grid.png")
    numbers = {"classified_rate": 0.97, "real_classified_rate": 0.99, "fd_synthetic": 1.5, "fd_real": 1.0,
               "fd_ratio": 1.5, "position_mae": 0.1, "real_position_mae": 0.08, "n_samples": 10, "passes": True}
    entry = {"kind": "conditional-synthesis", "criteria": {"min_classified_rate": 0.95, "max_fd_ratio": 3.0},
             "passes": True, "contrasts": {f"T1w{XSS_IMG}": numbers},
             "protocol": {"judge": f"a CNN {XSS_IMG}"}, "figures": {"grid": "synthesis_grid.png", "per_contrast": {}}}
    (models / "synthesis.json").write_text(json.dumps(entry))
    with working_dir(tmp_path):
        assert cli.main(evaluate_args([], [])) == 0
        assert json.loads(Path("results/metrics/summary.json").read_text())["tasks"] == {}
        assert cli.main(["report", "--out", "reports", "--workflow-config",
                         json.dumps({"seed": 42, "input_dir": "", "models": ["dcgan"]})]) == 0
    index = (tmp_path / "reports" / "index.html").read_text()
    section = index[index.index('<section id="synthesis"'):]
    section = section[:section.index("</section>")]
    assert XSS_IMG not in index and "T1w&lt;img src=x onerror=alert(2)&gt;" in section
    assert "97.0%" in section and "1.50" in section and "meets both criteria" in section
    assert 'href="#synthesis"' in index
    assert (tmp_path / "reports" / "assets" / "synthesis" / "dcgan" / "synthesis_grid.png").is_file()
    assert 'src="assets/synthesis/dcgan/synthesis_grid.png"' in section
    # a figure name that is not a plain file name beside the JSON is refused
    (models / "synthesis.json").write_text(json.dumps({**entry, "figures": {"grid": "../../x.png"}}))
    with pytest.raises(ValueError, match="not plain PNG file names"):
        synthesis_results(tmp_path / "results" / "models", ["dcgan"])


def test_synthesize_writes_slices_of_the_requested_contrast(data, tmp_path):
    import nibabel as nib

    from pipeline import cli

    _run(data, tmp_path / "model", tiny_cfg(n_steps=2))
    model = str(tmp_path / "model" / "model.pt")
    out = tmp_path / "out"
    assert cli.main(["synthesize", "--model", model, "--contrast", "PDw", "--n", "3", "--positions", "0.2,0.8",
                     "--output", str(out)]) == 0
    assert sorted(p.name for p in out.glob("PDw_*.png")) == ["PDw_000.png", "PDw_001.png", "PDw_002.png"]
    stack = nib.load(str(out / "PDw_samples.nii.gz"))
    assert stack.shape == (32, 32, 3)
    np.testing.assert_allclose(stack.header.get_zooms()[:2], [2.0 * 16 / 32] * 2)  # 16 x 14 padded to 16, -> 32
    assert (out / "PDw_samples.tsv").read_text().splitlines()[1:] == ["PDw_000.png\t0.2000", "PDw_001.png\t0.8000",
                                                                      "PDw_002.png\t0.2000"]
    assert cli.main(["synthesize", "--model", model, "--contrast", "FLAIR", "--n", "1", "--output", str(out)]) != 0
    assert cli.main(["infer", "--model", model, "--input", str(data / "sub-001" / "T1w.nii.gz"),
                     "--output", str(tmp_path / "x.nii.gz")]) != 0
