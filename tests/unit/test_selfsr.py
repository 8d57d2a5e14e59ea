"""Self-supervised through-plane SR (`pipeline.selfsr`): the slice profile in the training pairs, exact data
consistency, the output's world geometry, clear errors, and a gain over cubic interpolation on a tiny volume."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline.selfsr.profile import SliceProfile, consistency, profile_matrix, reslice
from pipeline.selfsr.train import PairBank, TrainSettings

TINY = TrainSettings(steps=3, batch_size=2, patch=16, channels=8, n_blocks=1, log_every=1000)


def _cosine_volume(omega: float, phase: float, shape=(48, 40, 6)) -> np.ndarray:
    """cos(omega x + phase), constant along y and z."""
    x = np.arange(shape[0], dtype=np.float64)[:, None, None]
    return np.broadcast_to(np.cos(omega * x + phase), shape).astype(np.float64)


@pytest.mark.parametrize("kind", ["rect", "gaussian"])
def test_training_pairs_carry_the_slice_profile(kind):
    """In-plane re-slicing of cos(wx) at scale 4 (1 mm pixels, 4 mm slices) attenuates it by the profile's
    transfer function at w, sampled at the slice centres 4m + 1.5 (analytic; interior slices, away from edges)."""
    scale, omega, phase = 4, 2 * math.pi * 5 / 48, 0.3
    vol = _cosine_volume(omega, phase) + 2.0
    bank = PairBank(vol.astype(np.float32), scale, SliceProfile(kind, None), 4.0, foreground=0.0)
    centres = np.arange(48 // scale) * scale + (scale - 1) / 2
    if kind == "rect":  # mean of 4 samples of a cosine: the Dirichlet kernel
        gain = math.sin(omega * scale / 2) / (scale * math.sin(omega / 2))
        interior = slice(None)
    else:  # Gaussian (FWHM 4 voxels) integrated over each voxel: its transform times sinc, aliases negligible
        sigma = 4.0 / (2 * math.sqrt(2 * math.log(2)))
        gain = math.exp(-(sigma * omega) ** 2 / 2) * math.sin(omega / 2) / (omega / 2)
        interior = slice(2, -2)
    expected = gain * np.cos(omega * centres + phase) + 2.0
    lr_x = bank.lr[0][0]  # first z slice, degraded along x: (12, 40)
    assert lr_x.shape == (12, 40)
    np.testing.assert_allclose(lr_x[interior, 7], expected[interior], atol=2e-5)
    assert np.allclose(lr_x, lr_x[:, :1], atol=1e-6)  # nothing happens along y
    # the profiles differ measurably at this frequency, so the test tells them apart
    assert abs(gain - (0.72 if kind == "rect" else 0.55)) < 0.1
    # degraded along y instead (transposed so the degraded axis comes first): the cosine along x is untouched
    np.testing.assert_allclose(bank.lr[1][0][3], np.cos(omega * np.arange(48) + phase) + 2.0, atol=1e-5)


def test_sampled_pairs_are_aligned_crops():
    """Every sampled (LR, HR) pair, flips included, satisfies LR = block mean of HR (rect profile, no gap)."""
    rng = np.random.default_rng(0)
    vol = rng.random((40, 36, 5)).astype(np.float32)
    bank = PairBank(vol, 4, SliceProfile("rect", None), 4.0, foreground=0.0)
    sample = bank.sampler(patch=16, batch=6, seed=1)
    for step in range(4):
        lr, hr = sample(step)
        assert lr.shape == (6, 1, 4, 16) and hr.shape == (6, 1, 16, 16)
        block = hr.reshape(6, 1, 4, 4, 16).mean(dim=3)
        torch.testing.assert_close(lr, block, atol=1e-6, rtol=0)
    a, b = sample(2), sample(2)
    assert torch.equal(a[0], b[0])  # a pure function of (seed, step)


def test_gap_and_file_profiles():
    """5 mm slices at 6 mm spacing leave 1 mm of every 6 unseen; a file holding a rect equals the rect."""
    gap = profile_matrix(5, 6, SliceProfile("rect", 5.0), 6.0)
    np.testing.assert_allclose(gap.sum(axis=1), 1.0)
    coverage = gap.sum(axis=0) * 5  # per HR voxel, the fraction of it inside a slice
    np.testing.assert_allclose(coverage.reshape(5, 6), [[0.5, 1, 1, 1, 1, 0.5]] * 5, atol=1e-12)
    assert np.count_nonzero(gap, axis=0).max() == 1  # no voxel shared by two slices


def test_profile_file(tmp_path):
    path = tmp_path / "profile.txt"
    path.write_text("# offset_mm weight\n-2.0 1\n2.0 1\n")
    from_file = SliceProfile.parse(str(path))
    np.testing.assert_allclose(profile_matrix(6, 4, from_file, 4.0), profile_matrix(6, 4, SliceProfile("rect"), 4.0),
                               atol=0.02)  # the file's linear ramps at +-2 mm are the only difference
    (tmp_path / "bad.txt").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(ValueError, match="bad.txt"):
        SliceProfile.parse(str(tmp_path / "bad.txt"))
    with pytest.raises(ValueError, match="not rect, gaussian"):
        SliceProfile.parse("triangle")


@pytest.mark.parametrize("profile", [SliceProfile("rect"), SliceProfile("gaussian"), SliceProfile("rect", 5.0)])
def test_data_consistency_is_exact(profile):
    rng = np.random.default_rng(3)
    scale, spacing = (6, 6.0) if profile.thickness_mm else (4, 4.0)
    lr = rng.random((7, 9, 8)).astype(np.float32)
    sr = rng.random((7, 9, 8 * scale)).astype(np.float32)
    fixed = consistency(sr, lr, scale, profile, spacing, axis=2)
    assert fixed.dtype == np.float32
    np.testing.assert_allclose(reslice(fixed.astype(np.float64), scale, profile, spacing, axis=2), lr, atol=2e-6)
    # already consistent: unchanged (it is the least change)
    np.testing.assert_allclose(consistency(fixed, lr, scale, profile, spacing, axis=2), fixed, atol=2e-6)


def _write(path, data, affine):
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    return path


def test_output_overlays_the_input_in_world_space(tmp_path):
    """A scan stored with 3 mm slices along its second voxel axis, flipped and shifted: every input slice centre,
    in world coordinates, lands on the output voxel at the centre of its 3 HR voxels, and the mean of those
    3 output voxels is the input voxel (rect profile, data consistency)."""
    from pipeline.selfsr.scan import selfsr_scan

    rng = np.random.default_rng(0)
    data = rng.random((20, 8, 18)) + 1.0
    affine = np.array([[-1.0, 0, 0, 40.0], [0, 0, 1.0, -12.0], [0, 3.0, 0, 7.5], [0, 0, 0, 1]])
    src = _write(tmp_path / "scan.nii.gz", data, affine)
    out_path = tmp_path / "out.nii.gz"
    summary = selfsr_scan(src, out_path, settings=TINY)
    assert summary["scale"] == 3
    out = nib.load(str(out_path))
    out_data = np.asarray(out.dataobj, dtype=np.float64)
    assert out_data.shape == (20, 18, 24)  # RAS order: x, y (the 1 mm axis), z (the 3 mm axis, 8 x 3)
    np.testing.assert_allclose(nib.affines.voxel_sizes(out.affine), [1, 1, 1], atol=1e-9)
    to_out = np.linalg.inv(out.affine) @ affine
    ijk = np.stack(np.meshgrid(*map(np.arange, data.shape), indexing="ij"), -1).reshape(-1, 3)
    pos = nib.affines.apply_affine(to_out, ijk)
    np.testing.assert_allclose(pos, np.round(pos), atol=1e-6)  # slice centres on voxel centres
    pos = np.round(pos).astype(int)
    assert pos.min(axis=0).tolist() == [0, 0, 1] and pos.max(axis=0).tolist() == [19, 17, 22]  # same extent
    means = sum(out_data[pos[:, 0], pos[:, 1], pos[:, 2] + d] for d in (-1, 0, 1)) / 3
    np.testing.assert_allclose(means, data.reshape(-1), atol=1e-5)


def test_dicom_series_and_its_slice_thickness(make_dicom_series, tmp_path):
    from pipeline.selfsr.scan import read_input

    folder = make_dicom_series(shape=(24, 24, 6), affine=np.diag([1.0, 1.0, 4.0, 1.0]))
    data, affine, thickness = read_input(folder)
    assert data.shape == (24, 24, 6) and thickness == pytest.approx(4.0)


def test_clear_errors(tmp_path):
    from pipeline import cli
    from pipeline.selfsr.scan import selfsr_scan

    iso = _write(tmp_path / "iso.nii.gz", np.ones((16, 16, 16)), np.eye(4))
    with pytest.raises(ValueError, match=r"iso.nii.gz.*nothing to do"):
        selfsr_scan(iso, tmp_path / "o.nii.gz", settings=TINY)
    four_d = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4, 3), np.float32), np.diag([1, 1, 4, 1.0])), str(four_d))
    with pytest.raises(ValueError, match="fmri.nii.gz.*3-D"):
        selfsr_scan(four_d, tmp_path / "o.nii.gz", settings=TINY)
    assert cli.main(["selfsr", "--input", str(iso), "--output", str(tmp_path / "o.nii.gz")]) == 1
    assert not (tmp_path / "o.nii.gz").exists()


def _blobs(n: int = 48, seed: int = 0) -> np.ndarray:
    """Piecewise-constant balls and boxes of several intensities, sharp edges in every direction."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).astype(np.float64)
    vol = np.zeros((n, n, n))
    for _ in range(40):
        c, r, v = rng.uniform(4, n - 4, 3), rng.uniform(2.5, 7), rng.uniform(0.2, 1.0)
        if rng.random() < 0.5:
            inside = np.linalg.norm(grid - c, axis=-1) < r
        else:
            inside = np.all(np.abs(grid - c) < r, axis=-1)
        vol[inside] = v
    return vol


