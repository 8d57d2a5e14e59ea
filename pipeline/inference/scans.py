"""A scan to apply a model to: a NIfTI file or one DICOM series folder, as (data (x, y, z), RAS affine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_scan(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI file or a DICOM series folder as (data (x, y, z) float32, RAS affine), reoriented to RAS."""
    import nibabel as nib

    path = Path(path)
    if path.is_dir():
        data, affine = _read_dicom_folder(path)
        img = nib.Nifti1Image(data, affine)
    elif path.is_file():
        try:
            img = nib.load(str(path))
        except Exception as exc:  # nibabel raises several types for unreadable files
            raise ValueError(f"{path}: cannot be read as NIfTI ({exc})") from exc
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    if len(img.shape) != 3:
        raise ValueError(f"{path}: expected a 3-D scalar volume, got shape {img.shape}")
    img = nib.as_closest_canonical(img)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine.copy()


def _read_dicom_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """One DICOM series from a folder, with the ingest stage's reader."""
    from pipeline.config import IngestConfig
    from pipeline.ingest.dicom_series import group_series, load_series
    from pipeline.ingest.discover import discover

    found = discover(folder.resolve())
    series = group_series(found.dicom)
    if len(series) != 1:
        raise ValueError(f"{folder}: expected one DICOM series, found {len(series)}; point --input at one series")
    volume = load_series(series[0], IngestConfig())
    return np.asarray(volume.data, dtype=np.float32), np.asarray(volume.affine, dtype=np.float64)
