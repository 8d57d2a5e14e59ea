"""The paired training sampler (pix2pix, and any family that learns from co-registered images of one subject).

Batches ``{"A": (N, 1, *patch), "B": (N, 1, *patch), ...}``: for each sample one subject and one crop (2D: one
slice) taken at the same voxels from every domain, so the images of a sample overlay voxel for voxel. A pure
function of (seed, step) (`pipeline.gan.seeding.step_seed`); volumes are cached on disk
(`pipeline.data.cache.VolumeCache`) and read crop by crop. The images of a subject must be on one grid (same
shape and affine); a subject whose images are not is refused by name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pipeline.data.cache import VolumeCache, pad_to
from pipeline.data.volumes import Volume, subject_names
from pipeline.gan.seeding import step_seed
from pipeline.nets.windows import round_up

log = logging.getLogger(__name__)

#: largest difference (in mm, or in the affine's direction cosines x mm) between two affines on "one grid"
GRID_TOLERANCE = 1e-3


def check_same_grid(subject: str, images: Mapping[str, Volume]) -> None:
    """Refuse (ValueError naming `subject`) images of one subject that are not on one voxel grid."""
    (first, ref), *others = images.items()
    for name, vol in others:
        if vol.image.shape != ref.image.shape or not np.allclose(vol.affine, ref.affine, atol=GRID_TOLERANCE):
            raise ValueError(
                f"{subject}: {name} and {first} are not on one voxel grid (shapes {tuple(vol.image.shape)} and "
                f"{tuple(ref.image.shape)}, affines differ by up to "
                f"{float(np.abs(np.asarray(vol.affine) - np.asarray(ref.affine)).max()):.4g}); paired training "
                f"needs co-registered images resampled onto one grid (preprocess does this for one session's "
                f"scans); register them, or leave this subject out of the training split")


class PairedSampler:
    """``sampler(step) -> batch``: the same subject and the same crop of every domain, a pure function of (seed, step).

    Crops are centred on random foreground voxels of the subject's mask (2D: the slice through it across
    `slice_axis`, whole slices with ``patch_size`` 0); flips, when on, are the same for every domain. The batch
    holds one tensor per domain, ``subject`` (indices into ``self.subjects``) and ``centre`` (the (x, y, z) voxel
    each crop is centred on, its slice index along `slice_axis` in 2D), so a test can check the pairing.

    Args:
        domains: ``{key: training volumes}`` (e.g. ``{"A": T1w, "B": T2w}``); subjects missing from any domain
            are left out (with a log line).
        cfg: the family's config section (spatial_dims, slice_axis, patch_size, batch_size, flip; and source /
            target for messages, if it has them).
        seed: the run's seed.
        multiple: the generator's size multiple (whole-slice crops are rounded up to it).
        cache: keep images and crop centres in this on-disk cache (one subject in memory at a time while the
            sampler is built; `close` deletes it); None: in memory.
    """

    def __init__(self, domains: Mapping[str, Sequence[Volume]], cfg: Any, seed: int, multiple: int = 4,
                 cache: VolumeCache | None = None) -> None:
        self.keys = list(domains)
        if len(self.keys) < 2:
            raise ValueError(f"paired sampling needs at least two domains, got {self.keys}")
        names = {k: subject_names(v) for k, v in domains.items()}
        subjects = sorted(set.intersection(*(set(n) for n in names.values())))
        left_out = sorted(set().union(*names.values()) - set(subjects))
        if left_out:
            log.info("paired sampler: %d training subject(s) lack one of the domains; left out", len(left_out))
        if not subjects:
            wanted = ", ".join(self._labels(cfg))
            raise ValueError(f"paired sampling needs training subjects with all of {wanted}; none has")
        self.seed, self.batch_size, self.flip = seed, cfg.batch_size, cfg.flip
        self.spatial_dims = cfg.spatial_dims
        self.slice_axis = cfg.slice_axis if cfg.spatial_dims == 2 else None
        self.axes = [a for a in range(3) if a != self.slice_axis]
        self.subjects, self.cache = subjects, cache
        self.images: dict[str, dict[str, Any]] = {k: {} for k in self.keys}
        self.centres: dict[str, Any] = {}
        shapes = []
        order = "F" if self.slice_axis == 2 else "C"  # slices across the last axis are contiguous on disk
        for i, subject in enumerate(subjects):
            vols = {k: domains[k][names[k].index(subject)] for k in self.keys}
            check_same_grid(subject, dict(zip(self._labels(cfg), vols.values(), strict=True)))
            mask = np.logical_and.reduce([v.mask for v in vols.values()])
            centres = np.argwhere(mask).astype(np.int32)
            if len(centres) == 0:
                raise ValueError(f"{subject}: the foreground masks of {', '.join(self._labels(cfg))} do not overlap")
            shapes.append(vols[self.keys[0]].image.shape)
            for k, v in vols.items():
                image = np.ascontiguousarray(v.image, dtype=np.float32)
                self.images[k][subject] = cache.put(f"pair{k}_{i:05d}", image, order) if cache else image
            self.centres[subject] = cache.put(f"pairc_{i:05d}", centres) if cache else centres
        whole = {a: round_up(max(s[a] for s in shapes), multiple) for a in self.axes}
        self.patch = {a: cfg.patch_size or whole[a] for a in self.axes}
        for per_subject in self.images.values():
            for s, image in per_subject.items():
                per_subject[s] = pad_to(image, [self.patch.get(a, 0) for a in range(3)])
        log.info("paired sampler: %d subject(s), %dD crops %s of %s, batch %d", len(subjects), self.spatial_dims,
                 [self.patch[a] for a in self.axes], "/".join(self._labels(cfg)), self.batch_size)

    def _labels(self, cfg: Any) -> list[str]:
        """The domains as the user knows them (the config's source/target when there are two), for messages."""
        if len(self.keys) == 2 and hasattr(cfg, "source") and hasattr(cfg, "target"):
            return [cfg.source, cfg.target]
        return list(self.keys)

    def close(self) -> None:
        """Delete the on-disk cache, if any (the sampler cannot draw batches afterwards)."""
        if self.cache is not None:
            self.cache.close()

    def state_dict(self) -> dict[str, Any]:
        """Nothing to restore (batches depend on (seed, step) only); the seed is checked on resume."""
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"checkpoint sampler seed {state.get('seed')} != this run's seed {self.seed}")

    def window(self, centre: Sequence[int], shape: Sequence[int]) -> tuple[int | slice, ...]:
        """The index of the crop centred (as far as the padded image allows) on voxel `centre`."""
        index: list[int | slice] = []
        for a in range(3):
            if a == self.slice_axis:
                index.append(int(centre[a]))
            else:
                start = int(np.clip(int(centre[a]) - self.patch[a] // 2, 0, shape[a] - self.patch[a]))
                index.append(slice(start, start + self.patch[a]))
        return tuple(index)

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        rng = step_seed(self.seed, step)
        crops: dict[str, list[np.ndarray]] = {k: [] for k in self.keys}
        ids, where = [], []
        for _ in range(self.batch_size):
            s = int(rng.integers(len(self.subjects)))
            subject = self.subjects[s]
            centres = self.centres[subject]
            centre = centres[int(rng.integers(len(centres)))]
            index = self.window(centre, self.images[self.keys[0]][subject].shape)
            flips = [i for i in range(self.spatial_dims) if self.flip and rng.random() < 0.5]
            for k in self.keys:
                crop = self.images[k][subject][index]
                crops[k].append(np.flip(crop, flips) if flips else crop)
            ids.append(s)
            where.append([int(c) for c in centre])
        batch = {k: torch.from_numpy(np.stack(v)[:, None].copy()) for k, v in crops.items()}
        batch["subject"] = torch.tensor(ids, dtype=torch.int64)
        batch["centre"] = torch.tensor(where, dtype=torch.int64)
        return batch
