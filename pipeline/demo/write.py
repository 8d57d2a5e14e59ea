"""Writing a simulated demo subject: DICOM series with made-up identities, or a BIDS NIfTI subject.

DICOM subjects cycle through `DICOM_PROTOCOLS` (folder layouts, sagittal, coronal, reversed and oblique series,
head- or feet-first); their patient identifiers (e.g. "DEMO^ALICE") are obviously fake and the ingest stage
strips them. UIDs derive from the seed, so the same config gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from pipeline.config import DemoConfig
from pipeline.demo.simulate import DICOM_PROTOCOLS, FIELD_STRENGTH_T, MODALITIES, DemoSubject
from pipeline.io.atomic import write_text

FAKE_NAMES = ("ALICE", "BOB", "CAROL", "DAVE", "ERIN", "FRANK", "GRACE", "HEIDI", "IVAN", "JUDY")


def reorient(data: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels with the array axes permuted/flipped to point along `axcodes` (e.g. "LPS")."""
    from nibabel.orientations import (
        apply_orientation,
        axcodes2ornt,
        inv_ornt_aff,
        io_orientation,
        ornt_transform,
    )

    transform = ornt_transform(io_orientation(affine), axcodes2ornt(tuple(axcodes)))
    return apply_orientation(data, transform), affine @ inv_ornt_aff(transform, data.shape)


def _hex(*parts: object, n: int = 8) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:n].upper()


def fake_identity(cfg: DemoConfig, subject: DemoSubject) -> dict[str, str]:
    """Made-up, obviously fake but realistic patient/study identification for a DICOM subject."""
    rng = np.random.default_rng([cfg.seed, subject.index, 1])  # separate stream: voxels do not depend on it
    year = int(rng.integers(2016, 2024))
    study_date = f"{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    return {
        "PatientName": f"DEMO^{FAKE_NAMES[subject.index % len(FAKE_NAMES)]}",
        "PatientID": f"DM{int(rng.integers(10**6, 10**7))}",
        "PatientBirthDate": f"{year - subject.age}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        "PatientSex": subject.sex,
        "PatientAge": f"{subject.age:03d}Y",
        "StudyDate": study_date,
        "SeriesDate": study_date,
        "StudyTime": f"{int(rng.integers(7, 18)):02d}{int(rng.integers(0, 60)):02d}00",
        "InstitutionName": "Demo University Hospital",
        "ReferringPhysicianName": "DEMO^REFERRER",
        "AccessionNumber": f"A{int(rng.integers(10**7, 10**8))}",
        "StudyID": str(int(rng.integers(1000, 9999))),
        "StudyDescription": "MRI BRAIN ROUTINE",
    }


def _series_layout(layout: str, key: str, series_number: int, description: str):
    """(folder relative to the subject's DICOM root, file-name function) for one series."""
    if layout == "study_series":  # <study>/<series>/IM0001 (no extension)
        return f"SE{series_number:03d}_{description.replace(' ', '_')}", lambda k: f"IM{k + 1:04d}"
    if layout == "flat_mixed":  # every series of the study in one folder
        return "", lambda k: f"MR{series_number:02d}{k + 1:04d}.dcm"
    if layout == "philips":  # DICOM/PA000000/ST000000/SE00000n/IM00000k (no extension)
        return f"DICOM/PA000000/ST000000/SE{series_number - 1:06d}", lambda k: f"IM{k:06d}"
    if layout == "uid_named":  # two hashed folder levels, files named by a hash
        return f"{_hex(key, 'a', n=2)}/{_hex(key, 'b', n=6)}", lambda k: f"{_hex(key, k, n=16)}.dcm"
    raise ValueError(f"unknown DICOM layout {layout!r}")


def write_dicom_subject(cfg: DemoConfig, subject: DemoSubject, root: Path) -> Path:
    """Write the subject's three series under `root` (the `dicom/` folder); return its study folder."""
    from pipeline.io.dicom_write import write_dicom_series

    protocol = DICOM_PROTOCOLS[subject.index % len(DICOM_PROTOCOLS)]
    study_dir = root / f"{protocol['prefix']}{_hex(cfg.seed, subject.index)}"
    identity = fake_identity(cfg, subject)
    uid_seed = f"medgan-demo/{cfg.seed}/{subject.index}"
    for series_number, modality in enumerate(MODALITIES, start=2):
        description, axcodes = protocol["series"][modality]
        data, affine = reorient(subject.images[modality], subject.affine, axcodes)
        folder, file_name = _series_layout(protocol["layout"], f"{uid_seed}/{modality}", series_number,
                                           description)
        tr, te = subject.sequences[modality]
        write_dicom_series(
            data, affine, study_dir / folder, patient=identity, series_description=description,
            series_number=series_number, patient_position=protocol["position"], file_name=file_name,
            uid_seed=uid_seed,
            extra={"RepetitionTime": f"{tr:.1f}", "EchoTime": f"{te:.1f}",
                   "MagneticFieldStrength": f"{FIELD_STRENGTH_T}", "ImagedNucleus": "1H"},
        )
    return study_dir


def write_bids_subject(subject: DemoSubject, root: Path) -> Path:
    """Write `sub-<label>/anat/sub-<label>_<modality>.nii.gz` (+ JSON sidecar) under the BIDS `root`."""
    from pipeline.io.nifti import save_nifti

    anat = root / f"sub-{subject.label}" / "anat"
    for modality in MODALITIES:
        stem = anat / f"sub-{subject.label}_{modality}"
        save_nifti(subject.images[modality], subject.affine, stem.with_suffix(".nii.gz"), dtype=np.int16)
        tr, te = subject.sequences[modality]
        sidecar = {"MagneticFieldStrength": FIELD_STRENGTH_T, "ScanningSequence": "SE",
                   "MRAcquisitionType": "2D", "RepetitionTime": tr / 1000, "EchoTime": te / 1000}
        write_text(stem.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    return anat.parent
