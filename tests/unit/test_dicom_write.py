"""The DICOM series writer: geometry tags, pixel values, UIDs, and a round-trip through dcm2niix."""

from __future__ import annotations

import shutil
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest

from pipeline.io.dicom_write import write_dicom_series
from tests.unit.ingest_helpers import rotation


def _affine(columns: np.ndarray, origin) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = origin
    return affine


# voxel -> RAS affines: each column is the direction (times the voxel size) of one array axis.
AFFINES = {
    "axial": _affine(np.diag([0.9, 1.1, 3.0]), [-10.0, 20.0, 30.0]),
    "axial_reversed": _affine(np.diag([-0.9, -1.1, -3.0]), [10.0, 20.0, 60.0]),
    "coronal": _affine(np.array([[-1.5, 0, 0], [0, 0, 3.0], [0, -2.0, 0]]), [5.0, -7.0, 9.0]),
    "sagittal": _affine(np.array([[0, 0, -3.0], [-1.5, 0, 0], [0, -2.0, 0]]), [5.0, -7.0, 9.0]),
    "oblique": _affine(rotation(12, -7, 5) @ np.diag([1.5, 1.7, 2.5]), [3.0, 4.0, 5.0]),
    "oblique_left_handed": _affine(rotation(20, 0, 3) @ np.diag([-1.5, 1.7, 2.5]), [-3.0, 4.0, -5.0]),
}


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """Integer data, asymmetric along every axis so a wrong flip or transpose shows."""
    rng = np.random.default_rng(7)
    data = rng.integers(0, 1000, size=(18, 22, 9)).astype(np.int16)
    data[:4, :3, 0] = 3000  # a marked corner
    return data


def _affine_from_tags(datasets: list[pydicom.Dataset]) -> np.ndarray:
    """Independent reconstruction of the voxel -> RAS affine from IOP/IPP/PixelSpacing (sorted by instance)."""
    first, second = datasets[0], datasets[1]
    iop = np.array(first.ImageOrientationPatient, dtype=float)
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * col_spacing
    lps[:3, 1] = iop[3:] * row_spacing
    lps[:3, 2] = np.subtract(second.ImagePositionPatient, first.ImagePositionPatient, dtype=float)
    lps[:3, 3] = np.array(first.ImagePositionPatient, dtype=float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_tags_read_back_through_pydicom(tmp_path, volume, name):
    affine = AFFINES[name]
    paths = write_dicom_series(volume, affine, tmp_path, series_description="t2_tse_tra", uid_seed="s")
    assert [p.name for p in paths] == [f"IM{k + 1:04d}.dcm" for k in range(volume.shape[2])]
    datasets = sorted((pydicom.dcmread(p) for p in paths), key=lambda d: int(d.InstanceNumber))
    np.testing.assert_allclose(_affine_from_tags(datasets), affine, atol=1e-4)
    stack = np.stack([d.pixel_array.T * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets], -1)
    np.testing.assert_array_equal(stack, volume)
    first = datasets[0]
    assert first.SOPClassUID == pydicom.uid.MRImageStorage
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert float(first.SliceThickness) == pytest.approx(np.linalg.norm(affine[:3, 2]))
    assert (first.Rows, first.Columns) == (volume.shape[1], volume.shape[0])
    assert len({d.SeriesInstanceUID for d in datasets}) == 1
    assert len({d.SOPInstanceUID for d in datasets}) == len(datasets)


def test_patient_extra_and_deterministic_uids(tmp_path, volume):
    patient = {"PatientName": "DEMO^ALICE", "PatientID": "DM1234567", "PatientBirthDate": "19700101",
               "InstitutionName": "Demo Hospital", "AccessionNumber": "A123", "StudyDate": "20200102"}
    kwargs = dict(patient=patient, series_description="PD AX", series_number=4, uid_seed="seed-1",
                  patient_position="FFS", extra={"EchoTime": "15", "RepetitionTime": "4000"},
                  file_name=lambda k: f"sub/IMG{k}")
    a = write_dicom_series(volume, AFFINES["axial"], tmp_path / "a", **kwargs)
    b = write_dicom_series(volume, AFFINES["axial"], tmp_path / "b", **kwargs)
    c = write_dicom_series(volume, AFFINES["axial"], tmp_path / "c", **{**kwargs, "uid_seed": "seed-2"})
    assert a[0].relative_to(tmp_path / "a").as_posix() == "sub/IMG0"
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]  # byte-identical reruns
    da, dc = pydicom.dcmread(a[0]), pydicom.dcmread(c[0])
    assert str(da.PatientName) == "DEMO^ALICE" and da.PatientID == "DM1234567"
    assert da.PatientPosition == "FFS" and float(da.EchoTime) == 15.0 and da.SeriesNumber == 4
    assert da.SeriesDescription == "PD AX"
    assert da.StudyInstanceUID != dc.StudyInstanceUID and da.SeriesInstanceUID != dc.SeriesInstanceUID
    # Given UIDs win over the seed.
    d = write_dicom_series(volume, AFFINES["axial"], tmp_path / "d", study_uid="1.2.3", series_uid="1.2.3.4")
    dd = pydicom.dcmread(d[0])
    assert (dd.StudyInstanceUID, dd.SeriesInstanceUID) == ("1.2.3", "1.2.3.4")
    assert dd.PatientName == "" and dd.PatientID == ""  # type-2 attributes present but empty


