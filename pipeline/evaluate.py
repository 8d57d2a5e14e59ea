"""Stage 6: image-quality metrics of every model and its classical baselines, with statistics and figures.

Protocol (written into `results/metrics/summary.json` and shown in the report):

- Images: the preprocessed, normalised ground truth (intensities in [0, 1], so the data range is 1.0) and,
  on the same grid, each model's output and each baseline. Outputs and baselines are clipped to
  [0, data_range] before scoring (zero-filled k-space rings below 0; a generator may overshoot).
- Region: the subject's foreground mask from preprocessing. Every metric is taken over mask voxels only.
- PSNR: 10 log10(data_range^2 / MSE), MSE over mask voxels (`skimage.metrics.peak_signal_noise_ratio`).
- SSIM: the local SSIM map of the whole 3D volume (`skimage.metrics.structural_similarity`, full=True;
  Gaussian window sigma 1.5 truncated to 11^3 voxels as in Wang et al. 2004, K1 0.01, K2 0.03, population
  covariance, reflected borders), averaged over mask voxels. MONAI's `SSIMMetric` agrees (unit test).
- MAE: mean |output - truth| over mask voxels (`monai.metrics.MAEMetric`).
- NRMSE: ||output - truth||_2 / ||truth||_2 over mask voxels (`skimage.metrics.normalized_root_mse`,
  Euclidean normalisation).
- Baselines. Super-resolution: `pipeline.degrade.upsample` of the LR input with bicubic (cubic spline along
  the degraded axes: 2D in-plane for in-plane degradation), trilinear, and, when the LR came from k-space
  truncation, zero-filled k-space (sinc) interpolation. Translation: the source image itself (identity) and
  its histogram matched to the subject's own target inside the mask (an oracle intensity mapping, so a
  deliberately strong baseline). The strongest baseline of a task is the one with the highest mean PSNR.
- Statistics per task and method: n, mean, SD (ddof 1), percentile-bootstrap CI of the mean (seeded);
  model - baseline paired differences per subject with their bootstrap CI and a two-sided Wilcoxon
  signed-rank p-value (`scipy.stats.wilcoxon`); with fewer than 2 subjects CIs and p-values are null.
  Verdict per metric: `better`/`worse` when the CI of the difference excludes 0 and p < 1 - confidence,
  else `inconclusive` (with fewer than 6 subjects the exact two-sided test cannot reach p < 0.05).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import EvaluateConfig, load_params, to_dict
from pipeline.io.atomic import write_text

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("psnr", "ssim", "mae", "nrmse")
HIGHER_IS_BETTER: dict[str, bool] = {"psnr": True, "ssim": True, "mae": False, "nrmse": False}
METRIC_LABELS: dict[str, str] = {"psnr": "PSNR (dB)", "ssim": "SSIM", "mae": "MAE", "nrmse": "NRMSE"}
BASELINE_LABELS: dict[str, str] = {
    "bicubic": "bicubic",
    "trilinear": "trilinear",
    "zerofill": "zero-filled k-space",
    "identity": "source image",
    "histogram_match": "histogram-matched source",
}
AXES = {"inplane": (0, 1), "all": (0, 1, 2), "through": (2,)}
SUBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# ------------------------------------------------------------------------------------------ metrics
def _ssim_kwargs(cfg: EvaluateConfig) -> dict[str, Any]:
    """scikit-image arguments for the configured SSIM window (checked against the window size)."""
    common = {"data_range": cfg.data_range, "use_sample_covariance": False, "K1": 0.01, "K2": 0.03}
    if cfg.ssim_kernel == "gaussian":
        # scikit-image truncates its Gaussian at 3.5 sigma: the window is 2 * int(3.5 sigma + 0.5) + 1 wide.
        width = 2 * int(3.5 * cfg.ssim_sigma + 0.5) + 1
        if width != cfg.ssim_window:
            raise ValueError(
                f"evaluate.ssim_window: a Gaussian window of sigma {cfg.ssim_sigma} is {width} voxels wide "
                f"(truncated at 3.5 sigma), not {cfg.ssim_window}; set ssim_window: {width}"
            )
        return {**common, "gaussian_weights": True, "sigma": cfg.ssim_sigma, "win_size": width}
    return {**common, "gaussian_weights": False, "win_size": cfg.ssim_window}


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
    """PSNR, SSIM, MAE and NRMSE of `pred` against `truth` over the voxels of `mask` (see module docstring)."""
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
        f"(scipy.stats.wilcoxon); verdict better/worse when the CI of the mean difference excludes 0 and "
        f"p < {1 - cfg.confidence:g}, otherwise inconclusive",
        "confidence": cfg.confidence,
        "splits": list(cfg.splits),
    }


# ------------------------------------------------------------------------------------------ statistics
def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def bootstrap_ci(values: Sequence[float], cfg: EvaluateConfig) -> tuple[float | None, float | None]:
    """Percentile-bootstrap CI of the mean (seeded); (None, None) with fewer than 2 finite values."""
    from scipy.stats import bootstrap

    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if arr.size < 2:
        return None, None
    if np.all(arr == arr[0]):
        return float(arr[0]), float(arr[0])
    res = bootstrap(
        (arr,),
        np.mean,
        n_resamples=cfg.bootstrap_resamples,
        confidence_level=cfg.confidence,
        method="percentile",
        rng=np.random.default_rng(cfg.seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def describe(values: Sequence[float], cfg: EvaluateConfig) -> dict[str, Any]:
    """n, mean, SD and bootstrap CI of one metric of one method."""
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    lo, hi = bootstrap_ci(arr, cfg)
    return {
        "n": int(arr.size),
        "n_nonfinite": int(len(values) - arr.size),
        "mean": _finite(float(arr.mean())) if arr.size else None,
        "sd": _finite(float(arr.std(ddof=1))) if arr.size >= 2 else None,
        "ci_low": lo,
        "ci_high": hi,
    }


def wilcoxon_p(diffs: Sequence[float]) -> tuple[float | None, str]:
    """Two-sided Wilcoxon signed-rank p-value of paired differences, or None with the reason."""
    from scipy.stats import wilcoxon

    arr = np.asarray(diffs, dtype=np.float64)
    if arr.size < 2:
        return None, f"n = {arr.size}: no test"
    if np.all(arr == 0):
        return 1.0, "all differences are 0"
    try:
        p = float(wilcoxon(arr).pvalue)
    except ValueError as exc:
        return None, f"no test: {exc}"
    return _finite(p), ""


def compare(model: Sequence[float], baseline: Sequence[float], metric: str, cfg: EvaluateConfig) -> dict[str, Any]:
    """Paired comparison model - baseline of one metric over the same subjects (in the same order)."""
    pairs = [(m, b) for m, b in zip(model, baseline, strict=True) if math.isfinite(m) and math.isfinite(b)]
    diffs = [m - b for m, b in pairs]
    lo, hi = bootstrap_ci(diffs, cfg)
    p, note = wilcoxon_p(diffs)
    mean = float(np.mean(diffs)) if diffs else None
    alpha = 1.0 - cfg.confidence
    if lo is None or hi is None or p is None:
        verdict = "n/a"
    elif (lo > 0 or hi < 0) and p < alpha:
        improved = (lo > 0) == HIGHER_IS_BETTER[metric]
        verdict = "better" if improved else "worse"
    else:
        verdict = "inconclusive"
        if 2.0 ** (1 - len(diffs)) >= alpha and not note:  # the smallest two-sided exact p with n pairs
            note = f"with n = {len(diffs)} the Wilcoxon test cannot reach p < {alpha:g}"
    return {
        "n": len(diffs),
        "mean_diff": mean,
        "ci_low": lo,
        "ci_high": hi,
        "wilcoxon_p": p,
        "note": note,
        "higher_is_better": HIGHER_IS_BETTER[metric],
        "verdict": verdict,
    }


# ------------------------------------------------------------------------------------------ inputs
@dataclasses.dataclass
class Task:
    """One evaluation task: its models, what they read and what they are scored against."""

    name: str  # "sr" | "translation"
    models: list[str]
    target: str  # ground-truth modality (column of subjects.tsv)
    source: str  # the input column (e.g. T1w_lr or T1w)
    desc: str  # file-name suffix of the model outputs
    baselines: list[str]
    description: str
    degradation: dict[str, Any] = dataclasses.field(default_factory=dict)


def read_subjects(path: Path) -> list[dict[str, str]]:
    """Rows of `subjects.tsv` (a header with at least `subject`, `split`, `mask`)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: subjects table not found (run preprocessing first)")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    missing = {"subject", "split", "mask"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    for row in rows:
        if not SUBJECT_RE.match(row["subject"] or ""):
            raise ValueError(f"{path}: subject label {row['subject']!r} is not a pseudonym like sub-001")
    return rows


