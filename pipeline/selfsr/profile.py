"""The slice profile as a linear operator: how a thick (or thin, gapped) slice samples the through-plane axis.

Geometry (the convention of `pipeline.imaging.degrade`): on an HR grid `scale` times finer than the slice
spacing, LR slice `m` is centred on HR index ``m*scale + (scale - 1) / 2``. The profile `p(u)` (u in mm from the
slice centre, integral 1) is integrated over each HR voxel's extent, so HR voxel `i` gets the weight
``w(i, m) = integral of p(u - c_m) du over [i - 1/2, i + 1/2] * step`` (a rect profile as thick as the spacing
is then exactly the mean of `scale` voxels, `degrade(..., "thick_slice")`). Weights falling outside the volume
are dropped and each row renormalised to sum 1 (a constant stays that constant).

Profiles (`SliceProfile`):
- `rect`: width = slice thickness (default: the spacing, i.e. contiguous slices; thinner than the spacing
  leaves a gap of spacing - thickness between slices);
- `gaussian`: FWHM = slice thickness;
- a file: two columns, offset from the slice centre (mm) and relative sensitivity, linearly interpolated and 0
  outside the sampled range (e.g. a measured slice profile).

The operator `A` along one axis is a small dense (n_lr, n_hr) matrix, so `reslice` is `A @ x` along that axis and
`consistency` is the exact least-change correction ``x + pinv(A) (lr - A x)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("rect", "gaussian")
#: sub-samples per HR voxel when integrating a tabulated profile
_SUBSAMPLES = 64


@dataclass(frozen=True)
class SliceProfile:
    """A slice profile: `kind` rect | gaussian | file, `thickness_mm` (rect width or Gaussian FWHM; None: the
    spacing) and, for a file, its table of (offset mm, weight)."""

    kind: str = "rect"
    thickness_mm: float | None = None
    table: tuple[tuple[float, float], ...] = ()

    @classmethod
    def parse(cls, spec: str, thickness_mm: float | None = None) -> SliceProfile:
        """`rect`, `gaussian` or the path of a profile file (two columns: offset mm, weight)."""
        if thickness_mm is not None and not thickness_mm > 0:
            raise ValueError(f"slice thickness must be > 0 mm, got {thickness_mm}")
        if spec in KINDS:
            return cls(spec, thickness_mm)
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"slice profile {spec!r}: not rect, gaussian or a readable profile file")
        try:
            table = np.loadtxt(path, delimiter=None, comments="#", ndmin=2, dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"{path.name}: cannot be read as a slice profile (two numeric columns: offset mm, "
                             f"weight) ({exc})") from exc
        if table.shape[1] != 2 or table.shape[0] < 2:
            raise ValueError(f"{path.name}: a slice profile needs two columns (offset mm, weight) and at least two "
                             f"rows, got shape {table.shape}")
        if np.any(np.diff(table[:, 0]) <= 0) or np.any(table[:, 1] < 0) or not np.any(table[:, 1] > 0):
            raise ValueError(f"{path.name}: offsets must increase and weights be >= 0 and not all 0")
        return cls("file", None, tuple((float(a), float(b)) for a, b in table))

    def describe(self, spacing_mm: float) -> str:
        if self.kind == "file":
            return f"profile from a file ({len(self.table)} samples)"
        width = self.thickness_mm or spacing_mm
        what = "FWHM" if self.kind == "gaussian" else "thick"
        gap = f", gap {spacing_mm - width:.3g} mm" if self.kind == "rect" and width < spacing_mm - 1e-6 else ""
        return f"{self.kind} {width:.3g} mm {what} at {spacing_mm:.3g} mm spacing{gap}"

    def voxel_weights(self, offsets: np.ndarray, step: float, spacing_mm: float) -> np.ndarray:
        """Integral of the profile over HR voxels of width `step` (mm) centred at `offsets` (mm from the slice
        centre), not normalised."""
        lo, hi = offsets - step / 2, offsets + step / 2
        if self.kind == "rect":
            half = (self.thickness_mm or spacing_mm) / 2
            return np.clip(np.minimum(hi, half) - np.maximum(lo, -half), 0.0, None)
        if self.kind == "gaussian":
            from scipy.special import ndtr

            sigma = (self.thickness_mm or spacing_mm) / (2 * math.sqrt(2 * math.log(2)))
            return ndtr(hi / sigma) - ndtr(lo / sigma)
        table = np.asarray(self.table)
        fine = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES - 0.5  # sub-sample centres in voxel units
        u = offsets[:, None] + fine[None, :] * step
        return np.interp(u, table[:, 0], table[:, 1], left=0.0, right=0.0).mean(axis=1) * step

    def support_mm(self, spacing_mm: float) -> float:
        """Half-width (mm) beyond which the profile is negligible."""
        if self.kind == "rect":
            return (self.thickness_mm or spacing_mm) / 2
        if self.kind == "gaussian":
            return 4.0 * (self.thickness_mm or spacing_mm) / 2.355
        return max(abs(self.table[0][0]), abs(self.table[-1][0]))


@functools.lru_cache(maxsize=64)
def profile_matrix(n_lr: int, scale: int, profile: SliceProfile, spacing_mm: float) -> np.ndarray:
    """The (n_lr, n_lr * scale) matrix that re-slices an HR column (HR step spacing_mm / scale) with `profile`."""
    if scale < 1 or n_lr < 1:
        raise ValueError(f"profile_matrix: need n_lr >= 1 and scale >= 1, got {n_lr}, {scale}")
    n_hr = n_lr * scale
    step = spacing_mm / scale
    centres = np.arange(n_lr) * scale + (scale - 1) / 2.0  # HR index of each LR slice centre
    offsets = (np.arange(n_hr)[None, :] - centres[:, None]) * step  # mm from slice m's centre, per HR voxel
    weights = profile.voxel_weights(offsets.ravel(), step, spacing_mm).reshape(n_lr, n_hr)
    sums = weights.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise ValueError(f"slice profile {profile.describe(spacing_mm)} covers no voxel of a {step:.3g} mm grid")
    matrix = weights / sums
    matrix.setflags(write=False)
    return matrix


def _along(matrix: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(np.moveaxis(x, axis, -1) @ matrix.T, -1, axis)


def reslice(hr: np.ndarray, scale: int, profile: SliceProfile, spacing_mm: float, axis: int) -> np.ndarray:
    """The thick slices of `hr` along `axis` (its length a multiple of `scale`) with `profile`; float64 in,
    float64 out (float32 otherwise)."""
    hr = np.asarray(hr)
    if hr.shape[axis] % scale:
        raise ValueError(f"reslice: length {hr.shape[axis]} along axis {axis} is not a multiple of {scale}")
    matrix = profile_matrix(hr.shape[axis] // scale, scale, profile, float(spacing_mm))
    dtype = np.float64 if hr.dtype == np.float64 else np.float32
    return _along(matrix, np.asarray(hr, dtype=np.float64), axis).astype(dtype)


@functools.lru_cache(maxsize=16)
def _pinv(n_lr: int, scale: int, profile: SliceProfile, spacing_mm: float) -> np.ndarray:
    pinv = np.linalg.pinv(profile_matrix(n_lr, scale, profile, spacing_mm))
    pinv.setflags(write=False)
    return pinv


def consistency(sr: np.ndarray, lr: np.ndarray, scale: int, profile: SliceProfile, spacing_mm: float,
                axis: int) -> np.ndarray:
    """The closest image (L2) to `sr` that re-slices exactly to `lr`: ``sr + pinv(A) (lr - A sr)``.

    Exact because A (rows: the slices' weights) has full row rank for every profile that gives each slice a
    voxel of its own. Works in float64, returns float32.
    """
    sr = np.asarray(sr, dtype=np.float64)
    lr = np.asarray(lr, dtype=np.float64)
    n_lr = lr.shape[axis]
    expected = list(lr.shape)
    expected[axis] = n_lr * scale
    if tuple(expected) != sr.shape:
        raise ValueError(f"consistency: SR shape {sr.shape} does not match LR {lr.shape} x{scale} along axis {axis}")
    matrix = profile_matrix(n_lr, scale, profile, float(spacing_mm))
    residual = lr - _along(matrix, sr, axis)
    return (sr + _along(_pinv(n_lr, scale, profile, float(spacing_mm)), residual, axis)).astype(np.float32)
