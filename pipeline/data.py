"""Training data for the models: volumes from the preprocessing stage, batches as pure functions of the step.

Super-resolution pairs (`load_sr_pairs`, `SRPatchSampler`): the HR image (`<modality>`), its LR input
(`<modality>_lr`, a coarser grid overlaying it) and the foreground mask, from `results/preprocess/subjects.tsv`.
The upsampling factor per axis is read from the two grids (shape ratio, checked against the affines).
A sampler draws the batch of step `k` from a generator seeded with ``(seed, k)`` (`pipeline.gan.loop.step_seed`),
so a resumed run sees exactly the batches an uninterrupted one would: 2D in-plane slices or 3D patches,
random crops whose centre lies inside the foreground mask, optional random flips.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pipeline.gan.loop import step_seed
from pipeline.io.nifti import load_nifti

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SRPair:
    """One subject's super-resolution pair (arrays (x, y, z); `mask` on the HR grid)."""

    subject: str
    lr: np.ndarray
    hr: np.ndarray
    mask: np.ndarray
    lr_affine: np.ndarray
    hr_affine: np.ndarray
    hr_path: Path | None = None


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
    """The HR affine of which `lr_affine` is `pipeline.degrade.lr_affine` (its exact inverse): voxel size
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


def subject_rows(data_dir: str | Path, split: str | Sequence[str]) -> tuple[Path, list[dict]]:
    """The subjects.tsv of `data_dir` (the preprocessing output) and its rows of the split(s) `split`."""
    from pipeline.preprocess import read_subjects

    table = Path(data_dir) / "subjects.tsv"
    if not table.is_file():
        raise FileNotFoundError(f"{table}: no subjects table (run the preprocess stage first)")
    splits = {split} if isinstance(split, str) else set(split)
    return table, [r for r in read_subjects(table) if r["split"] in splits]


def load_sr_pairs(data_dir: str | Path, modality: str, split: str | Sequence[str]) -> list[SRPair]:
    """Read the SR pairs of one or several splits from `data_dir/subjects.tsv` (the preprocessing output)."""
    table, rows = subject_rows(data_dir, split)
    pairs = []
    for row in rows:
        hr_path, lr_path, mask_path = row.get(modality), row.get(f"{modality}_lr"), row.get("mask")
        if hr_path is None or lr_path is None or mask_path is None:
            log.info("%s: no %s / %s_lr / mask; skipped", row["subject"], modality, modality)
            continue
        hr, hr_aff = load_nifti(hr_path)
        lr, lr_aff = load_nifti(lr_path)
        mask, _ = load_nifti(mask_path)
        if mask.shape != hr.shape:
            raise ValueError(f"{mask_path}: mask shape {mask.shape} differs from {hr_path} {hr.shape}")
        sr_factors(hr.shape, lr.shape, hr_aff, lr_aff, where=str(lr_path))
        pairs.append(SRPair(row["subject"], lr, hr, mask > 0, lr_aff, hr_aff, Path(hr_path)))
    if not pairs:
        raise ValueError(f"{table}: no subject of split {split!r} has {modality}, {modality}_lr and mask")
    factors = {sr_factors(p.hr.shape, p.lr.shape) for p in pairs}
    if len(factors) > 1:
        raise ValueError(f"{table}: subjects have different upsampling factors {sorted(factors)}")
    return pairs


def _pad_to(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Zero-pad `a` at the end of each axis up to `shape` (no-op where already large enough)."""
    pad = [(0, max(0, s - n)) for n, s in zip(a.shape, shape, strict=True)]
    return np.pad(a, pad) if any(p[1] for p in pad) else a


