"""Stage 3: preprocessing.

`python -m pipeline preprocess --manifest results/ingest/manifest.tsv --out results/preprocess --params JSON`

Per subject: every ingested scan is loaded and reoriented to RAS (MONAI `LoadImage` + `Orientation`); the
reference scan (the first of `reference_modalities` the subject has) is resampled to `spacing` (MONAI
`Spacing`) and every other modality onto exactly that grid (MONAI `ResampleToMatch`), so images of one subject
overlay voxel for voxel. A foreground mask is made on the reference scan; intensities are normalised to [0, 1]
(MR: clipped to percentiles of the foreground; CT: clipped to an HU window) and the parameters recorded in
`normalisation.json` so outputs can be mapped back (`original = low + value * (high - low)`). The grid is then
padded (MONAI `DivisiblePad`, value 0 = background) so the super-resolution axes are divisible by the scale,
and the low-resolution inputs are made with `pipeline.degrade` and written with their own affine
(`pipeline.degrade.lr_affine`). Subjects are split into train/val/test at subject level (seeded; an optional
TSV pins some subjects). `subjects.tsv` is written last.

Outputs under `--out`: `sub-NNN/<modality>.nii.gz` (float32 in [0, 1]), `sub-NNN/mask.nii.gz` (uint8),
`sub-NNN/<modality>_lr.nii.gz`, `sub-NNN/normalisation.json`, and `subjects.tsv` with columns
`subject split <one per modality> mask <modality>_lr ...` (paths relative to the working directory, empty where
a subject lacks the image). `read_subjects()` reads it back with the paths resolved.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import PreprocessConfig, load_params, to_dict

log = logging.getLogger(__name__)

MODALITIES = ("T1w", "T2w", "PDw", "FLAIR", "CT")
SPLITS = ("train", "val", "test")
SR_AXES = {"inplane": (0, 1), "all": (0, 1, 2), "through": (2,)}
CT_MASK_HU = -500.0  # CT foreground: denser than this (air and lung are below, soft tissue and bone above)
MANIFEST_COLUMNS = ("subject", "modality", "status", "output")
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # nibabel's RAS+ world convention


# ------------------------------------------------------------------------------------------ inputs
def resolve_path(value: str, table: Path) -> Path:
    """Resolve a path read from a table (`manifest.tsv`, `subjects.tsv` in `results/<stage>/`).

    Paths are written relative to the working directory; tried in turn: as given (absolute, or relative to
    the current directory), relative to the working directory the table implies (two levels above its
    folder), and relative to the table's folder. Returns the first that exists, else the first candidate.
    """
    path = Path(value)
    if path.is_absolute():
        return path
    table = Path(table)
    candidates = [path, table.parent.parent.parent / path, table.parent / path]
    return next((c for c in candidates if c.exists()), candidates[0])


def read_manifest(manifest: str | Path) -> dict[str, dict[str, Path]]:
    """The ingested scans of `manifest.tsv`: subject -> modality -> NIfTI path (checked to exist).

    Rows whose optional `primary` column says "no" (further series of a modality) are left out; of several
    remaining rows for one subject and modality the first is used.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: manifest not found (run the ingest stage first)")
    with manifest.open(newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{manifest}: missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
        rows = list(reader)
    scans: dict[str, dict[str, Path]] = {}
    for line, row in enumerate(rows, start=2):
        if row["status"] != "ingested":
            continue
        if (row.get("primary") or "").strip().lower() == "no":  # a further series of the same modality
            log.debug("%s line %d: not the primary %s series; skipped", manifest, line, row["modality"])
            continue
        subject, modality, output = row["subject"].strip(), row["modality"].strip(), row["output"].strip()
        if not subject or not modality or not output:
            raise ValueError(f"{manifest}, line {line}: an ingested row needs subject, modality and output")
        path = resolve_path(output, manifest)
        if not path.is_file():
            raise FileNotFoundError(f"{manifest}, line {line}: output {output!r} does not exist")
        by_modality = scans.setdefault(subject, {})
        if modality in by_modality:
            log.warning(
                "%s: several %s scans; using %s, ignoring %s",
                subject,
                modality,
                by_modality[modality],
                output,
            )
            continue
        by_modality[modality] = path
    if not scans:
        raise ValueError(f"{manifest}: no row with status 'ingested'; nothing to preprocess")
    return scans


def read_overrides(path: str | Path) -> dict[str, str]:
    """Subject -> split from an optional TSV with columns `subject` and `split` (rows with empty split ignored)."""
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = [c for c in ("subject", "split") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
        overrides = {}
        for line, row in enumerate(reader, start=2):
            subject, split = (row["subject"] or "").strip(), (row["split"] or "").strip()
            if not subject or not split:
                continue
            if split not in SPLITS:
                raise ValueError(f"{path}, line {line}: split {split!r} is not one of {', '.join(SPLITS)}")
            overrides[subject] = split
    return overrides


# ------------------------------------------------------------------------------------------ split
def _allocate(n: int, weights: Sequence[float], min_one: Sequence[bool]) -> list[int]:
    """Split `n` items into len(weights) counts by largest remainder; every `min_one` bin gets >= 1 if possible."""
    total = float(sum(weights))
    if n == 0:
        return [0] * len(weights)
    quotas = [n * w / total for w in weights] if total > 0 else [0.0] * len(weights)
    counts = [int(np.floor(q + 1e-9)) for q in quotas]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i, need in enumerate(min_one):
        if need and counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts


def assign_splits(
    subjects: Sequence[str],
    ratios: Mapping[str, float],
    seed: int,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Subject -> train/val/test, deterministic for `seed` and independent of the order of `subjects`.

    Target counts follow `ratios` (largest remainder); with 3 or more subjects every split with a ratio > 0
    gets at least one. Subjects in `overrides` keep their split; the others are shuffled (seeded) and fill
    what the targets still need.
    """
    subjects = sorted(set(subjects))
    overrides = dict(overrides or {})
    weights = [float(ratios.get(s, 0.0)) for s in SPLITS]
    enough = len(subjects) >= 3
    targets = _allocate(len(subjects), weights, [enough and w > 0 for w in weights])
    pinned = {s: overrides[s] for s in subjects if s in overrides}
    unknown = sorted(set(overrides) - set(subjects))
    if unknown:
        log.warning("split overrides name subjects not in the data: %s", ", ".join(unknown))
    free = [s for s in subjects if s not in pinned]
    have = [sum(1 for v in pinned.values() if v == split) for split in SPLITS]
    still = [max(t - h, 0) for t, h in zip(targets, have, strict=True)]
    counts = _allocate(
        len(free),
        still if sum(still) > 0 else weights,
        [enough and w > 0 and h == 0 for w, h in zip(weights, have, strict=True)],
    )
    order = np.random.default_rng(seed).permutation(len(free))
    result = dict(pinned)
    start = 0
    for split, count in zip(SPLITS, counts, strict=True):
        for i in order[start : start + count]:
            result[free[i]] = split
        start += count
    return {s: result[s] for s in subjects}


# ------------------------------------------------------------------------------------------ image steps
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
    """Scale `image` to [0, 1]; return it (float32) and the parameters (`original = low + value * (high - low)`)."""
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


def _load_ras(path: Path):
    """Load a NIfTI as a channel-first MONAI MetaTensor, reoriented to RAS."""
    from monai.transforms import LoadImage, Orientation

    try:
        # MONAI registers every reader it knows; some warn that an optional codec is missing.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*nvImageCodec.*", category=UserWarning)
            loader = LoadImage(image_only=True, ensure_channel_first=True, reader="NibabelReader")
        image = loader(str(path))
    except Exception as exc:  # MONAI wraps reader errors in several types
        raise ValueError(f"{path}: cannot be read as NIfTI ({exc})") from exc
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(
            f"{path}: expected a 3-D scalar volume, got shape {tuple(image.shape[1:])} x {image.shape[0]} channel(s)"
        )
    return Orientation(axcodes="RAS", labels=RAS_LABELS)(image)


def _background(modality: str, cfg: PreprocessConfig) -> float:
    """Intensity outside the field of view: 0 for MR, the bottom of the window (air) for CT."""
    return float(cfg.ct_window[0]) if modality == "CT" else 0.0


def preprocess_subject(
    subject: str, scans: Mapping[str, Path], cfg: PreprocessConfig, out_dir: str | Path
) -> dict[str, Any]:
    """Preprocess one subject's scans into `out_dir/<subject>/`; return {name: written path} and grid info."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import DivisiblePad, ResampleToMatch, Spacing

    from pipeline.degrade import degrade, lr_affine
    from pipeline.io.atomic import write_text
    from pipeline.io.nifti import save_nifti

    subject_dir = Path(out_dir) / subject
    ref_modality = next((m for m in cfg.reference_modalities if m in scans), None) or sorted(scans)[0]
    order = [ref_modality] + [m for m in _modality_order(scans) if m != ref_modality]

    # Geometry: reference to the target spacing, every other modality onto the reference grid.
    grid: dict[str, Any] = {}
    for modality in order:
        image = _load_ras(scans[modality])
        pad = _background(modality, cfg)
        if modality == ref_modality:
            if cfg.spacing is not None:
                image = Spacing(pixdim=cfg.spacing, mode="bilinear", padding_mode="zeros")(image - pad) + pad
            reference = image
        else:
            image = (
                ResampleToMatch(mode="bilinear", padding_mode="zeros")(image - pad, img_dst=reference) + pad
            )
        grid[modality] = image

    mask = foreground_mask(grid[ref_modality][0].numpy(), is_ct=ref_modality == "CT")
    if not mask.any():
        raise ValueError(f"{subject}: empty foreground mask on {scans[ref_modality]}")

    params: dict[str, Any] = {}
    channels = []
    for modality in order:
        normed, params[modality] = normalise(grid[modality][0].numpy(), modality, mask, cfg)
        channels.append(normed)
    channels.append(mask.astype(np.float32))

    # Pad (value 0 = background after normalisation) so the SR axes divide by the scale; one grid for all.
    axes = SR_AXES[cfg.sr.axes]
    k = [cfg.sr.scale if a in axes else 1 for a in range(3)]
    stacked = MetaTensor(torch.from_numpy(np.stack(channels)), affine=reference.affine.clone())
    padded = DivisiblePad(k=k, mode="constant", method="symmetric")(stacked)
    affine = padded.affine.numpy().astype(np.float64)
    volumes = padded.numpy()

    written: dict[str, Any] = {}
    for i, modality in enumerate(order):
        written[modality] = save_nifti(volumes[i], affine, subject_dir / f"{modality}.nii.gz")
    written["mask"] = save_nifti(
        (volumes[-1] > 0.5).astype(np.uint8), affine, subject_dir / "mask.nii.gz", dtype=np.uint8
    )

    for modality in cfg.sr.modalities:
        if modality not in order:
            continue
        if modality == "CT" and cfg.sr.method == "kspace":
            log.warning(
                "%s: k-space truncation models an MR acquisition; applied to CT as configured", subject
            )
        lr = degrade(volumes[order.index(modality)], cfg.sr.scale, cfg.sr.method, axes)
        written[f"{modality}_lr"] = save_nifti(
            lr, lr_affine(affine, cfg.sr.scale, axes), subject_dir / f"{modality}_lr.nii.gz"
        )
        params[modality]["lr"] = {
            "file": f"{modality}_lr.nii.gz",
            "method": cfg.sr.method,
            "scale": cfg.sr.scale,
            "axes": list(axes),
            "shape": list(lr.shape),
            "value_range": [float(lr.min()), float(lr.max())],
        }

    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    for modality in order:
        params[modality].update(
            {
                "reference": ref_modality,
                "shape": list(volumes.shape[1:]),
                "spacing": [round(float(s), 6) for s in spacing],
            }
        )
    write_text(subject_dir / "normalisation.json", json.dumps(params, indent=2) + "\n")
    return written


def _modality_order(names) -> list[str]:
    """Known modalities in canonical order, then any others alphabetically."""
    return [m for m in MODALITIES if m in names] + sorted(set(names) - set(MODALITIES))


# ------------------------------------------------------------------------------------------ table
def _table_path(path: Path) -> str:
    """A path for a table: relative to the working directory when below it, else absolute."""
    path = Path(path).absolute()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()


def subjects_table(
    rows: Sequence[Mapping[str, Any]], modalities: Sequence[str], lr_modalities: Sequence[str]
) -> str:
    """The text of `subjects.tsv`."""
    columns = ["subject", "split", *modalities, "mask", *[f"{m}_lr" for m in lr_modalities]]
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=columns, delimiter="\t", lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buffer.getvalue()


def read_subjects(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Rows of `subjects.tsv` (optionally only one split); image columns as resolved `Path`s, empty as None."""
    path = Path(path)
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    out = []
    for row in rows:
        if split is not None and row["split"] != split:
            continue
        item: dict[str, Any] = {"subject": row["subject"], "split": row["split"]}
        for key, value in row.items():
            if key not in item:
                item[key] = resolve_path(value, path) if value else None
        out.append(item)
    return out


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="ingest manifest (results/ingest/manifest.tsv)")
    parser.add_argument("--out", required=True, help="output folder (results/preprocess)")
    parser.add_argument(
        "--params", default=None, help="the `preprocess` config section: inline JSON or a YAML file"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the split (the top-level config seed)")


def main(args: argparse.Namespace) -> int:
    cfg = load_params(args.params, PreprocessConfig, "preprocess")
    out_dir = Path(args.out)
    scans = read_manifest(args.manifest)
    log.info("preprocess: %d subject(s); config %s", len(scans), json.dumps(to_dict(cfg), sort_keys=True))

    overrides_file = Path(cfg.split.subjects_file) if cfg.split.subjects_file else None
    overrides = read_overrides(overrides_file) if overrides_file and overrides_file.is_file() else {}
    if overrides:
        log.info("split: %d subject(s) pinned by %s", len(overrides), overrides_file)
    ratios = {"train": cfg.split.train, "val": cfg.split.val, "test": cfg.split.test}
    splits = assign_splits(list(scans), ratios, args.seed, overrides)

    rows = []
    for subject in sorted(scans):
        started = time.perf_counter()
        written = preprocess_subject(subject, scans[subject], cfg, out_dir)
        row = {"subject": subject, "split": splits[subject]}
        row.update({name: _table_path(p) for name, p in written.items()})
        rows.append(row)
        log.info(
            "%s (%s): %s in %.1f s",
            subject,
            splits[subject],
            ", ".join(written),
            time.perf_counter() - started,
        )

    all_modalities = {m for s in scans.values() for m in s}
    table = subjects_table(rows, _modality_order(all_modalities | set(MODALITIES)), cfg.sr.modalities)
    from pipeline.io.atomic import write_text

    write_text(out_dir / "subjects.tsv", table)
    counts = {s: sum(1 for v in splits.values() if v == s) for s in SPLITS}
    log.info("wrote %s (train %d, val %d, test %d)", out_dir / "subjects.tsv", *counts.values())
    return 0
