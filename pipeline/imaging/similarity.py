"""Masked PSNR and the SSIM window: the one definition shared by the evaluation and by model selection in training."""

from __future__ import annotations

from typing import Any

import numpy as np


def masked_psnr(output: np.ndarray, truth: np.ndarray, mask: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR (dB) of `output` clipped to [0, data_range] against `truth` over the voxels of `mask`."""
    err = (np.clip(output, 0.0, data_range) - truth)[mask]
    return float(10 * np.log10(data_range**2 / max(float(np.mean(err**2)), 1e-12)))


def ssim_kwargs(kernel: str, sigma: float, window: int, data_range: float) -> dict[str, Any]:
    """scikit-image `structural_similarity` arguments for an SSIM window (K1 0.01, K2 0.03, population
    covariance): Gaussian of `sigma` voxels, whose width must be `window`, or uniform `window` wide."""
    common = {"data_range": data_range, "use_sample_covariance": False, "K1": 0.01, "K2": 0.03}
    if kernel == "gaussian":
        # scikit-image truncates its Gaussian at 3.5 sigma: the window is 2 * int(3.5 sigma + 0.5) + 1 wide.
        width = 2 * int(3.5 * sigma + 0.5) + 1
        if width != window:
            raise ValueError(f"evaluate.ssim_window: a Gaussian window of sigma {sigma} is {width} voxels wide "
                             f"(truncated at 3.5 sigma), not {window}; set ssim_window: {width}")
        return {**common, "gaussian_weights": True, "sigma": sigma, "win_size": width}
    return {**common, "gaussian_weights": False, "win_size": window}