class SRPatchSampler:
    """Batches of (lr, hr, skip) crops; ``sampler(step)`` is a pure function of (seed, step).

    Args:
        pairs: the training subjects.
        spatial_dims: 2 (slices along `slice_axis_for(factors)`) or 3 (patches).
        patch_size: HR side of a crop in voxels (divisible by the factors); 0: whole slices (2D) or volumes.
        batch_size: crops per batch.
        seed: the run's seed.
        interp: the generator's interpolation skip, precomputed on whole volumes (as at inference) and
            cropped with the HR patch; ``none`` for no skip.
        flip: random flips along the crop's axes (the upsampling conventions are flip-symmetric).
    """

    def __init__(self, pairs: Sequence[SRPair], spatial_dims: int, patch_size: int, batch_size: int, seed: int,
                 interp: str = "zerofill", flip: bool = True) -> None:
        from pipeline.nets.interp import interpolate

        if not pairs:
            raise ValueError("no training pairs")
        self.factors = sr_factors(pairs[0].hr.shape, pairs[0].lr.shape)
        self.spatial_dims, self.batch_size, self.seed, self.flip = spatial_dims, batch_size, seed, flip
        if spatial_dims == 2:
            self.slice_axis: int | None = slice_axis_for(self.factors)
            self.axes = [a for a in range(3) if a != self.slice_axis]
        elif spatial_dims == 3:
            self.slice_axis, self.axes = None, [0, 1, 2]
        else:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if patch_size:
            bad = [self.factors[a] for a in self.axes if patch_size % self.factors[a]]
            if bad:
                raise ValueError(f"patch_size {patch_size} is not divisible by the upsampling factor {bad[0]}")
            lr_patch = {a: patch_size // self.factors[a] for a in self.axes}
        else:  # whole slices / volumes: pad every subject to the largest
            lr_patch = {a: max(p.lr.shape[a] for p in pairs) for a in self.axes}
        self.lr_patch = lr_patch
        self.lr, self.hr, self.skip, self.centres = [], [], [], []
        for p in pairs:
            lr_shape = [max(n, lr_patch.get(a, 0)) for a, n in enumerate(p.lr.shape)]
            hr_shape = [n * f for n, f in zip(lr_shape, self.factors, strict=True)]
            if interp != "none":
                with torch.no_grad():
                    skip = interpolate(torch.from_numpy(p.lr)[None, None], self.factors, interp)[0, 0].numpy()
                self.skip.append(_pad_to(skip, hr_shape))
            self.lr.append(_pad_to(p.lr, lr_shape))
            self.hr.append(_pad_to(p.hr, hr_shape))
            # LR voxels whose HR block centre lies in the foreground: the candidate crop centres
            centre = tuple(slice(f // 2, f // 2 + f * n, f) for f, n in zip(self.factors, p.lr.shape, strict=True))
            cands = np.argwhere(p.mask[centre]).astype(np.int32)
            if len(cands) == 0:
                raise ValueError(f"{p.subject}: empty foreground mask")
            self.centres.append(cands)
        log.info("sampler: %d subject(s), factors %s, %dD, LR crop %s, batch %d", len(pairs), self.factors,
                 spatial_dims, [lr_patch[a] for a in self.axes], batch_size)

    @property
    def info(self) -> dict:
        return {"factors": list(self.factors), "slice_axis": self.slice_axis}

    def state_dict(self) -> dict:
        """Nothing to restore (batches depend on (seed, step) only); the seed is checked on resume."""
        return {"seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"checkpoint sampler seed {state.get('seed')} != this run's seed {self.seed}")

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        rng = step_seed(self.seed, step)
        lrs, hrs, skips = [], [], []
        for _ in range(self.batch_size):
            i = int(rng.integers(len(self.lr)))
            centre = self.centres[i][int(rng.integers(len(self.centres[i])))]
            lr_sl, hr_sl = [], []
            for a in range(3):
                f = self.factors[a]
                if a == self.slice_axis:
                    lr_sl.append(slice(int(centre[a]), int(centre[a]) + 1))
                    hr_sl.append(slice(int(centre[a]), int(centre[a]) + 1))
                    continue
                p, n = self.lr_patch[a], self.lr[i].shape[a]
                start = int(np.clip(centre[a] - p // 2, 0, n - p))
                lr_sl.append(slice(start, start + p))
                hr_sl.append(slice(start * f, (start + p) * f))
            flips = [a for a in self.axes if self.flip and rng.random() < 0.5]
            crops = [self.lr[i][tuple(lr_sl)], self.hr[i][tuple(hr_sl)]]
            if self.skip:
                crops.append(self.skip[i][tuple(hr_sl)])
            crops = [np.flip(c, flips) if flips else c for c in crops]
            if self.slice_axis is not None:
                crops = [c.squeeze(self.slice_axis) for c in crops]
            lrs.append(crops[0])
            hrs.append(crops[1])
            if self.skip:
                skips.append(crops[2])
        batch = {"lr": torch.from_numpy(np.stack(lrs)[:, None].copy()),
                 "hr": torch.from_numpy(np.stack(hrs)[:, None].copy())}
        if skips:
            batch["skip"] = torch.from_numpy(np.stack(skips)[:, None].copy())
        return batch
