"""Ingested DICOM geometry and voxels equal dcm2niix's: synthetic series in every orientation and slice
direction, shuffled extension-less file names, several patient positions; rescale, compression, enhanced
multi-frame; and the real four-patient-position series of dcm_qa_decubitus."""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.config import IngestConfig
from pipeline.ingest.run import ingest
from tests.conftest import CORPUS
from tests.unit.ingest_helpers import (
    affine_for,
    assert_same_image,
    dcm2niix,
    enhanced_from_classic,
    have_dcm2niix,
    output_image,
    random_volume,
    shuffled_names,
    write_series,
)

needs_dcm2niix = pytest.mark.skipif(not have_dcm2niix(), reason="dcm2niix not on PATH")
PLANES = ("axial", "coronal", "sagittal", "oblique")
POSITIONS = ("HFS", "FFS", "HFP", "FFP", "HFDL", "HFDR", "FFDL", "FFDR")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # manifest paths are relative to the working directory


def _ingested(rows):
    return [r for r in rows if r.status == "ingested"]


def _check_against_dcm2niix(tmp_path: Path, plane: str, sign: int, position: str) -> None:
    volume = random_volume()
    affine = affine_for(plane, sign)
    series = tmp_path / "in" / "study" / "series"
    write_series(series, volume, affine, patient_position=position, file_name=shuffled_names(volume.shape[2]))
    result = ingest(tmp_path / "in", tmp_path / "out")
    (row,) = _ingested(result.rows)
    ours = output_image(row)
    assert_same_image(ours, dcm2niix(series, tmp_path / "ref"))
    # and both equal the truth: the volume and affine the series was written from
    truth = nib.Nifti1Image(volume.astype(np.float32), affine)
    assert_same_image(ours, truth, atol_mm=1e-3)
    assert row.spacing == "0.9x1.1x2.5" and sorted(row.shape.split("x")) == sorted(["16", "18", "12"])


@needs_dcm2niix
@pytest.mark.parametrize(
    ("plane", "sign", "position"),
    [("axial", 1, "HFS"), ("coronal", -1, "FFS"), ("sagittal", 1, "HFDL"), ("oblique", -1, "HFP")],
)
def test_synthetic_series_match_dcm2niix(tmp_path, plane, sign, position):
    _check_against_dcm2niix(tmp_path, plane, sign, position)


@pytest.mark.slow
@needs_dcm2niix
@pytest.mark.parametrize(("plane", "sign", "position"), list(itertools.product(PLANES, (1, -1), POSITIONS)))
def test_synthetic_series_match_dcm2niix_full_matrix(tmp_path, plane, sign, position):
    _check_against_dcm2niix(tmp_path, plane, sign, position)


def test_slice_order_ignores_instance_number_and_file_name(tmp_path):
    """Instance numbers and file names in reverse/random order do not change the volume."""
    volume = random_volume(seed=3)
    affine = affine_for("axial")
    write_series(
        tmp_path / "in" / "a", volume, affine, file_name=shuffled_names(12, seed=5),
    )
    # scramble InstanceNumber too
    import pydicom

    for path in (tmp_path / "in" / "a").iterdir():
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = 100 - int(ds.InstanceNumber) * 7 % 13
        ds.save_as(path)
    (row,) = _ingested(ingest(tmp_path / "in", tmp_path / "out").rows)
    assert_same_image(output_image(row), nib.Nifti1Image(volume.astype(np.float32), affine))


def test_measured_spacing_not_slice_thickness(tmp_path):
    """SliceThickness 1 mm with slices 2.5 mm apart: the affine uses 2.5 mm (the measured step)."""
    volume = random_volume(seed=4)
    affine = affine_for("sagittal", spacing=(1.0, 1.0, 2.5))
    write_series(tmp_path / "in", volume, affine, extra={"SliceThickness": "1", "SpacingBetweenSlices": "1"})
    (row,) = _ingested(ingest(tmp_path / "in", tmp_path / "out").rows)
    np.testing.assert_allclose(output_image(row).header.get_zooms(), (1.0, 1.0, 2.5), atol=1e-5)


