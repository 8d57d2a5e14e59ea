"""Tiny synthetic super-resolution datasets in the preprocess stage's layout, and tiny SRGAN configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.imaging.degrade import degrade, lr_affine
from pipeline.io.nifti import save_nifti
from pipeline.models.srgan import SRGANConfig

SPLITS = ("train", "train", "val", "test")


def smooth_volume(shape, seed: int) -> np.ndarray:
    """A smooth random image in [0, 1] inside an ellipsoid, 0 outside."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random(shape), sigma=1.5)
    img = (img - img.min()) / (img.max() - img.min())
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum(g**2 for g in grid) < 0.8
    return (img * inside).astype(np.float32), inside.astype(np.uint8)


def make_sr_dataset(root: Path, shape=(32, 32, 8), scale: int = 4, axes=(0, 1), splits=SPLITS,
                    method: str = "kspace", spacing=(2.0, 2.0, 2.0)) -> Path:
    """Write `root/subjects.tsv` with HR, mask and LR NIfTI files per subject; return `root`."""
    root = Path(root)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 3.0]
    lines = ["subject\tsplit\tT1w\tmask\tT1w_lr"]
    for i, split in enumerate(splits):
        sub = f"sub-{i + 1:03d}"
        hr, mask = smooth_volume(shape, seed=i)
        lr = degrade(hr, scale, method, axes)
        d = root / sub
        p_hr = save_nifti(hr, affine, d / "T1w.nii.gz")
        p_mask = save_nifti(mask, affine, d / "mask.nii.gz", dtype=np.uint8)
        p_lr = save_nifti(lr, lr_affine(affine, scale, axes), d / "T1w_lr.nii.gz")
        (d / "normalisation.json").write_text(
            '{"T1w": {"method": "percentile", "percentiles": [0.5, 99.5], "low": 0.0, "high": 1.0, '
            f'"range": [0.0, 1.0], "lr": {{"method": "{method}", "scale": {scale}, "axes": {list(axes)}}}}}}}\n'
        )
        lines.append(f"{sub}\t{split}\t{p_hr}\t{p_mask}\t{p_lr}")
    (root / "subjects.tsv").write_text("\n".join(lines) + "\n")
    return root


def tiny_cfg(**overrides) -> SRGANConfig:
    """An SRGAN config small enough for unit tests (a few steps in a second or two)."""
    base = dict(channels=8, n_blocks=1, outer_kernel=3, d_channels=8, d_layers=2, patch_size=16, batch_size=4,
                pretrain_steps=3, gan_steps=3, log_every=1, checkpoint_every=2, roi_size=16, sw_batch_size=4,
                context_slices=0)  # 1-channel input (2.5D has its own tests)
    base.update(overrides)
    return SRGANConfig(**base)
