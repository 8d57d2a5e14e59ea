"""Self-supervised through-plane SR of a scan file: read a NIfTI file or DICOM series folder (and its
SliceThickness), `pipeline.selfsr.run.selfsr_volume`, write the result atomically."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.selfsr.profile import SliceProfile
from pipeline.selfsr.run import selfsr_volume
from pipeline.selfsr.train import TrainSettings

log = logging.getLogger(__name__)


def read_input(path: str | Path) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(data (RAS), affine, SliceThickness in mm or None) of a NIfTI file or a DICOM series folder."""
    from pipeline.inference.scans import read_scan

    path = Path(path)
    data, affine = read_scan(path)
    thickness = _dicom_thickness(path) if path.is_dir() else None
    return data, affine, thickness


def _dicom_thickness(folder: Path) -> float | None:
    """SliceThickness of the series' first readable file (None when absent)."""
    import pydicom

    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:  # not DICOM (the series reader already skipped it)
            continue
        value = getattr(ds, "SliceThickness", None)
        try:
            return float(value) if value not in (None, "") and float(value) > 0 else None
        except (TypeError, ValueError):
            return None
    return None


def selfsr_scan(input_path: str | Path, output_path: str | Path, profile: str = "rect",
                thickness_mm: float | None = None, settings: TrainSettings | None = None,
                data_consistency: bool = True) -> dict:
    """Read a scan, super-resolve it through-plane, write the result (NIfTI, atomically); returns the summary."""
    from pipeline.io.nifti import save_nifti

    input_path = Path(input_path)
    where = input_path.name  # never the full path (it may hold identifiers)
    data, affine, header_thickness = read_input(input_path)
    if thickness_mm is None and header_thickness is not None:
        thickness_mm = header_thickness
        log.info("selfsr: slice thickness %.3g mm from the DICOM header", thickness_mm)
    prof = SliceProfile.parse(profile, thickness_mm)
    out, out_affine, summary = selfsr_volume(data, affine, prof, settings, data_consistency, where)
    save_nifti(out, out_affine, output_path)
    log.info("selfsr: wrote %s %s", Path(output_path).name, out.shape)
    return summary
