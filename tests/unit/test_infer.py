"""Inference geometry: the output overlays the ground truth (affine and world coordinates), whole volumes in
2D (slice batches) and 3D (sliding windows), raw scans with --normalise, DICOM folders, clear errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline.cli import main as cli
from pipeline.config import to_dict
from pipeline.imaging.degrade import degrade, lr_affine, upsample
from pipeline.imaging.geometry import hr_affine_from_lr
from pipeline.io.nifti import load_nifti, save_nifti
from pipeline.models.srgan import SRGAN
from tests.unit.sr_helpers import smooth_volume, tiny_cfg

META = {"modality": "T1w", "normalisation": {"method": "percentile", "percentiles": [0.5, 99.5], "range": [0, 1]}}


def oblique_affine(spacing=(1.5, 1.5, 2.0)) -> np.ndarray:
    """A rotated, shifted voxel -> world affine (a real scan is rarely axis-aligned)."""
    a, b = np.deg2rad(20), np.deg2rad(-10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag(spacing)
    aff[:3, 3] = [-40.0, 12.5, 7.0]
    return aff


def export_model(tmp_path, spatial_dims=2, factors=(4, 4, 1), **cfg):
    """An untrained model file (its tail is zero, so it outputs exactly its interpolation skip)."""
    torch.manual_seed(0)
    c = tiny_cfg(spatial_dims=spatial_dims, **cfg)
    model = SRGAN(c, factors=factors, slice_axis=2 if spatial_dims == 2 else None, meta=META)
    model.export(tmp_path)
    return tmp_path / "model.pt"


@pytest.mark.parametrize(("scale", "axes"), [(2, (0, 1)), (4, (0, 1)), (2, (0, 1, 2)), (4, (2,))])
def test_hr_affine_inverts_lr_affine(scale, axes):
    hr = oblique_affine()
    factors = [scale if a in axes else 1 for a in range(3)]
    np.testing.assert_allclose(hr_affine_from_lr(lr_affine(hr, scale, axes), factors), hr, atol=1e-12)


def test_2d_output_is_on_the_hr_grid_and_equals_the_skip_when_untrained(tmp_path):
    hr_aff = oblique_affine()
    hr, _ = smooth_volume((32, 28, 6), seed=0)
    lr = degrade(hr, 4, "kspace", (0, 1))
    src = save_nifti(lr, lr_affine(hr_aff, 4, (0, 1)), tmp_path / "lr.nii.gz")
    model = export_model(tmp_path / "m", interp_skip="zerofill", sw_batch_size=2)
    assert cli(["infer", "--model", str(model), "--input", str(src), "--output", str(tmp_path / "sr.nii.gz")]) == 0
    out, aff = load_nifti(tmp_path / "sr.nii.gz")
    assert out.shape == hr.shape
    np.testing.assert_allclose(aff, hr_aff, atol=1e-5)  # NIfTI stores the affine in float32
    np.testing.assert_allclose(out, upsample(lr, 4, "zerofill", (0, 1)), atol=1e-5)


def test_world_coordinates_align(tmp_path):
    """A blob at a known world position is found at that position in the output."""
    hr_aff = oblique_affine(spacing=(1.0, 1.0, 1.0))
    shape = (40, 40, 8)
    target_vox = np.array([21.3, 17.8, 3.5])
    world = hr_aff @ np.append(target_vox, 1)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    hr = np.exp(-(((ijk - target_vox) / [3.0, 3.0, 100.0]) ** 2).sum(-1)).astype(np.float32)
    lr = degrade(hr, 4, "area", (0, 1))
    src = save_nifti(lr, lr_affine(hr_aff, 4, (0, 1)), tmp_path / "lr.nii.gz")
    model = export_model(tmp_path / "m", interp_skip="trilinear")
    cli(["infer", "--model", str(model), "--input", str(src), "--output", str(tmp_path / "sr.nii.gz")])
    out, aff = load_nifti(tmp_path / "sr.nii.gz")
    w = np.clip(out[..., 3], 0, None) ** 2
    centroid = np.array([(w * ijk[..., 3, k]).sum() / w.sum() for k in range(2)] + [3.5])
    found = aff @ np.append(centroid, 1)
    assert np.linalg.norm(found[:3] - world[:3]) < 0.3  # mm, with 1 mm HR voxels and 4 mm LR voxels


def test_3d_sliding_window_whole_volume(tmp_path):
    hr, _ = smooth_volume((24, 24, 24), seed=1)
    lr = degrade(hr, 2, "kspace", (0, 1, 2))
    src = save_nifti(lr, lr_affine(np.eye(4), 2, (0, 1, 2)), tmp_path / "lr.nii.gz")
    model = export_model(tmp_path / "m", spatial_dims=3, factors=(2, 2, 2), patch_size=8, roi_size=5)
    cli(["infer", "--model", str(model), "--input", str(src), "--output", str(tmp_path / "sr.nii.gz")])
    out, aff = load_nifti(tmp_path / "sr.nii.gz")
    assert out.shape == (24, 24, 24)
    np.testing.assert_allclose(aff, np.eye(4), atol=1e-6)
    np.testing.assert_allclose(out, upsample(lr, 2, "zerofill", (0, 1, 2)), atol=1e-5)


class PointwiseUpsampler(torch.nn.Module):
    """A stand-in generator whose residual is voxel-wise (nearest upsampling of a non-linear map), so any
    correct tiling of the volume gives exactly the one-window result."""

    def __init__(self, factors):
        super().__init__()
        self.factors = factors

    def residual(self, x):
        y = torch.sin(3 * x) + x**2
        for d, f in enumerate(self.factors):
            y = y.repeat_interleave(f, dim=2 + d)
        return y

    def skip(self, x):
        return None


@pytest.mark.parametrize(("dims", "shape"), [(3, (10, 9, 7)), (2, (11, 9, 4))])
def test_sliding_window_tiles_agree_with_one_window(dims, shape):
    from pipeline.models.srgan import super_resolve

    factors = (2, 2, 2) if dims == 3 else (2, 2, 1)
    model_factors = factors if dims == 3 else factors[:2]
    sr = {"factors": list(factors), "spatial_dims": dims, "slice_axis": None if dims == 3 else 2}
    lr = np.random.default_rng(0).random(shape).astype(np.float32)
    gen = PointwiseUpsampler(model_factors)
    whole = super_resolve(lr, gen, sr, roi_size=64, sw_batch_size=2)
    tiled = super_resolve(lr, gen, sr, roi_size=4, sw_batch_size=3, overlap=0.5)
    assert whole.shape == tuple(n * f for n, f in zip(shape, factors, strict=True))
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    expected = np.sin(3 * lr) + lr**2
    for a, f in enumerate(factors):
        expected = np.repeat(expected, f, axis=a)
    np.testing.assert_allclose(whole, expected, atol=1e-5)


def test_normalise_maps_a_raw_scan_and_back(tmp_path):
    hr, _ = smooth_volume((32, 32, 6), seed=2)
    lr = degrade(hr, 4, "kspace", (0, 1)) + 0.05
    model = export_model(tmp_path / "m", interp_skip="zerofill")
    outs = []
    for name, a, b in (("x", 0.0, 1.0), ("raw", 250.0, 900.0)):
        src = save_nifti(a + b * lr, lr_affine(np.eye(4), 4, (0, 1)), tmp_path / f"{name}.nii.gz")
        cli(["infer", "--model", str(model), "--input", str(src), "--output", str(tmp_path / f"{name}_sr.nii.gz"),
             "--normalise"])
        outs.append(load_nifti(tmp_path / f"{name}_sr.nii.gz")[0])
    # percentile normalisation is invariant to a + b*x, and the output is mapped back to the input's units
    np.testing.assert_allclose(outs[1], 250.0 + 900.0 * outs[0], rtol=1e-4, atol=1e-2)
    assert outs[1].max() > 100


def test_dicom_folder_input(tmp_path, make_dicom_series):
    lr = (np.random.default_rng(0).random((8, 8, 5)) * 1000).astype(np.int16)
    folder = make_dicom_series("lr", data=lr, affine=np.diag([4.0, 4.0, 2.0, 1.0]))
    model = export_model(tmp_path / "m", interp_skip="nearest")
    assert cli(["infer", "--model", str(model), "--input", str(folder), "--output", str(tmp_path / "sr.nii.gz")]) == 0
    out, aff = load_nifti(tmp_path / "sr.nii.gz")
    assert out.shape == (32, 32, 5)
    np.testing.assert_allclose(np.linalg.norm(aff[:3, :3], axis=0), [1.0, 1.0, 2.0], atol=1e-4)
    assert abs(out.max() - lr.max()) < 1  # nearest skip, untrained: the input values, upsampled


def test_clear_errors(tmp_path, caplog):
    bogus = tmp_path / "bogus.pt"
    torch.save({"step": 3}, bogus)
    src = save_nifti(np.zeros((4, 4, 2), np.float32), np.eye(4), tmp_path / "x.nii.gz")
    assert cli(["infer", "--model", str(bogus), "--input", str(src), "--output", str(tmp_path / "o.nii.gz")]) == 1
    assert "not a model file" in caplog.text and "model.pt" in caplog.text
    model = export_model(tmp_path / "m")
    assert cli(["infer", "--model", str(model), "--input", str(tmp_path / "nope.nii.gz"),
                "--output", str(tmp_path / "o.nii.gz")]) == 1
    assert "nope.nii.gz" in caplog.text


def test_several_scans_in_one_run_and_one_bad_scan_costs_no_other(tmp_path, caplog):
    """Repeated --input/--output pairs share one model load; a scan that fails is named, the others are written
    (identical to one-scan runs), the exit status is 1 and --listing is written only when every scan succeeded."""
    hr_aff = oblique_affine()
    model = export_model(tmp_path / "m", interp_skip="zerofill", sw_batch_size=2)
    scans = []
    for i in range(2):
        hr, _ = smooth_volume((32, 28, 6), seed=i)
        scans.append(save_nifti(degrade(hr, 4, "kspace", (0, 1)), lr_affine(hr_aff, 4, (0, 1)), tmp_path / f"lr{i}.nii.gz"))
    assert cli(["infer", "--model", str(model), "--input", str(scans[1]), "--output", str(tmp_path / "one.nii.gz")]) == 0
    listing = tmp_path / "outputs.tsv"
    pairs = ["--input", str(scans[0]), "--output", str(tmp_path / "a.nii.gz"),
             "--input", str(tmp_path / "missing.nii.gz"), "--output", str(tmp_path / "b.nii.gz"),
             "--input", str(scans[1]), "--output", str(tmp_path / "c.nii.gz")]
    assert cli(["infer", "--model", str(model), *pairs, "--listing", str(listing)]) == 1
    assert "missing.nii.gz" in caplog.text and "1 of 3 scan(s) failed" in caplog.text
    assert (tmp_path / "a.nii.gz").is_file() and not (tmp_path / "b.nii.gz").exists() and not listing.exists()
    np.testing.assert_array_equal(load_nifti(tmp_path / "c.nii.gz")[0], load_nifti(tmp_path / "one.nii.gz")[0])
    del pairs[4:8]  # without the missing scan: all written, listed in order
    assert cli(["infer", "--model", str(model), *pairs, "--listing", str(listing)]) == 0
    rows = [line.split("\t") for line in listing.read_text().splitlines()]
    assert rows == [["input", "output", "note"], [str(scans[0]), str(tmp_path / "a.nii.gz"), ""],
                    [str(scans[1]), str(tmp_path / "c.nii.gz"), ""]]  # (no note: the model made them)
    assert cli(["infer", "--model", str(model), "--input", str(scans[0]), "--input", str(scans[1]),
                "--output", str(tmp_path / "d.nii.gz")]) == 1
    assert "give them in pairs" in caplog.text


def test_model_file_is_self_describing(tmp_path):
    blob = torch.load(export_model(tmp_path), weights_only=True)
    assert {"format", "task", "kind", "package_version", "generator", "state_dict", "sr", "normalisation",
            "inference", "training"} <= set(blob)
    assert blob["sr"]["factors"] == [4, 4, 1] and blob["sr"]["slice_axis"] == 2
    assert blob["training"]["config"] == to_dict(tiny_cfg()) | {"betas": blob["training"]["config"]["betas"]}
    assert nib  # nibabel is what the tests read outputs with (via pipeline.io.nifti)