def test_rescale_slope_intercept_applied(tmp_path):
    """CT stored values with slope 0.5 / intercept -1024 come out in HU (float where not whole numbers)."""
    hu = np.random.default_rng(2).integers(-2048, 3000, (16, 16, 8)) * 0.5 - 1024
    write_series(tmp_path / "in", hu, affine_for("axial"), modality="CT", rescale=(0.5, -1024.0))
    (row,) = _ingested(ingest(tmp_path / "in", tmp_path / "out").rows)
    assert row.modality == "CT"
    img = output_image(row)
    assert_same_image(img, nib.Nifti1Image(hu.astype(np.float32), affine_for("axial")))
    assert img.get_data_dtype() == np.float32


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEG2000Lossless"])
def test_compressed_transfer_syntaxes(tmp_path, syntax):
    import pydicom
    import pydicom.uid

    volume = random_volume((40, 36, 6), seed=6, low=0, high=4000)  # JPEG 2000 needs >= 32 pixels a side
    affine = affine_for("coronal")
    paths = write_series(tmp_path / "in", volume, affine)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.compress(getattr(pydicom.uid, syntax))
        ds.save_as(path)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == getattr(pydicom.uid, syntax)
    (row,) = _ingested(ingest(tmp_path / "in", tmp_path / "out").rows)
    assert_same_image(output_image(row), nib.Nifti1Image(volume.astype(np.float32), affine))


@pytest.mark.parametrize("shared_orientation", [True, False])
def test_enhanced_multiframe_equals_classic(tmp_path, shared_orientation):
    volume = random_volume(seed=7)
    affine = affine_for("oblique", -1)
    paths = write_series(tmp_path / "classic", volume, affine, file_name=shuffled_names(12))
    # frames stored in shuffled file-name order: the positions, not the frame order, must decide
    enhanced_from_classic(sorted(paths), tmp_path / "in" / "enhanced.dcm", shared_orientation)
    (row,) = _ingested(ingest(tmp_path / "in", tmp_path / "out").rows)
    assert_same_image(output_image(row), nib.Nifti1Image(volume.astype(np.float32), affine))


# ------------------------------------------------------------------------------ real data: dcm_qa_decubitus
DECUBITUS = CORPUS / "dcm_qa_decubitus"


@pytest.mark.corpus
@needs_dcm2niix
@pytest.mark.skipif(not DECUBITUS.is_dir(), reason="../shared/corpus/dcm_qa_decubitus not present")
def test_decubitus_series_match_dcm2niix_references(tmp_path):
    """Four patient positions (HFS, HFP, HFDL, HFDR), 35 sagittal slices each, SliceThickness 4 mm but slices
    4.8 mm apart: each ingested volume equals dcm2niix's reference NIfTI (voxels and affine)."""
    result = ingest(DECUBITUS / "In", tmp_path / "out", IngestConfig())
    rows = _ingested(result.rows)
    assert len(rows) == 4, [(r.source, r.reason) for r in result.rows]
    # one volunteer: one pseudonym, four T1w series (one primary)
    assert {r.subject for r in rows} == {"sub-001"} and {r.modality for r in rows} == {"T1w"}
    assert sorted(r.primary for r in rows) == ["no", "no", "no", "yes"]
    ref_by_position = {p.name: nib.load(str(p)) for p in (DECUBITUS / "Ref").glob("*.nii.gz")}
    matched = set()
    for row in rows:
        ours = output_image(row)
        assert np.isclose(ours.header.get_zooms(), 4.8, atol=1e-3).sum() == 1  # measured, not SliceThickness 4
        # find the reference with the same voxels (series order differs from reference names)
        candidates = [
            name for name, ref in ref_by_position.items()
            if nib.as_closest_canonical(ref).shape == nib.as_closest_canonical(ours).shape
            and np.array_equal(nib.as_closest_canonical(ref).get_fdata(), nib.as_closest_canonical(ours).get_fdata())
        ]
        assert len(candidates) == 1, row.source
        assert_same_image(ours, ref_by_position[candidates[0]])
        matched.add(candidates[0])
    assert len(matched) == 4
    # the scanner reports patient coordinates: all four positions give the same RAS geometry
    affines = [nib.as_closest_canonical(output_image(r)).affine for r in rows]
    for affine in affines[1:]:
        np.testing.assert_allclose(affine, affines[0], atol=1e-3)
