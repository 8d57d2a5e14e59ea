"""DICOM series -> one 3D volume with a RAS affine, or a reason why not.

Geometry follows the DICOM standard (PS3.3 C.7.6.2.1.1), as dcm2niix and nibabel do:
- slices are ordered by their position along the slice normal (row cosine x column cosine), never by
  InstanceNumber or file name;
- the affine's third column is the MEASURED step between slice positions (not SliceThickness); a step not
  parallel to the normal (CT gantry tilt) is kept as a sheared affine and noted;
- voxel (i, j, k) = column i, row j of slice k; DICOM patient coordinates are LPS, so x and y are flipped
  to RAS.
Series that cannot give one correct volume are refused with a reason: non-image objects, secondary
captures, localizers, colour images, unsupported modalities, fewer than `min_slices` slices, several
volumes in one series (repeated slice positions: fMRI, diffusion, multi-echo), mixed orientations or
sizes, missing slices and uneven spacing. Enhanced multi-frame images are read frame by frame from
their functional groups. Only technical tag values ever reach a reason, a log or a sidecar.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import IngestConfig
from pipeline.ingest.discover import DicomFile
from pipeline.ingest.modality import CT, ModalityMatcher
from pipeline.ingest.pseudonym import SubjectKey
from pipeline.ingest.volume import SkipInput, Volume, describe_error

log = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
NON_IMAGE_MODALITIES = frozenset(
    "SR PR KO DOC RTSTRUCT RTPLAN RTRECORD RTDOSE RTTREAT REG SEG FID RWV PLAN ECG HD AU RESP".split()
)
# Words in a SOP class name (pydicom's UID names) that mark an object without an anatomical image.
NON_IMAGE_SOP_WORDS = (
    "SR Storage", "Presentation State", "Waveform", "Encapsulated", "Raw Data", "Registration", "Document",
    "Plan Storage", "Structure Set", "Segmentation", "Dose Storage", "Treatment Record", "Key Object",
)
SUPPORTED_MODALITIES = ("MR", "CT")
POSITION_TOL_MM = 0.01  # slices closer than this along the normal are "at the same position"
ORIENTATION_TOL = 1e-3  # max difference of direction cosines within one series
TILT_NOTE_DEG = 0.05  # a step this far off the normal is reported as shear (gantry tilt)


@dataclasses.dataclass
class Series:
    """The files of one SeriesInstanceUID (in discovery order)."""

    uid: str
    files: list[DicomFile]

    @property
    def header(self) -> Any:
        return self.files[0].header

    @property
    def source(self) -> str:
        """Where the series came from, relative to input_dir: a few names, or the common folder and a count."""
        rels = [f.rel for f in self.files]
        if len(rels) <= 3:
            return "; ".join(rels)
        common = os.path.commonpath([os.path.dirname(r) or "." for r in rels]) or "."
        number = self.header.get("SeriesNumber")
        tail = f", series {number}" if number not in (None, "") else ""
        return f"{common}/ ({len(rels)} files{tail})"


@dataclasses.dataclass
class SliceRef:
    """One slice: a single-frame file or one frame of a multi-frame file, with its geometry."""

    file: DicomFile
    frame: int | None
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]  # (between rows, between columns), as DICOM PixelSpacing
    rows: int
    cols: int
    slope: float
    intercept: float
    instance: str


def group_series(files: list[DicomFile]) -> list[Series]:
    """Group DICOM files by SeriesInstanceUID; a file without one is a series of its own."""
    groups: dict[str, list[DicomFile]] = defaultdict(list)
    for f in files:
        groups[f.series_uid or f"no-uid:{f.rel}"].append(f)
    return [Series(uid, fs) for uid, fs in groups.items()]


def subject_key(series: Series) -> SubjectKey:
    """The original subject: PatientID, else PatientName, else StudyInstanceUID (never printed)."""
    ds = series.header
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            return ("dicom", value)
    return ("dicom", "unknown")


def _text(ds: Any, keyword: str) -> str:
    try:
        return str(ds.get(keyword, "") or "")
    except Exception:
        return ""


def classify(series: Series, matcher: ModalityMatcher, skip: ModalityMatcher) -> str:
    """The series' modality (header only), or SkipInput with the reason it is not a usable scan."""
    from pydicom.uid import UID

    ds = series.header
    dicom_modality = _text(ds, "Modality").upper()
    sop = _text(ds, "SOPClassUID")
    sop_name = UID(sop).name if sop else "no SOP class"
    if dicom_modality in NON_IMAGE_MODALITIES or any(word in sop_name for word in NON_IMAGE_SOP_WORDS):
        raise SkipInput(f"non-image object (Modality {dicom_modality or '?'}, {sop_name})")
    if "Rows" not in ds or "Columns" not in ds:
        raise SkipInput(f"no image in the file (no Rows/Columns; Modality {dicom_modality or '?'}, {sop_name})")
    if "Secondary Capture" in sop_name:
        raise SkipInput(f"secondary capture ({sop_name})")
    image_type = ds.get("ImageType") or []
    image_type = [str(v).upper() for v in ([image_type] if isinstance(image_type, str) else image_type)]
    if "LOCALIZER" in image_type or "SCOUT" in image_type:
        raise SkipInput("localizer/scout (ImageType LOCALIZER)")
    names = [_text(ds, k) for k in ("SeriesDescription", "ProtocolName")]
    if skip.match(names):
        raise SkipInput("localizer/scout/calibration (series description matches ingest.skip_patterns)")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = _text(ds, "PhotometricInterpretation").upper()
    if samples > 1 or photometric.startswith(("RGB", "YBR", "PALETTE")):
        raise SkipInput(f"colour image ({photometric or f'{samples} samples per pixel'}), not a grey-scale scan")
    if series.uid.startswith("no-uid:"):
        raise SkipInput("no SeriesInstanceUID (an incomplete or truncated DICOM header)")
    if dicom_modality == "CT":
        return CT
    if dicom_modality != "MR":
        raise SkipInput(f"Modality {dicom_modality or 'missing'} is not ingested (only {' and '.join(SUPPORTED_MODALITIES)})")
    found = matcher.match(_text(ds, k) for k in ("SeriesDescription", "ProtocolName", "SequenceName", "PulseSequenceName"))
    if found is None:
        number = ds.get("SeriesNumber")
        raise SkipInput(
            f"MR series {number if number not in (None, '') else '?'}: modality not recognised "
            "(no ingest.modality_patterns matched its series description, protocol or sequence name)"
        )
    return found[0]