def _resolve(value: str, table: Path, what: str) -> Path:
    """A path from subjects.tsv: relative to the working directory (or, failing that, to the table)."""
    if not value:
        raise ValueError(f"{table}: no {what}")
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    beside = table.parent / path
    return beside if beside.exists() else path


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.io.nifti import load_nifti

    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    data, affine = load_nifti(path)
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data, affine


def _same_grid(path: Path, data: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], ref: np.ndarray) -> None:
    if data.shape != shape:
        raise ValueError(f"{path}: shape {data.shape} differs from the ground truth's {shape}")
    if not np.allclose(affine, ref, atol=1e-3):
        raise ValueError(f"{path}: affine differs from the ground truth's (not on the HR grid)")


def sr_geometry(lr_shape: tuple[int, ...], hr_shape: tuple[int, ...], degradation: dict[str, Any], where: str) -> tuple[int, tuple[int, ...]]:
    """Scale and degraded axes of an LR/HR pair, from the shapes, checked against the recorded degradation."""
    axes = tuple(a for a in range(3) if lr_shape[a] != hr_shape[a])
    if not axes:
        raise ValueError(f"{where}: the LR input has the HR shape {hr_shape}; nothing to super-resolve")
    scales = {hr_shape[a] // lr_shape[a] for a in axes}
    if len(scales) != 1 or any(hr_shape[a] != lr_shape[a] * next(iter(scales)) for a in axes):
        raise ValueError(f"{where}: HR shape {hr_shape} is not an integer multiple of LR shape {lr_shape}")
    scale = scales.pop()
    if "scale" in degradation and int(degradation["scale"]) != scale:
        raise ValueError(f"{where}: LR/HR shapes give scale {scale}, the preprocessing config says {degradation['scale']}")
    if degradation.get("axes") in AXES and AXES[degradation["axes"]] != axes:
        raise ValueError(f"{where}: degraded axes {axes} differ from the config's {degradation['axes']!r}")
    return scale, axes


# ------------------------------------------------------------------------------------------ one subject
@dataclasses.dataclass
class Case:
    """One subject's arrays for one task, all on the ground-truth (HR) grid."""

    subject: str
    split: str
    truth: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    source: np.ndarray  # on the HR grid (SR: nearest-neighbour upsampled LR, for display)
    source_raw: np.ndarray  # as stored (SR: the LR array)
    scale: int = 1
    axes: tuple[int, ...] = ()


def load_case(row: dict[str, str], task: Task, table: Path) -> Case:
    """Read ground truth, mask and input of one subject for `task`."""
    from pipeline.degrade import upsample

    sub = row["subject"]
    truth_path = _resolve(row.get(task.target, ""), table, f"{task.target} image for {sub}")
    truth, affine = _load(truth_path)
    mask_path = _resolve(row["mask"], table, f"mask for {sub}")
    mask, mask_affine = _load(mask_path)
    _same_grid(mask_path, mask, mask_affine, truth.shape, affine)
    src_path = _resolve(row.get(task.source, ""), table, f"{task.source} image for {sub}")
    src, src_affine = _load(src_path)
    if task.name == "sr":
        scale, axes = sr_geometry(src.shape, truth.shape, task.degradation, str(src_path))
        shown = upsample(src, scale, "nearest", axes)
    else:
        _same_grid(src_path, src, src_affine, truth.shape, affine)
        scale, axes, shown = 1, (), src
    return Case(sub, row["split"], truth, mask > 0, affine, shown, src, scale, axes)


def make_baseline(task: Task, case: Case, name: str) -> np.ndarray:
    """The baseline `name` of one case, on the HR grid."""
    from pipeline.degrade import histogram_match, upsample

    if task.name == "sr":
        out = upsample(case.source_raw, case.scale, name, case.axes)
    elif name == "identity":
        out = case.source
    elif name == "histogram_match":
        out = histogram_match(case.source, case.truth, mask=case.mask)
    else:
        raise ValueError(f"unknown baseline {name!r} for task {task.name}")
    if out.shape != case.truth.shape:
        raise ValueError(f"{case.subject}: baseline {name} has shape {out.shape}, the ground truth {case.truth.shape}")
    return np.asarray(out, dtype=np.float32)


def prediction_path(infer_dir: Path, model: str, subject: str, desc: str) -> Path:
    return infer_dir / model / f"{subject}_{desc}.nii.gz"


def load_prediction(infer_dir: Path, model: str, case: Case, desc: str) -> np.ndarray:
    path = prediction_path(infer_dir, model, case.subject, desc)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no output of model {model} for {case.subject}")
    data, affine = _load(path)
    _same_grid(path, data, affine, case.truth.shape, case.affine)
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{path}: contains NaN or infinite values")
    return data


# ------------------------------------------------------------------------------------------ the stage
def _clip(x: np.ndarray, cfg: EvaluateConfig) -> np.ndarray:
    return np.clip(x, 0.0, cfg.data_range) if cfg.clip else x


def evaluate_task(
    task: Task,
    rows: list[dict[str, str]],
    table: Path,
    infer_dir: Path,
    figures_dir: Path,
    cfg: EvaluateConfig,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, dict[str, str]]]:
    """Score a task's models and baselines on the selected subjects; returns (rows, summary, figure paths)."""
    from pipeline.report import figures

    in_splits = [r for r in rows if r["split"] in cfg.splits]
    selected = [r for r in in_splits if r.get(task.target) and r.get(task.source)]
    for r in in_splits:
        if r not in selected:
            log.warning("%s: %s has no %s and %s images; not part of the %s evaluation",
                        table, r["subject"], task.source, task.target, task.name)
    if not selected:
        raise ValueError(f"{table}: no subject of split(s) {list(cfg.splits)} has {task.source} and {task.target}")
    records: list[dict[str, Any]] = []
    for row in selected:
        case = load_case(row, task, table)
        log.info("%s %s: scoring %d baseline(s) and %d model(s)", task.name, case.subject, len(task.baselines), len(task.models))
        for method in task.baselines:
            values = masked_metrics(make_baseline(task, case, method), case.truth, case.mask, cfg)
            records.append({"subject": case.subject, "split": case.split, "method": method, "kind": "baseline", **values})
        for model in task.models:
            pred = load_prediction(infer_dir, model, case, task.desc)
            values = masked_metrics(pred, case.truth, case.mask, cfg)
            records.append({"subject": case.subject, "split": case.split, "method": model, "kind": "model", **values})

    summary = summarise_task(task, records, cfg)
    strongest = summary["strongest_baseline"]

    # Second pass for the figures: the strongest baseline is known only now.
    paths: dict[str, dict[str, str]] = {}
    for row in selected:
        case = load_case(row, task, table)
        base = _clip(make_baseline(task, case, strongest), cfg)
        for model in task.models:
            pred = _clip(load_prediction(infer_dir, model, case, task.desc), cfg)
            values = {r["method"]: r for r in records if r["subject"] == case.subject and r["method"] in (model, strongest)}
            out = figures_dir / case.subject / f"{model}.png"
            figures.subject_panels(
                out,
                source=case.source,
                baseline=base,
                output=pred,
                truth=case.truth,
                mask=case.mask,
                affine=case.affine,
                labels=(_source_label(task), BASELINE_LABELS.get(strongest, strongest), model, f"ground truth ({task.target})"),
                title=_panel_title(case.subject, model, strongest, values),
                data_range=cfg.data_range,
                dpi=cfg.figure_dpi,
            )
            paths.setdefault(case.subject, {})[model] = out.as_posix()
    return records, summary, paths


