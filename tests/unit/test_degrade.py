"""Degradations, upsampling baselines, the LR affine and histogram matching (pipeline.imaging.degrade)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.imaging.degrade import degrade, histogram_match, lowpass, lr_affine, upsample

INPLANE, ALL, THROUGH = (0, 1), (0, 1, 2), (2,)


def _volume(shape=(16, 24, 8), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _fft_lowpass(x: np.ndarray, scale: int, axes) -> np.ndarray:
    """Independent reference: one n-D FFT, keep |k| <= (n/scale - 1) // 2 along `axes`, inverse FFT."""
    keep = np.ones(x.shape, dtype=bool)
    for axis in axes:
        n = x.shape[axis]
        k = np.abs(np.fft.fftfreq(n, d=1.0 / n))
        shape = [1] * x.ndim
        shape[axis] = n
        keep &= (k <= (n // scale - 1) // 2).reshape(shape)
    return np.fft.ifftn(np.fft.fftn(x.astype(np.float64)) * keep).real


def _ramp(shape, coeffs=(0.7, -0.3, 1.1), offset=2.0) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return offset + sum(c * g for c, g in zip(coeffs, grids, strict=False))


@pytest.mark.parametrize("method", ["kspace", "bicubic", "area"])
@pytest.mark.parametrize(("axes", "scale"), [(INPLANE, 2), (INPLANE, 4), (ALL, 2), (ALL, 4)])
def test_degrade_shapes_dtype_and_constant(method, axes, scale):
    hr = _volume()
    lr = degrade(hr, scale, method, axes)
    expected = tuple(n // scale if a in axes else n for a, n in enumerate(hr.shape))
    assert lr.shape == expected and lr.dtype == np.float32
    # Intensities are preserved: a constant image stays exactly that constant.
    const = degrade(np.full(hr.shape, 3.5, np.float32), scale, method, axes)
    np.testing.assert_allclose(const, 3.5, rtol=1e-5)


@pytest.mark.parametrize("method", ["zerofill", "bicubic", "trilinear", "nearest"])
@pytest.mark.parametrize(("axes", "scale"), [(INPLANE, 2), (INPLANE, 4), (ALL, 4), (THROUGH, 2)])
def test_upsample_restores_hr_shape(method, axes, scale):
    hr = _volume()
    lr = degrade(hr, scale, "area", axes)
    up = upsample(lr, scale, method, axes)
    assert up.shape == hr.shape and up.dtype == np.float32
    # A degraded-then-upsampled image is close to, but smoother than, the original.
    assert np.abs(up - hr).mean() < np.abs(hr - hr.mean()).mean()


@pytest.mark.parametrize(("axes", "scale"), [(INPLANE, 2), (INPLANE, 4), (ALL, 2), (ALL, 4), (THROUGH, 2)])
def test_kspace_then_zerofill_is_a_lowpass(axes, scale):
    hr = _volume()
    round_trip = upsample(degrade(hr, scale, "kspace", axes), scale, "zerofill", axes)
    reference = _fft_lowpass(hr, scale, axes)
    np.testing.assert_allclose(round_trip, reference, atol=1e-5)
    np.testing.assert_allclose(lowpass(hr, scale, axes), reference, atol=1e-5)
    # ... and a low-pass indeed: something was removed, and applying it again changes nothing.
    assert np.abs(round_trip - hr).max() > 0.1
    again = upsample(degrade(round_trip, scale, "kspace", axes), scale, "zerofill", axes)
    np.testing.assert_allclose(again, round_trip, atol=1e-5)


@pytest.mark.parametrize("scale", [2, 4])
def test_kspace_samples_at_block_centres(scale):
    """A band-limited signal degraded by k-space truncation equals the signal at the LR voxel centres."""
    n = 32
    p = np.arange(n, dtype=np.float64)
    signal = lambda t: 1.0 + np.cos(2 * np.pi * 2 * t / n) + 0.5 * np.sin(2 * np.pi * 3 * t / n)  # noqa: E731
    hr = np.broadcast_to(signal(p)[:, None, None], (n, 4, 4)).copy()
    lr = degrade(hr, scale, "kspace", (0,))
    centres = np.arange(n // scale) * scale + (scale - 1) / 2
    np.testing.assert_allclose(lr[:, 0, 0], signal(centres), atol=1e-10)


def test_area_and_thick_slice_are_block_means():
    hr = _volume((8, 8, 8))
    lr = degrade(hr, 2, "area", INPLANE)
    np.testing.assert_allclose(lr[1, 2, 3], hr[2:4, 4:6, 3].mean(), rtol=1e-6)
    thick = degrade(hr, 4, "thick_slice", THROUGH)
    assert thick.shape == (8, 8, 2)
    np.testing.assert_allclose(thick[..., 1], hr[..., 4:8].mean(axis=-1), rtol=1e-6)
    with pytest.raises(ValueError, match="one axis"):
        degrade(hr, 2, "thick_slice", INPLANE)


def test_bicubic_degradation_is_position_consistent():
    """Anti-aliased bicubic reproduces a linear ramp at the LR voxel centres away from the borders."""
    scale = 2
    hr = _ramp((32, 32, 4)).astype(np.float32)
    lr = degrade(hr, scale, "bicubic", INPLANE)
    # value at LR centre m: the ramp at HR index m*scale + (scale - 1)/2
    expected = _ramp(
        (16, 16, 4), coeffs=(0.7 * scale, -0.3 * scale, 1.1), offset=2.0 + (0.7 - 0.3) * (scale - 1) / 2
    )
    inner = slice(3, -3)
    np.testing.assert_allclose(lr[inner, inner], expected[inner, inner], atol=1e-4)


@pytest.mark.parametrize(("axes", "scale"), [(INPLANE, 2), (INPLANE, 4), (ALL, 2), (ALL, 4)])
def test_trilinear_upsampling_of_a_ramp_is_exact_inside(axes, scale):
    hr = _ramp((32, 24, 16))
    lr = degrade(hr, scale, "area", axes)  # the ramp's value at each LR voxel centre
    up = upsample(lr, scale, "trilinear", axes)
    inner = tuple(slice(scale, -scale) if a in axes else slice(None) for a in range(3))
    np.testing.assert_allclose(up[inner], hr[inner], atol=1e-9)


def test_nearest_replicates_blocks_and_zerofill_keeps_band_limited_signals():
    lr = _volume((6, 5, 4))
    up = upsample(lr, 4, "nearest", INPLANE)
    np.testing.assert_array_equal(up[4:8, 8:12, 2], np.full((4, 4), lr[1, 2, 2]))
    # odd LR length: no Nyquist ambiguity, so zerofill then kspace gives the LR image back exactly
    lr_odd = _volume((9, 7, 3)).astype(np.float64)
    back = degrade(upsample(lr_odd, 2, "zerofill", INPLANE), 2, "kspace", INPLANE)
    np.testing.assert_allclose(back, lr_odd, atol=1e-10)


@pytest.mark.parametrize(("axes", "scale"), [(INPLANE, 2), (INPLANE, 4), (ALL, 4), (THROUGH, 2)])
def test_lr_affine_voxel_centre_is_mean_of_its_hr_block(axes, scale):
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # oblique orientation
    hr_aff = np.eye(4)
    hr_aff[:3, :3] = q @ np.diag([0.9, 1.2, 2.5])
    hr_aff[:3, 3] = [-40.0, 12.5, 7.0]
    aff = lr_affine(hr_aff, scale, axes)
    m = np.array([3, 1, 2])
    block = np.stack(
        np.meshgrid(
            *[np.arange(scale) + m[a] * scale if a in axes else [m[a]] for a in range(3)], indexing="ij"
        ),
        axis=-1,
    ).reshape(-1, 3)
    hr_world = (hr_aff[:3, :3] @ block.T).T + hr_aff[:3, 3]
    lr_world = aff[:3, :3] @ m + aff[:3, 3]
    np.testing.assert_allclose(lr_world, hr_world.mean(axis=0), atol=1e-9)
    voxel = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(
        voxel, [s * (scale if a in axes else 1) for a, s in enumerate([0.9, 1.2, 2.5])]
    )


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="not divisible by scale 4 along axes \\[1\\]"):
        degrade(np.zeros((8, 6, 4)), 4, "kspace", INPLANE)
    with pytest.raises(ValueError, match="unknown method 'gauss'.*kspace"):
        degrade(np.zeros((8, 8, 4)), 2, "gauss", INPLANE)
    with pytest.raises(ValueError, match="unknown method 'lanczos'.*zerofill"):
        upsample(np.zeros((4, 4, 4)), 2, "lanczos", INPLANE)


def test_histogram_match_inside_mask():
    rng = np.random.default_rng(1)
    source = rng.normal(0.0, 1.0, (20, 20, 8))
    reference = rng.exponential(2.0, (20, 20, 8)) + 5.0
    mask = np.zeros(source.shape, dtype=np.uint8)
    mask[4:16, 4:16] = 1
    out = histogram_match(source, reference, mask)
    inside = out[mask > 0]
    # inside the mask the output has the reference's distribution...
    np.testing.assert_allclose(np.sort(inside), np.sort(reference[mask > 0]), rtol=1e-6)
    # ... by one monotone mapping, also applied outside the mask
    order = np.argsort(source.ravel())
    assert np.all(np.diff(out.ravel()[order]) >= -1e-9)
    assert out[mask == 0].min() >= reference[mask > 0].min() - 1e-9
    with pytest.raises(ValueError, match="differ"):
        histogram_match(source, reference, mask[:10])
