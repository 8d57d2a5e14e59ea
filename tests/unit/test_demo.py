"""The demo cohort: physics (contrast order), determinism, file layout, DICOM geometry, no identifiers leak."""

from __future__ import annotations

import csv
import gzip
import json
import re
import shutil
import subprocess
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest

from pipeline.cli import main as cli_main
from pipeline.config import DemoConfig, IngestConfig, to_dict
from pipeline.demo.cohort import generate_demo
from pipeline.demo.simulate import MODALITIES, SEQUENCES, TISSUE_PARAMS, TISSUES, simulate_subject, spin_echo

CFG = DemoConfig(n_subjects=3, n_dicom=2, voxel_mm=4.0, seed=5)
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "AccessionNumber", "StudyDate")


def _with(**changes) -> DemoConfig:
    """`CFG` with some keys changed (validated like any config)."""
    return DemoConfig(**{**to_dict(CFG), **changes})


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """The small cohort, generated once through the CLI."""
    out = tmp_path_factory.mktemp("demo")
    assert cli_main(["demo", "--params", json.dumps(to_dict(CFG)), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def subjects():
    return [simulate_subject(CFG, i) for i in range(CFG.n_subjects)]


def _participants(out):
    with open(out / "participants.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _dicom_series(folder) -> dict[int, list[pydicom.Dataset]]:
    """Series number -> its datasets sorted by InstanceNumber, for every DICOM file under `folder`."""
    series: dict[int, list[pydicom.Dataset]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path)
        series.setdefault(int(ds.SeriesNumber), []).append(ds)
    return {k: sorted(v, key=lambda d: int(d.InstanceNumber)) for k, v in series.items()}


def _canonical(data, affine) -> nib.Nifti1Image:
    return nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine))


# ------------------------------------------------------------------------------------------------ physics
def test_signal_equation_orders_tissues():
    sig = {m: {t: spin_echo(p[2], p[0], p[1], *SEQUENCES[m]) for t, p in TISSUE_PARAMS.items()}
           for m in MODALITIES}
    assert sig["T1w"]["WM"] > sig["T1w"]["GM"] > sig["T1w"]["CSF"]
    assert sig["T2w"]["CSF"] > sig["T2w"]["GM"] > sig["T2w"]["WM"]
    assert sig["PDw"]["CSF"] > sig["PDw"]["WM"] and sig["PDw"]["GM"] > sig["PDw"]["WM"]
    assert spin_echo(1.0, 1000.0, 100.0, 1000.0, 0.0) == pytest.approx(1 - np.exp(-1))


def test_contrast_order_in_generated_images(subjects):
    for subject in subjects:
        dominant = subject.fractions.argmax(axis=0)
        pure = subject.fractions.max(axis=0) > 0.75
        mean = {}
        for modality, image in subject.images.items():
            mean[modality] = {}
            for t, tissue in enumerate(TISSUES):
                voxels = image[pure & (dominant == t)]
                assert voxels.size > 30, (subject.label, tissue)
                mean[modality][tissue] = float(voxels.mean())
        t1, t2, pd = mean["T1w"], mean["T2w"], mean["PDw"]
        assert t1["WM"] > t1["GM"] > t1["CSF"], (subject.label, t1)
        assert t2["CSF"] > t2["GM"] > t2["WM"], (subject.label, t2)
        assert pd["CSF"] > pd["WM"] and pd["GM"] > pd["WM"], (subject.label, pd)
        # Rician background: non-negative, small, not zero; a clear foreground.
        background = subject.fractions.sum(axis=0) < 0.01
        for image in subject.images.values():
            assert image.dtype == np.int16 and image.min() >= 0
            assert 0 < image[background].mean() < 0.2 * image[subject.fractions.sum(axis=0) > 0.9].mean()


def test_subjects_differ_in_shape_and_intensity(subjects):
    a, b = subjects[0], subjects[2]  # both on the reference grid
    assert a.images["T1w"].shape == b.images["T1w"].shape
    dice = 2 * np.sum((a.fractions.sum(0) > 0.5) & (b.fractions.sum(0) > 0.5)) / (
        np.sum(a.fractions.sum(0) > 0.5) + np.sum(b.fractions.sum(0) > 0.5))
    assert 0.8 < dice < 0.99  # same anatomy, different pose and deformation
    assert a.sequences != b.sequences


# ------------------------------------------------------------------------------------------------ determinism
def test_same_seed_same_voxels_other_seed_differs(subjects):
    again = simulate_subject(CFG, 1)
    for modality in MODALITIES:
        np.testing.assert_array_equal(again.images[modality], subjects[1].images[modality])
    other = simulate_subject(_with(seed=6), 1)
    assert not np.array_equal(other.images["T1w"], subjects[1].images["T1w"])


# ------------------------------------------------------------------------------------------------ layout
def test_layout_and_participants(cohort):
    rows = _participants(cohort)
    assert [r["subject"] for r in rows] == ["demo01", "demo02", "demo03"]
    assert [r["format"] for r in rows] == ["dicom", "dicom", "bids"]
    assert set(rows[0]) == {"subject", "format", "path", "sex", "age"}
    for row in rows:
        assert (cohort / row["path"]).is_dir()
    bids = cohort / "bids"
    assert json.loads((bids / "dataset_description.json").read_text())["BIDSVersion"]
    assert (bids / "participants.tsv").read_text().splitlines()[1].startswith("sub-demo03\t")
    for modality in MODALITIES:
        path = bids / "sub-demo03" / "anat" / f"sub-demo03_{modality}.nii.gz"
        assert nib.load(path).get_data_dtype() == np.int16
        assert json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())["EchoTime"] > 0
    assert not list(cohort.glob(".partial-*"))


