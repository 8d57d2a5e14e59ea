"""The motion-correction family's training pairs (`pipeline.models.motion`): `MotionPairs`, the same crop of a
training subject's motion-corrupted and clean image, a pure function of (seed, step); `pool_corruptions`, the extra
corrupted versions drawn once at start-up from the simulator (`pipeline.imaging.motion`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pipeline.gan.seeding import step_seed
from pipeline.nets.windows import round_up

log = logging.getLogger(__name__)


class MotionPairs:
    """``sampler(step) -> {"A": corrupted, "B": clean, "subject", "variant", "centre"}``, a pure function of
    (seed, step): per sample a subject, one of its corrupted versions (0: the preprocess stage's, 1..: the pool's),
    and one crop (2D: a slice across `slice_axis`) centred on a random foreground voxel, taken at the same voxels
    of both images, flipped alike. With ``cfg.context_slices`` k (2D) the corrupted crop also holds the k slices on
    either side as channels (N, 1 + 2k, ...; the centre slice is channel k, edge slices repeated beyond the volume).

    Args:
        subjects: names; clean[i], corrupted[i] (a list of versions) and masks[i] belong to subjects[i], all on
            one grid per subject.
        cfg: spatial_dims, slice_axis, patch_size, batch_size, flip (and context_slices).
        cache: keep the arrays in this on-disk cache (`close` deletes it); None: in memory.
    """

    def __init__(self, subjects: Sequence[str], clean: Sequence[np.ndarray], corrupted: Sequence[Sequence[np.ndarray]],
                 masks: Sequence[np.ndarray], cfg: Any, seed: int, cache: Any = None) -> None:
        from pipeline.data.cache import pad_to

        if not subjects:
            raise ValueError("motion: no training subject with a clean image, a corrupted one and a mask")
        self.subjects, self.seed, self.cache = list(subjects), seed, cache
        self.batch_size, self.flip, self.spatial_dims = cfg.batch_size, cfg.flip, cfg.spatial_dims
        self.slice_axis = cfg.slice_axis if cfg.spatial_dims == 2 else None
        self.axes = [a for a in range(3) if a != self.slice_axis]
        self.context = int(getattr(cfg, "context_slices", 0)) if self.slice_axis is not None else 0
        order = "F" if self.slice_axis == 2 else "C"
        shapes = [np.shape(c) for c in clean]
        whole = {a: round_up(max(s[a] for s in shapes), 4) for a in self.axes}
        self.patch = {a: cfg.patch_size or whole[a] for a in self.axes}
        size = [self.patch.get(a, 0) for a in range(3)]

        def keep(name: str, array: np.ndarray) -> Any:
            array = np.asarray(array, dtype=np.float32)
            return pad_to(cache.put(name, array, order) if cache else array, size)

        self.clean, self.corrupted, self.centres = [], [], []
        for i, (s, c, versions, m) in enumerate(zip(subjects, clean, corrupted, masks, strict=True)):
            if any(np.shape(v) != np.shape(c) for v in versions) or np.shape(m) != np.shape(c):
                raise ValueError(f"{s}: the corrupted images and the mask must have the clean image's shape "
                                 f"{np.shape(c)}")
            centres = np.argwhere(np.asarray(m) > 0).astype(np.int32)
            if not len(centres):
                raise ValueError(f"{s}: empty foreground mask")
            self.clean.append(keep(f"clean_{i:05d}", c))
            self.corrupted.append([keep(f"motion_{i:05d}_{k:03d}", v) for k, v in enumerate(versions)])
            self.centres.append(centres)
        log.info("motion pairs: %d subject(s), %d corrupted version(s) in all, %dD crops %s, batch %d",
                 len(self.subjects), sum(len(v) for v in self.corrupted), self.spatial_dims,
                 [self.patch[a] for a in self.axes], self.batch_size)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"checkpoint sampler seed {state.get('seed')} != this run's seed {self.seed}")

    def _window(self, centre: Sequence[int], shape: Sequence[int], context: int = 0) -> tuple[Any, ...]:
        """The crop's index: the patch around `centre`; along the slice axis its slice and, with `context`, the
        `context` slices on either side (clamped at the volume's ends), as SR's sampler takes them."""
        index: list[Any] = []
        for a in range(3):
            c = int(centre[a])
            if a == self.slice_axis:
                index.append(np.clip(np.arange(c - context, c + context + 1), 0, shape[a] - 1) if context
                             else slice(c, c + 1))
            else:
                start = int(np.clip(c - self.patch[a] // 2, 0, shape[a] - self.patch[a]))
                index.append(slice(start, start + self.patch[a]))
        return tuple(index)

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        rng = step_seed(self.seed, step)
        a, b, ids, variants, where = [], [], [], [], []
        for _ in range(self.batch_size):
            s = int(rng.integers(len(self.subjects)))
            k = int(rng.integers(len(self.corrupted[s])))
            centre = self.centres[s][int(rng.integers(len(self.centres[s])))]
            flips = [i + 1 for i in range(self.spatial_dims) if self.flip and rng.random() < 0.5]  # (channel first)
            for out, image, context in ((a, self.corrupted[s][k], self.context), (b, self.clean[s], 0)):
                crop = np.asarray(image[self._window(centre, image.shape, context)])
                # the slice axis becomes the channel axis (length 1 without context); 3D: one channel
                crop = np.moveaxis(crop, self.slice_axis, 0) if self.slice_axis is not None else crop[None]
                out.append(np.flip(crop, flips) if flips else crop)
            ids.append(s)
            variants.append(k)
            where.append([int(c) for c in centre])
        return {"A": torch.from_numpy(np.stack(a).copy()), "B": torch.from_numpy(np.stack(b).copy()),
                "subject": torch.tensor(ids), "variant": torch.tensor(variants), "centre": torch.tensor(where)}


def pool_corruptions(clean: np.ndarray, affine: np.ndarray, recorded: dict[str, Any], n: int,
                     severity_range: Sequence[float], seed: int, subject: str, modality: str) -> list[np.ndarray]:
    """`n` fresh corruptions of one training image with the recorded severity, each scaled by a factor drawn in
    `severity_range` (pure function of the seed, subject and modality)."""
    from pipeline.imaging.motion import motion_rng, simulate_motion

    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    out = []
    for k in range(n):
        rng = motion_rng(seed, subject, modality, f"pool{k}")
        scale = float(rng.uniform(*severity_range))
        image, _ = simulate_motion(
            clean, rng, spacing=spacing, fraction=min(1.0, recorded["fraction"] * scale),
            max_translation_mm=recorded["max_translation_mm"] * scale,
            max_rotation_deg=recorded["max_rotation_deg"] * scale, n_shots=int(recorded["n_shots"]),
            pe_axis=int(recorded["pe_axis"]), centre_fraction=recorded["centre_fraction"],
            ordering=recorded.get("ordering", "linear"))
        out.append(image)
    return out
