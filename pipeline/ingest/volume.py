"""What a reader (DICOM series or NIfTI file) hands to the writer, and the one way an input is refused."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np


class SkipInput(Exception):
    """This input is not ingested; the message is the manifest's reason, also logged: no identifiers, no paths
    and no parts of file names (the row's `source` names the input)."""


@dataclasses.dataclass
class Volume:
    """A 3D scan: voxels (x, y, z), affine voxel -> RAS+ mm, notes for the manifest, technical sidecar fields."""

    data: np.ndarray
    affine: np.ndarray
    notes: list[str] = dataclasses.field(default_factory=list)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm: the lengths of the affine's columns."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))


def storage_dtype(data: np.ndarray) -> type:
    """int16 when every voxel is a whole number in its range (most MR and CT), float32 otherwise."""
    if data.size and np.issubdtype(data.dtype, np.integer):
        lo, hi = int(data.min()), int(data.max())
    elif data.size and bool(np.all(np.isfinite(data))) and bool(np.all(data == np.round(data))):
        lo, hi = float(data.min()), float(data.max())
    else:
        return np.float32
    return np.int16 if -32768 <= lo and hi <= 32767 else np.float32


def describe_error(exc: BaseException, path: Path | None = None, root: Path | None = None) -> str:
    """A short, one-line description of an unexpected error, without the input's paths: the file `path` (as
    given, or relative to `root`) becomes "the file", another path under `root` "a file of the input folder"."""
    text = str(exc)
    if path is not None:
        text = text.replace(str(path), "the file")
        if root is not None and Path(path).is_relative_to(root):
            text = text.replace(Path(path).relative_to(root).as_posix(), "the file")
    if root is not None:
        text = re.sub(re.escape(str(root)) + r"/[^\s'\"]*", "a file of the input folder", text)
        text = text.replace(str(root), "the input folder")
    text = " ".join(text.split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