def test_dicom_series_tags_and_modality_names(cohort):
    patterns = IngestConfig().modality_patterns
    for row in _participants(cohort)[: CFG.n_dicom]:
        series = _dicom_series(cohort / row["path"])
        assert sorted(series) == [2, 3, 4]
        assert len({d.StudyInstanceUID for s in series.values() for d in s}) == 1
        for number, datasets in series.items():
            modality = MODALITIES[number - 2]
            first = datasets[0]
            assert first.Modality == "MR" and first.SOPClassUID == pydicom.uid.MRImageStorage
            assert str(first.PatientName).startswith("DEMO^") and first.PatientBirthDate and first.AccessionNumber
            assert len({d.SeriesInstanceUID for d in datasets}) == 1
            # The ingest stage's default patterns (first modality with a match wins) recognise the name.
            found = next(m for m, pats in patterns.items()
                         if any(re.search(p, first.SeriesDescription, re.IGNORECASE) for p in pats))
            assert found == modality, first.SeriesDescription
            assert float(first.RescaleSlope) == 1.0 and float(first.SliceThickness) == CFG.voxel_mm
    # Some files have no extension, some series share a folder, some slice stacks are oblique.
    files = [p for p in (cohort / "dicom").rglob("*") if p.is_file()]
    assert any(p.suffix == "" for p in files) and any(p.suffix == ".dcm" for p in files)
    iops = {tuple(np.round(np.array(pydicom.dcmread(p, stop_before_pixels=True).ImageOrientationPatient,
                                    dtype=float), 3)) for p in files}
    assert any(not np.allclose(np.abs(i), np.round(np.abs(i))) for i in iops)  # oblique
    assert (0.0, 1.0, 0.0, 0.0, 0.0, -1.0) in iops  # sagittal


