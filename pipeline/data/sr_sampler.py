"""The super-resolution training sampler: batches of (lr, hr, skip) crops, a pure function of (seed, step).

2D in-plane slices (optionally with neighbouring LR slices as channels: 2.5D) or 3D patches, random crops whose
centre lies inside the foreground mask, optional random flips; the upsampling factor per axis is read from the
two grids. The batch of step `k` comes from a generator seeded with ``(seed, k)``
(`pipeline.gan.seeding.step_seed`), so a resumed run sees exactly the batches an uninterrupted one would.
Given a `pipeline.data.cache.VolumeCache`, the prepared arrays are kept on disk and only the crops of a batch
are read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from pipeline.data.cache import VolumeCache, pad_to
from pipeline.data.volumes import SRPair
from pipeline.gan.seeding import step_seed
from pipeline.imaging.geometry import slice_axis_for, sr_factors

log = logging.getLogger(__name__)


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
        cache: keep the prepared arrays (padded LR and HR, skip, crop centres) in this on-disk cache, read
            crop by crop (memory independent of the number of subjects; `close` deletes it); None: in memory.
            With a lazy `pairs` (`sr_pairs`) one subject is in memory at a time while the sampler is built.
        context_slices: 2D only: also give the `context_slices` LR slices on either side of each slice, as
            extra input channels (2.5D; the centre slice is channel `context_slices`; indices beyond the volume
            repeat its edge slice).
    """

    def __init__(self, pairs: Sequence[SRPair], spatial_dims: int, patch_size: int, batch_size: int, seed: int,
                 interp: str = "zerofill", flip: bool = True, context_slices: int = 0,
                 cache: VolumeCache | None = None) -> None:
        from pipeline.nets.interp import interpolate

        if not pairs:
            raise ValueError("no training pairs")
        self.factors = sr_factors(pairs[0].hr.shape, pairs[0].lr.shape)
        self.spatial_dims, self.batch_size, self.seed, self.flip = spatial_dims, batch_size, seed, flip
        if context_slices < 0 or (context_slices and spatial_dims != 2):
            raise ValueError(f"context_slices must be >= 0 and needs 2D slices, got {context_slices} "
                             f"with spatial_dims={spatial_dims}")
        self.context = int(context_slices)
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
        else:  # whole slices / volumes: pad every subject to the largest (known once all are read)
            lr_patch = {}
        self.cache = cache
        # on disk, slices across the last axis are contiguous in Fortran order
        order = "F" if self.slice_axis == 2 else "C"
        self.subjects: list[str] = []
        self.lr, self.hr, self.skip, self.centres = [], [], [], []
        for p in pairs:  # one subject at a time (with a cache and lazy pairs, nothing accumulates)
            factors = sr_factors(p.hr.shape, p.lr.shape)
            if factors != self.factors:
                raise ValueError(f"{p.subject}: upsampling factors {factors} differ from the first subject's "
                                 f"{self.factors}")
            arrays = {"lr": p.lr, "hr": p.hr}
            if interp != "none":
                with torch.no_grad():
                    arrays["skip"] = interpolate(torch.from_numpy(p.lr)[None, None], self.factors,
                                                 interp)[0, 0].numpy()
            # LR voxels whose HR block centre lies in the foreground: the candidate crop centres
            centre = tuple(slice(f // 2, f // 2 + f * n, f) for f, n in zip(self.factors, p.lr.shape, strict=True))
            arrays["centres"] = np.argwhere(p.mask[centre]).astype(np.int32)
            if len(arrays["centres"]) == 0:
                raise ValueError(f"{p.subject}: empty foreground mask")
            if cache is not None:
                k = len(self.subjects)
                arrays = {name: cache.put(f"sr{k:05d}_{name}", a, "C" if name == "centres" else order)
                          for name, a in arrays.items()}
            self.subjects.append(p.subject)
            for name, store in (("lr", self.lr), ("hr", self.hr), ("skip", self.skip), ("centres", self.centres)):
                if name in arrays:
                    store.append(arrays[name])
        if not self.subjects:
            raise ValueError("no training pairs")
        if not patch_size:
            lr_patch = {a: max(x.shape[a] for x in self.lr) for a in self.axes}
        self.lr_patch = lr_patch
        for i in range(len(self.lr)):  # zero-pad every subject up to a crop
            lr_shape = [max(n, lr_patch.get(a, 0)) for a, n in enumerate(self.lr[i].shape)]
            hr_shape = [n * f for n, f in zip(lr_shape, self.factors, strict=True)]
            self.lr[i], self.hr[i] = pad_to(self.lr[i], lr_shape), pad_to(self.hr[i], hr_shape)
            if self.skip:
                self.skip[i] = pad_to(self.skip[i], hr_shape)
        log.info("sampler: %d subject(s), factors %s, %dD, LR crop %s, batch %d%s", len(self.subjects),
                 self.factors, spatial_dims, [lr_patch[a] for a in self.axes], batch_size,
                 f"; volumes cached on disk in {cache.root} ({cache.nbytes / 2**20:.0f} MB)" if cache else "")

    def close(self) -> None:
        """Delete the on-disk cache, if any (the sampler cannot draw batches afterwards)."""
        if self.cache is not None:
            self.cache.close()

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
                    c, n = int(centre[a]), self.lr[i].shape[a]
                    lr_sl.append(np.clip(np.arange(c - self.context, c + self.context + 1), 0, n - 1)
                                 if self.context else slice(c, c + 1))
                    hr_sl.append(slice(c, c + 1))
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
            if self.slice_axis is not None:  # the slice axis becomes the channel axis (length 1 without context)
                crops = [np.moveaxis(c, self.slice_axis, 0) for c in crops]
            else:
                crops = [c[None] for c in crops]
            lrs.append(crops[0])
            hrs.append(crops[1])
            if self.skip:
                skips.append(crops[2])
        batch = {"lr": torch.from_numpy(np.stack(lrs).copy()), "hr": torch.from_numpy(np.stack(hrs).copy())}
        if skips:
            batch["skip"] = torch.from_numpy(np.stack(skips).copy())
        return batch
