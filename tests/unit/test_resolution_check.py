"""Resolution-aware SR models: the model file records the training voxel sizes, and infer checks a scan against
them (refuse by default, resample onto the model's grid and back, or ignore with a warning)."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline.cli import main as cli
from pipeline.imaging import degrade as degrade_module
from pipeline.imaging.degrade import degrade, lr_affine
from pipeline.imaging.geometry import hr_affine_from_lr, voxel_sizes
from pipeline.inference.resolution import grid_with_spacing, infer_resampled, resample
from pipeline.inference.run import infer_scan
from pipeline.io.nifti import load_nifti, save_nifti
from pipeline.models.srgan import SRGAN
from tests.unit.sr_helpers import make_sr_dataset, smooth_volume, tiny_cfg
from tests.unit.test_infer import META, oblique_affine

RESOLUTION = {"hr_spacing": [2.0, 2.0, 2.0], "lr_spacing": [8.0, 8.0, 2.0]}  # the demo's: 4x in-plane k-space


def export_model(path, resolution=RESOLUTION, interp_skip="trilinear"):
    """An untrained 2D x4 in-plane model file (it outputs its interpolation skip), trained 'at' `resolution`."""
    torch.manual_seed(0)
    meta = {**META, "degradation": {"method": "kspace", "scale": 4, "axes": [0, 1]}}
    if resolution is not None:
        meta["resolution"] = resolution
    SRGAN(tiny_cfg(spatial_dims=2, interp_skip=interp_skip), factors=(4, 4, 1), slice_axis=2, meta=meta).export(path)
    return path / "model.pt"


def scan(tmp_path, spacing, shape=(12, 12, 6), name="lr.nii.gz", affine=None):
    """A smooth LR scan with voxel size `spacing` (mm)."""
    data, _ = smooth_volume(shape, seed=3)
    aff = np.diag([*spacing, 1.0]) if affine is None else affine
    return save_nifti(data, aff, tmp_path / name), aff


def run(model, src, out, *extra):
    return cli(["infer", "--model", str(model), "--input", str(src), "--output", str(out), *extra])


def test_model_file_records_the_training_voxel_sizes(tmp_path, caplog):
    data = make_sr_dataset(tmp_path / "d", shape=(32, 32, 8), scale=4, axes=(0, 1), spacing=(2.0, 2.0, 2.0))
    sampler, kwargs = SRGAN.prepare_data(tiny_cfg(), data, 0)
    sampler.close()
    assert kwargs["meta"]["resolution"] == RESOLUTION
    blob = SRGAN(tiny_cfg(), **kwargs).model_file("srgan", {}, 0)
    assert blob["resolution"] == RESOLUTION and blob["degradation"] == {"method": "kspace", "scale": 4, "axes": [0, 1]}
    assert "resolution" not in SRGAN(tiny_cfg(), factors=(4, 4, 1), slice_axis=2, meta=META).model_file("srgan", {}, 0)
    # a training subject on another grid: the first one's is recorded, the difference logged
    for name, spacing in (("T1w", (2.5, 2.5, 2.5)), ("T1w_lr", (10.0, 10.0, 2.5))):
        path = data / "sub-002" / f"{name}.nii.gz"
        save_nifti(load_nifti(path)[0], np.diag([*spacing, 1.0]), path)
    with caplog.at_level(logging.WARNING):
        sampler, kwargs = SRGAN.prepare_data(tiny_cfg(), data, 0)
    sampler.close()
    assert kwargs["meta"]["resolution"] == RESOLUTION
    assert "sub-002 10x10x2.5 mm -> 2.5x2.5x2.5 mm" in caplog.text


def test_a_scan_at_the_models_spacing_runs(tmp_path, caplog):
    model = export_model(tmp_path / "m")
    src, aff = scan(tmp_path, (8.4, 7.7, 2.1))  # within 10% on every axis
    with caplog.at_level(logging.WARNING):
        assert run(model, src, tmp_path / "sr.nii.gz") == 0
    assert not [r for r in caplog.records if r.name.startswith("pipeline.inference")]
    out, out_aff = load_nifti(tmp_path / "sr.nii.gz")
    assert out.shape == (48, 48, 6)
    np.testing.assert_allclose(out_aff, hr_affine_from_lr(aff, (4, 4, 1)), atol=1e-5)


def test_a_finer_scan_is_refused_by_default(tmp_path, caplog):
    model = export_model(tmp_path / "m")
    src, _ = scan(tmp_path, (4.0, 4.0, 1.0))
    assert run(model, src, tmp_path / "sr.nii.gz") == 1
    assert not (tmp_path / "sr.nii.gz").exists()
    for text in ("4x4x1 mm", "8x8x2 mm", "2x2x2 mm", "--resolution-mismatch resample", "--resolution-mismatch ignore"):
        assert text in caplog.text
    with pytest.raises(ValueError, match=r"voxel size 4x4x1 mm.*trained on inputs of 8x8x2 mm"):
        infer_scan(model, src, tmp_path / "sr.nii.gz", device="cpu")
    with pytest.raises(ValueError, match="unknown resolution-mismatch mode"):
        infer_scan(model, src, tmp_path / "sr.nii.gz", device="cpu", resolution_mismatch="guess")


def test_ignore_runs_and_warns(tmp_path, caplog):
    model = export_model(tmp_path / "m")
    src, aff = scan(tmp_path, (4.0, 4.0, 1.0))
    with caplog.at_level(logging.WARNING):
        assert run(model, src, tmp_path / "sr.nii.gz", "--resolution-mismatch", "ignore") == 0
    assert "4x4x1 mm" in caplog.text and "8x8x2 mm" in caplog.text and "applied as it is" in caplog.text
    out, out_aff = load_nifti(tmp_path / "sr.nii.gz")
    assert out.shape == (48, 48, 6)
    np.testing.assert_allclose(out_aff, hr_affine_from_lr(aff, (4, 4, 1)), atol=1e-5)


def test_a_model_file_without_resolution_runs_as_before(tmp_path, caplog):
    model = export_model(tmp_path / "m", resolution=None)
    assert "resolution" not in torch.load(model, weights_only=True)
    src, _ = scan(tmp_path, (4.0, 4.0, 1.0))
    with caplog.at_level(logging.INFO):
        assert run(model, src, tmp_path / "sr.nii.gz") == 0
    assert "does not say what voxel size it was trained on" in caplog.text
    assert load_nifti(tmp_path / "sr.nii.gz")[0].shape == (48, 48, 6)


def test_resample_writes_the_inputs_hr_grid_with_the_content_in_place(tmp_path, caplog):
    """An oblique scan at half the model's spacing: the output lies on the HR grid the input implies, and a blob
    at a known world position is found there."""
    model = export_model(tmp_path / "m")
    hr_aff = oblique_affine(spacing=(1.0, 1.0, 1.0))
    shape = (64, 64, 12)
    target_vox = np.array([30.3, 35.8, 5.5])
    world = hr_aff @ np.append(target_vox, 1)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    hr = np.exp(-(((ijk - target_vox) / [6.0, 6.0, 3.0]) ** 2).sum(-1)).astype(np.float32)
    aff = lr_affine(hr_aff, 4, (0, 1))  # 4x4x1 mm
    src = save_nifti(degrade(hr, 4, "kspace", (0, 1)), aff, tmp_path / "lr.nii.gz")
    with caplog.at_level(logging.INFO):
        assert run(model, src, tmp_path / "sr.nii.gz", "--resolution-mismatch", "resample") == 0
    assert "resampled 4x4x1 mm -> the model's 8x8x2 mm grid" in caplog.text and "and back" in caplog.text
    out, out_aff = load_nifti(tmp_path / "sr.nii.gz")
    assert out.shape == shape and np.isfinite(out).all()
    np.testing.assert_allclose(out_aff, hr_aff, atol=1e-5)
    w = np.clip(out, 0, None) ** 2
    found = out_aff @ np.append([(w * ijk[..., k]).sum() / w.sum() for k in range(3)], 1)
    assert np.linalg.norm(found[:3] - world[:3]) < 1.0  # mm; the model's LR voxels are 8 x 8 x 2 mm
    assert np.corrcoef(out.ravel(), hr.ravel())[0, 1] > 0.9  # blurred by the 8 mm grid


BLOB = {"sr": {"factors": [4, 4, 1], "scale": 4, "axes": [0, 1]}, "resolution": RESOLUTION,
        "degradation": {"method": "kspace", "scale": 4, "axes": [0, 1]}, "inference": {}}


def nearest_x4(x):
    """A stand-in for the model: nearest x4 in-plane."""
    return np.repeat(np.repeat(x, 4, 0), 4, 1), "normalised [0, 1]"


def test_resample_enforces_data_consistency_with_the_measured_input(caplog, monkeypatch):
    calls = []

    def fake_consistency(sr, lr, scale, method, axes):
        calls.append((sr.shape, lr.shape, scale, method, axes))
        return np.zeros_like(sr)

    monkeypatch.setattr(degrade_module, "data_consistency", fake_consistency)
    aff = np.diag([4.0, 4.0, 1.0, 1.0])
    data = np.random.default_rng(0).random((12, 12, 6)).astype(np.float32)
    with caplog.at_level(logging.INFO):
        out, _ = infer_resampled(nearest_x4, data, aff, BLOB, hr_affine_from_lr(aff, (4, 4, 1)))
    assert calls == [((48, 48, 6), (12, 12, 6), 4, "kspace", (0, 1))]
    assert "made consistent with the input (kspace x4" in caplog.text and not out.any()


def test_resample_output_degrades_to_the_measured_input(tmp_path, caplog):
    """With the real `data_consistency`, in the input's own units (a raw scan, --normalise)."""
    model = export_model(tmp_path / "m")
    hr, _ = smooth_volume((48, 48, 6), seed=4)
    lr = 200.0 + 700.0 * degrade(hr, 4, "kspace", (0, 1))
    src = save_nifti(lr, np.diag([4.0, 4.0, 1.0, 1.0]), tmp_path / "raw.nii.gz")
    with caplog.at_level(logging.INFO):
        infer_scan(model, src, tmp_path / "sr.nii.gz", normalise=True, device="cpu", resolution_mismatch="resample")
    assert "made consistent with the input (kspace x4 along axes [0, 1])" in caplog.text
    out = load_nifti(tmp_path / "sr.nii.gz")[0]
    np.testing.assert_allclose(degrade(out, 4, "kspace", (0, 1)), lr, atol=1e-3 * lr.max())
    caplog.clear()
    with caplog.at_level(logging.INFO):
        infer_scan(model, src, tmp_path / "sr2.nii.gz", normalise=True, device="cpu", resolution_mismatch="resample",
                   data_consistency=False)
    assert "no data consistency with the input (switched off)" in caplog.text


def test_lr_grid_keeps_the_field_of_view_and_resampling_is_exact_on_the_same_grid():
    aff = oblique_affine(spacing=(3.76, 3.76, 0.94))
    shape, new = grid_with_spacing((64, 64, 256), aff, (8.0, 8.0, 2.0))
    assert shape == (30, 30, 120)
    np.testing.assert_allclose(voxel_sizes(new), [8.0, 8.0, 2.0])
    centre = lambda a, n: a @ np.append((np.asarray(n) - 1) / 2, 1)  # noqa: E731
    np.testing.assert_allclose(centre(new, shape), centre(aff, (64, 64, 256)), atol=1e-9)
    np.testing.assert_allclose(new[:3, :3] / voxel_sizes(new), aff[:3, :3] / voxel_sizes(aff), atol=1e-12)
    data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    np.testing.assert_allclose(resample(data, aff, data.shape, aff), data, atol=1e-5)
    assert nib  # the tests read outputs with nibabel (via pipeline.io.nifti)
