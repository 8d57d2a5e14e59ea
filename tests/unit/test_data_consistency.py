"""Data consistency (issue #14): the corrected SR output degrades exactly to its LR input, leaves a consistent
image alone, moves a wrong one towards the truth; SRGAN.apply, `infer` and the workflow switch it on and off."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from pipeline.imaging.degrade import data_consistency, degrade, lowpass, upsample
from pipeline.models.srgan import SRGAN, generator_kwargs
from pipeline.nets.srresnet import SRResNet
from tests.unit.sr_helpers import smooth_volume, tiny_cfg

# (method, scale, axes, HR shape): k-space in-plane and 3D with odd and even LR sizes and an even scale (the
# half-voxel shift), block means, bicubic
CASES = [
    ("kspace", 4, (0, 1), (32, 36, 5)),  # LR 8 x 9: one even, one odd
    ("kspace", 3, (0, 1), (9, 15, 4)),
    ("kspace", 2, (0, 1, 2), (10, 12, 14)),  # LR 5 x 6 x 7
    ("area", 2, (0, 1, 2), (8, 6, 10)),
    ("area", 3, (0, 1), (9, 12, 5)),
    ("thick_slice", 3, (2,), (5, 6, 9)),
    ("thick_slice", 4, (0,), (16, 3, 4)),
    ("bicubic", 4, (0, 1), (32, 36, 5)),
    ("bicubic", 3, (0, 1, 2), (9, 12, 15)),
]


def lr_shape(shape, scale, axes):
    return tuple(n // scale if a in axes else n for a, n in enumerate(shape))


@pytest.mark.parametrize(("method", "scale", "axes", "shape"), CASES)
def test_output_degrades_to_the_measured_lr(method, scale, axes, shape):
    rng = np.random.default_rng(0)
    sr = rng.random(shape).astype(np.float32)
    measured = degrade(rng.random(shape), scale, method, axes)  # a real measurement: in the range of `degrade`
    anything = rng.random(lr_shape(shape, scale, axes)).astype(np.float32)
    for lr in (measured, anything):
        out = data_consistency(sr, lr, scale, method, axes)
        assert out.dtype == np.float32 and out.shape == shape
        if method == "kspace" and lr is anything:
            # an even LR length has a Nyquist line `degrade` never measures (always 0 in its output): matched
            # up to that line, i.e. to what zero filling keeps of `lr`
            lr = degrade(upsample(lr, scale, "zerofill", axes).astype(np.float64), scale, method, axes)
        np.testing.assert_allclose(degrade(out, scale, method, axes), lr, atol=1e-5)


@pytest.mark.parametrize(("method", "scale", "axes", "shape"), CASES)
def test_the_truth_is_left_alone(method, scale, axes, shape):
    hr, _ = smooth_volume(shape, seed=1)
    out = data_consistency(hr, degrade(hr, scale, method, axes), scale, method, axes)
    np.testing.assert_allclose(out, hr, atol=1e-6)


@pytest.mark.parametrize(("scale", "axes", "shape"), [(4, (0, 1), (32, 36, 5)), (2, (0, 1, 2), (10, 12, 14))])
def test_kspace_replaces_the_central_band(scale, axes, shape):
    rng = np.random.default_rng(2)
    sr, lr = rng.random(shape), degrade(rng.random(shape), scale, "kspace", axes).astype(np.float64)
    expected = sr - lowpass(sr, scale, axes) + upsample(lr, scale, "zerofill", axes)
    np.testing.assert_allclose(data_consistency(sr, lr, scale, "kspace", axes), expected, atol=1e-6)


@pytest.mark.parametrize(("method", "scale", "axes", "shape"), CASES)
def test_a_low_frequency_error_is_taken_out(method, scale, axes, shape):
    from scipy import ndimage

    hr, _ = smooth_volume(shape, seed=3)
    error = ndimage.gaussian_filter(np.random.default_rng(4).standard_normal(shape), 3.0, mode="wrap")
    sr = hr + (0.1 / error.std() * error).astype(np.float32)
    out = data_consistency(sr, degrade(hr, scale, method, axes), scale, method, axes)

    def psnr(x):
        return 10 * np.log10(1 / np.mean((x - hr) ** 2))

    assert psnr(out) > psnr(sr) + 3


def test_bad_arguments_raise():
    sr = np.zeros((8, 8, 4), np.float32)
    with pytest.raises(ValueError, match="unknown method"):
        data_consistency(sr, np.zeros((2, 2, 4)), 4, "gaussian", (0, 1))
    with pytest.raises(ValueError, match="does not match"):
        data_consistency(sr, np.zeros((2, 4, 4)), 4, "kspace", (0, 1))
    with pytest.raises(ValueError, match="one axis"):
        data_consistency(sr, np.zeros((2, 2, 4)), 4, "thick_slice", (0, 1))
    np.testing.assert_array_equal(data_consistency(sr, np.ones((8, 8, 4)), 1, "kspace", (0,)), 1.0)


# ------------------------------------------------------------------------------------------ SRGAN.apply
def tiny_blob(method="kspace", **inference):
    """An untrained 2D x4 in-plane generator with a bicubic skip (so its output is not consistent with a
    k-space LR input) and the model-file entries `apply` reads."""
    torch.manual_seed(0)
    net = SRResNet(**generator_kwargs(tiny_cfg(spatial_dims=2, interp_skip="bicubic"), [4, 4])).eval()
    blob = {"sr": {"factors": [4, 4, 1], "spatial_dims": 2, "slice_axis": 2, "context_slices": 0},
            "degradation": {"method": method, "scale": 4, "axes": [0, 1]},
            "inference": {"roi_size": 16, "sw_batch_size": 4, **inference}}
    return net, blob


def test_apply_makes_the_output_consistent_unless_switched_off():
    hr, _ = smooth_volume((32, 28, 3), seed=5)
    lr = degrade(hr, 4, "kspace", (0, 1))
    net, blob = tiny_blob()
    on = SRGAN.apply(net, lr, blob)
    np.testing.assert_allclose(degrade(on, 4, "kspace", (0, 1)), lr, atol=1e-5)
    off = SRGAN.apply(net, lr, blob, data_consistency=False)
    assert np.abs(degrade(off, 4, "kspace", (0, 1)) - lr).max() > 1e-3
    np.testing.assert_allclose(on, data_consistency(off, lr, 4, "kspace", (0, 1)), atol=1e-6)
    _, blob_off = tiny_blob(data_consistency=False)  # the model file's setting, overridden by the argument
    np.testing.assert_array_equal(SRGAN.apply(net, lr, blob_off), off)
    np.testing.assert_array_equal(SRGAN.apply(net, lr, blob_off, data_consistency=True), on)


def test_apply_skips_with_a_warning_without_a_known_degradation(caplog):
    lr = np.random.default_rng(6).random((8, 7, 2)).astype(np.float32)
    net, blob = tiny_blob()
    off = SRGAN.apply(net, lr, blob, data_consistency=False)
    for degradation in ({}, {"method": "gaussian"}, {"method": "kspace", "scale": 2}, {"method": "area", "axes": "all"}):
        blob["degradation"] = degradation
        with caplog.at_level(logging.WARNING, logger="pipeline.models.srgan"):
            caplog.clear()
            np.testing.assert_array_equal(SRGAN.apply(net, lr, blob), off)
        assert "data consistency skipped" in caplog.text
    blob["degradation"] = {"method": "area", "scale": 4, "axes": "inplane"}
    np.testing.assert_allclose(degrade(SRGAN.apply(net, lr, blob), 4, "area", (0, 1)), lr, atol=1e-5)


def test_infer_flag_and_workflow_keys(tmp_path):
    from pipeline.cli import main as cli
    from pipeline.io.nifti import load_nifti, save_nifti
    from pipeline.workflow import infer_arguments, train_params
    from pipeline.workflow_config import load_workflow_config

    hr, _ = smooth_volume((32, 32, 4), seed=7)
    lr = degrade(hr, 4, "kspace", (0, 1))
    torch.manual_seed(0)
    meta = {"modality": "T1w", "normalisation": {"method": "percentile", "percentiles": [0.5, 99.5]},
            "degradation": {"method": "kspace", "scale": 4, "axes": [0, 1]}}
    SRGAN(tiny_cfg(spatial_dims=2, interp_skip="bicubic"), factors=(4, 4, 1), slice_axis=2, meta=meta).export(tmp_path)
    src = save_nifti(lr, np.eye(4), tmp_path / "lr.nii.gz")
    gaps = {}
    for flag in ("--data-consistency", "--no-data-consistency"):
        out = tmp_path / f"{flag}.nii.gz"
        assert cli(["infer", "--model", str(tmp_path / "model.pt"), "--input", str(src), "--output", str(out),
                    flag]) == 0
        gaps[flag] = np.abs(degrade(load_nifti(out)[0], 4, "kspace", (0, 1)) - lr).max()
    assert gaps["--data-consistency"] < 1e-5 < 1e-3 < gaps["--no-data-consistency"]

    defaults = load_workflow_config({}).model_dump()
    cfg = {**defaults, "srgan": {**defaults["srgan"], "data_consistency": False}}
    assert "data_consistency" not in train_params(cfg, "srgan")
    srgan = next(o for o in SRGAN.outputs(tiny_cfg()) if o.name == "srgan")
    assert "--no-data-consistency" in infer_arguments(cfg, srgan)
