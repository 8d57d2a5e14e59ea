"""The preprocessed volumes of one or several splits, read from `results/preprocess/subjects.tsv`.

Super-resolution pairs (`sr_pairs`): the HR image (`<modality>`), its LR input (`<modality>_lr`, a coarser grid
overlaying it) and the foreground mask. Single-modality volumes (`domain_volumes`): one modality and the mask.
Both are read from disk on each access (`LazyVolumes`), so memory does not grow with the cohort.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.cache import LazyVolumes
from pipeline.imaging.geometry import fmt, sr_factors, voxel_sizes
from pipeline.io.nifti import load_nifti
from pipeline.io.tables import read_subjects

log = logging.getLogger(__name__)

#: the keys of a modality's entry in normalisation.json that describe the method (not one subject's values)
NORMALISATION_KEYS = ("method", "percentiles", "window", "unit", "range")


def split_rows(data_dir: str | Path, split: str | Sequence[str]) -> tuple[Path, list[dict[str, Any]]]:
    """The subjects.tsv of `data_dir` (the preprocessing output) and its rows of the split(s) `split`."""
    table = Path(data_dir) / "subjects.tsv"
    return table, read_subjects(table, split)


# ------------------------------------------------------------------------------------------ SR pairs
@dataclasses.dataclass
class SRPair:
    """One subject's super-resolution pair (arrays (x, y, z); `mask` on the HR grid)."""

    subject: str
    lr: np.ndarray
    hr: np.ndarray
    mask: np.ndarray
    lr_affine: np.ndarray
    hr_affine: np.ndarray
    hr_path: Path | None = None


def _read_sr_pair(row: dict, modality: str) -> SRPair:
    """One subject's SR pair from its subjects.tsv row (shapes and grids checked)."""
    hr_path, lr_path, mask_path = row[modality], row[f"{modality}_lr"], row["mask"]
    hr, hr_aff = load_nifti(hr_path)
    lr, lr_aff = load_nifti(lr_path)
    mask, _ = load_nifti(mask_path)
    if mask.shape != hr.shape:
        raise ValueError(f"{mask_path}: mask shape {mask.shape} differs from {hr_path} {hr.shape}")
    sr_factors(hr.shape, lr.shape, hr_aff, lr_aff, where=str(lr_path))
    return SRPair(row["subject"], lr, hr, mask > 0, lr_aff, hr_aff, Path(hr_path))


def sr_pairs(data_dir: str | Path, modality: str, split: str | Sequence[str]) -> LazyVolumes[SRPair]:
    """The SR pairs of one or several splits of `data_dir/subjects.tsv`, read from disk on each access (one
    subject in memory at a time when iterated; ``.names`` are the subjects)."""
    table, rows = split_rows(data_dir, split)
    kept = []
    for row in rows:
        if row.get(modality) is None or row.get(f"{modality}_lr") is None or row.get("mask") is None:
            log.info("%s: no %s / %s_lr / mask; skipped", row["subject"], modality, modality)
            continue
        kept.append(row)
    if not kept:
        raise ValueError(f"{table}: no subject of split {split!r} has {modality}, {modality}_lr and mask")
    return LazyVolumes([r["subject"] for r in kept], lambda i: _read_sr_pair(kept[i], modality))


# ------------------------------------------------------------------------------------------ one modality
@dataclasses.dataclass
class Volume:
    """One subject's image of one modality, with its foreground mask (arrays (x, y, z), values in [0, 1])."""

    subject: str
    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray


def _read_volume(row: dict, modality: str) -> Volume:
    """One subject's image of `modality` and its mask, from its subjects.tsv row (checked)."""
    path, mask_path = row[modality], row["mask"]
    image, affine = load_nifti(path)
    mask, _ = load_nifti(mask_path)
    if mask.shape != image.shape:
        raise ValueError(f"{mask_path}: mask shape {mask.shape} differs from {path} {image.shape}")
    if not mask.any():
        raise ValueError(f"{mask_path}: empty foreground mask")
    return Volume(row["subject"], image, mask > 0, affine)


def domain_volumes(data_dir: str | Path, modality: str, split: str | Sequence[str]) -> LazyVolumes[Volume]:
    """The volumes of `modality` of the subjects of `split` in `data_dir/subjects.tsv` (preprocess output),
    read from disk on each access (one in memory at a time when iterated; ``.names`` are the subjects)."""
    table, rows = split_rows(data_dir, split)
    if rows and modality not in rows[0]:
        raise ValueError(f"{table}: no column {modality!r} (columns: {', '.join(rows[0])})")
    kept = [r for r in rows if r.get(modality) is not None and r.get("mask") is not None]
    return LazyVolumes([r["subject"] for r in kept], lambda i: _read_volume(kept[i], modality))


def subject_names(vols: Sequence[Any]) -> list[str]:
    """The subjects of `vols` (without reading a lazy sequence's volumes)."""
    return list(vols.names) if isinstance(vols, LazyVolumes) else [v.subject for v in vols]


# ------------------------------------------------------------------------------------------ normalisation
def recorded_normalisation(data_dir: str | Path, subjects: Sequence[str], modality: str) -> dict[str, Any]:
    """The preprocess stage's record of `modality` in the first `<data_dir>/<subject>/normalisation.json` found:
    the whole entry (method and its fixed parameters, this subject's low/high, its ``lr`` degradation), or {}."""
    for subject in subjects:
        path = Path(data_dir) / subject / "normalisation.json"
        if path.is_file():
            return json.loads(path.read_text()).get(modality, {})
    log.warning("no normalisation.json for %s under %s; the model file records none", modality, data_dir)
    return {}


def normalisation_method(info: dict[str, Any]) -> dict[str, Any]:
    """The method part of a `recorded_normalisation` entry (what a model file records), or method unknown."""
    return {k: info[k] for k in NORMALISATION_KEYS if k in info} if info else {"method": "unknown"}


def training_resolution(data_dir: Any, modality: str, pairs: Sequence[Any], split: str = "train") -> dict[str, Any]:
    """The ``resolution`` record of a model trained on `pairs` (`pipeline.data.volumes.sr_pairs` of `split`):
    ``hr_spacing`` and ``lr_spacing`` (mm per volume axis) of the first pair; the others' voxel sizes are read
    from their headers and a difference of more than 1% is logged (the first is what is recorded)."""
    import nibabel as nib

    first = pairs[0]
    hr, lr = voxel_sizes(first.hr_affine), voxel_sizes(first.lr_affine)
    names = set(getattr(pairs, "names", [first.subject]))
    differ = []
    for row in split_rows(data_dir, split)[1]:
        if row["subject"] in names and row["subject"] != first.subject:
            other = [voxel_sizes(nib.load(str(row[key])).affine) for key in (modality, f"{modality}_lr")]
            if not (np.allclose(other[0], hr, rtol=0.01) and np.allclose(other[1], lr, rtol=0.01)):
                differ.append(f"{row['subject']} {fmt(other[1])} -> {fmt(other[0])}")
    if differ:
        log.warning("training subjects differ in voxel size from %s (%s -> %s): %s; the model file records %s's",
                    first.subject, fmt(lr), fmt(hr), "; ".join(differ), first.subject)
    return {"hr_spacing": [round(float(v), 6) for v in hr], "lr_spacing": [round(float(v), 6) for v in lr]}