def test_no_identifier_outside_dicom(cohort):
    values = set()
    for path in (p for p in (cohort / "dicom").rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        values |= {str(ds.get(k)) for k in IDENTIFYING if ds.get(k)}
        assert not any(v in path.relative_to(cohort).as_posix() for v in values)
    values.discard("")
    assert len(values) >= 2 * 4
    for path in (p for p in cohort.rglob("*") if p.is_file() and "dicom" not in p.parts):
        text = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        for value in values:
            assert value.encode() not in text, (path, value)


# ------------------------------------------------------------------------------------------------ geometry
def test_dicom_read_back_through_pydicom_and_nibabel(cohort, subjects):
    """Subject 1 (axial protocol): its axial T2 series has the BIDS subjects' grid after canonicalisation."""
    datasets = _dicom_series(cohort / _participants(cohort)[0]["path"])[3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nibabel calls its DICOM readers experimental
        from nibabel.nicom.dicomwrappers import wrapper_from_data

        wrappers = [wrapper_from_data(d) for d in datasets]
    flip = np.diag([-1.0, -1.0, 1.0])  # LPS <-> RAS
    affine = np.eye(4)
    affine[:3, 0] = flip @ wrappers[0].affine[:3, 1]  # nibabel's axis 0 is the row index; ours the column
    affine[:3, 1] = flip @ wrappers[0].affine[:3, 0]
    affine[:3, 2] = flip @ (wrappers[1].affine[:3, 3] - wrappers[0].affine[:3, 3])
    affine[:3, 3] = flip @ wrappers[0].affine[:3, 3]
    volume = np.stack([d.pixel_array.T for d in datasets], axis=-1)
    got = _canonical(volume, affine)
    expected = _canonical(subjects[0].images["T2w"], subjects[0].affine)
    np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(expected.dataobj))
    bids = nib.load(cohort / "bids" / "sub-demo03" / "anat" / "sub-demo03_T2w.nii.gz")
    assert got.shape == bids.shape
    np.testing.assert_allclose(got.affine, bids.affine, atol=1e-4)


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not on PATH")
def test_dicom_subjects_match_simulation_through_dcm2niix(cohort, subjects, tmp_path):
    bids_affine = nib.load(cohort / "bids" / "sub-demo03" / "anat" / "sub-demo03_T1w.nii.gz").affine
    for index, row in enumerate(_participants(cohort)[: CFG.n_dicom]):
        out = tmp_path / row["subject"]
        out.mkdir()
        proc = subprocess.run(["dcm2niix", "-z", "y", "-f", "%s", "-o", str(out), str(cohort / row["path"])],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for number, modality in enumerate(MODALITIES, start=2):
            got = nib.as_closest_canonical(nib.load(out / f"{number}.nii.gz"))
            expected = _canonical(subjects[index].images[modality], subjects[index].affine)
            assert got.shape == expected.shape, (row["subject"], modality)
            np.testing.assert_allclose(got.affine, expected.affine, atol=1e-3)
            np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(expected.dataobj))
            if index == 0:  # the axial protocol: the same grid convention as the BIDS subjects
                np.testing.assert_allclose(got.affine, bids_affine, atol=1e-3)


# ------------------------------------------------------------------------------------------------ CLI
def test_rerun_replaces_cohort_and_bad_config_fails(tmp_path, caplog):
    out = tmp_path / "demo"
    small = _with(n_dicom=1)
    generate_demo(CFG, out)
    assert cli_main(["demo", "--params", json.dumps(to_dict(small)), "--out", str(out)]) == 0
    assert [r["format"] for r in _participants(out)] == ["dicom", "bids", "bids"]
    assert len(list((out / "dicom").iterdir())) == 1  # the earlier run's second DICOM subject is gone
    assert "DEMO^" not in caplog.text
    # the ranges the demo needs (DemoConfig's): n_subjects >= 1, 0 <= n_dicom <= n_subjects, voxel_mm 0.5-8
    for key, bad in (("n_dicom", {"n_subjects": 3, "n_dicom": 4}), ("n_dicom", {"n_dicom": -1}),
                     ("n_subjects", {"n_subjects": 0, "n_dicom": 0}), ("voxel_mm", {"voxel_mm": 0.4}),
                     ("voxel_mm", {"voxel_mm": 8.5})):
        caplog.clear()
        assert cli_main(["demo", "--params", json.dumps(bad), "--out", str(tmp_path / "bad")]) == 1, bad
        assert key in caplog.text, bad
    assert not (tmp_path / "bad" / "participants.tsv").exists()


def test_parallel_workers_write_the_same_files(tmp_path):
    """Subjects simulated by two worker processes: byte-identical files (and tables) to one process."""
    generate_demo(CFG, tmp_path / "one")
    generate_demo(CFG, tmp_path / "two", workers=2)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert len(files) > 10
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel


def test_noise_free_twin_is_the_same_subject_without_noise(subjects):
    noisy = subjects[1]
    clean = simulate_subject(_with(noise=False), 1)
    np.testing.assert_array_equal(clean.fractions, noisy.fractions)  # same pose, warp and tissues
    assert clean.sequences == noisy.sequences
    brain = noisy.fractions.sum(axis=0) > 0.9
    for modality, image in clean.images.items():
        residual = noisy.images[modality].astype(np.float64) - image
        # Rician noise: zero-mean where the signal is strong (in the brain), and the twin differs everywhere else
        assert abs(residual[brain].mean()) < 0.05 * residual[brain].std()
        assert residual[brain].std() > 5
        # without noise, the background outside the head is exactly zero
        assert image[noisy.fractions.sum(axis=0) == 0].max() == 0
