"""The conditional DCGAN's real slices (`pipeline.models.dcgan`): `slice_stack` cuts a volume into square slices with
their position along the head, `SliceBank` holds them per contrast, `SliceSampler` draws batches of real slices
with their condition and the step's noise, a pure function of (seed, step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.gan.seeding import step_seed


def slice_stack(image: np.ndarray, mask: np.ndarray, axis: int, size: int,
                min_area: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The slices of `image` across `axis` within the mask's extent along it, as (n, size, size) float32 in [0, 1]
    (zero-padded to a square, resized by area averaging), and their positions in [0, 1] along the extent. The
    extent runs from the first to the last slice whose foreground area is at least `min_area` times the largest."""
    area = np.moveaxis(mask, axis, -1).reshape(-1, mask.shape[axis]).sum(axis=0)
    idx = np.flatnonzero((area > 0) & (area >= min_area * area.max()))
    if idx.size < 2:
        raise ValueError("the foreground mask covers fewer than 2 slices")
    first, last = int(idx[0]), int(idx[-1])
    vol = np.moveaxis(image, axis, 0)[first:last + 1].astype(np.float32)  # (n, a, b)
    n, a, b = vol.shape
    side = max(a, b)
    square = np.zeros((n, side, side), np.float32)
    oa, ob = (side - a) // 2, (side - b) // 2
    square[:, oa:oa + a, ob:ob + b] = vol
    t = torch.from_numpy(square)[:, None]
    out = torch.nn.functional.interpolate(t, size=(size, size), mode="area")[:, 0].numpy()
    positions = (np.arange(first, last + 1) - first) / float(last - first)
    return np.clip(out, 0.0, 1.0).astype(np.float32), positions.astype(np.float32)


class SliceBank:
    """The slices of several contrasts of some subjects: per contrast, images (n, s, s), positions (n,) and the
    subject of each slice (an index into ``subjects``)."""

    def __init__(self, contrasts: list[str], images: dict[str, np.ndarray], positions: dict[str, np.ndarray],
                 owner: dict[str, np.ndarray], subjects: dict[str, list[str]]) -> None:
        self.contrasts, self.images, self.positions, self.owner, self.subjects = (
            contrasts, images, positions, owner, subjects)
        self.pixel_mm: list[float] | None = None  #: pixel size of the slices (mm), from the first volume read

    @classmethod
    def from_arrays(cls, data: dict[str, list[tuple[str, np.ndarray, np.ndarray]]]) -> SliceBank:
        """From contrast -> [(subject, images, positions)]."""
        images, positions, owner, subjects = {}, {}, {}, {}
        for c, items in data.items():
            images[c] = np.concatenate([im for _, im, _ in items])
            positions[c] = np.concatenate([p for _, _, p in items])
            owner[c] = np.concatenate([np.full(len(p), i) for i, (_, _, p) in enumerate(items)])
            subjects[c] = [s for s, _, _ in items]
        return cls(list(data), images, positions, owner, subjects)

    @classmethod
    def read(cls, data_dir: str | Path, contrasts: list[str], splits: list[str], axis: int, size: int,
             min_area: float = 0.0) -> SliceBank:
        """The slices of `contrasts` of the subjects of `splits` in `data_dir/subjects.tsv` (preprocess output)."""
        from pipeline.data.volumes import domain_volumes
        from pipeline.imaging.geometry import voxel_sizes

        data: dict[str, list] = {}
        pixel_mm = None
        for c in contrasts:
            vols = domain_volumes(data_dir, c, splits)
            if not vols.names:
                raise ValueError(f"{Path(data_dir) / 'subjects.tsv'}: no {'/'.join(splits)} subject has {c} and a "
                                 f"mask (dcgan.contrasts lists it)")
            data[c] = []
            for v in vols:
                try:
                    im, pos = slice_stack(v.image, v.mask, axis, size, min_area)
                except ValueError as exc:
                    raise ValueError(f"{v.subject} {c}: {exc}") from None
                data[c].append((v.subject, im, pos))
                if pixel_mm is None:  # zero-padded to a square of the larger in-plane side, then resized
                    inplane = [a for a in range(3) if a != axis]
                    side = max(v.image.shape[a] for a in inplane)
                    pixel_mm = [round(float(voxel_sizes(v.affine)[a]) * side / size, 4) for a in inplane]
        bank = cls.from_arrays(data)
        bank.pixel_mm = pixel_mm
        return bank

    def count(self, contrast: str) -> int:
        return len(self.positions[contrast])


class SliceSampler:
    """``sampler(step)``: a batch of real slices with their condition (``image`` (B, 1, s, s) in [0, 1],
    ``contrast`` (B,) index into the contrasts, ``position`` (B,)) and the step's noise ``z`` (B, nz), a pure
    function of (seed, step). Contrasts are drawn uniformly, then a slice of that contrast uniformly."""

    def __init__(self, bank: SliceBank, batch_size: int, nz: int, seed: int) -> None:
        self.bank, self.batch_size, self.nz, self.seed = bank, batch_size, nz, seed

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        rng = step_seed(self.seed, step)
        which = rng.integers(len(self.bank.contrasts), size=self.batch_size)
        images, positions = [], []
        for k in which:
            c = self.bank.contrasts[int(k)]
            i = int(rng.integers(self.bank.count(c)))
            images.append(self.bank.images[c][i])
            positions.append(self.bank.positions[c][i])
        z = rng.standard_normal((self.batch_size, self.nz)).astype(np.float32)
        return {"image": torch.from_numpy(np.stack(images)[:, None]), "contrast": torch.from_numpy(which.astype(np.int64)),
                "position": torch.from_numpy(np.asarray(positions, np.float32)), "z": torch.from_numpy(z)}

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
