"""The inpainting family's inputs, training sampler and filling (`pipeline.models.inpaint`): windows of slices around
a slice to fill, with runs of slices deleted on the fly (``GapSampler(step)`` is a pure function of (seed, step));
the generator's fill of a volume's slices, and the self-check that compares it with interpolation on the volume's
own measured slices."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from pipeline.gan.seeding import step_seed
from pipeline.imaging.gaps import FILLERS, Z, draw_runs, interpolate, simulate_gaps, subject_seed, valid_range

log = logging.getLogger(__name__)

#: the inpainting U-Net halves the image 3 times: slices are zero-padded to a multiple of this
MULTIPLE = 8


# ------------------------------------------------------------------------------------------ inputs
def window_input(window: np.ndarray, unknown: np.ndarray, base: str = "linear") -> np.ndarray:
    """The generator's input channels for the centre slice of a window (x, y, W): the W slices with their
    unmeasured voxels set to 0, their W "measured" masks, and the centre slice's `base` interpolation (linear or
    cubic, `pipeline.imaging.gaps.FILLERS`) across the gap along the window's slices. Returns (2 W + 1, x, y)
    float32."""
    known = ~unknown
    slices = np.where(known, window, 0.0).astype(np.float32)
    interp = FILLERS[base](slices, unknown)[:, :, window.shape[Z] // 2]
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


def choose_base(volumes: Any, run_lengths: Any, seed: int) -> tuple[str, dict[str, float]]:
    """The interpolation the generator's residual starts from: linear or cubic, whichever fills the training
    volumes' own deleted slices better (runs of `run_lengths` deleted by the gap simulator, inside the mask).
    On noisy slices linear wins (it averages the neighbours' noise; the demo: +0.9 dB), on clean ones cubic
    (it follows the anatomy; the real corpus at 2 mm: +2.6 dB for 1-slice gaps). Returns it and each one's PSNR (dB)."""
    errors = {m: [0.0, 0] for m in FILLERS}
    for k, vol in enumerate(volumes):
        image = np.asarray(vol.image, dtype=np.float32)
        gaps = simulate_gaps(image, seed + k, run_lengths=run_lengths, mask=vol.mask)
        region = np.isnan(gaps.volume) & (vol.mask > 0 if vol.mask is not None else True)
        for m, acc in errors.items():
            acc[0] += float(np.sum((interpolate(gaps.volume, m) - image)[region] ** 2))
            acc[1] += int(region.sum())
    psnr = {m: float(10 * np.log10(n / max(se, 1e-12))) for m, (se, n) in errors.items() if n}
    if not psnr:
        return "linear", {}
    return max(psnr, key=psnr.__getitem__), psnr


# ------------------------------------------------------------------------------------------ sampler
class GapSampler:
    """Training crops with slices deleted on the fly: ``sampler(step)`` is a pure function of (seed, step).

    Each sample: a training subject, a slice z inside its foreground, a run of deleted slices (length from
    `run_lengths`) covering z, sometimes a second run in the window, an in-plane crop (and flip). Returns
    ``x`` (B, 2 W + 1, P, P) generator inputs, ``truth`` (B, 1, P, P) and ``unknown`` (B, 1, P, P) of the centre
    slice. Volumes are cached on disk and read crop by crop.
    """

    def __init__(self, volumes: Any, cfg: Any, seed: int, cache: Any, base: str = "linear") -> None:
        self.cfg, self.seed, self.cache, self.base = cfg, seed, cache, base
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
        return window_input(win, unk, self.base), win[None, :, :, c].copy(), unk[None, :, :, c].copy()

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


# ------------------------------------------------------------------------------------------ filling
def fill_slices(generator: Any, volume: np.ndarray, unknown: np.ndarray, zs: list[int], context: int, base: str,
                batch: int, tta: bool, device: Any) -> np.ndarray:
    """The generator's fill (len(zs), x, y) of the slices `zs` of `volume` (`unknown`: its unmeasured voxels), in
    batches of `batch` windows; with `tta` averaged with the fill of the left-right flipped window."""
    dev = torch.device(device)
    nx, ny = volume.shape[:2]
    px, py = (-(-n // MULTIPLE) * MULTIPLE for n in (nx, ny))
    flips = [(), (2,)] if tta else [()]  # the left-right flip training augments with
    out = []
    for i in range(0, len(zs), max(1, batch)):
        x = np.stack([window_input(*volume_windows(volume, unknown, z, context), base) for z in zs[i:i + batch]])
        xt = torch.from_numpy(np.pad(x, [(0, 0), (0, 0), (0, px - nx), (0, py - ny)])).to(dev)
        with torch.no_grad():
            pred = sum(torch.flip(generator(torch.flip(xt, f) if f else xt), f) if f else generator(xt)
                       for f in flips) / len(flips)
        out.append(pred[:, 0, :nx, :ny].float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def self_check(fill: Any, volume: np.ndarray, unknown: np.ndarray, run_lengths: Any, n_runs: int = 6,
               p_value: float = 0.05) -> dict[str, Any]:
    """Score the model (``fill(volume, unknown, zs)``), linear and cubic interpolation on runs of this volume's own
    measured slices hidden as if missing (`run_lengths` as trained, not next to a real gap, at least 2 measured slices
    apart, the same slices every time), over their nonzero voxels. The better interpolation is chosen over the model
    only when it is better overall and the model's error is larger slice by slice (one-sided Wilcoxon signed-rank
    test on the per-slice mean squared errors, p < `p_value`): a dozen slices cannot tell a few tenths of a dB apart
    (a model 0.37 dB above cubic on a real scan's gaps was 0.06-0.5 dB below it on hidden slices), a model trained on
    other data that loses clearly is caught. Returns ``{"psnr_db": {...}, "p": ..., "slices": n, "chosen": "model" |
    "linear" | "cubic"}``; with no room for a run the model is chosen unchecked."""
    from scipy.stats import wilcoxon

    n = volume.shape[Z]
    lo, hi = valid_range(np.nan_to_num(volume) > 0, n)
    rng = np.random.default_rng(subject_seed(0, "self-check"))
    runs = [(a, k) for a, k in draw_runs(rng, n, 4 * n_runs, list(run_lengths), 2, lo, hi)
            if not unknown[:, :, max(0, a - 1):a + k + 1].any()][:n_runs]
    hidden = [z for a, k in runs for z in range(a, a + k)]
    if not hidden:
        log.warning("self-check: no room to hide measured slices beside the gaps; filling with the model")
        return {"psnr_db": {}, "p": None, "slices": 0, "chosen": "model"}
    probe, probe_unknown = volume.copy(), unknown.copy()
    probe[:, :, hidden], probe_unknown[:, :, hidden] = np.nan, True
    truth = volume[:, :, hidden]
    region = truth != 0
    fills = {"model": np.moveaxis(fill(probe, probe_unknown, hidden), 0, -1),
             **{m: interpolate(probe, m, probe_unknown)[:, :, hidden] for m in FILLERS}}
    sq = {m: np.where(region, (np.clip(f, 0, 1) - truth) ** 2, 0.0) for m, f in fills.items()}
    psnr = {m: float(10 * np.log10(region.sum() / max(float(e.sum()), 1e-12))) for m, e in sq.items()}
    best = max(FILLERS, key=psnr.__getitem__)
    per_slice = {m: e.sum(axis=(0, 1)) / np.maximum(region.sum(axis=(0, 1)), 1) for m, e in sq.items()}
    p = None
    if psnr[best] > psnr["model"] and len(hidden) > 1:
        p = float(wilcoxon(per_slice["model"], per_slice[best], alternative="greater").pvalue)
    chosen = best if p is not None and p < p_value else "model"
    (log.info if chosen == "model" else log.warning)(
        "self-check on %d hidden measured slices: %s%s; filling with %s", len(hidden),
        ", ".join(f"{m} {v:.2f} dB" for m, v in psnr.items()), "" if p is None else f" (model worse than {best}: p {p:.3f})",
        "the model" if chosen == "model" else f"{chosen} interpolation (the model lost on this scan)")
    return {"psnr_db": psnr, "p": p, "slices": len(hidden), "chosen": chosen}
