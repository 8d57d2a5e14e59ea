"""Helpers for the ingest tests: synthetic DICOM series in any orientation, dcm2niix as the reference, and
the check that every input file is accounted for in files.tsv."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.io.dicom_write import write_dicom_series
from pipeline.io.tables import FileRow, read_files, read_manifest

# Image row / column direction cosines in DICOM LPS for the standard planes, as (row, column).
PLANES = {
    "axial": ((1, 0, 0), (0, 1, 0)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
    "sagittal": ((0, 1, 0), (0, 0, -1)),
}
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
SECRETS = {
    "PatientName": "Doe^Jane",
    "PatientID": "SECRET-4711",
    "PatientBirthDate": "19700101",
    "StudyDate": "20230405",
    "InstitutionName": "St Elsewhere Hospital",
    "AccessionNumber": "ACC99887766",
    "ReferringPhysicianName": "House^Gregory",
}


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, y, z."""
    a, b, c = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def affine_for(
    plane: str, slice_sign: int = 1, spacing=(0.9, 1.1, 2.5), origin=(-7.0, 12.0, 30.0)
) -> np.ndarray:
    """Voxel -> RAS affine of a series acquired in `plane` ("oblique": axial rotated about all three axes);
    `slice_sign` -1 writes the slices in the opposite direction along the normal."""
    row, col = PLANES["axial" if plane == "oblique" else plane]
    row, col = np.array(row, float), np.array(col, float)
    if plane == "oblique":
        rot = rotation(17, -11, 23)
        row, col = rot @ row, rot @ col
    normal = np.cross(row, col) * slice_sign
    affine = np.eye(4)
    for i, (axis, step) in enumerate(zip((row, col, normal), spacing, strict=True)):
        affine[:3, i] = axis * LPS_TO_RAS * step
    affine[:3, 3] = origin
    return affine


def random_volume(shape=(16, 18, 12), seed=0, low=-100, high=1500) -> np.ndarray:
    """Integer-valued random voxels (int16 range)."""
    return np.random.default_rng(seed).integers(low, high, shape).astype(np.int16)


def shuffled_names(n: int, seed: int = 1):
    """A file_name callable giving extension-less names in an order unrelated to the slice order."""
    perm = np.random.default_rng(seed).permutation(n)
    return lambda k: f"x{perm[k] * 7919 % 100003:06d}"


def write_series(out_dir: Path, volume: np.ndarray, affine: np.ndarray, **kwargs) -> list[Path]:
    kwargs.setdefault("series_description", "t1_mprage_sag")
    kwargs.setdefault("patient", SECRETS)
    kwargs.setdefault("uid_seed", str(out_dir))
    return write_dicom_series(volume, affine, out_dir, **kwargs)


def dcm2niix(series_dir: Path, out_dir: Path) -> nib.Nifti1Image:
    """Convert one series folder with dcm2niix and return the (single) image it writes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["dcm2niix", "-b", "n", "-z", "n", "-f", "ref", "-o", str(out_dir), str(series_dir)],
        capture_output=True, text=True,
    )
    images = sorted(out_dir.glob("ref*.nii"))
    assert proc.returncode == 0 and len(images) == 1, proc.stdout + proc.stderr
    return nib.load(str(images[0]))


def have_dcm2niix() -> bool:
    return shutil.which("dcm2niix") is not None


def assert_same_image(ours: nib.Nifti1Image, ref: nib.Nifti1Image, atol_mm: float = 1e-3) -> None:
    """Voxels equal and affines within `atol_mm` once both are in (closest) RAS orientation."""
    a, b = nib.as_closest_canonical(ours), nib.as_closest_canonical(ref)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a.affine, b.affine, atol=atol_mm, rtol=0)
    np.testing.assert_array_equal(np.asarray(a.get_fdata()), np.asarray(b.get_fdata()))


def output_image(manifest_row, cwd: Path | None = None) -> nib.Nifti1Image:
    path = Path(manifest_row.output)
    return nib.load(str(path if path.is_absolute() or cwd is None else cwd / path))


def enhanced_from_classic(paths: list[Path], out: Path, shared_orientation: bool = True) -> None:
    """One Enhanced MR multi-frame file holding the slices of a classic series (frames in file order)."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedMRImageStorage, generate_uid

    slices = [pydicom.dcmread(p) for p in paths]
    first = slices[0]
    ds = pydicom.dcmread(paths[0])
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
               "RescaleSlope", "RescaleIntercept", "InstanceNumber", "SliceLocation"):
        if kw in ds:
            delattr(ds, kw)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.NumberOfFrames = len(slices)

    def item(**seqs):
        it = Dataset()
        for name, attrs in seqs.items():
            sub = Dataset()
            for k, v in attrs.items():
                setattr(sub, k, v)
            setattr(it, name, Sequence([sub]))
        return it

    shared = item(
        PixelMeasuresSequence={"PixelSpacing": first.PixelSpacing, "SliceThickness": first.SliceThickness},
        PixelValueTransformationSequence={"RescaleSlope": "1", "RescaleIntercept": "0", "RescaleType": "US"},
        **({"PlaneOrientationSequence": {"ImageOrientationPatient": first.ImageOrientationPatient}}
           if shared_orientation else {}),
    )
    per_frame = []
    for s in slices:
        seqs = {"PlanePositionSequence": {"ImagePositionPatient": s.ImagePositionPatient}}
        if not shared_orientation:
            seqs["PlaneOrientationSequence"] = {"ImageOrientationPatient": s.ImageOrientationPatient}
        per_frame.append(item(**seqs))
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = b"".join(s.PixelData for s in slices)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)


def input_files(root: Path) -> set[str]:
    """Every file the ingest walk sees under `root` (hidden ones excluded), relative to it."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def assert_all_accounted(root: Path, out: Path) -> dict[str, FileRow]:
    """files.tsv names each input file once, each with a status, a reason where skipped, and a manifest row of
    that status whose source names the file or its folder; returns file -> row."""
    rows = read_files(out / "files.tsv")
    by_file = {r.file: r for r in rows}
    assert len(by_file) == len(rows), "a file named twice in files.tsv"
    assert set(by_file) == input_files(root), set(by_file) ^ input_files(root)
    manifest = read_manifest(out / "manifest.tsv")
    for r in rows:
        assert r.status in ("ingested", "skipped") and r.manifest_row is not None, r
        assert r.status == "ingested" or r.reason, r
        target = manifest[r.manifest_row - 1]
        assert target.status == r.status, (r, target)
        if target.source.endswith(")") and "/ (" in target.source:  # a series row: its folder holds the file
            parent = target.source.split("/ (", 1)[0]
            assert parent == "." or r.file.startswith(f"{parent}/"), (r, target.source)
        else:
            assert r.file in target.source.split("; "), (r, target.source)
    return by_file


def numbered_row(rows, source: str):
    """(1-based manifest row number, row) of the one row whose source is `source`."""
    found = [(n, r) for n, r in enumerate(rows, start=1) if r.source == source]
    assert len(found) == 1, (source, [(r.source, r.reason) for r in rows])
    return found[0]