def test_float_data_rescaled_within_one_step(tmp_path):
    data = np.random.default_rng(1).normal(-500.0, 300.0, size=(16, 16, 3))
    paths = write_dicom_series(data, np.eye(4), tmp_path, modality="CT")
    datasets = [pydicom.dcmread(p) for p in paths]
    slope = float(datasets[0].RescaleSlope)
    back = np.stack([d.pixel_array.T * slope + float(d.RescaleIntercept) for d in datasets], -1)
    assert slope <= (data.max() - data.min()) / 60000
    assert np.max(np.abs(back - data)) <= slope / 2 + 1e-9
    assert datasets[0].SOPClassUID == pydicom.uid.CTImageStorage


def test_explicit_rescale(tmp_path, volume):
    paths = write_dicom_series(volume, np.eye(4), tmp_path, rescale=(0.5, -100.0))
    ds = pydicom.dcmread(paths[0])
    assert float(ds.RescaleSlope) == 0.5 and float(ds.RescaleIntercept) == -100.0
    np.testing.assert_array_equal(ds.pixel_array.T * 0.5 - 100.0, volume[:, :, 0])
    with pytest.raises(ValueError, match="outside"):
        write_dicom_series(volume, np.eye(4), tmp_path / "x", rescale=(0.01, 0.0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"affine": np.array([[1, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])}, "sheared"),
        ({"volume": np.zeros((4, 4))}, "3-D"),
        ({"volume": np.full((4, 4, 2), np.nan)}, "NaN"),
        ({"modality": "PET"}, "not supported"),
        ({"patient_position": "XYZ"}, "patient_position"),
        ({"patient": {"PatientNmae": "X"}}, "PatientNmae"),
    ],
)
def test_bad_input_is_rejected(tmp_path, kwargs, message):
    args = {"volume": np.zeros((4, 4, 2)), "affine": np.eye(4), **kwargs}
    with pytest.raises(ValueError, match=message):
        write_dicom_series(args.pop("volume"), args.pop("affine"), tmp_path, **args)
    assert not any(tmp_path.iterdir())


def dcm2niix_canonical(folder, out) -> nib.Nifti1Image:
    """Convert the single series in `folder` with dcm2niix; return it in RAS canonical orientation."""
    out.mkdir()
    proc = subprocess.run(["dcm2niix", "-z", "y", "-f", "%s", "-o", str(out), str(folder)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outputs = sorted(out.glob("*.nii.gz"))
    assert len(outputs) == 1, (outputs, proc.stdout)
    return nib.as_closest_canonical(nib.load(outputs[0]))


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not on PATH")
@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP", "HFDR"])
@pytest.mark.parametrize("name", sorted(AFFINES))
def test_round_trip_through_dcm2niix(tmp_path, volume, name, position):
    affine = AFFINES[name]
    write_dicom_series(volume, affine, tmp_path / "dicom", patient_position=position, series_description=name,
                       uid_seed=name)
    got = dcm2niix_canonical(tmp_path / "dicom", tmp_path / "nii")
    expected = nib.as_closest_canonical(nib.Nifti1Image(volume.astype(np.float32), affine))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.affine, expected.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(expected.dataobj))


def test_make_dicom_series_fixture(make_dicom_series):
    folder = make_dicom_series(shape=(16, 18, 4), affine=AFFINES["coronal"], series_description="t2_tse_cor")
    files = sorted(folder.iterdir())
    assert len(files) == 4
    assert pydicom.dcmread(files[0]).SeriesDescription == "t2_tse_cor"
