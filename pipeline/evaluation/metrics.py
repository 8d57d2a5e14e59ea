"""The masked image-quality metrics (PSNR, SSIM, MAE, NRMSE) and the protocol written next to them.

The protocol itself is described in `pipeline.evaluation`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.config import EvaluateConfig
from pipeline.imaging.similarity import ssim_kwargs

METRICS: tuple[str, ...] = ("psnr", "ssim", "mae", "nrmse")
HIGHER_IS_BETTER: dict[str, bool] = {"psnr": True, "ssim": True, "mae": False, "nrmse": False}
METRIC_LABELS: dict[str, str] = {"psnr": "PSNR (dB)", "ssim": "SSIM", "mae": "MAE", "nrmse": "NRMSE"}


def _ssim_kwargs(cfg: EvaluateConfig) -> dict[str, Any]:
    """scikit-image arguments for the configured SSIM window (checked against the window size)."""
    return ssim_kwargs(cfg.ssim_kernel, cfg.ssim_sigma, cfg.ssim_window, cfg.data_range)


def ssim_map(pred: np.ndarray, truth: np.ndarray, cfg: EvaluateConfig) -> np.ndarray:
    """The local 3D SSIM map of `pred` against `truth` (same shape as the inputs)."""
    from skimage.metrics import structural_similarity

    if min(truth.shape) < cfg.ssim_window:
        raise ValueError(f"SSIM needs every side >= {cfg.ssim_window} voxels, got shape {truth.shape}")
    _, smap = structural_similarity(
        truth.astype(np.float64), pred.astype(np.float64), full=True, **_ssim_kwargs(cfg)
    )
    return smap


def masked_metrics(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, cfg: EvaluateConfig) -> dict[str, float]:
    """PSNR, SSIM, MAE and NRMSE of `pred` against `truth` over the voxels of `mask` (protocol: `pipeline.evaluation`)."""
    import torch
    from monai.metrics import MAEMetric
    from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio

    if pred.shape != truth.shape or mask.shape != truth.shape:
        raise ValueError(f"shapes differ: output {pred.shape}, truth {truth.shape}, mask {mask.shape}")
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("the foreground mask is empty")
    if cfg.clip:
        pred = np.clip(pred, 0.0, cfg.data_range)
    p, t = pred[mask].astype(np.float64), truth[mask].astype(np.float64)
    if np.array_equal(p, t):
        psnr = math.inf
    else:
        psnr = float(peak_signal_noise_ratio(t, p, data_range=cfg.data_range))
    mae = float(MAEMetric(reduction="mean")(torch.from_numpy(p)[None, None], torch.from_numpy(t)[None, None]).item())
    nrmse = float(normalized_root_mse(t, p, normalization="euclidean")) if np.any(t) else math.nan
    ssim = float(ssim_map(pred, truth, cfg)[mask].mean())
    return {"psnr": psnr, "ssim": ssim, "mae": mae, "nrmse": nrmse}


def protocol(cfg: EvaluateConfig) -> dict[str, Any]:
    """The exact measurement protocol, as written next to the numbers."""
    if cfg.ssim_kernel == "gaussian":
        window = f"Gaussian window, sigma {cfg.ssim_sigma} voxels, truncated to {cfg.ssim_window}^3 voxels"
    else:
        window = f"uniform {cfg.ssim_window}^3 window"
    return {
        "data_range": cfg.data_range,
        "normalisation": "intensities normalised to [0, 1] by preprocessing (MR: robust percentiles of the "
        "foreground; CT: HU window); see results/preprocess/<subject>/normalisation.json",
        "region": "foreground mask of preprocessing; every metric over mask voxels only",
        "clip": f"outputs and baselines clipped to [0, {cfg.data_range}] before scoring"
        if cfg.clip
        else "outputs not clipped",
        "dimensionality": "3D, whole volume",
        "psnr": "10 log10(data_range^2 / MSE), MSE over mask voxels (skimage.metrics.peak_signal_noise_ratio)",
        "ssim": f"local 3D SSIM map of the whole volume ({window}, K1 0.01, K2 0.03, population covariance, "
        "reflected borders; skimage.metrics.structural_similarity full=True), averaged over mask voxels",
        "mae": "mean absolute error over mask voxels (monai.metrics.MAEMetric)",
        "nrmse": "||output - truth||_2 / ||truth||_2 over mask voxels (skimage.metrics.normalized_root_mse, euclidean)",
        "strongest_baseline": "the baseline with the highest mean PSNR over the task's subjects",
        "ci": f"percentile bootstrap of the mean, {cfg.bootstrap_resamples} resamples, "
        f"{round(cfg.confidence * 100)}% level, seed {cfg.seed}",
        "test": "paired per-subject differences (model - baseline); two-sided Wilcoxon signed-rank test "
        f"(scipy.stats.wilcoxon); verdict worse whenever the CI of the mean difference lies entirely on the bad "
        f"side of 0 (below 0 for PSNR/SSIM, above 0 for MAE/NRMSE), whatever p; better only when it lies entirely "
        f"on the good side and p < {1 - cfg.confidence:g}; otherwise inconclusive",
        "confidence": cfg.confidence,
        "splits": list(cfg.splits),
    }