def test_tiny_anisotropic_volume_beats_cubic_interpolation():
    from pipeline.imaging.degrade import upsample
    from pipeline.selfsr.run import selfsr_volume

    torch.set_num_threads(2)
    hr = _blobs()
    profile = SliceProfile("rect")
    lr = reslice(hr, 4, profile, 4.0, axis=2).astype(np.float32)
    settings = TrainSettings(steps=250, batch_size=8, patch=24, channels=16, n_blocks=2, log_every=1000)
    out, affine, _ = selfsr_volume(lr, np.diag([1.0, 1.0, 4.0, 1.0]), profile, settings)
    assert out.shape == hr.shape
    cubic = upsample(lr, 4, "bicubic", (2,))

    def psnr(x: np.ndarray) -> float:
        return float(10 * np.log10(1.0 / np.mean((x - hr) ** 2)))

    assert psnr(out) > psnr(cubic) + 1.0, (psnr(out), psnr(cubic))


class _CubicOnly(torch.nn.Module):
    """A 'network' that is its cubic skip alone (so any difference between views is the views' geometry)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        from pipeline.selfsr.train import build_net

        self.skip = build_net(scale, TINY).skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x)


def test_turned_views_are_turned_back_onto_the_input_grid():
    from pipeline.selfsr.train import apply_through_plane

    # an off-centre blob on a non-square in-plane grid: a view turned back one voxel off would miss it by far
    x, y, z = np.meshgrid(np.arange(34), np.arange(27), np.arange(8), indexing="ij")
    volume = np.exp(-((x - 22.0) ** 2 + (y - 9.0) ** 2) / (2 * 3.0**2) - (z - 3.5) ** 2 / 8.0).astype(np.float32)
    net = _CubicOnly(2)
    plain = apply_through_plane(net, volume, 2, flips=False, rotations=(0.0,))
    turned = apply_through_plane(net, volume, 2, flips=False, rotations=(45.0,))
    both = apply_through_plane(net, volume, 2, flips=False, rotations=(0.0, 45.0))
    assert turned.shape == plain.shape == (34, 27, 16)
    assert np.abs(turned - plain).max() < 0.02 * plain.max()
    np.testing.assert_allclose(both, (plain + turned) / 2, atol=1e-6)
    shifted = np.roll(plain, 1, axis=0)
    assert np.abs(shifted - plain).max() > 0.1 * plain.max()  # the tolerance above does tell a one-voxel shift


def test_no_turned_views_on_non_square_in_plane_voxels(caplog):
    from pipeline.selfsr.run import selfsr_volume

    caplog.set_level("INFO", logger="pipeline.selfsr.run")
    lr = reslice(_blobs(), 4, SliceProfile("rect"), 4.0, axis=2).astype(np.float32)
    _, _, square = selfsr_volume(lr, np.diag([1.0, 1.0, 4.0, 1.0]), SliceProfile("rect"), TINY)
    _, _, oblong = selfsr_volume(lr, np.diag([1.0, 1.3, 4.0, 1.0]), SliceProfile("rect"), TINY)
    assert square["rotations"] == [0.0, 45.0]
    assert oblong["rotations"] == [0.0] and "not square" in caplog.text


def test_adversarial_phase_changes_the_generator():
    import dataclasses

    from pipeline.selfsr.train import train_net

    rng = np.random.default_rng(1)
    bank = PairBank(rng.random((32, 32, 4)).astype(np.float32), 4, SliceProfile("rect"), 4.0, foreground=0.0)
    plain, _ = train_net(bank, TINY)
    adv, summary = train_net(bank, dataclasses.replace(TINY, adv_steps=2))
    assert summary["adv_steps"] == 2
    changed = [not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), adv.state_dict().values(),
                                                       strict=True)]
    assert any(changed)


# ------------------------------------------------------------------------------------------ the workflow family
def test_selfsr_family_writes_a_recipe_and_infers_through_the_shared_path(tmp_path):
    """`train selfsr` learns nothing from the cohort: its model file is the recipe (no weights) and its history
    has no rows (no training curve, no error). `infer` with it trains on the scan itself and writes the output on
    the HR grid of the thick slices (`hr_affine_from_lr`), re-slicing exactly to the input (data consistency)."""
    import json

    from pipeline.config import EvaluateConfig
    from pipeline.evaluation.run import training_figures
    from pipeline.evaluation.tasks import Output
    from pipeline.imaging.geometry import hr_affine_from_lr
    from pipeline.inference.run import LoadedModel, infer_scans
    from pipeline.models.contract import load_model_file
    from pipeline.models.selfsr import SelfSR, SelfSRConfig
    from pipeline.training import run_training

    models = tmp_path / "models" / "selfsr"
    assert run_training("selfsr", json.dumps({"steps": 3, "tta": False}), tmp_path / "no-data", models) == 0
    blob = load_model_file(models / "model.pt")
    assert (blob["family"], blob["kind"], blob["settings"]["steps"]) == ("selfsr", "self-supervised", 3)
    from pipeline.export.provenance import model_info

    assert model_info(models / "model.pt").label == "SR self-supervised"  # DICOM SeriesDescription, BIDS
    assert not any(isinstance(v, torch.Tensor) for v in blob.values())
    assert (models / "history.csv").read_text() == "step\n"
    assert blob["modality"] == "T1w"
    assert SelfSR.recipe(SelfSRConfig(input="T2w"), 0)["modality"] == "T2w"  # the cohort's own T2w scans
    figs = training_figures([Output("selfsr", "selfsr", "sr", "T1w_thick", "T1w", "selfsr")], tmp_path / "models",
                            tmp_path / "figures", EvaluateConfig())
    assert figs == {}

    rng = np.random.default_rng(3)
    thick = (rng.random((20, 16, 5)) + 0.5).astype(np.float32)
    affine = np.array([[1.0, 0, 0, -10], [0, 1.0, 0, 4], [0, 0, 4.0, 30], [0, 0, 0, 1]])
    src = _write(tmp_path / "sub-001_T1w_thick.nii.gz", thick, affine)
    out = tmp_path / "sub-001_selfsr.nii.gz"
    assert infer_scans(models / "model.pt", [(src, out)], device="cpu") == {}
    img = nib.load(str(out))
    assert img.shape == (20, 16, 20)
    np.testing.assert_allclose(img.affine, hr_affine_from_lr(affine, (1, 1, 4)), atol=1e-9)
    resliced = reslice(np.asarray(img.dataobj, dtype=np.float64), 4, SliceProfile("rect"), 4.0, axis=2)
    np.testing.assert_allclose(resliced, thick, atol=1e-5)
    with pytest.raises(ValueError, match="--direction"):
        LoadedModel(models / "model.pt", direction="A2B", device="cpu")


def test_a_cohort_without_ground_truth_gets_panels_and_no_scores(tmp_path):
    """An output whose truth column is its input (selfsr of a cohort's own thick scans) is not scored; evaluation
    draws input / cubic / output panels per subject and the report shows them under the "no ground truth" note."""
    import json

    from pipeline.config import EvaluateConfig, ReportConfig
    from pipeline.evaluation.run import NO_GROUND_TRUTH, evaluate
    from pipeline.evaluation.tasks import Output
    from pipeline.imaging.degrade import upsample
    from pipeline.io.nifti import save_nifti
    from pipeline.io.tables import write_subjects
    from pipeline.report.build import build_report

    rng = np.random.default_rng(5)
    affine = np.diag([2.0, 2.0, 8.0, 1.0])
    rows = []
    for i, split in enumerate(("train", "test")):
        sub = f"sub-00{i + 1}"
        thick = rng.random((16, 16, 4)).astype(np.float32)
        rows.append({"subject": sub, "split": split,
                     "T2w": save_nifti(thick, affine, tmp_path / "pre" / sub / "T2w.nii.gz"),
                     "mask": save_nifti(np.ones((16, 16, 4), np.uint8), affine, tmp_path / "pre" / sub / "mask.nii.gz",
                                        dtype=np.uint8)})
        save_nifti(upsample(thick, 4, "bicubic", (2,)), np.diag([2.0, 2.0, 2.0, 1.0]),
                   tmp_path / "infer" / "selfsr" / f"{sub}_selfsr.nii.gz")
    write_subjects(rows, ["T2w"], [], tmp_path / "pre" / "subjects.tsv")
    own = Output("selfsr", "selfsr", "sr", "T2w", "T2w", "selfsr")
    summary = evaluate(tmp_path / "pre" / "subjects.tsv", [own], EvaluateConfig(figure_dpi=50),
                       infer_dir=tmp_path / "infer", histories=tmp_path / "models", metrics_dir=tmp_path / "metrics",
                       figures_dir=tmp_path / "figures", viewer_dir=tmp_path / "viewer")
    assert summary["tasks"] == {} and summary["models"] == {}
    [entry] = summary["skipped"]
    assert entry["reason"] == NO_GROUND_TRUTH
    assert sorted(entry["figures"]) == ["sub-001", "sub-002"]  # every subject with the scan, not only the test split
    assert all(Path(p).is_file() for p in entry["figures"].values())
    (tmp_path / "metrics" / "summary.json").write_text(json.dumps(summary))
    index = build_report(tmp_path / "metrics" / "summary.json", tmp_path / "reports", ReportConfig(),
                         subjects_tsv=tmp_path / "pre" / "subjects.tsv")[-1].read_text()
    assert "no ground truth" in index and 'src="assets/unscored/selfsr/sub-002.png"' in index
    assert (tmp_path / "reports" / "assets" / "unscored" / "selfsr" / "sub-002.png").is_file()


def test_the_recipe_records_its_views_and_an_older_recipe_keeps_two(monkeypatch):
    import pipeline.selfsr.run as run
    from pipeline.models.selfsr import SelfSR, SelfSRConfig

    seen = []

    def fake(volume, affine, profile, settings, data_consistency, where="the input"):
        seen.append(settings.rotations)
        return volume, affine, {}

    monkeypatch.setattr(run, "selfsr_volume", fake)
    blob = SelfSR.recipe(SelfSRConfig(steps=3), 0)
    assert blob["settings"]["rotations"] == [0.0, 45.0]
    volume, affine = np.ones((8, 8, 4), np.float32), np.diag([1.0, 1.0, 4.0, 1.0])
    SelfSR.apply(None, volume, blob, affine=affine)
    SelfSR.apply(None, volume, SelfSR.recipe(SelfSRConfig(steps=3, rotations=[0.0]), 0), affine=affine)
    del blob["settings"]["rotations"]  # a model file written before the diagonal views
    SelfSR.apply(None, volume, blob, affine=affine)
    assert seen == [(0.0, 45.0), (0.0,), (0.0,)]
