"""Motion-artifact correction: the k-space motion simulator, the preprocess inputs, the paired sampler, exact
resume, whole-volume inference (shapes, geometry, `infer`) and the restoration task's baseline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import ConfigError, PreprocessConfig
from pipeline.data.motion_sampler import MotionPairs
from pipeline.data.volumes import domain_volumes
from pipeline.gan.checkpoint import load_checkpoint
from pipeline.gan.loop import LoopSettings, train
from pipeline.gan.seeding import seed_everything
from pipeline.imaging.motion import Shot, apply_motion, draw_motion, motion_rng, shot_lines, simulate_motion
from pipeline.io.nifti import load_nifti, save_nifti
from pipeline.models import build_model, family_of
from pipeline.models.motion import MotionCorrection, MotionCorrectionConfig, ResidualGenerator

SHAPE = (20, 24, 12)
SPLITS = ("train", "train", "train", "val", "test")
SIM = {"fraction": 0.5, "max_translation_mm": 3.0, "max_rotation_deg": 3.0, "n_shots": 8, "pe_axis": 1,
       "centre_fraction": 0.1, "ordering": "interleaved"}
ALL = tuple(range(SHAPE[1]))  # every phase-encode line


def phantom(seed: int = 0, shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A smooth non-negative 'head' inside an ellipsoid, and its mask."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), sigma=1.5)
    field = (field - field.min()) / (field.max() - field.min())
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    mask = sum(g**2 for g in grid) < 0.7
    return (0.2 + 0.8 * field) * mask, mask


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    mse = float(np.mean((x.astype(np.float64) - y) ** 2))
    return float(10 * np.log10(1.0 / mse)) if mse > 0 else np.inf


# ------------------------------------------------------------------------------------------ the simulator
def test_motion_free_simulation_returns_the_input_exactly():
    vol, _ = phantom()
    vol = vol.astype(np.float32)
    for kw in (dict(fraction=0.0, max_translation_mm=5.0, max_rotation_deg=5.0),
               dict(fraction=1.0, max_translation_mm=0.0, max_rotation_deg=0.0)):
        out, shots = simulate_motion(vol, motion_rng(1, "sub-001"), spacing=(2, 2, 2), **kw)
        assert shots == [] and out.dtype == np.float32 and np.array_equal(out, vol) and out is not vol
    assert np.array_equal(apply_motion(vol, [Shot(ALL, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))]), vol)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_translating_every_line_shifts_the_image(axis):
    vol, _ = phantom()
    spacing = (2.0, 1.5, 3.0)
    t = [0.0, 0.0, 0.0]
    t[axis] = 2 * spacing[axis]  # two voxels, in mm
    out = apply_motion(vol, [Shot(ALL, tuple(t), (0.0, 0.0, 0.0))], spacing)
    np.testing.assert_allclose(out, np.roll(vol, 2, axis=axis), atol=1e-5)
    # a rotation of every line is the rotated image (about the centre; 90 degrees in-plane maps the grid to itself)
    cube = phantom(shape=(16, 16, 8))[0]
    rot = apply_motion(cube, [Shot(tuple(range(16)), (0.0, 0.0, 0.0), (0.0, 0.0, 90.0))])
    np.testing.assert_allclose(rot, np.rot90(cube, k=1, axes=(0, 1)), atol=1e-5)


def test_corruption_changes_only_the_moved_shots_lines():
    vol, _ = phantom()
    shots = [Shot((2, 3, 4), (1.0, -2.0, 0.5), (2.0, 0.0, -1.0)), Shot((18, 21), (0.0, 1.5, 0.0), (0.0, 0.0, 0.0))]
    image = apply_motion(vol, shots, (2.0, 2.0, 2.0), magnitude=False)
    k_clean = np.fft.fftshift(np.fft.fftn(vol.astype(np.float32)), axes=1)
    k_bad = np.fft.fftshift(np.fft.fftn(image), axes=1)
    moved = np.zeros(SHAPE[1], dtype=bool)
    moved[[2, 3, 4, 18, 21]] = True
    np.testing.assert_allclose(k_bad[:, ~moved], k_clean[:, ~moved], atol=1e-4)  # (float32 FFTs)
    assert np.abs(k_bad[:, moved] - k_clean[:, moved]).max(axis=(0, 2)).min() > 1e-2  # every moved line changed
    # translation only: each moved line keeps its magnitude (a phase ramp)
    only_t = apply_motion(vol, [Shot((2, 3, 4), (1.0, -2.0, 0.5), (0.0, 0.0, 0.0))], (2.0, 2.0, 2.0), magnitude=False)
    np.testing.assert_allclose(np.abs(np.fft.fftn(only_t)), np.abs(np.fft.fftn(vol.astype(np.float32))), atol=1e-4)


def test_draws_spare_the_centre_are_seeded_and_severity_is_monotone():
    vol, mask = phantom(3)
    vol = vol.astype(np.float32)
    assert shot_lines(24, 8) == [tuple(range(3 * j, 3 * j + 3)) for j in range(8)]
    assert shot_lines(24, 8, "interleaved") == [(j, j + 8, j + 16) for j in range(8)]
    centre = {k for k in ALL if abs(k - SHAPE[1] // 2) <= 0.1 * SHAPE[1] / 2}
    for ordering in ("linear", "interleaved"):
        previous, scores = set(), []
        for fraction in (0.0, 0.25, 0.5, 1.0):
            shots = draw_motion(SHAPE, motion_rng(7, "sub-002", "T1w"), fraction=fraction, max_translation_mm=3.0,
                                max_rotation_deg=3.0, n_shots=8, centre_fraction=0.1, ordering=ordering)
            lines = {s.lines for s in shots}
            assert previous <= lines  # a larger fraction moves a superset of the shots
            assert not centre & {k for s in shots for k in s.lines}  # the k-space centre never moves
            previous = lines
            scores.append(psnr(apply_motion(vol, shots, (2, 2, 2))[mask], vol[mask]))
        assert scores[0] == np.inf and all(a > b for a, b in zip(scores, scores[1:], strict=False))
    by_size = [psnr(simulate_motion(vol, motion_rng(7, "s"), fraction=0.5, max_translation_mm=m, max_rotation_deg=m,
                                    n_shots=8, spacing=(2, 2, 2))[0][mask], vol[mask]) for m in (1.0, 2.0, 4.0)]
    assert by_size[0] > by_size[1] > by_size[2]
    one, _ = simulate_motion(vol, motion_rng(7, "sub-002"), fraction=0.5, max_translation_mm=2, max_rotation_deg=2)
    two, _ = simulate_motion(vol, motion_rng(7, "sub-002"), fraction=0.5, max_translation_mm=2, max_rotation_deg=2)
    other, _ = simulate_motion(vol, motion_rng(7, "sub-003"), fraction=0.5, max_translation_mm=2, max_rotation_deg=2)
    assert np.array_equal(one, two) and not np.array_equal(one, other)
    with pytest.raises(ValueError, match="fraction"):
        draw_motion(SHAPE, motion_rng(0), fraction=1.5, max_translation_mm=1, max_rotation_deg=1)


def test_preprocess_motion_section_validates():
    cfg = PreprocessConfig(motion={"fraction": 0.5, "modalities": ["T1w", "T2w"]})
    assert cfg.motion.fraction == 0.5 and PreprocessConfig().motion.modalities == ["T1w"]
    with pytest.raises(ConfigError, match=r"preprocess\.motion\.fraction: must be <= 1"):
        PreprocessConfig(motion={"fraction": 1.5})
    with pytest.raises(ConfigError, match=r"preprocess\.motion\.pe_axis"):
        PreprocessConfig(motion={"pe_axis": 3})


# ------------------------------------------------------------------------------------------ data
def make_motion_dataset(root: Path) -> Path:
    """`root/subjects.tsv` with T1w, T1w_motion and mask per subject and the normalisation.json preprocess writes."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-20.0, 4.0, 7.0]
    lines = ["subject\tsplit\tT1w\tmask\tT1w_motion"]
    for i, split in enumerate(SPLITS):
        sub = f"sub-{i + 1:03d}"
        vol, mask = phantom(i)
        bad, shots = simulate_motion(vol, motion_rng(42, sub, "T1w"), spacing=(2, 2, 2), **SIM)
        d = root / sub
        paths = [save_nifti(vol.astype(np.float32), affine, d / "T1w.nii.gz"),
                 save_nifti(mask.astype(np.uint8), affine, d / "mask.nii.gz", dtype=np.uint8),
                 save_nifti(bad, affine, d / "T1w_motion.nii.gz")]
        norm = {"T1w": {"method": "percentile", "percentiles": [0.5, 99.5], "low": 1.0, "high": 9.0, "range": [0, 1],
                        "motion": {"file": "T1w_motion.nii.gz", **SIM, "shots": [s.as_dict() for s in shots]}}}
        (d / "normalisation.json").write_text(json.dumps(norm))
        lines.append("\t".join([sub, split, *map(str, paths)]))
    (root / "subjects.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_motion_dataset(tmp_path_factory.mktemp("motion"))


def tiny_cfg(**overrides) -> MotionCorrectionConfig:
    base = dict(ngf=4, n_blocks=1, ndf=4, d_layers=2, patch_size=0, batch_size=2, pool_size=1, n_steps=3, lambda_grad=1.0,
                n_steps_decay=3, log_every=1, checkpoint_every=2, sw_batch_size=4, precision="fp32")
    base.update(overrides)
    return MotionCorrectionConfig(**base)


CODE_SUBJECT, CODE_VARIANT = 1e6, 1e5  # voxel (x, y, z) adds x 1000 + y 10 + z + 1 (z < 10)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_sampler_pairs_the_same_subject_and_slice(spatial_dims):
    shape = (12, 16, 6)
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    coded = [((k + 1) * CODE_SUBJECT + x * 1000 + y * 10 + z + 1).astype(np.float32) for k in range(3)]
    versions = [[c + CODE_VARIANT * (v + 1) for v in range(3)] for c in coded]  # corrupted = clean + variant code
    mask = np.zeros(shape, dtype=bool)
    mask[3:-3, 3:-3, 1:-1] = True
    cfg = tiny_cfg(spatial_dims=spatial_dims, patch_size=8, batch_size=6)
    sampler = MotionPairs(["a", "b", "c"], coded, versions, [mask] * 3, cfg, seed=4)
    seen = set()
    for step in range(10):
        batch = sampler(step)
        assert batch["A"].shape == batch["B"].shape == (6, 1, *([8] * spatial_dims))
        diff = (batch["A"] - batch["B"]).double()
        for d, clean, s, v, c in zip(diff, batch["B"].double(), batch["subject"], batch["variant"], batch["centre"],
                                     strict=True):
            inside = clean > 0  # (3D crops are zero-padded in z)
            assert torch.all(d[inside] == CODE_VARIANT * (v.item() + 1))  # same voxels, same flips
            assert torch.all(torch.floor(clean[inside] / CODE_SUBJECT) == s.item() + 1)  # same subject
            if spatial_dims == 2:
                assert torch.all((clean[inside] - 1) % 10 == c[2].item())  # the centre's slice
            seen.add((s.item(), v.item()))
    assert len({s for s, _ in seen}) == 3 and len({v for _, v in seen}) == 3
    again = sampler(3)
    assert all(torch.equal(t, again[k]) for k, t in sampler(3).items())  # a pure function of (seed, step)


def test_sampler_context_gives_the_neighbouring_corrupted_slices_as_channels():
    """2.5D: channel k is the sample's corrupted slice, channels k -+ d the slices d before/after it (clamped at the
    volume's ends), the clean target the centre slice alone."""
    shape = (12, 16, 6)
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    clean = (x * 1000 + y * 10 + z + 1).astype(np.float32)
    mask = np.zeros(shape, dtype=bool)
    mask[3:-3, 3:-3, :] = True
    cfg = tiny_cfg(patch_size=8, batch_size=8, context_slices=2)
    sampler = MotionPairs(["a"], [clean], [[clean + CODE_VARIANT]], [mask], cfg, seed=1)
    zs = set()
    for step in range(6):
        batch = sampler(step)
        assert batch["A"].shape == (8, 5, 8, 8) and batch["B"].shape == (8, 1, 8, 8)
        for a, b, c in zip(batch["A"].double(), batch["B"].double(), batch["centre"], strict=True):
            centre = int(c[2])
            zs.add(centre)
            assert torch.equal(a[2] - CODE_VARIANT, b[0])  # the centre channel is the target's slice, corrupted
            for ch, d in enumerate(range(-2, 3)):
                want = min(max(centre + d, 0), shape[2] - 1) - centre
                assert torch.all(a[ch] - a[2] == want)  # the neighbours, the same in-plane window and flips
    assert {0, 5} <= zs  # the clamped ends were drawn


def test_context_generator_starts_as_the_identity_of_its_centre_slice():
    x = torch.rand(2, 5, 12, 12) * 2 - 1
    net = ResidualGenerator(kind="resnet_1blocks", spatial_dims=2, ngf=2, in_channels=5).start_as_identity()
    assert torch.equal(net(x), x[:, 2:3])
    with pytest.raises(ConfigError, match="context_slices"):
        MotionCorrectionConfig(spatial_dims=3, context_slices=1)


def test_prepare_data_uses_the_preprocess_corruptions_and_a_seeded_pool(data):
    cfg = tiny_cfg(pool_size=2)
    sampler, kwargs = MotionCorrection.prepare_data(cfg, data, seed=5)
    try:
        assert sampler.subjects == ["sub-001", "sub-002", "sub-003"] and kwargs["roi_size"] == [20, 24]
        assert all(len(v) == 3 for v in sampler.corrupted)
        first = domain_volumes(data, "T1w_motion", "train")[0].image
        assert np.array_equal(np.asarray(sampler.corrupted[0][0])[:20, :24], first)
        assert not np.array_equal(np.asarray(sampler.corrupted[0][1]), np.asarray(sampler.corrupted[0][2]))
        assert kwargs["meta"]["simulation"]["fraction"] == SIM["fraction"]
        again, _ = MotionCorrection.prepare_data(cfg, data, seed=5)
        assert np.array_equal(np.asarray(again.corrupted[1][2]), np.asarray(sampler.corrupted[1][2]))
        again.close()
    finally:
        sampler.close()


def _run(data, out, cfg, seed=3, stop_after=None):
    seed_everything(seed)
    sampler, kwargs = MotionCorrection.prepare_data(cfg, data, seed)
    model = build_model("motion", cfg, **kwargs)
    settings = LoopSettings(seed=seed, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every)
    result = train(model, sampler, out, settings, {"test": "motion"}, stop_after=stop_after)
    sampler.close()
    return model, result


def test_generator_starts_as_the_identity_and_losses_are_logged(data):
    vol = torch.rand(2, 1, 20, 24) * 2 - 1
    net = MotionCorrection(tiny_cfg(), roi_size=[20, 24]).networks["G"]
    assert torch.equal(net(vol), vol)
    sampler, kwargs = MotionCorrection.prepare_data(tiny_cfg(), data, 0)
    model = build_model("motion", tiny_cfg(), **kwargs)
    model.set_input(sampler(0))
    model.optimize_step(0)
    assert set(model.losses()) == set(MotionCorrection.loss_names)
    sampler.close()


def test_resume_is_exact(data, tmp_path):
    cfg = tiny_cfg(n_steps=2, n_steps_decay=2)
    straight, res = _run(data, tmp_path / "straight", cfg)
    assert res.steps == 4
    _run(data, tmp_path / "resumed", cfg, stop_after=3)  # killed after step 3: checkpoint at 2
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["step"] == 2
    resumed, res2 = _run(data, tmp_path / "resumed", cfg)
    assert res2.resumed_from == 2
    for name, net in straight.networks.items():
        for k, v in net.state_dict().items():
            assert torch.equal(v, resumed.networks[name].state_dict()[k]), f"{name}.{k} differs"


def test_model_file_inference_geometry_and_contract(data, tmp_path):
    from pipeline.stages import infer

    cfg = tiny_cfg(n_steps=1, n_steps_decay=1)
    _run(data, tmp_path / "m", cfg)
    model = tmp_path / "m" / "model.pt"
    blob = load_checkpoint(model)
    assert blob["family"] == "motion" and family_of(blob) is MotionCorrection
    assert blob["restoration"]["input"] == "T1w_motion" and blob["inference"]["whole_slices"] is True
    (src, _), (dst, norm) = MotionCorrection.io_modalities(blob, None)
    assert src == dst == "T1w" and norm["method"] == "percentile"
    [out] = MotionCorrection.outputs(cfg)
    assert (out.name, out.task, out.input, out.truth) == ("motion", "restoration", "T1w_motion", "T1w")
    scan = data / "sub-005" / "T1w_motion.nii.gz"
    bad, affine = load_nifti(scan)
    target = tmp_path / "out.nii.gz"
    parser = argparse.ArgumentParser()
    infer.add_arguments(parser)
    assert infer.main(parser.parse_args(["--model", str(model), "--input", str(scan), "--output", str(target),
                                         "--device", "cpu"])) == 0
    got, out_affine = load_nifti(target)
    assert got.shape == bad.shape and np.isfinite(got).all()
    np.testing.assert_allclose(out_affine, affine)
    net = MotionCorrection.load_generator(blob, None, "cpu")
    np.testing.assert_allclose(got, MotionCorrection.apply(net, bad, blob), atol=1e-6)
    with pytest.raises(ValueError, match="one generator"):
        MotionCorrection.load_generator(blob, "B2A", "cpu")


@pytest.mark.parametrize(("dims", "roi", "context"), [(2, None, 0), (2, [12, 12], 0), (3, [8, 8, 8], 0), (2, None, 2)])
def test_whole_volume_inference_shapes(dims, roi, context):
    vol = np.random.default_rng(0).random((21, 26, 10)).astype(np.float32)
    cfg = tiny_cfg(spatial_dims=dims, patch_size=0 if roi is None else 24, d_layers=1, context_slices=context)
    model = MotionCorrection(cfg, roi_size=[24] * dims)
    blob = model.model_file(0)
    net = MotionCorrection.load_generator(blob, None, "cpu")
    out = MotionCorrection.apply(net, vol, blob, roi_size=roi)
    assert out.shape == vol.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, vol, atol=1e-6)  # the untrained generator is the identity


