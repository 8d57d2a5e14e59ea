"""Intensity normalisation and foreground masks, shared by preprocessing, training data and inference.

MR images are clipped to percentiles of the foreground and scaled to [0, 1]; CT images to an HU window. The
parameters returned with every normalised image map it back: `original = low + value * (high - low)`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.config import PreprocessConfig

CT_MASK_HU = -500.0  # CT foreground: denser than this (air and lung are below, soft tissue and bone above)


def foreground_mask(image: np.ndarray, is_ct: bool = False) -> np.ndarray:
    """Foreground (uint8 0/1): threshold (Otsu for MR, -500 HU for CT) of the lightly smoothed image, closed,
    holes filled, largest connected component kept."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), sigma=1.0)
    finite = smooth[np.isfinite(smooth)]
    if finite.size == 0 or finite.min() == finite.max():
        raise ValueError("foreground_mask: the image is constant; no foreground to find")
    threshold = CT_MASK_HU if is_ct else float(threshold_otsu(finite))
    mask = smooth > threshold
    mask = ndimage.binary_closing(mask, structure=ndimage.generate_binary_structure(3, 1), iterations=2)
    mask = ndimage.binary_fill_holes(mask)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    return mask.astype(np.uint8)


def normalise(
    image: np.ndarray, modality: str, mask: np.ndarray | None, cfg: PreprocessConfig
) -> tuple[np.ndarray, dict[str, Any]]:
    """Scale `image` to [0, 1]; return it (float32) and the parameters (`original = low + value * (high - low)`).

    CT (`modality == "CT"`): clipped to `cfg.ct_window`; any other modality: to the `cfg.mr_percentiles` of the
    voxels inside `mask` (of the whole image when the mask is None or empty).
    """
    from monai.transforms import ScaleIntensityRange

    image = np.asarray(image, dtype=np.float32)
    if modality == "CT":
        low, high = (float(v) for v in cfg.ct_window)
        params: dict[str, Any] = {"method": "window", "window": [low, high], "unit": "HU"}
    else:
        inside = image[mask.astype(bool)] if mask is not None and mask.any() else image.ravel()
        low, high = (float(v) for v in np.percentile(inside, cfg.mr_percentiles))
        if not high > low:
            raise ValueError(
                f"{modality}: intensities are constant inside the foreground ({low}); cannot normalise"
            )
        params = {"method": "percentile", "percentiles": [float(p) for p in cfg.mr_percentiles]}
    scaled = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)(image)
    params.update(
        {"low": low, "high": high, "range": [0.0, 1.0], "inverse": "original = low + value * (high - low)"}
    )
    return np.asarray(scaled, dtype=np.float32), params


def background(modality: str, cfg: PreprocessConfig) -> float:
    """Intensity outside the field of view: 0 for MR, the bottom of the window (air) for CT."""
    return float(cfg.ct_window[0]) if modality == "CT" else 0.0
