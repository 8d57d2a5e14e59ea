"""NIfTI reading and atomic writing."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.io.atomic import atomic_path


def save_nifti(data: np.ndarray, affine: np.ndarray, path: str | Path, dtype: type = np.float32) -> Path:
    """Write `data` with `affine` (voxel -> RAS+ mm) to `path` atomically; qform and sform both set.

    The header carries nothing but geometry and data type (no description, no identifiers).
    """
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), np.asarray(affine, dtype=np.float64))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


def load_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (data as float32, affine) of a NIfTI file."""
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine.copy()
