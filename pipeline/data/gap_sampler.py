"""The inpainting family's inputs and training sampler (`pipeline.models.inpaint`): windows of slices around a
slice to fill, with runs of slices deleted on the fly; ``GapSampler(step)`` is a pure function of (seed, step)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.gan.seeding import step_seed
from pipeline.imaging.gaps import Z, linear_fill, valid_range

#: the inpainting U-Net halves the image 3 times: slices are zero-padded to a multiple of this
MULTIPLE = 8


# ------------------------------------------------------------------------------------------ inputs
def window_input(window: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """The generator's input channels for the centre slice of a window (x, y, W): the W slices with their
    unmeasured voxels set to 0, their W "measured" masks, and the centre slice's linear interpolation across the gap
    (along the window's slices). Returns (2 W + 1, x, y) float32."""
    known = ~unknown
    slices = np.where(known, window, 0.0).astype(np.float32)
    interp = linear_fill(slices, unknown)[:, :, window.shape[Z] // 2]
    return np.concatenate([np.moveaxis(slices, Z, 0), np.moveaxis(known.astype(np.float32), Z, 0),
                           interp[None]], axis=0)


def augment(window: np.ndarray, rng: np.random.Generator, degrees: float = 10.0, scale: float = 0.1,
            gain: float = 0.1) -> np.ndarray:
    """The window (x, y, W) rotated in-plane by up to `degrees`, zoomed by up to `scale` (the same for every slice;
    bilinear, 0 outside) and its intensities scaled by up to `gain`: other anatomy than the training subjects'."""
    from scipy.ndimage import affine_transform

    a = np.radians(rng.uniform(-degrees, degrees))
    k = rng.uniform(1 - scale, 1 + scale)
    g = rng.uniform(1 - gain, 1 + gain)
    m = np.eye(3)
    m[:2, :2] = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) / k
    centre = (np.array(window.shape) - 1) / 2.0
    offset = centre - m @ centre
    out = affine_transform(np.ascontiguousarray(window), m, offset=offset, order=1, mode="constant", cval=0.0)
    return (out * g).astype(np.float32)


def in_channels(context: int) -> int:
    return 2 * (2 * context + 1) + 1


def volume_windows(volume: np.ndarray, unknown: np.ndarray, z: int, context: int) -> tuple[np.ndarray, np.ndarray]:
    """The window of slices z - context .. z + context of a volume (slices beyond its ends: 0, unmeasured)."""
    n = volume.shape[Z]
    idx = np.arange(z - context, z + context + 1)
    inside = (idx >= 0) & (idx < n)
    shape = (*volume.shape[:2], len(idx))
    win = np.zeros(shape, dtype=np.float32)
    unk = np.ones(shape, dtype=bool)
    win[:, :, inside] = volume[:, :, idx[inside]]
    unk[:, :, inside] = unknown[:, :, idx[inside]]
    return np.nan_to_num(win, nan=0.0), unk


# ------------------------------------------------------------------------------------------ sampler
class GapSampler:
    """Training crops with slices deleted on the fly: ``sampler(step)`` is a pure function of (seed, step).

    Each sample: a training subject, a slice z inside its foreground, a run of deleted slices (length from
    `run_lengths`) covering z, sometimes a second run in the window, an in-plane crop (and flip). Returns
    ``x`` (B, 2 W + 1, P, P) generator inputs, ``truth`` (B, 1, P, P) and ``unknown`` (B, 1, P, P) of the centre
    slice. Volumes are cached on disk and read crop by crop.
    """

    def __init__(self, volumes: Any, cfg: Any, seed: int, cache: Any) -> None:
        self.cfg, self.seed, self.cache = cfg, seed, cache
        self.subjects: list[str] = []
        self.images: list[Any] = []
        self.ranges: list[tuple[int, int]] = []
        shapes = []
        for vol in volumes:
            self.subjects.append(vol.subject)
            self.images.append(cache.put(f"{len(self.images):04d}", np.asarray(vol.image, dtype=np.float32)))
            self.ranges.append(valid_range(vol.mask, vol.image.shape[Z]))
            shapes.append(vol.image.shape[:2])
        if not self.images:
            raise ValueError(f"inpaint: no training subject has {cfg.modality} and a mask")
        # crops of patch_size (at most the smallest slice, rounded up to MULTIPLE), or whole slices (zero-padded
        # to the largest slice rounded up to MULTIPLE)
        size = [min(s[a] for s in shapes) if cfg.patch_size else max(s[a] for s in shapes) for a in range(2)]
        size = [-(-n // MULTIPLE) * MULTIPLE for n in size]
        self.patch = [min(cfg.patch_size, n) for n in size] if cfg.patch_size else size

    def _one(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg, c = self.cfg, self.cfg.context
        i = int(rng.integers(len(self.images)))
        image = self.images[i]
        lo, hi = self.ranges[i]
        z = int(rng.integers(lo, hi + 1))
        nx, ny, nz = image.shape
        px, py = self.patch
        x0 = int(rng.integers(0, max(1, nx - px + 1)))
        y0 = int(rng.integers(0, max(1, ny - py + 1)))
        w = 2 * c + 1
        win = np.zeros((px, py, w), dtype=np.float32)
        unk = np.zeros((px, py, w), dtype=bool)
        idx = np.arange(z - c, z + c + 1)
        inside = (idx >= 0) & (idx < nz)
        z_lo, z_hi = int(idx[inside][0]), int(idx[inside][-1]) + 1
        block = np.asarray(image[x0:x0 + px, y0:y0 + py, z_lo:z_hi], dtype=np.float32)
        win[:block.shape[0], :block.shape[1], inside] = block
        unk[:, :, ~inside] = True
        length = int(cfg.run_lengths[int(rng.integers(len(cfg.run_lengths)))])
        start = c - int(rng.integers(length))  # the run covers the centre slice
        runs = [(start, length)]
        if rng.random() < cfg.extra_run_prob:
            extra = int(cfg.run_lengths[int(rng.integers(len(cfg.run_lengths)))])
            runs.append((int(rng.integers(0, w - extra + 1)), extra))
        box = rng.random() < cfg.box_prob
        if box:
            bx, by = (int(rng.integers(max(2, p // 4), p + 1)) for p in (px, py))
            bx0, by0 = int(rng.integers(0, px - bx + 1)), int(rng.integers(0, py - by + 1))
        for s, n in runs:
            if box:
                unk[bx0:bx0 + bx, by0:by0 + by, s:s + n] = True
            else:
                unk[:, :, s:s + n] = True
        if cfg.flip and rng.random() < 0.5:
            win, unk = win[::-1], unk[::-1]
        if getattr(cfg, "augment", False):
            win = augment(win, rng)
        return window_input(win, unk), win[None, :, :, c].copy(), unk[None, :, :, c].copy()

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        rng = step_seed(self.seed, step)
        items = [self._one(rng) for _ in range(self.cfg.batch_size)]
        return {k: torch.from_numpy(np.ascontiguousarray(np.stack([it[j] for it in items])))
                for j, k in enumerate(("x", "truth", "unknown"))}

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        self.cache.close()
