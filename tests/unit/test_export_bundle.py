"""MONAI bundles: `export-bundle` writes configs/metadata.json, configs/inference.json and models/model.pt, and
MONAI's runner (`monai.bundle run`: LoadImaged/Orientationd/SaveImaged around the bundle's network) gives the
same output as `python -m pipeline infer` for the same model and scan: an SR model with 2.5D context channels and
the interpolation skip (oblique geometry, normalised and raw input) and a CycleGAN model with a CT target (HU).

Tolerance: atol 1e-5 (float32 rounding; both paths call the same `apply`, so in practice the outputs are equal).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec

import numpy as np
import pytest
import torch

from pipeline.cli import main as cli
from pipeline.imaging.degrade import degrade, lr_affine, upsample
from pipeline.io.nifti import load_nifti, save_nifti
from pipeline.models.cyclegan import CycleGAN
from pipeline.models.srgan import SRGAN
from tests.unit.sr_helpers import smooth_volume, tiny_cfg
from tests.unit.test_cyclegan import _volumes
from tests.unit.test_cyclegan import tiny_cfg as tiny_cyclegan_cfg
from tests.unit.test_infer import META, oblique_affine

ATOL = 1e-5
CT_NORM = {"T1w": {"method": "percentile", "percentiles": [0.5, 99.5], "range": [0, 1]},
           "CT": {"method": "window", "window": [-1000.0, 2000.0], "unit": "HU"}}


def _perturbed(model, scale: float = 0.1):
    """Random weights on top of the initialisation (an untrained SRResNet's zero tail would output only its skip)."""
    with torch.no_grad():
        for net in model.networks.values():
            for p in net.parameters():
                p.add_(scale * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def sr_case(tmp_path_factory):
    """A 2D SR model x4 with 2 context slices on either side, its bundle and an LR scan on an oblique grid."""
    root = tmp_path_factory.mktemp("sr")
    torch.manual_seed(0)
    cfg = tiny_cfg(context_slices=2, sw_batch_size=3, roi_size=6, tta=False)  # 8x7 LR slices: several windows per slice
    _perturbed(SRGAN(cfg, factors=(4, 4, 1), slice_axis=2, meta=META)).export(root / "m")
    hr, _ = smooth_volume((32, 28, 6), seed=0)
    scan = save_nifti(degrade(hr, 4, "kspace", (0, 1)), lr_affine(oblique_affine(), 4, (0, 1)), root / "lr.nii.gz")
    assert cli(["export-bundle", "--model", str(root / "m" / "model.pt"), "--out", str(root / "bundle")]) == 0
    return root, scan


def _infer(model, scan, out, *extra):
    assert cli(["infer", "--model", str(model), "--input", str(scan), "--output", str(out), "--device", "cpu",
                *extra]) == 0
    return load_nifti(out)


def _bundle_run(bundle, scan, out_dir, **override):
    """`monai.bundle run` in this process (the function `python -m monai.bundle run` calls through fire)."""
    from monai.bundle import run

    path = list(sys.path)
    try:
        run(config_file=str(bundle / "configs" / "inference.json"), bundle_root=str(bundle), input_path=str(scan),
            output_dir=str(out_dir), device="$torch.device('cpu')", **override)
    finally:
        sys.path[:] = path  # the runner puts the bundle root on sys.path


def test_sr_bundle_files_and_metadata(sr_case):
    root, _ = sr_case
    bundle = root / "bundle"
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    for key in ("version", "monai_version", "pytorch_version", "numpy_version", "task", "description",
                "network_data_format", "required_packages_version"):
        assert meta[key], key
    assert "not for diagnosis" in meta["description"] and "synthetic" in meta["description"].lower()
    assert "medgan-pipeline" in meta["required_packages_version"]
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == 1 and fmt["inputs"]["image"]["value_range"] == [0.0, 1.0]
    assert "percentile" in fmt["inputs"]["image"]["normalisation"]
    assert fmt["outputs"]["pred"]["spatial_shape"] == ["4*n0", "4*n1", "*"]
    assert "x4" in meta["task"] and "2.5D" in meta["task"]
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    assert config["network_def"]["_target_"] == "pipeline.export.bundle.BundleNetwork"
    assert config["settings"] == {"roi_size": 6, "sw_batch_size": 3, "overlap": 0.25, "tta": False}
    assert str(root) not in json.dumps(config) + json.dumps(meta)  # no path of the machine that exported it
    # the weights: a plain state_dict of the generator, equal to the model file's
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    blob = torch.load(root / "m" / "model.pt", weights_only=True)
    assert state.keys() == blob["state_dict"].keys()
    assert all(torch.equal(state[k], blob["state_dict"][k]) for k in state)
    assert "monai.bundle run" in (bundle / "docs" / "README.md").read_text()


@pytest.mark.skipif(find_spec("fire") is None and not os.environ.get("CI"),
                    reason="`python -m monai.bundle` needs the fire package (pip install fire)")
def test_sr_bundle_from_the_command_line_equals_infer(sr_case, tmp_path):
    """The 2.5D case through the exact command a user types: context channels, skip, windows, HR affine; with
    test-time augmentation switched on from the command line (fire passes `true` as a string)."""
    root, scan = sr_case
    bundle = root / "bundle"
    want, want_affine = _infer(root / "m" / "model.pt", scan, tmp_path / "infer.nii.gz", "--tta")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
           "--bundle_root", str(bundle), "--input_path", str(scan), "--output_dir", str(tmp_path / "out"),
           "--settings#tta", "true"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    got, got_affine = load_nifti(tmp_path / "out" / "lr_sr.nii.gz")
    assert got.shape == want.shape == (32, 28, 6)
    np.testing.assert_allclose(got, want, atol=ATOL)
    np.testing.assert_allclose(got_affine, want_affine, atol=1e-6)
    lr, _ = load_nifti(scan)
    assert np.abs(want - upsample(lr, 4, "zerofill", (0, 1))).max() > 0.05  # the network did something
    plain, _ = _infer(root / "m" / "model.pt", scan, tmp_path / "plain.nii.gz")
    assert np.abs(plain - want).max() > 1e-3  # and TTA changed it: the override reached the network


def test_sr_bundle_on_a_raw_scan_equals_infer_normalise(sr_case, tmp_path):
    """`normalise` true: the model's percentile normalisation and back to the scan's units, as `infer --normalise`."""
    root, scan = sr_case
    lr, affine = load_nifti(scan)
    raw = save_nifti(40.0 + 900.0 * lr, affine, tmp_path / "raw.nii.gz")
    want, want_affine = _infer(root / "m" / "model.pt", raw, tmp_path / "infer.nii.gz", "--normalise")
    _bundle_run(root / "bundle", raw, tmp_path / "out", normalise=True)
    got, got_affine = load_nifti(tmp_path / "out" / "raw_sr.nii.gz")
    assert want.max() > 100  # in the scan's units
    np.testing.assert_allclose(got, want, atol=ATOL * 1000)  # float32 rounding at ~1e3
    np.testing.assert_allclose(got_affine, want_affine, atol=1e-6)


def test_cyclegan_bundle_equals_infer_in_hounsfield_units(tmp_path):
    torch.manual_seed(1)
    cfg = tiny_cyclegan_cfg(target="CT")
    CycleGAN(cfg, meta={"normalisation": CT_NORM}).export(tmp_path / "m")
    model = tmp_path / "m" / "model.pt"
    affine = np.diag([2.0, -2.0, 2.0, 1.0])  # not RAS: both paths reorient
    scan = save_nifti(_volumes(0)[0], affine, tmp_path / "t1.nii.gz")
    assert cli(["export-bundle", "--model", str(model), "--out", str(tmp_path / "bundle"), "--direction", "A2B"]) == 0
    meta = json.loads((tmp_path / "bundle" / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["value_range"] == [-1000.0, 2000.0]
    assert meta["network_data_format"]["outputs"]["pred"]["modality"] == "CT"
    want, want_affine = _infer(model, scan, tmp_path / "infer.nii.gz", "--direction", "A2B")
    _bundle_run(tmp_path / "bundle", scan, tmp_path / "out")
    got, got_affine = load_nifti(tmp_path / "out" / "t1_CT.nii.gz")
    assert want.min() >= -1000 and want.max() <= 2000 and want.std() > 1  # HU, not constant
    np.testing.assert_allclose(got, want, atol=ATOL * 3000)  # float32 rounding at ~1e3 HU
    np.testing.assert_allclose(got_affine, want_affine, atol=1e-6)


def test_export_bundle_errors(sr_case, tmp_path, caplog):
    root, _ = sr_case
    assert cli(["export-bundle", "--model", str(root / "m" / "model.pt"), "--out", str(tmp_path / "b"),
                "--direction", "A2B"]) == 1
    torch.save({"format": "something else"}, tmp_path / "x.pt")
    assert cli(["export-bundle", "--model", str(tmp_path / "x.pt"), "--out", str(tmp_path / "c")]) == 1
    assert "--direction is not for them" in caplog.text and "not a model file" in caplog.text
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_flags_from_the_command_line():
    from pipeline.export.bundle import flag

    assert flag("true") is True and flag("False") is False and flag(True) is True and flag(0) is False
    with pytest.raises(ValueError, match="true or false"):
        flag("yes")


def test_a_spec_monai_would_parse_is_refused():
    from pipeline.export.bundle import _check_plain

    _check_plain({"modality": "T1w", "factors": [4, 4, 1], "config": {"note": "a@b"}})
    for bad in ({"modality": "$import os"}, {"x": [{"_target_": "os.system"}]}, {"note": "@network"}):
        with pytest.raises(ValueError, match="parsed"):
            _check_plain(bad)