def test_config_rules_and_shipped_block():
    from pipeline.workflow_config import load_workflow_config
    from tests.conftest import REPO

    with pytest.raises(ConfigError, match="all 0"):
        MotionCorrectionConfig(lambda_content=0, lambda_grad=0, lambda_adv=0)
    with pytest.raises(ConfigError, match="severity_range"):
        MotionCorrectionConfig(severity_range=(1.5, 0.5))
    cfg = load_workflow_config(REPO / "config" / "config.yaml")
    assert "motion" not in cfg.models and cfg.motion.modality == "T1w"
    assert cfg.motion.modality in cfg.preprocess.motion.modalities
    assert isinstance(ResidualGenerator(kind="resnet_1blocks", spatial_dims=2, ngf=2), torch.nn.Module)


# ------------------------------------------------------------------------------------------ evaluation
def test_restoration_task_is_scored_against_the_corrupted_input(data, tmp_path):
    from pipeline.config import EvaluateConfig
    from pipeline.evaluation.cases import load_case, make_baseline
    from pipeline.evaluation.run import evaluate
    from pipeline.evaluation.tasks import Output, build_tasks
    from pipeline.io.tables import read_subjects

    out = Output("motion", "motion", "restoration", "T1w_motion", "T1w", "T1w-motioncorrected")
    cfg = EvaluateConfig(bootstrap_resamples=200, figure_dpi=50)
    rows = read_subjects(data / "subjects.tsv")
    [task] = build_tasks([out], {}, cfg, list(rows[0]), data / "subjects.tsv")
    assert (task.kind, task.baselines, task.source, task.target) == ("restoration", ["input"], "T1w_motion", "T1w")
    test_row = [r for r in rows if r["split"] == "test"][0]
    case = load_case(test_row, task, data / "subjects.tsv")
    bad, _ = load_nifti(test_row["T1w_motion"])
    assert np.array_equal(make_baseline(task, case, "input"), bad)
    # a "model" halfway between the input and the clean scan beats the input; the report's numbers come from here
    clean, affine = load_nifti(test_row["T1w"])
    save_nifti((clean + bad) / 2, affine, tmp_path / "infer" / "motion" / f"{test_row['subject']}_T1w-motioncorrected.nii.gz")
    summary = evaluate(data / "subjects.tsv", [out], cfg, infer_dir=tmp_path / "infer", histories=tmp_path / "h",
                       metrics_dir=tmp_path / "metrics", figures_dir=tmp_path / "fig", viewer_dir=tmp_path / "viewer")
    methods = summary["tasks"]["restoration"]["methods"]
    assert methods["input"]["label"] == "corrupted input"
    assert methods["motion"]["metrics"]["psnr"]["mean"] > methods["input"]["metrics"]["psnr"]["mean"]
    assert summary["tasks"]["restoration"]["strongest_baseline"] == "input"