def _source_label(task: Task) -> str:
    return f"input ({task.source}, LR)" if task.name == "sr" else f"input ({task.source})"


def _panel_title(subject: str, model: str, baseline: str, values: dict[str, dict[str, Any]]) -> str:
    def fmt(method: str) -> str:
        v = values.get(method)
        if not v:
            return ""
        return f"PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.3f}"

    return f"{subject} - {model}: {fmt(model)}   |   {BASELINE_LABELS.get(baseline, baseline)}: {fmt(baseline)}"


def summarise_task(task: Task, records: list[dict[str, Any]], cfg: EvaluateConfig) -> dict[str, Any]:
    """Descriptive statistics per method and paired comparisons of each model with each baseline."""
    subjects = sorted({r["subject"] for r in records})

    def series(method: str, metric: str) -> list[float]:
        by_subject = {r["subject"]: r[metric] for r in records if r["method"] == method}
        return [float(by_subject[s]) for s in subjects]

    methods: dict[str, Any] = {}
    for method in [*task.baselines, *task.models]:
        methods[method] = {
            "kind": "baseline" if method in task.baselines else "model",
            "label": BASELINE_LABELS.get(method, method),
            "metrics": {m: describe(series(method, m), cfg) for m in METRICS},
        }
    psnr_means = {b: methods[b]["metrics"]["psnr"]["mean"] for b in task.baselines}
    strongest = max(task.baselines, key=lambda b: -math.inf if psnr_means[b] is None else psnr_means[b])
    comparisons: dict[str, Any] = {}
    for model in task.models:
        comparisons[model] = {
            baseline: {m: compare(series(model, m), series(baseline, m), m, cfg) for m in METRICS}
            for baseline in task.baselines
        }
    return {
        "description": task.description,
        "target": task.target,
        "input": task.source,
        "degradation": task.degradation,
        "models": list(task.models),
        "baselines": list(task.baselines),
        "strongest_baseline": strongest,
        "subjects": subjects,
        "n_subjects": len(subjects),
        "methods": methods,
        "comparisons": comparisons,
    }


