"""One subject of one task: reading its input, ground truth, mask and predictions (on the ground truth's grid),
the SR geometry of its LR input, and its classical baselines."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.tasks import Task
from pipeline.imaging.degrade import AXES

BASELINE_LABELS: dict[str, str] = {
    "bicubic": "bicubic",
    "trilinear": "trilinear",
    "zerofill": "zero-filled k-space",
    "identity": "source image",
    "histogram_match": "histogram-matched source",
    "histogram_match_inverted": "histogram-matched inverted source",
    "input": "corrupted input",
    "linear": "linear interpolation",
    "cubic": "cubic interpolation",
}


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


def _column(row: dict[str, Any], column: str, table: Path, what: str) -> Path:
    """A file of one subjects.tsv row (already resolved by `pipeline.io.tables.read_subjects`)."""
    path = row.get(column)
    if not path:
        raise ValueError(f"{table}: no {what}")
    return Path(path)


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
    unknown: np.ndarray | None = None  # inpainting: the input's deleted (NaN) voxels


def load_case(row: dict[str, Any], task: Task, table: Path) -> Case:
    """Read ground truth, mask and input of one subject (a row of `read_subjects`) for `task`."""
    from pipeline.imaging.degrade import upsample

    sub = row["subject"]
    truth_path = _column(row, task.target, table, f"{task.target} image for {sub}")
    truth, affine = _load(truth_path)
    mask_path = _column(row, "mask", table, f"mask for {sub}")
    mask, mask_affine = _load(mask_path)
    _same_grid(mask_path, mask, mask_affine, truth.shape, affine)
    src_path = _column(row, task.source, table, f"{task.source} image for {sub}")
    src, src_affine = _load(src_path)
    if task.kind == "sr":
        scale, axes = sr_geometry(src.shape, truth.shape, task.degradation, str(src_path))
        shown = upsample(src, scale, "nearest", axes)
    else:
        _same_grid(src_path, src, src_affine, truth.shape, affine)
        scale, axes, shown = 1, (), src
    unknown = None
    if task.kind == "inpainting":
        from pipeline.evaluation.inpainting import check_recorded, recorded_deleted
        from pipeline.imaging.gaps import unknown_mask

        unknown = unknown_mask(src)
        check_recorded(unknown, recorded_deleted(truth_path, task.target), str(src_path))
        shown = np.nan_to_num(src, nan=0.0)
    return Case(sub, row["split"], truth, mask > 0, affine, shown, src, scale, axes, unknown)


def make_baseline(task: Task, case: Case, name: str) -> np.ndarray:
    """The baseline `name` of one case, on the HR grid."""
    from pipeline.imaging.degrade import histogram_match, histogram_match_inverted, upsample

    if task.kind == "sr":
        out = upsample(case.source_raw, case.scale, name, case.axes)
    elif task.kind == "inpainting":
        from pipeline.imaging.gaps import interpolate

        out = interpolate(case.source_raw, name, case.unknown)
    elif name == "identity" or (task.kind == "restoration" and name == "input"):
        out = case.source
    elif name == "histogram_match":
        out = histogram_match(case.source, case.truth, mask=case.mask)
    elif name == "histogram_match_inverted":
        out = histogram_match_inverted(case.source, case.truth, case.mask)
    else:
        raise ValueError(f"unknown baseline {name!r} for task {task.name}")
    if out.shape != case.truth.shape:
        raise ValueError(f"{case.subject}: baseline {name} has shape {out.shape}, the ground truth {case.truth.shape}")
    return np.asarray(out, dtype=np.float32)


def prediction_path(infer_dir: Path, model: str, subject: str, desc: str) -> Path:
    return infer_dir / model / f"{subject}_{desc}.nii.gz"


def prediction_notes(infer_dir: Path, model: str, subjects: list[str], desc: str) -> dict[str, str]:
    """{subject: note} of the outputs that inference says the model did not make as usual (the infer listing's
    `note`, `pipeline.io.tables.listing_notes`: an inpainting self-check's interpolation), the listing read once."""
    from pipeline.io.tables import listing_notes

    noted = listing_notes(infer_dir / model)
    names = {s: prediction_path(infer_dir, model, s, desc).name for s in subjects}
    return {s: noted[name] for s, name in names.items() if name in noted}


def load_prediction(infer_dir: Path, model: str, case: Case, desc: str) -> np.ndarray:
    path = prediction_path(infer_dir, model, case.subject, desc)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no output of model {model} for {case.subject}")
    data, affine = _load(path)
    _same_grid(path, data, affine, case.truth.shape, case.affine)
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{path}: contains NaN or infinite values")
    return data
