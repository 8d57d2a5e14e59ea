"""Degradations that make low-resolution (LR) images, and the classical upsampling baselines.

Geometry convention, shared by every function here: along a degraded axis, LR voxel `m` covers the HR voxels
`m*scale ... m*scale + scale - 1`, and its centre lies at the mean of their centres, i.e. at HR index
`m*scale + (scale - 1) / 2`. `lr_affine` writes exactly this into the LR image's affine, so LR and HR images
overlay in world space, and `upsample` interpolates at exactly these positions (HR index `p` reads LR
coordinate `(p + 0.5) / scale - 0.5`, the `align_corners=False` / `grid_mode=True` convention).

Degradations (`degrade`):
- `kspace`: keep the centred `1/scale` of the spatial frequencies along each degraded axis (a scanner's
  smaller acquisition matrix over the same field of view; no window, so Gibbs ringing is real), sampled at
  the LR voxel centres, intensities preserved (a constant stays that constant). For an even LR length the
  unpaired Nyquist line is dropped so the result stays real and the operation is exactly undone by
  `upsample(..., "zerofill")` up to the low-pass: `upsample(degrade(x, "kspace"), "zerofill") == lowpass(x)`.
- `bicubic`: anti-aliased bicubic image-domain downsampling (PyTorch `antialias=True`, the
  MATLAB `imresize` / PIL kernel widened by `scale`), applied separably along each degraded axis.
- `area`: the mean of each block of `scale` voxels along the degraded axes.
- `thick_slice`: the mean of `scale` adjacent slices along one (through-plane) axis.

Upsampling (`upsample`): `zerofill` (zero-filled k-space, i.e. band-limited sinc interpolation), `bicubic`
(cubic spline, scipy), `trilinear` (linear along each degraded axis), `nearest` (block replication).

Data consistency (`data_consistency`): the smallest (L2) correction of a super-resolved image that makes it
degrade exactly to the measured LR image, `sr + pinv(D)(lr - D(sr))` for the linear degradation `D`.

Arrays are numpy, any number of dimensions; `axes` are indices into `array.ndim` (e.g. `(0, 1)` for
in-plane on an (x, y, z) volume, `(0, 1, 2)` for 3D, `(2,)` through-plane).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

DEGRADE_METHODS = ("kspace", "bicubic", "area", "thick_slice")
#: the degraded axes that preprocess.sr.axes names
AXES = {"inplane": (0, 1), "all": (0, 1, 2), "through": (2,)}
UPSAMPLE_METHODS = ("zerofill", "bicubic", "trilinear", "nearest")


# ------------------------------------------------------------------------------------------ helpers
def _check(array: np.ndarray, scale: int, axes: Sequence[int], what: str) -> tuple[int, ...]:
    """Validate `scale` and `axes` against `array`; return the axes as non-negative ints."""
    if not isinstance(scale, (int, np.integer)) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"{what}: scale must be a positive integer, got {scale!r}")
    if len(axes) == 0:
        raise ValueError(f"{what}: no axes given")
    norm = tuple(int(a) % array.ndim for a in axes)
    if any(not -array.ndim <= int(a) < array.ndim for a in axes):
        raise ValueError(f"{what}: axes {tuple(axes)} out of range for a {array.ndim}-D array")
    if len(set(norm)) != len(norm):
        raise ValueError(f"{what}: repeated axes {tuple(axes)}")
    return norm


def _centred_band(n_lr: int) -> np.ndarray:
    """Signed frequency indices (cycles per field of view) kept on an LR grid of `n_lr` samples.

    Symmetric around 0; for even `n_lr` the unpaired Nyquist index `-n_lr/2` is left out.
    """
    half = (n_lr - 1) // 2
    return np.arange(-half, half + 1)


def _phase(freqs: np.ndarray, n_hr: int, scale: int) -> np.ndarray:
    """Phase ramp that moves sampling from HR index 0 to the block centre `(scale - 1) / 2`."""
    return np.exp(2j * np.pi * freqs * ((scale - 1) / 2.0) / n_hr)


def _shape_along(n: int, axis: int, ndim: int) -> tuple[int, ...]:
    shape = [1] * ndim
    shape[axis] = n
    return tuple(shape)


def _move_band(x: np.ndarray, axis: int, n_out: int, freqs: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Carry the spectral band `freqs` of `x` along `axis`, times `phase`, into a spectrum of length `n_out`.

    Rescaled by n_out / n_in (ifft divides by the output length, the input spectrum carries a factor of the
    input length), so intensities are preserved.
    """
    n_in = x.shape[axis]
    spec = np.fft.fft(x, axis=axis)
    kept = np.take(spec, freqs % n_in, axis=axis) * phase.reshape(_shape_along(freqs.size, axis, x.ndim))
    out = np.zeros(x.shape[:axis] + (n_out,) + x.shape[axis + 1 :], dtype=np.complex128)
    index = [slice(None)] * x.ndim
    index[axis] = freqs % n_out
    out[tuple(index)] = kept
    return np.fft.ifft(out, axis=axis).real * (n_out / n_in)