def write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    """Per-subject metrics, one row per subject and method (atomically)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["subject", "split", "method", "kind", *METRICS], lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({**r, **{m: _fmt(r[m]) for m in METRICS}})
    write_text(path, buf.getvalue())


def _fmt(x: float) -> str:
    return repr(float(x)) if math.isfinite(x) else str(x)


def build_tasks(args: argparse.Namespace, cfg: EvaluateConfig, rows: list[dict[str, str]]) -> list[Task]:
    """The tasks named on the command line, with their baselines."""
    tasks = []
    columns = set(rows[0]) if rows else set()
    degradation = json.loads(args.degradation) if args.degradation else {}
    if not isinstance(degradation, dict):
        raise ValueError(f"--degradation: expected a JSON object, got {args.degradation!r}")
    if args.sr:
        modality = args.sr_modality
        if not modality:
            lr_cols = sorted(c[:-3] for c in columns if c.endswith("_lr"))
            if len(lr_cols) != 1:
                raise ValueError(f"{args.subjects}: cannot tell which modality was super-resolved ({lr_cols}); pass --sr-modality")
            modality = lr_cols[0]
        if f"{modality}_lr" not in columns or modality not in columns:
            raise ValueError(f"{args.subjects}: needs columns {modality} and {modality}_lr for super-resolution")
        baselines = list(cfg.sr_baselines)
        method = degradation.get("method")
        if "zerofill" in baselines and method not in (None, "kspace"):
            baselines.remove("zerofill")
            log.info("zero-filled k-space baseline skipped: the LR inputs came from %r degradation", method)
        if not baselines:
            raise ValueError("evaluate.sr_baselines: no baseline left to compare with")
        desc = f"x{degradation['scale']} " if "scale" in degradation else ""
        how = f"{degradation.get('method', '?')}, {degradation.get('axes', '?')}" if degradation else "from the LR/HR grids"
        tasks.append(
            Task("sr", list(args.sr), modality, f"{modality}_lr", "sr", baselines,
                 f"super-resolution {desc}of {modality} ({how})", degradation)
        )
    if args.translation:
        src, tgt = args.source, args.target
        for col in (src, tgt):
            if col not in columns:
                raise ValueError(f"{args.subjects}: no column {col!r} for translation {src} → {tgt}")
        if not cfg.translation_baselines:
            raise ValueError("evaluate.translation_baselines: no baseline to compare with")
        tasks.append(
            Task("translation", list(args.translation), tgt, src, tgt, list(cfg.translation_baselines),
                 f"translation {src} → {tgt}")
        )
    if not tasks:
        raise ValueError("nothing to evaluate: name at least one model with --sr or --translation")
    return tasks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subjects", type=Path, required=True, help="results/preprocess/subjects.tsv")
    parser.add_argument("--infer", type=Path, default=Path("results/infer"), help="folder of model outputs (<model>/<subject>_<desc>.nii.gz)")
    parser.add_argument("--sr", nargs="*", default=[], metavar="MODEL", help="super-resolution models (outputs <subject>_sr.nii.gz)")
    parser.add_argument("--sr-modality", default="", help="the super-resolved modality (default: the only <modality>_lr column)")
    parser.add_argument("--degradation", default="", help="the preprocessing's SR settings as JSON (method, scale, axes)")
    parser.add_argument("--translation", nargs="*", default=[], metavar="MODEL", help="translation models (outputs <subject>_<target>.nii.gz)")
    parser.add_argument("--source", default="T1w", help="source modality of translation")
    parser.add_argument("--target", default="T2w", help="target modality of translation")
    parser.add_argument("--histories", type=Path, default=Path("results/models"), help="folder of <model>/history.csv")
    parser.add_argument("--metrics", type=Path, default=Path("results/metrics"), help="output folder of <model>.csv and summary.json")
    parser.add_argument("--figures", type=Path, default=Path("results/figures"), help="output folder of the figures")
    parser.add_argument("--params", default=None, help="the `evaluate` config section (inline JSON or YAML file)")


def main(args: argparse.Namespace) -> int:
    from pipeline.report import figures

    cfg = load_params(args.params, EvaluateConfig, "evaluate")
    rows = read_subjects(args.subjects)
    tasks = build_tasks(args, cfg, rows)
    all_models = [m for t in tasks for m in t.models]
    if len(set(all_models)) != len(all_models):
        raise ValueError(f"a model is named twice: {all_models}")

    summary: dict[str, Any] = {
        "protocol": protocol(cfg),
        "config": to_dict(cfg),
        "tasks": {},
        "models": {},
        "figures": {"subjects": {}, "group": {}, "training": {}},
    }
    for task in tasks:
        records, task_summary, subject_figs = evaluate_task(task, rows, args.subjects, args.infer, args.figures, cfg)
        summary["tasks"][task.name] = task_summary
        for model in task.models:
            csv_path = args.metrics / f"{model}.csv"
            keep = set(task.baselines) | {model}
            write_csv(csv_path, [r for r in records if r["method"] in keep])
            summary["models"][model] = {"task": task.name, "csv": csv_path.as_posix()}
            log.info("wrote %s", csv_path)
        for sub, figs in subject_figs.items():
            summary["figures"]["subjects"].setdefault(sub, {}).update(figs)
        summary["figures"]["group"][task.name] = figures.strip_plots(
            args.figures / "group", task.name, records, task_summary, METRICS, METRIC_LABELS, dpi=cfg.figure_dpi
        )
    for model in all_models:
        history = args.histories / model / "history.csv"
        if history.is_file():
            out = args.figures / "training" / f"{model}.png"
            figures.training_curves(history, out, title=model, dpi=cfg.figure_dpi)
            summary["figures"]["training"][model] = out.as_posix()
        else:
            log.warning("%s: no training history; no training curve for %s", history, model)
    out = args.metrics / "summary.json"
    write_text(out, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    log.info("wrote %s", out)
    return 0
