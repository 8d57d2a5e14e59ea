"""Super-resolution physics on a real scan of `../shared/corpus/real_brain_ms` (skipped without the corpus, as in a
user's clone): data consistency is exact and helps on real anatomy, and a model trained at the demo's voxel size
refuses the real 1 mm scan's LR input by default, naming both voxel sizes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.imaging.degrade import data_consistency, degrade, lr_affine, upsample
from pipeline.io.nifti import load_nifti, save_nifti
from tests.conftest import CORPUS

T1W = CORPUS / "real_brain_ms" / "sub-ms07" / "anat" / "sub-ms07_T1w.nii.gz"
pytestmark = pytest.mark.skipif(not T1W.is_file(), reason="../shared/corpus/real_brain_ms is not beside the clone")


@pytest.fixture(scope="module")
def slab():
    """A 40-slice axial slab through the middle of the real T1w, normalised to [0, 1] inside the brain."""
    data, _ = load_nifti(T1W)
    data = data[1:181, 1:217, 70:110].astype(np.float32)  # in-plane sides divisible by 4
    brain = data > 0
    data = np.clip(data / np.percentile(data[brain], 99.5), 0, 1) * brain
    affine = np.diag([1.0, 1.0, 1.0, 1.0])  # the corpus' 1 mm voxels, on a RAS grid
    affine[:3, 3] = [-90.0, -108.0, -20.0]
    return data.astype(np.float32), brain, affine


def _psnr(pred, truth, mask):
    return 10 * np.log10(1.0 / np.mean((np.clip(pred, 0, 1) - truth)[mask] ** 2))


def test_data_consistency_is_exact_and_helps_on_a_real_scan(slab):
    hr, brain, _ = slab
    lr = degrade(hr, 4, "kspace", (0, 1))
    cubic = upsample(lr, 4, "bicubic", (0, 1))
    fixed = data_consistency(cubic, lr, 4, "kspace", (0, 1))
    np.testing.assert_allclose(degrade(fixed, 4, "kspace", (0, 1)), lr, atol=1e-5)
    assert _psnr(fixed, hr, brain) > _psnr(cubic, hr, brain) + 0.2


def test_a_demo_resolution_model_refuses_the_real_scans_lr_input(slab, tmp_path):
    from pipeline.inference.run import infer_scan
    from tests.unit.test_resolution_check import export_model

    hr, _, affine = slab
    lr = degrade(hr, 4, "kspace", (0, 1))
    path = save_nifti(lr, lr_affine(affine, 4, (0, 1)), tmp_path / "lr.nii.gz")
    model = export_model(tmp_path / "m")  # trained 'at' 2 mm HR / 8 x 8 x 2 mm LR, as the demo is
    with pytest.raises(ValueError, match=r"4x4x1 mm.*8x8x2 mm") as info:
        infer_scan(model, path, tmp_path / "out.nii.gz", device="cpu")
    assert "--resolution-mismatch" in str(info.value)
    assert not (tmp_path / "out.nii.gz").exists()
    out = infer_scan(model, path, tmp_path / "out.nii.gz", device="cpu", resolution_mismatch="resample")
    sr, sr_affine = load_nifti(out)
    assert sr.shape == hr.shape
    np.testing.assert_allclose(sr_affine, affine, atol=1e-4)
    np.testing.assert_allclose(degrade(sr, 4, "kspace", (0, 1)), lr, atol=1e-4)  # consistent with what was measured
