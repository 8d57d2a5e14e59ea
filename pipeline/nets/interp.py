"""Differentiable fixed upsampling of (N, C, *spatial) tensors by an integer factor per axis.

Used as the interpolation skip of the SR generator (the network then learns only what interpolation misses).
Every method of `pipeline.imaging.degrade.upsample` (zerofill, bicubic, trilinear, nearest) is linear and separable,
so along each axis it is a small matrix (HR length x LR length), built here by upsampling the identity with
`pipeline.imaging.degrade.upsample` itself: the skip equals the classical baseline to float precision, with the same
geometry convention (LR voxel centre = centre of its HR block), on any device and with autograd.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

INTERP_METHODS = ("zerofill", "bicubic", "trilinear", "nearest")


@functools.lru_cache(maxsize=64)
def upsample_matrix(n_lr: int, scale: int, method: str) -> np.ndarray:
    """The (n_lr * scale, n_lr) matrix M with ``upsample(x) = M @ x`` along one axis (float64)."""
    from pipeline.imaging.degrade import upsample

    if method not in INTERP_METHODS:
        raise ValueError(f"unknown interpolation {method!r}; choose one of {', '.join(INTERP_METHODS)}")
    matrix = upsample(np.eye(n_lr, dtype=np.float64), int(scale), method, (0,))
    matrix.setflags(write=False)
    return matrix


def interpolate(x: torch.Tensor, factors: Sequence[int], method: str) -> torch.Tensor:
    """Upsample `x` (N, C, *spatial) by integer `factors` (one per spatial axis) with `method`.

    Computed in float32 whatever the autocast state (a bf16 skip would cap the output's precision).
    """
    factors = [int(f) for f in factors]
    if len(factors) != x.dim() - 2:
        raise ValueError(f"{len(factors)} factors for a tensor with {x.dim() - 2} spatial dimensions")
    dtype = x.dtype
    out = x.float()
    with torch.autocast(device_type=x.device.type, enabled=False):
        for i, f in enumerate(factors):
            if f == 1:
                continue
            d = 2 + i
            m = torch.tensor(upsample_matrix(out.shape[d], f, method), dtype=torch.float32, device=out.device)
            out = torch.movedim(torch.movedim(out, d, -1) @ m.T, -1, d)
    return out.to(dtype) if dtype.is_floating_point else out


def downsample(x: torch.Tensor, factor: int, spatial_dims: int) -> torch.Tensor:
    """Block-average (N, C, *spatial) by `factor` along its spatial axes (zero-padded up to a multiple)."""
    if factor == 1:
        return x
    pad: list[int] = []
    for n in reversed(x.shape[2:]):
        pad += [0, (-n) % factor]
    x = F.pad(x, pad)
    return (F.avg_pool2d if spatial_dims == 2 else F.avg_pool3d)(x, factor)


def upsample(x: torch.Tensor, factor: int, size: Sequence[int]) -> torch.Tensor:
    """Inverse geometry of `downsample`: (bi/tri)linear interpolation by `factor`, cropped to `size`."""
    if factor == 1:
        return x
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    up = F.interpolate(x, scale_factor=factor, mode=mode, align_corners=False)
    return up[(slice(None), slice(None), *(slice(0, int(n)) for n in size))]


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2 radius + 1)-voxel window around each voxel of (N, C, *spatial) (edges: the part inside)."""
    pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
    return pool(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def detail_transfer(output: torch.Tensor, guide: torch.Tensor, factor: int, radius: int = 2,
                    eps: float = 1e-3) -> torch.Tensor:
    """Give `output`, made on a grid `factor` times coarser than its source `guide` and interpolated back
    (`upsample`; both (N, C, *spatial), same shape), the detail the coarse grid lost from the source:
    ``output + a * (guide - upsample(downsample(guide)))``, where `a` is the local slope of `output` against the
    coarse guide, fitted by least squares in (2 radius + 1)-voxel windows as in the guided filter (He et al.,
    TPAMI 2013; `eps` shrinks it where the guide is flat). The slope carries the local intensity mapping, so the
    detail comes with the output's contrast (negative where T1w -> T2w inverts it)."""
    if factor == 1:
        return output
    size = guide.shape[2:]
    coarse = upsample(downsample(guide, factor, guide.dim() - 2), factor, size)
    mean_g, mean_o = _box(coarse, radius), _box(output, radius)
    cov = _box(coarse * output, radius) - mean_g * mean_o
    var = _box(coarse * coarse, radius) - mean_g * mean_g
    return output + cov / (var + eps) * (guide - coarse)
