"""The unpaired training sampler (CycleGAN and any family that learns from two unpaired domains).

Batches ``{"A": (N, 1, *patch), "B": (N, 1, *patch)}`` of crops from disjoint groups of subjects in every step, a
pure function of (seed, step) (`pipeline.gan.seeding.step_seed`); volumes are cached on disk
(`pipeline.data.cache.VolumeCache`) and read crop by crop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pipeline.data.cache import VolumeCache, pad_to
from pipeline.data.volumes import Volume, subject_names
from pipeline.gan.seeding import step_seed
from pipeline.nets.interp import downsample
from pipeline.nets.windows import round_up

log = logging.getLogger(__name__)


class UnpairedSampler:
    """Batches ``{"A": (N, 1, *patch), "B": (N, 1, *patch)}``; ``sampler(step)`` is a pure function of (seed, step).

    Truly unpaired: in every step the training subjects are shuffled into two disjoint groups; the A crops come
    from the first group, the B crops from the second, so no subject contributes to both domains of a step
    (``A_subject`` / ``B_subject`` in the batch say which subjects were used). Crops are centred on random
    foreground voxels (2D: the slice through it across `slice_axis`); volumes smaller than a crop are
    zero-padded. With `train_downsample` the volumes are block-averaged first (the crops are on the coarse grid).
    During the first `warmup_steps` steps the crops come from a grid `warmup_downsample` times coarser still,
    no larger than its whole slices (a resolution curriculum: the contrast mapping is found on small images
    with the whole anatomy in view, then refined at full resolution); over the next `warmup_ramp` steps the
    share of warm-up-grid batches falls linearly from 1 to 0.

    Args:
        a_vols, b_vols: the training volumes of the source and target modality.
        cfg: the family's config section, with source, target, spatial_dims, slice_axis, patch_size, batch_size, flip, train_downsample,
            warmup_steps, warmup_downsample, warmup_ramp).
        seed: the run's seed.
        multiple: the generator's size multiple (whole-slice crops are rounded up to it).
        cache: keep the prepared images and crop centres in this on-disk cache, read crop by crop (memory
            independent of the number of subjects; `close` deletes it); None: in memory. With lazy volumes
            (`domain_volumes`) one subject is in memory at a time while the sampler is built.
    """

    def __init__(self, a_vols: Sequence[Volume], b_vols: Sequence[Volume], cfg: Any, seed: int,
                 multiple: int = 4, cache: VolumeCache | None = None) -> None:
        if not a_vols or not b_vols:
            raise ValueError(f"unpaired sampling needs training volumes of both {cfg.source} ({len(a_vols)}) and "
                             f"{cfg.target} ({len(b_vols)})")
        subjects = sorted(set(subject_names(a_vols)) | set(subject_names(b_vols)))
        if len(subjects) < 2:
            raise ValueError(f"unpaired sampling needs at least 2 training subjects, got {subjects}")
        self.seed, self.batch_size, self.flip = seed, cfg.batch_size, cfg.flip
        self.spatial_dims, self.factor = cfg.spatial_dims, cfg.train_downsample or 1  # 0 (auto) resolved by the family
        self.slice_axis = cfg.slice_axis if cfg.spatial_dims == 2 else None
        self.axes = [a for a in range(3) if a != self.slice_axis]
        self.subjects = subjects
        self.warmup_steps = cfg.warmup_steps if cfg.warmup_downsample > 1 else 0
        self.warmup_ramp = cfg.warmup_ramp if self.warmup_steps else 0
        #: None: the ramp's grid draw comes from the step's own generator; a seed: from one of its own, so that
        #: samplers given the same one (StarGAN's pairs, stacked in one batch) draw the same grid every step
        self.grid_seed: int | None = None
        self.cache = cache
        # grids: the training grid, and (for the warm-up) a coarser one; each {domain: {subject: (image, centres)}}
        self.grids, self.patches = [], []
        for factor in (self.factor, self.factor * cfg.warmup_downsample)[: 2 if self.warmup_steps else 1]:
            domains = {"A": self._prepare(a_vols, factor, "A"), "B": self._prepare(b_vols, factor, "B")}
            shapes = [v[0].shape for d in domains.values() for v in d.values()]
            whole = {a: round_up(max(s[a] for s in shapes), multiple) for a in self.axes}
            if not cfg.patch_size:
                patch = whole
            elif self.grids:  # warm-up grid: crops no larger than its (whole) slices, not mostly padding
                patch = {a: min(cfg.patch_size, whole[a]) for a in self.axes}
            else:
                patch = {a: cfg.patch_size for a in self.axes}
            for dom in domains.values():
                for key, (image, centres) in dom.items():
                    dom[key] = (pad_to(image, [patch.get(a, 0) for a in range(image.ndim)]), centres)
            self.grids.append(domains)
            self.patches.append(patch)
        self.domains, self.patch = self.grids[0], self.patches[0]
        both = [s for s in subjects if s in self.domains["A"] and s in self.domains["B"]]
        self.only = {d: [s for s in subjects if s in self.domains[d] and s not in both] for d in ("A", "B")}
        self.both = both
        log.info("unpaired sampler: %d subject(s) (%d with A only, %d with B only), %dD crops %s, batch %d, "
                 "downsample %d%s", len(subjects), len(self.only["A"]), len(self.only["B"]), self.spatial_dims,
                 [self.patch[a] for a in self.axes], self.batch_size, self.factor,
                 f"; warm-up: {self.warmup_steps} steps at downsample {self.factor * cfg.warmup_downsample}, crops "
                 f"{[self.patches[-1][a] for a in self.axes]}"
                 + (f", then its share falling to 0 over {self.warmup_ramp} steps" if self.warmup_ramp else "")
                 if self.warmup_steps else "")

    def _prepare(self, vols: Sequence[Volume], factor: int, tag: str = "") -> dict[str, tuple[Any, Any]]:
        """Per subject: the image on a grid `factor` times coarser and the candidate crop centres (foreground),
        as arrays or, with a cache, as `CachedArray` handles (one subject in memory at a time)."""
        out: dict[str, tuple[Any, Any]] = {}
        order = "F" if self.slice_axis == 2 else "C"  # on disk, slices across the last axis are contiguous
        for v in vols:
            image, mask = v.image, v.mask.astype(np.float32)
            if factor > 1:  # 2D: only the in-plane axes are coarsened
                image, mask = (coarsen(a, factor, self.slice_axis) for a in (image, mask))
            centres = np.argwhere(mask >= 0.5).astype(np.int32)
            if len(centres) == 0:
                raise ValueError(f"{v.subject}: empty foreground mask on the training grid")
            image = np.ascontiguousarray(image, dtype=np.float32)
            if self.cache is not None:
                name = f"cyc{tag}{factor}_{len(out):05d}"
                image = self.cache.put(f"{name}_image", image, order)
                centres = self.cache.put(f"{name}_centres", centres)
            out[v.subject] = (image, centres)
        return out

    def close(self) -> None:
        """Delete the on-disk cache, if any (the sampler cannot draw batches afterwards)."""
        if self.cache is not None:
            self.cache.close()

    def groups(self, rng: np.random.Generator) -> tuple[list[str], list[str]]:
        """Disjoint subject groups for the A and B crops of one step.

        Subjects with both modalities are shuffled and split in half; those with one go to their own side.
        """
        perm = [self.both[i] for i in rng.permutation(len(self.both))]
        half = len(perm) // 2
        if not self.only["A"]:
            half = max(half, 1)
        if not self.only["B"]:
            half = min(half, len(perm) - 1)
        return self.only["A"] + perm[:half], perm[half:] + self.only["B"]

    def _crop(self, image: np.ndarray, centres: np.ndarray, patch: dict[int, int],
              rng: np.random.Generator) -> np.ndarray:
        centre = centres[int(rng.integers(len(centres)))]
        sl = []
        for a in range(3):
            if a == self.slice_axis:
                sl.append(int(centre[a]))
                continue
            p, n = patch[a], image.shape[a]
            start = int(np.clip(int(centre[a]) - p // 2, 0, n - p))
            sl.append(slice(start, start + p))
        crop = image[tuple(sl)]
        flips = [i for i in range(crop.ndim) if self.flip and rng.random() < 0.5]
        return np.flip(crop, flips) if flips else crop

    def state_dict(self) -> dict[str, Any]:
        """Nothing to restore (batches depend on (seed, step) only); the seed is checked on resume."""
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"checkpoint sampler seed {state.get('seed')} != this run's seed {self.seed}")

    def _grid(self, step: int, rng: np.random.Generator) -> int:
        """1 (the warm-up grid) or 0 (the training grid) for this step's batch."""
        ramp = step - self.warmup_steps
        if ramp < 0:
            return 1
        if ramp < self.warmup_ramp:  # the warm-up grid's share falls linearly from 1 to 0
            return int(rng.random() >= ramp / self.warmup_ramp)
        return 0

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        rng = step_seed(self.seed, step)
        grid = self._grid(step, rng if self.grid_seed is None else step_seed(self.grid_seed, step))
        domains, patch = self.grids[grid], self.patches[grid]
        group_a, group_b = self.groups(rng)
        batch: dict[str, torch.Tensor] = {}
        for dom, group in (("A", group_a), ("B", group_b)):
            crops, ids = [], []
            for _ in range(self.batch_size):
                subject = group[int(rng.integers(len(group)))]
                image, centres = domains[dom][subject]
                crops.append(self._crop(image, centres, patch, rng))
                ids.append(self.subjects.index(subject))
            batch[dom] = torch.from_numpy(np.stack(crops)[:, None].copy())
            batch[f"{dom}_subject"] = torch.tensor(ids, dtype=torch.int64)
        return batch


def coarsen(x: np.ndarray, factor: int, slice_axis: int | None) -> np.ndarray:
    """Block-average a volume by `factor` along every axis but `slice_axis` (None: all three): the training grid."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if slice_axis is None:
        return downsample(t[None, None], factor, 3)[0, 0].numpy()
    t = torch.movedim(t, slice_axis, 0)[:, None]
    return torch.movedim(downsample(t, factor, 2)[:, 0], 0, slice_axis).numpy()