# ------------------------------------------------------------------------------------------- geometry
def _floats(value: Any, n: int, what: str, rel: str) -> np.ndarray:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SkipInput(f"{what} unreadable in {rel}") from exc
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise SkipInput(f"{what} malformed in {rel} (expected {n} numbers)")
    return arr


def _first(item: Any, shared: Any, keyword: str) -> Any:
    """The first item of a functional-group sequence, per-frame first, then shared; None if absent."""
    for source in (item, shared):
        if source is not None:
            seq = source.get(keyword)
            if seq:
                return seq[0]
    return None


def _rescale(ds: Any) -> tuple[float, float]:
    slope = ds.get("RescaleSlope", 1.0)
    intercept = ds.get("RescaleIntercept", 0.0)
    slope = float(slope) if slope not in (None, "") else 1.0
    intercept = float(intercept) if intercept not in (None, "") else 0.0
    return (slope if slope != 0 else 1.0), intercept


def slice_refs(series: Series) -> tuple[list[SliceRef], int]:
    """Every slice of the series with its geometry, duplicates of the same instance dropped (and counted)."""
    refs: list[SliceRef] = []
    seen: set[str] = set()
    duplicates = 0
    for f in series.files:
        ds = f.header
        instance = _text(ds, "SOPInstanceUID") or f.rel
        rows, cols = int(ds.Rows), int(ds.Columns)
        if "PerFrameFunctionalGroupsSequence" in ds:
            shared_seq = ds.get("SharedFunctionalGroupsSequence")
            shared = shared_seq[0] if shared_seq else None
            for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
                pos, ori, meas = (_first(item, shared, k) for k in (
                    "PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence"))
                if pos is None or ori is None or meas is None:
                    raise SkipInput(f"multi-frame image without per-frame position/orientation/spacing ({f.rel})")
                pvt = _first(item, shared, "PixelValueTransformationSequence")
                slope, intercept = _rescale(pvt) if pvt is not None else (1.0, 0.0)
                key = f"{instance}#{i}"
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
                refs.append(SliceRef(
                    f, i,
                    _floats(pos.get("ImagePositionPatient"), 3, "ImagePositionPatient", f.rel),
                    _floats(ori.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", f.rel),
                    tuple(_floats(meas.get("PixelSpacing"), 2, "PixelSpacing", f.rel)),
                    rows, cols, slope, intercept, key,
                ))
            continue
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise SkipInput(f"multi-frame image without per-frame positions ({f.rel})")
        if instance in seen:
            duplicates += 1
            continue
        seen.add(instance)
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if keyword not in ds:
                raise SkipInput(f"no {keyword} ({f.rel}): geometry unknown")
        refs.append(SliceRef(
            f, None,
            _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", f.rel),
            _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", f.rel),
            tuple(_floats(ds.PixelSpacing, 2, "PixelSpacing", f.rel)),
            rows, cols, *_rescale(ds), instance,
        ))
    return refs, duplicates


def geometry(refs: list[SliceRef], cfg: IngestConfig) -> tuple[list[SliceRef], np.ndarray, list[str]]:
    """Slices sorted along the normal, the voxel -> RAS affine, and notes; SkipInput if no single volume."""
    first = refs[0]
    if any((r.rows, r.cols) != (first.rows, first.cols) for r in refs):
        raise SkipInput("slices differ in size (rows x columns)")
    if any(np.abs(r.orientation - first.orientation).max() > ORIENTATION_TOL for r in refs):
        raise SkipInput("slices have different orientations (e.g. a multi-plane localizer)")
    if any(np.abs(np.subtract(r.pixel_spacing, first.pixel_spacing)).max() > 1e-4 for r in refs):
        raise SkipInput("slices differ in pixel spacing")
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    if min(np.linalg.norm(row_dir), np.linalg.norm(col_dir)) < 1e-6:
        raise SkipInput("ImageOrientationPatient is degenerate (zero vector)")
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    if np.linalg.norm(normal) < 0.5:
        raise SkipInput("ImageOrientationPatient row and column directions are not perpendicular")
    normal /= np.linalg.norm(normal)

    dist = np.array([r.position @ normal for r in refs])
    order = np.argsort(dist, kind="stable")
    refs = [refs[i] for i in order]
    dist = dist[order]
    n = len(refs)
    if n < cfg.min_slices:
        raise SkipInput(f"{n} slice(s): not a volume (ingest.min_slices = {cfg.min_slices})")
    gaps = np.diff(dist)
    n_positions = 1 + int(np.count_nonzero(gaps > POSITION_TOL_MM))
    if n_positions < n:
        counts = set(np.diff(np.flatnonzero(np.r_[True, gaps > POSITION_TOL_MM, True])))
        if len(counts) == 1 and n_positions > 1:
            raise SkipInput(
                f"series holds {n // n_positions} volumes ({n_positions} slice positions, each repeated "
                f"{n // n_positions} times: 4D, e.g. fMRI, diffusion or multi-echo); not stacked into one volume"
            )
        raise SkipInput(f"repeated slice positions ({n} slices at {n_positions} positions); not one volume")
    if n_positions < cfg.min_slices:
        raise SkipInput(f"{n_positions} slice position(s): not a volume (ingest.min_slices = {cfg.min_slices})")
    step = float(np.median(gaps))
    ratio = gaps / step
    missing = np.flatnonzero(ratio > 1.5)
    if missing.size:
        where = []
        for i in missing:
            k = int(round(ratio[i])) - 1
            where += [dist[i] + step * j for j in range(1, max(k, 1) + 1)]
        listed = ", ".join(f"{w:.2f}" for w in where[:5]) + (", ..." if len(where) > 5 else "")
        raise SkipInput(
            f"missing slice(s) at position(s) {listed} mm along the slice normal "
            f"(slice spacing {step:.4g} mm, {len(where)} missing)"
        )
    if np.abs(ratio - 1).max() > cfg.slice_spacing_tolerance:
        raise SkipInput(
            f"uneven slice spacing: gaps from {gaps.min():.4g} to {gaps.max():.4g} mm "
            f"(tolerance {cfg.slice_spacing_tolerance:.0%} of the median {step:.4g} mm)"
        )
    positions = np.array([r.position for r in refs])
    step_vec = (positions[-1] - positions[0]) / (n - 1)
    predicted = positions[0] + np.arange(n)[:, None] * step_vec
    off_line = float(np.linalg.norm(positions - predicted, axis=1).max())
    if off_line > max(POSITION_TOL_MM, cfg.slice_spacing_tolerance * step):
        raise SkipInput(f"slice positions do not lie on a line (up to {off_line:.3g} mm off)")
    notes = []
    tilt = float(np.degrees(np.arccos(np.clip(step_vec @ normal / np.linalg.norm(step_vec), -1, 1))))
    if tilt > TILT_NOTE_DEG:
        notes.append(f"slices sheared by {tilt:.2f} deg (gantry tilt); affine kept as acquired, not resampled")
    row_spacing, col_spacing = first.pixel_spacing
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # i: along a row (next column)
    lps[:3, 1] = col_dir * row_spacing  # j: down a column (next row)
    lps[:3, 2] = step_vec
    lps[:3, 3] = positions[0]
    return refs, LPS_TO_RAS @ lps, notes


# ------------------------------------------------------------------------------------------- pixels
def read_pixels(refs: list[SliceRef]) -> np.ndarray:
    """Stack the slices (already sorted) into (x, y, z) with the rescale slope/intercept applied.

    int32 when every slice's slope is 1 and intercept a whole number (values stay exact), float32 otherwise.
    """
    from pydicom import dcmread
    from pydicom.pixels import apply_modality_lut

    first = refs[0]
    integral = all(r.slope == 1.0 and float(r.intercept).is_integer() for r in refs)
    vol = np.empty((first.cols, first.rows, len(refs)), dtype=np.int32 if integral else np.float32)
    cached_path: Path | None = None
    frames: np.ndarray | None = None
    for k, ref in enumerate(refs):
        path = ref.file.path
        try:
            if ref.frame is None:
                ds = dcmread(path)
                arr = ds.pixel_array
                if "ModalityLUTSequence" in ds and "RescaleSlope" not in ds:
                    arr = apply_modality_lut(arr, ds)
            else:
                if path != cached_path:
                    frames = dcmread(path).pixel_array
                    frames = frames[None] if frames.ndim == 2 else frames
                    cached_path = path
                arr = frames[ref.frame]
        except Exception as exc:  # truncated, corrupt or undecodable pixel data
            raise SkipInput(f"pixel data unreadable in {ref.file.rel} ({describe_error(exc, path.parent)})") from exc
        if arr.shape != (ref.rows, ref.cols):
            raise SkipInput(f"pixel data of {ref.file.rel} has shape {arr.shape}, expected ({ref.rows}, {ref.cols})")
        if integral:
            arr = arr.astype(np.int32) + int(ref.intercept)
        elif ref.slope != 1.0 or ref.intercept != 0.0:
            arr = arr.astype(np.float64) * ref.slope + ref.intercept
        vol[:, :, k] = arr.T
    return vol


def _number(ds: Any, keyword: str) -> float | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else round(float(value), 4)
    except (TypeError, ValueError):
        return None


def technical_meta(series: Series) -> dict[str, Any]:
    """Acquisition parameters for the sidecar: technical values only (no names, dates, places, devices)."""
    ds = series.header
    meta: dict[str, Any] = {"source_format": "DICOM", "dicom_modality": _text(ds, "Modality")}
    number = _number(ds, "SeriesNumber")
    meta["series_number"] = int(number) if number is not None else None
    for key, keyword in (
        ("echo_time_ms", "EchoTime"), ("repetition_time_ms", "RepetitionTime"),
        ("inversion_time_ms", "InversionTime"), ("flip_angle_deg", "FlipAngle"),
        ("magnetic_field_strength_t", "MagneticFieldStrength"), ("slice_thickness_mm", "SliceThickness"),
        ("kvp", "KVP"),
    ):
        value = _number(ds, keyword)
        if value is not None:
            meta[key] = value
    return meta


def load_series(series: Series, cfg: IngestConfig) -> Volume:
    """Convert a (classified) series into a Volume, or raise SkipInput."""
    refs, duplicates = slice_refs(series)
    if not refs:
        raise SkipInput("no slices")
    refs, affine, notes = geometry(refs, cfg)
    if duplicates:
        notes.append(f"{duplicates} duplicate file(s) of the same instance ignored")
    data = read_pixels(refs)
    meta = technical_meta(series)
    meta["n_slices"] = len(refs)
    return Volume(data, affine, notes, meta)