def _kspace_down(x: np.ndarray, scale: int, axis: int) -> np.ndarray:
    """Truncate the spectrum along `axis` to the central 1/scale and sample at the LR voxel centres."""
    n_hr = x.shape[axis]
    freqs = _centred_band(n_hr // scale)
    return _move_band(x, axis, n_hr // scale, freqs, _phase(freqs, n_hr, scale))


def _kspace_up(x: np.ndarray, scale: int, axis: int) -> np.ndarray:
    """Zero-filled k-space interpolation along `axis`: the exact inverse of `_kspace_down` on its band."""
    n_hr = x.shape[axis] * scale
    freqs = _centred_band(x.shape[axis])
    return _move_band(x, axis, n_hr, freqs, np.conj(_phase(freqs, n_hr, scale)))


def _block_mean(x: np.ndarray, scale: int, axis: int) -> np.ndarray:
    n_lr = x.shape[axis] // scale
    shape = x.shape[:axis] + (n_lr, scale) + x.shape[axis + 1 :]
    return x.reshape(shape).mean(axis=axis + 1)


def _bicubic_down(x: np.ndarray, scale: int, axis: int) -> np.ndarray:
    """Anti-aliased bicubic downsampling along one axis (PyTorch's separable AA kernel)."""
    import torch
    import torch.nn.functional as F

    moved = np.moveaxis(x, axis, -1)
    lead, n_hr = moved.shape[:-1], moved.shape[-1]
    t = torch.from_numpy(np.ascontiguousarray(moved.reshape(-1, 1, 1, n_hr), dtype=np.float32))
    out = F.interpolate(t, size=(1, n_hr // scale), mode="bicubic", antialias=True, align_corners=False)
    return np.moveaxis(out.numpy().reshape(*lead, n_hr // scale), -1, axis)


def lowpass(hr: np.ndarray, scale: int, axes: Sequence[int]) -> np.ndarray:
    """The band-limited image that `kspace` degradation followed by `zerofill` upsampling reproduces.

    Keeps, along each axis in `axes`, the frequencies `|k| <= (n/scale - 1) // 2` (cycles per field of view).
    """
    axes = _check(hr, scale, axes, "lowpass")
    out = np.asarray(hr, dtype=np.float64)
    for axis in axes:
        n = out.shape[axis]
        keep = np.abs(np.fft.fftfreq(n, d=1.0 / n)) <= (n // scale - 1) // 2
        spec = np.fft.fft(out, axis=axis) * keep.reshape(_shape_along(n, axis, out.ndim))
        out = np.fft.ifft(spec, axis=axis).real
    return out.astype(np.result_type(hr.dtype, np.float32), copy=False)


# ------------------------------------------------------------------------------------------ public API
def degrade(hr: np.ndarray, scale: int, method: str, axes: tuple[int, ...]) -> np.ndarray:
    """Make the low-resolution image of `hr` by `method` (kspace | bicubic | area | thick_slice).

    Each axis in `axes` shrinks by `scale` and must be divisible by it (crop or pad first); other axes are kept.
    `thick_slice` takes exactly one axis. Returns float32 (float64 for float64 input).
    """
    if method not in DEGRADE_METHODS:
        raise ValueError(f"degrade: unknown method {method!r}; choose one of {', '.join(DEGRADE_METHODS)}")
    hr = np.asarray(hr)
    axes = _check(hr, scale, axes, "degrade")
    bad = {a: hr.shape[a] for a in axes if hr.shape[a] % scale}
    if bad:
        raise ValueError(
            f"degrade: shape {hr.shape} is not divisible by scale {scale} along axes {sorted(bad)}"
        )
    if method == "thick_slice" and len(axes) != 1:
        raise ValueError(f"degrade: thick_slice averages slices along one axis, got axes {axes}")
    dtype = np.result_type(hr.dtype, np.float32)
    out = np.asarray(hr, dtype=np.float64 if method == "kspace" else dtype)
    if scale == 1:
        return out.astype(dtype, copy=True)
    for axis in axes:
        if method == "kspace":
            out = _kspace_down(out, scale, axis)
        elif method == "bicubic":
            out = _bicubic_down(out, scale, axis)
        else:  # area, thick_slice: both the mean over a block of `scale` voxels
            out = _block_mean(out, scale, axis)
    return np.ascontiguousarray(out, dtype=dtype)


@functools.lru_cache(maxsize=32)
def _bicubic_pinv(n_hr: int, scale: int) -> np.ndarray:
    """The (n_hr, n_lr) pseudo-inverse of `_bicubic_down` along one axis (its matrix read off the identity)."""
    down = _bicubic_down(np.eye(n_hr), scale, 1).T.astype(np.float64)  # (n_lr, n_hr): row m = LR voxel m's kernel
    pinv = np.linalg.pinv(down)
    pinv.setflags(write=False)  # shared by the cache
    return pinv


def _lift(residual: np.ndarray, scale: int, method: str, axis: int) -> np.ndarray:
    """The minimum-norm HR image whose degradation along `axis` is `residual` (the pseudo-inverse of `degrade`)."""
    if method == "kspace":
        return _kspace_up(residual, scale, axis)
    if method == "bicubic":
        pinv = _bicubic_pinv(residual.shape[axis] * scale, scale)
        return np.moveaxis(np.moveaxis(residual, axis, -1) @ pinv.T, -1, axis)
    return np.repeat(residual, scale, axis=axis)  # block mean: each block gets the LR residual


def data_consistency(sr: np.ndarray, lr: np.ndarray, scale: int, method: str, axes: Sequence[int]) -> np.ndarray:
    """Correct a super-resolved image `sr` so that it degrades to the measured `lr`:
    ``degrade(data_consistency(sr, lr, ...), scale, method, axes) == lr`` (to float32 rounding).

    The result is the closest such image to `sr` (L2): ``sr + pinv(D)(lr - D(sr))`` for the linear degradation
    `D = degrade(., scale, method, axes)`, separable over `axes`, so `pinv(D)` is one pseudo-inverse per axis:
    - `kspace`: zero-filled k-space (`upsample(., "zerofill")`), i.e. the output's central k-space band along the
      degraded axes is replaced by the measured one, ``sr - lowpass(sr) + upsample(lr, "zerofill")``, the rest
      (the super-resolved high frequencies) kept. The half-voxel shift of an even `scale` is the phase ramp the
      degradation applies. For an even LR length, `degrade` never measures the unpaired Nyquist line (it is
      always 0 in its output), so an `lr` that has one is matched up to that line, which the correction ignores.
    - `area`, `thick_slice` (block means): the per-block residual added back to every voxel of its block.
    - `bicubic`: the pseudo-inverse of the anti-aliased bicubic kernel's matrix along each axis (well
      conditioned: condition number <= 1.46 for scales 2-4), so one step is exact, no iterative
      back-projection needed; consistency is to float32 rounding, as the degradation runs in float32.

    `sr` has `lr`'s shape times `scale` along `axes`. Works in float64; returns float32.
    """
    if method not in DEGRADE_METHODS:
        raise ValueError(
            f"data_consistency: unknown method {method!r}; choose one of {', '.join(DEGRADE_METHODS)}"
        )
    sr = np.asarray(sr, dtype=np.float64)
    lr = np.asarray(lr, dtype=np.float64)
    axes = _check(sr, scale, axes, "data_consistency")
    if method == "thick_slice" and len(axes) != 1:
        raise ValueError(f"data_consistency: thick_slice averages slices along one axis, got axes {axes}")
    expected = tuple(n // scale if a in axes else n for a, n in enumerate(sr.shape))
    if lr.shape != expected or any(sr.shape[a] % scale for a in axes):
        raise ValueError(
            f"data_consistency: LR shape {lr.shape} does not match SR shape {sr.shape} at scale {scale} along "
            f"axes {axes}"
        )
    if scale == 1:
        return lr.astype(np.float32)
    correction = lr - degrade(sr, scale, method, axes)
    for axis in axes:
        correction = _lift(correction, scale, method, axis)
    return (sr + correction).astype(np.float32)


def upsample(lr: np.ndarray, scale: int, method: str, axes: tuple[int, ...]) -> np.ndarray:
    """Interpolate `lr` back onto the HR grid (each axis in `axes` grows by `scale`).

    `method`: zerofill (k-space zero filling, the counterpart of `kspace` degradation), bicubic (cubic
    spline), trilinear (linear along each axis in `axes`), nearest (block replication). Positions follow
    the module's convention (LR voxel centre = centre of its HR block); beyond the outermost LR centres the
    edge value is extended (zerofill: periodic). Returns float32 (float64 for float64 input).
    """
    if method not in UPSAMPLE_METHODS:
        raise ValueError(f"upsample: unknown method {method!r}; choose one of {', '.join(UPSAMPLE_METHODS)}")
    lr = np.asarray(lr)
    axes = _check(lr, scale, axes, "upsample")
    dtype = np.result_type(lr.dtype, np.float32)
    if scale == 1:
        return lr.astype(dtype, copy=True)
    if method == "nearest":
        out = lr
        for axis in axes:
            out = np.repeat(out, scale, axis=axis)
        return np.ascontiguousarray(out, dtype=dtype)
    if method == "zerofill":
        out = np.asarray(lr, dtype=np.float64)
        for axis in axes:
            out = _kspace_up(out, scale, axis)
        return np.ascontiguousarray(out, dtype=dtype)
    from scipy import ndimage

    order = 3 if method == "bicubic" else 1
    # Interpolate only along `axes`: the other axes become a batch of sub-arrays, each zoomed on its own
    # (the same result as one zoom with factor 1 on them, without the spline work along those axes).
    others = [a for a in range(lr.ndim) if a not in axes]
    moved = np.moveaxis(np.asarray(lr, dtype=dtype), others + list(axes), range(lr.ndim))
    batch = moved.reshape(-1, *moved.shape[len(others) :])
    zoomed = np.stack(
        [ndimage.zoom(b, scale, order=order, mode="nearest", grid_mode=True, prefilter=True) for b in batch]
    )
    zoomed = zoomed.reshape(*moved.shape[: len(others)], *zoomed.shape[1:])
    return np.ascontiguousarray(np.moveaxis(zoomed, range(lr.ndim), others + list(axes)), dtype=dtype)


def lr_affine(hr_affine: np.ndarray, scale: int, axes: tuple[int, ...]) -> np.ndarray:
    """The affine of the LR image made from an HR image with `hr_affine` (voxel -> world, 4x4).

    Voxel size grows by `scale` along `axes`; LR voxel `m` is centred on HR index `m*scale + (scale-1)/2`.
    """
    hr_affine = np.asarray(hr_affine, dtype=np.float64)
    if hr_affine.shape != (4, 4):
        raise ValueError(f"lr_affine: expected a 4x4 affine, got shape {hr_affine.shape}")
    ndim = 3
    axes = tuple(int(a) % ndim for a in axes)
    lr_to_hr = np.eye(4)
    for axis in axes:
        lr_to_hr[axis, axis] = scale
        lr_to_hr[axis, 3] = (scale - 1) / 2.0
    return hr_affine @ lr_to_hr


def histogram_match(source: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Map the intensities of `source` so that their histogram matches `reference`'s.

    With `mask` (same shape as both images) the mapping is learnt from the voxels inside it
    (`skimage.exposure.match_histograms`) and applied, as the same monotone mapping, to every voxel.
    """
    from skimage.exposure import match_histograms

    source = np.asarray(source)
    reference = np.asarray(reference)
    dtype = np.result_type(source.dtype, np.float32)
    if mask is None:
        return match_histograms(source, reference).astype(dtype, copy=False)
    mask = np.asarray(mask).astype(bool)
    if mask.shape != source.shape or mask.shape != reference.shape:
        raise ValueError(
            f"histogram_match: mask {mask.shape}, source {source.shape} and reference {reference.shape} differ"
        )
    if not mask.any():
        raise ValueError("histogram_match: the mask is empty")
    src_in = source[mask]
    matched = match_histograms(src_in, reference[mask])
    out = np.asarray(source, dtype=dtype).copy()
    out[mask] = matched
    outside = ~mask
    if outside.any():
        order = np.argsort(src_in, kind="stable")
        out[outside] = np.interp(source[outside], src_in[order], matched[order])
    return out


def histogram_match_inverted(source: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`histogram_match` of the inverted source inside `mask`: the decreasing intensity map (dark source -> bright
    reference), which T1w -> T2w mostly is. Outside the mask the increasing map, so the background stays
    background instead of becoming the brightest tissue."""
    mask = np.asarray(mask).astype(bool)
    out = histogram_match(source, reference, mask=mask)
    out[mask] = histogram_match(-np.asarray(source), reference, mask=mask)[mask]
    return out
