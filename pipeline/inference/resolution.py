"""Does a scan have the voxel size a super-resolution model was trained on? And if not, what then.

A super-resolution model file records the voxel sizes of its training pairs (``resolution``: ``lr_spacing`` of
the inputs, ``hr_spacing`` of the targets, mm per volume axis). `infer` compares the scan's voxel sizes (from its
affine) with ``lr_spacing``: within `TOLERANCE` on every axis the model is applied as it is. Otherwise, as the
`resolution_mismatch` mode says:

- ``refuse`` (default): a ValueError naming both voxel sizes and the override.
- ``resample``: the scan is resampled onto the model's LR grid (same field of view and centre, the model's voxel
  size; Gaussian anti-aliasing where the grid gets coarser, then cubic B-spline, `scipy.ndimage`), the model is
  applied, its output (on the model's HR grid) is resampled onto the HR grid the input implies (the grid
  `family.output_affine` gives), and made consistent with the measured input
  (`pipeline.imaging.degrade.data_consistency`, unless switched off).
- ``ignore``: applied as it is, with a warning.

Model files written before the record existed have no ``resolution`` entry: nothing is checked (a note says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.imaging.geometry import fmt, voxel_sizes

log = logging.getLogger(__name__)

MODES = ("refuse", "resample", "ignore")
#: the largest relative difference, per axis, between the scan's voxel size and the model's LR voxel size
TOLERANCE = 0.10


def needs_resampling(blob: dict[str, Any], affine: np.ndarray, mode: str = "refuse", where: str = "the input") -> bool:
    """Check the scan's voxel sizes against the model file's ``resolution``; True when `mode` says to resample.

    Raises ValueError for a mismatch under ``refuse`` (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"unknown resolution-mismatch mode {mode!r}; choose one of {', '.join(MODES)}")
    res = blob.get("resolution")
    if not res or "lr_spacing" not in res:
        if "sr" in blob:
            log.info("%s: the model file does not say what voxel size it was trained on (written before it recorded "
                     "one); the input's %s is not checked", where, fmt(voxel_sizes(affine)))
            if mode == "resample":
                log.warning("%s: --resolution-mismatch resample needs the model's training voxel size; "
                            "applied as it is", where)
        return False
    spacing, lr = voxel_sizes(affine), np.asarray(res["lr_spacing"], dtype=np.float64)
    if spacing.shape != lr.shape or np.all(np.abs(spacing / lr - 1) <= TOLERANCE):
        return False
    hr = res.get("hr_spacing")
    what = (f"{where}: voxel size {fmt(spacing)}, but the model was trained on inputs of {fmt(lr)}"
            + (f" (targets {fmt(hr)})" if hr else "")
            + f"; they differ by more than {TOLERANCE:.0%} on an axis")
    if mode == "refuse":
        raise ValueError(f"{what}. Applying it would give poor output. Use --resolution-mismatch resample to resample "
                         "the input onto the model's grid and back, or --resolution-mismatch ignore to apply it as it is")
    if mode == "ignore":
        log.warning("%s; applied as it is (--resolution-mismatch ignore)", what)
        return False
    return True


def grid_with_spacing(shape: Sequence[int], affine: np.ndarray, spacing: Sequence[float]) -> tuple[tuple[int, ...],
                                                                                                      np.ndarray]:
    """The grid over the same field of view as (`shape`, `affine`) with voxel size `spacing`: same orientation and
    centre, as many voxels as fit (at least one); returns (shape, affine)."""
    shape = np.asarray(shape, dtype=np.float64)
    ratio = np.asarray(spacing, dtype=np.float64) / voxel_sizes(affine)  # new voxel, in input voxels
    n = np.maximum(1, np.round(shape / ratio)).astype(int)
    new_to_old = np.eye(4)
    new_to_old[:3, :3] = np.diag(ratio)
    new_to_old[:3, 3] = (shape - 1) / 2 - (n - 1) / 2 * ratio  # the centres coincide
    return tuple(int(v) for v in n), np.asarray(affine, dtype=np.float64) @ new_to_old


def resample(data: np.ndarray, affine: np.ndarray, dst_shape: Sequence[int], dst_affine: np.ndarray,
             order: int = 3) -> np.ndarray:
    """`data` (on `affine`) resampled onto the grid (`dst_shape`, `dst_affine`) in world space: Gaussian
    anti-aliasing (sigma = (step - 1) / 2 input voxels, as `skimage.transform.resize`) along the axes where the
    new grid is coarser, then a B-spline of `order`; outside the input the edge values continue."""
    from scipy import ndimage

    dst_to_src = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.asarray(dst_affine, dtype=np.float64)
    step = np.abs(dst_to_src[:3, :3]).max(axis=1)  # a new voxel's extent along each input axis, in input voxels
    data = np.asarray(data, dtype=np.float32)
    sigma = np.where(step > 1, (step - 1) / 2, 0.0)
    if np.any(sigma > 0):
        data = ndimage.gaussian_filter(data, sigma, mode="nearest")
    out = ndimage.affine_transform(data, dst_to_src[:3, :3], dst_to_src[:3, 3], output_shape=tuple(dst_shape),
                                   order=order, mode="nearest")
    return out.astype(np.float32)


def infer_resampled(run: Callable[[np.ndarray], tuple[np.ndarray, str]], data: np.ndarray, affine: np.ndarray,
                    blob: dict[str, Any], out_affine: np.ndarray, where: str = "the input",
                    settings: dict[str, Any] | None = None) -> tuple[np.ndarray, str]:
    """`run` (the model on one array, e.g. `pipeline.inference.run.infer_array`) applied to `data` resampled onto
    the model's LR grid; its output resampled onto the HR grid `out_affine` of the input (shape: the input's times
    the factors), then made consistent with `data` unless the inference settings (the file's, overridden by the
    non-None `settings`) switch ``data_consistency`` off."""
    from pipeline.imaging.degrade import DEGRADE_METHODS, data_consistency
    from pipeline.imaging.geometry import hr_affine_from_lr
    from pipeline.models.contract import inference_settings

    factors = [int(f) for f in blob["sr"]["factors"]]
    lr_spacing = [float(s) for s in blob["resolution"]["lr_spacing"]]
    lr_shape, lr_aff = grid_with_spacing(data.shape, affine, lr_spacing)
    sr, unit = run(resample(data, affine, lr_shape, lr_aff))
    out_shape = tuple(n * f for n, f in zip(data.shape, factors, strict=True))
    out = resample(sr, hr_affine_from_lr(lr_aff, factors), out_shape, out_affine)
    done = f"resampled {fmt(voxel_sizes(affine))} -> the model's {fmt(lr_spacing)} grid "
    done += f"({'x'.join(map(str, lr_shape))} voxels) and back onto the input's HR grid ({fmt(voxel_sizes(out_affine))})"
    method = (blob.get("degradation") or {}).get("method")
    axes = tuple(a for a, f in enumerate(factors) if f > 1)
    if inference_settings(blob, **(settings or {})).get("data_consistency") is False:
        done += "; no data consistency with the input (switched off)"
    elif method not in DEGRADE_METHODS or len({factors[a] for a in axes}) != 1:
        done += f"; no data consistency with the input (degradation {method!r}, factors {factors})"
    else:
        out = np.asarray(data_consistency(out, data, factors[axes[0]], method, axes), dtype=np.float32)
        done += f"; made consistent with the input ({method} x{factors[axes[0]]} along axes {list(axes)})"
    log.info("%s: %s", where, done)
    return out, unit
