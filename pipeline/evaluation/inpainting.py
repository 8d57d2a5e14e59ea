"""The inpainting task (kind "inpainting"): scored inside the deleted voxels only.

A gapped input (`<modality>_gaps.nii.gz`, `pipeline.imaging.gaps`) holds NaN where it was not measured. Every
method (the model, linear and cubic interpolation along z) returns the measured voxels unchanged, so scoring the
whole volume would mostly compare identical voxels: here PSNR, MAE and NRMSE are computed over the deleted voxels
inside the foreground mask, and SSIM is the mean, over those voxels, of the 2D SSIM map of each filled slice
(a 3D window would reach into the measured slices, which every method copies). The same is computed for the
slices of each run length (1-slice gaps, 2-slice gaps, ...) separately (`by_gap_length` in summary.json).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import EvaluateConfig
from pipeline.evaluation.metrics import METRICS

log = logging.getLogger(__name__)

PROTOCOL = ("inpainting: PSNR, MAE and NRMSE over the deleted (filled) voxels inside the mask only; SSIM: the "
            "mean over those voxels of each filled slice's 2D SSIM map (same window); measured voxels, which every "
            "method passes through unchanged, are not scored; by_gap_length: the same over the slices of runs of "
            "each length")


def recorded_deleted(truth_path: Path | None, modality: str) -> list[int] | None:
    """The deleted slices preprocessing recorded in the subject's normalisation.json (None when not recorded)."""
    if truth_path is None:
        return None
    path = Path(truth_path).parent / "normalisation.json"
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text()).get(modality, {}).get("gaps")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return None if not entry else [int(z) for z in entry.get("deleted_slices", [])]


def check_recorded(unknown: np.ndarray, recorded: list[int] | None, where: str) -> None:
    """The slices missing whole in the input are exactly those preprocessing recorded as deleted."""
    from pipeline.imaging.gaps import Z

    if recorded is None:
        return
    found = [int(z) for z in np.flatnonzero(unknown.all(axis=(0, 1)))] if unknown.shape[Z] else []
    if sorted(recorded) != found:
        raise ValueError(f"{where}: the slices missing in the input ({found}) are not those recorded as deleted in "
                         f"normalisation.json ({sorted(recorded)})")


def gap_metrics(pred: np.ndarray, truth: np.ndarray, region: np.ndarray, cfg: EvaluateConfig) -> dict[str, float]:
    """PSNR, SSIM (2D per slice), MAE and NRMSE of `pred` against `truth` over the voxels of `region`."""
    from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

    from pipeline.evaluation.metrics import _ssim_kwargs

    if pred.shape != truth.shape or region.shape != truth.shape:
        raise ValueError(f"shapes differ: output {pred.shape}, truth {truth.shape}, region {region.shape}")
    region = region.astype(bool)
    if not region.any():
        raise ValueError("no deleted voxel inside the mask: nothing to score")
    if cfg.clip:
        pred = np.clip(pred, 0.0, cfg.data_range)
    p, t = pred[region].astype(np.float64), truth[region].astype(np.float64)
    psnr = math.inf if np.array_equal(p, t) else float(peak_signal_noise_ratio(t, p, data_range=cfg.data_range))
    mae = float(np.mean(np.abs(p - t)))
    nrmse = float(normalized_root_mse(t, p, normalization="euclidean")) if np.any(t) else math.nan
    kwargs = _ssim_kwargs(cfg)
    total, count = 0.0, 0
    for z in np.flatnonzero(region.any(axis=(0, 1))):
        _, smap = structural_similarity(truth[:, :, z].astype(np.float64), pred[:, :, z].astype(np.float64),
                                        full=True, **kwargs)
        sel = region[:, :, z]
        total += float(smap[sel].sum())
        count += int(sel.sum())
    return {"psnr": psnr, "ssim": total / count, "mae": mae, "nrmse": nrmse}


def length_regions(unknown: np.ndarray, mask: np.ndarray) -> dict[int, np.ndarray]:
    """Run length -> the scored voxels (deleted, inside the mask) of the slices deleted in runs of that length."""
    from pipeline.imaging.gaps import runs_of

    whole = np.flatnonzero(unknown.all(axis=(0, 1)))
    out: dict[int, np.ndarray] = {}
    for start, length in runs_of(whole):
        region = out.setdefault(length, np.zeros(unknown.shape, dtype=bool))
        region[:, :, start:start + length] = mask[:, :, start:start + length]
    return {k: v for k, v in sorted(out.items()) if v.any()}


def summarise_lengths(methods: list[str], baselines: list[str], records: list[dict[str, Any]],
                      cfg: EvaluateConfig) -> dict[str, Any]:
    """Per run length: each method's metrics (mean, CI) and each model's paired comparison with each baseline,
    over the subjects that have gaps of that length. `records` carry a ``gap_length`` key."""
    from pipeline.evaluation.statistics import compare, describe

    out: dict[str, Any] = {}
    for length in sorted({int(r["gap_length"]) for r in records}):
        rows = [r for r in records if int(r["gap_length"]) == length]
        subjects = sorted({r["subject"] for r in rows})

        def series(method: str, metric: str, rows: list[dict[str, Any]] = rows,
                   subjects: list[str] = subjects) -> list[float]:
            by = {r["subject"]: r[metric] for r in rows if r["method"] == method}
            return [float(by[s]) for s in subjects]

        models = [m for m in methods if m not in baselines]
        out[str(length)] = {
            "subjects": subjects,
            "n_subjects": len(subjects),
            "methods": {m: {m2: describe(series(m, m2), cfg) for m2 in METRICS} for m in methods},
            "comparisons": {m: {b: {k: compare(series(m, k), series(b, k), k, cfg) for k in METRICS}
                                for b in baselines} for m in models},
        }
    return out


def gap_length_figure(path: Path, by_length: dict[str, Any], methods: list[str], labels: dict[str, str],
                      dpi: int = 110) -> dict[str, str]:
    """A bar chart: mean PSNR inside the filled slices per gap length, one bar per method (CI whiskers); written
    as `path` (PNG) and beside it as SVG; returns {"svg": path, "png": path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = list(by_length)
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(lengths), 3.4))
    for i, method in enumerate(methods):
        means, lo, hi = [], [], []
        for length in lengths:
            d = by_length[length]["methods"][method]["psnr"]
            means.append(d["mean"] if d["mean"] is not None else np.nan)
            lo.append(d["mean"] - d["ci_low"] if d.get("ci_low") is not None else 0.0)
            hi.append(d["ci_high"] - d["mean"] if d.get("ci_high") is not None else 0.0)
        x = np.arange(len(lengths)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(x, means, width, yerr=[lo, hi], capsize=3, label=labels.get(method, method))
    ax.set_xticks(np.arange(len(lengths)), [f"{k}-slice gaps" for k in lengths])
    ax.set_ylabel("PSNR inside the filled slices (dB)")
    finite = [by_length[k]["methods"][m]["psnr"]["mean"] for k in lengths for m in methods]
    finite = [v for v in finite if v is not None and math.isfinite(v)]
    if finite:
        ax.set_ylim(max(0.0, min(finite) - 4), max(finite) + 2)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)
    return {"svg": path.with_suffix(".svg").as_posix(), "png": path.as_posix()}
