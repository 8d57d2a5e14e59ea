"""Grid geometry of super-resolution pairs: factors per axis, the HR grid of an LR scan, the 2D slice axis."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sr_factors(hr_shape: Sequence[int], lr_shape: Sequence[int], hr_affine: np.ndarray | None = None,
               lr_affine: np.ndarray | None = None, where: str = "") -> tuple[int, ...]:
    """Integer upsampling factor per axis from the HR and LR shapes (checked against the voxel sizes)."""
    if len(hr_shape) != len(lr_shape):
        raise ValueError(f"{where}: HR shape {tuple(hr_shape)} and LR shape {tuple(lr_shape)} differ in rank")
    factors = []
    for n_hr, n_lr in zip(hr_shape, lr_shape, strict=True):
        if n_lr <= 0 or n_hr % n_lr:
            raise ValueError(f"{where}: HR shape {tuple(hr_shape)} is not an integer multiple of LR {tuple(lr_shape)}")
        factors.append(n_hr // n_lr)
    if hr_affine is not None and lr_affine is not None:
        ratio = np.linalg.norm(lr_affine[:3, :3], axis=0) / np.linalg.norm(hr_affine[:3, :3], axis=0)
        if not np.allclose(ratio, factors, rtol=1e-3):
            raise ValueError(f"{where}: voxel-size ratio {np.round(ratio, 3).tolist()} does not match the "
                             f"shape ratio {factors}")
    return tuple(factors)


def hr_affine_from_lr(lr_affine: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """The HR affine of which `lr_affine` is `pipeline.imaging.degrade.lr_affine` (its exact inverse): voxel size
    divided by the factor, LR voxel `m` centred on HR index `m*f + (f - 1)/2`."""
    lr_to_hr = np.eye(4)
    for axis, f in enumerate(factors):
        lr_to_hr[axis, axis] = f
        lr_to_hr[axis, 3] = (f - 1) / 2.0
    return np.asarray(lr_affine, dtype=np.float64) @ np.linalg.inv(lr_to_hr)


def slice_axis_for(factors: Sequence[int]) -> int:
    """The axis 2D models slice along: the last axis that is not upsampled (z for in-plane SR)."""
    free = [i for i, f in enumerate(factors) if f == 1]
    if not free:
        raise ValueError(f"every axis is upsampled (factors {tuple(factors)}): 2D slices cannot do this; "
                         "use spatial_dims: 3")
    return free[-1]


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each volume axis of a voxel -> world affine."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def fmt(spacing: Sequence[float]) -> str:
    """``3.76x3.76x0.94 mm``."""
    return "x".join(f"{float(s):.3g}" for s in spacing) + " mm"
