"""Where an exported image came from: the source DICOM series of a subject, and the pseudonym key.

Both hold identifiers (UIDs that PACS links to the patient, the original patient ID), so they are read only for a
re-identified export and never logged. Ingest's sidecars keep no UID, so the source series is found through
ingest's tables: the manifest row of the subject's primary scan of a modality, then the files of `files.tsv` that
went into that row (relative to `input_dir`), whose headers are read again.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom

from pipeline.io.tables import INGESTED, read_files, read_manifest, read_tsv

KEY_COLUMNS = ("subject", "source_kind", "original_id")  # pipeline.ingest.pseudonym.write_key's columns
#: patient and study identification copied from the source series into a re-identified export
STUDY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription")
_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


@dataclasses.dataclass(frozen=True)
class SourceImage:
    sop_class: str
    sop_uid: str
    corners: np.ndarray | None  #: (4, 3) LPS corners of the image plane (pixel centres); None: multi-frame


@dataclasses.dataclass(frozen=True)
class SourceSeries:
    """The identifiers of a source series (never logged, never written unless re-identification was asked)."""

    study_uid: str
    series_uid: str
    frame_uid: str
    series_number: int | None
    images: tuple[SourceImage, ...]
    study: dict[str, str]  #: STUDY_KEYWORDS -> value, as the source has them

    def images_in_slab(self, centre: np.ndarray, normal: np.ndarray, thickness: float) -> list[SourceImage]:
        """The source images whose plane meets the slab of `thickness` (mm) around the plane through `centre`
        (LPS) with unit `normal`; multi-frame images always (their frames are not told apart)."""
        half = thickness / 2 + 1e-3
        found = []
        for image in self.images:
            if image.corners is None:
                found.append(image)
                continue
            depth = (image.corners - centre) @ normal
            if depth.min() <= half and depth.max() >= -half:
                found.append(image)
        return found


def _corners(ds: pydicom.Dataset) -> np.ndarray | None:
    try:
        position = np.array([float(v) for v in ds.ImagePositionPatient])
        cosines = np.array([float(v) for v in ds.ImageOrientationPatient]).reshape(2, 3)
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        return None
    across = cosines[0] * col_mm * (cols - 1)  # along a row: the column index grows
    down = cosines[1] * row_mm * (rows - 1)
    return np.stack([position, position + across, position + down, position + across + down])


def read_source_series(files: Sequence[str | Path]) -> SourceSeries:
    """The identifiers and slice planes of the one image series among `files` (other files are ignored)."""
    by_series: dict[str, list[pydicom.Dataset]] = {}
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError):
            continue
        if "SeriesInstanceUID" in ds and "SOPInstanceUID" in ds:
            by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    if len(by_series) != 1:
        raise ValueError(f"the reference must hold exactly one DICOM series, found {len(by_series)}")
    (series_uid, headers), = by_series.items()
    first = headers[0]
    number = first.get("SeriesNumber")
    images = {str(ds.SOPInstanceUID): SourceImage(str(ds.SOPClassUID), str(ds.SOPInstanceUID), _corners(ds))
              for ds in headers}
    return SourceSeries(
        study_uid=str(first.get("StudyInstanceUID", "")), series_uid=series_uid,
        frame_uid=str(first.get("FrameOfReferenceUID", "")),
        series_number=int(number) if number not in (None, "") else None,
        images=tuple(images[uid] for uid in sorted(images)),
        study={k: str(first.get(k, "") or "") for k in STUDY_KEYWORDS},
    )


def find_source_files(ingest_dir: str | Path, input_dir: str | Path, subject: str, modality: str) -> list[Path]:
    """The input files of `subject`'s primary `modality` scan, from ingest's manifest.tsv and files.tsv (empty
    when the subject has no such ingested scan)."""
    ingest_dir = Path(ingest_dir)
    rows = read_manifest(ingest_dir / "manifest.tsv")
    wanted = [n for n, r in enumerate(rows, start=1)
              if r.status == INGESTED and r.subject == subject and r.modality == modality
              and r.primary.strip().lower() != "no"]
    if not wanted:
        return []
    return [Path(input_dir) / f.file for f in read_files(ingest_dir / "files.tsv")
            if f.manifest_row == wanted[0] and f.status == INGESTED]


def read_key(path: str | Path) -> dict[str, tuple[str, str]]:
    """Pseudonym -> (source kind, original ID), from ingest's `pseudonym_key.tsv`."""
    rows = read_tsv(path, KEY_COLUMNS, "pseudonym key", "written by the ingest stage")
    return {row["subject"]: (row["source_kind"], row["original_id"]) for row in rows}


def key_digest(path: str | Path | None) -> str | None:
    """A digest of the key file: a secret of the project that derives its export study UIDs (same key, same
    UIDs; nobody without the key can link them to the original IDs)."""
    if path is None:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
