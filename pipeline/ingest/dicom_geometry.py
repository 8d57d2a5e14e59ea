"""The geometry of DICOM slices: each file's slices with position and orientation, and the volume they make.

Geometry follows the DICOM standard (PS3.3 C.7.6.2.1.1), as dcm2niix and nibabel do:
- slices are ordered by their position along the slice normal (row cosine x column cosine), never by
  InstanceNumber or file name;
- the affine's third column is the MEASURED step between slice positions (not SliceThickness); a step not
  parallel to the normal (CT gantry tilt) is kept as a sheared affine and noted;
- voxel (i, j, k) = column i, row j of slice k; DICOM patient coordinates are LPS, so x and y are flipped
  to RAS.
`file_slices` reads one file's header (a classic image: one slice; an enhanced multi-frame image: one per frame,
from its functional groups) and refuses a file whose geometry tags are missing or malformed; `geometry` refuses
slices that do not make one volume (mixed orientations or sizes, too few, several volumes, missing slices,
uneven spacing). Reasons hold technical values only, never a path or an identifier.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pipeline.config import IngestConfig
from pipeline.ingest.discover import DicomFile
from pipeline.ingest.volume import SkipInput

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
POSITION_TOL_MM = 0.01  # slices closer than this along the normal are "at the same position"
ORIENTATION_TOL = 1e-3  # max difference of direction cosines within one series
TILT_NOTE_DEG = 0.05  # a step this far off the normal is reported as shear (gantry tilt)


@dataclasses.dataclass
class SliceRef:
    """One slice: a single-frame file or one frame of a multi-frame file, with its geometry (and, once
    decoded, its stored pixel values)."""

    file: DicomFile
    frame: int | None
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]  # (between rows, between columns), as DICOM PixelSpacing
    rows: int
    cols: int
    slope: float
    intercept: float
    instance: str  # SOPInstanceUID (or the file's path), "#frame" appended for a frame
    pixels: np.ndarray | None = None


def tag_text(ds: Any, keyword: str) -> str:
    """A header element as text ("" when absent or unreadable)."""
    try:
        return str(ds.get(keyword, "") or "")
    except Exception:
        return ""


def _floats(value: Any, n: int, what: str) -> np.ndarray:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SkipInput(f"{what} unreadable") from exc
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise SkipInput(f"{what} malformed (expected {n} numbers)")
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


def _size(ds: Any) -> tuple[int, int]:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise SkipInput("image size unknown (Rows/Columns missing or unreadable)") from exc
    if rows < 1 or cols < 1:
        raise SkipInput(f"image size {rows}x{cols}: no pixels")
    return rows, cols


def file_slices(f: DicomFile) -> list[SliceRef]:
    """The slices of file `f` with their geometry (pixels not read), or SkipInput why its header gives none."""
    ds = f.header
    instance = tag_text(ds, "SOPInstanceUID") or f.rel
    rows, cols = _size(ds)
    if "PerFrameFunctionalGroupsSequence" in ds:
        shared_seq = ds.get("SharedFunctionalGroupsSequence")
        shared = shared_seq[0] if shared_seq else None
        refs = []
        for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
            pos, ori, meas = (_first(item, shared, k) for k in (
                "PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence"))
            if pos is None or ori is None or meas is None:
                raise SkipInput("multi-frame image without per-frame position/orientation/spacing")
            pvt = _first(item, shared, "PixelValueTransformationSequence")
            slope, intercept = _rescale(pvt) if pvt is not None else (1.0, 0.0)
            refs.append(SliceRef(
                f, i,
                _floats(pos.get("ImagePositionPatient"), 3, "ImagePositionPatient"),
                _floats(ori.get("ImageOrientationPatient"), 6, "ImageOrientationPatient"),
                tuple(_floats(meas.get("PixelSpacing"), 2, "PixelSpacing")),
                rows, cols, slope, intercept, f"{instance}#{i}",
            ))
        if not refs:
            raise SkipInput("multi-frame image with no frames in its functional groups")
        return refs
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise SkipInput("multi-frame image without per-frame positions")
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if keyword not in ds:
            raise SkipInput(f"no {keyword}: geometry unknown")
    return [SliceRef(
        f, None,
        _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient"),
        _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient"),
        tuple(_floats(ds.PixelSpacing, 2, "PixelSpacing")),
        rows, cols, *_rescale(ds), instance,
    )]


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
    index = np.arange(n)  # each slice's place on the regular grid (ingest.fill_missing_slices: with the gaps)
    if missing.size and cfg.fill_missing_slices:
        spacings = np.maximum(np.rint(ratio), 1)
        index = np.r_[0, np.cumsum(spacings.astype(int))]
        ratio = ratio / spacings  # a gap of k spacings is k even steps; uneven ones are still refused
        missing = np.array([], dtype=int)
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
    step_vec = (positions[-1] - positions[0]) / index[-1]
    predicted = positions[0] + index[:, None] * step_vec
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
