"""One subject's preprocessing: RAS, one grid for every modality, mask, normalisation, padding, SR inputs."""

from __future__ import annotations

import functools
import json
import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import PreprocessConfig
from pipeline.imaging.intensity import background, foreground_mask, normalise

log = logging.getLogger(__name__)

MODALITIES = ("T1w", "T2w", "PDw", "FLAIR", "CT")
SR_AXES = {"inplane": (0, 1), "all": (0, 1, 2), "through": (2,)}
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # nibabel's RAS+ world convention


@functools.cache
def _nifti_loader() -> Any:
    """MONAI's `LoadImage` with its NIfTI reader, made once per process. MONAI registers every reader it knows, and
    its GPU DICOM codec reader warns (as a warning and a log record) that the codec is missing, once per loader:
    irrelevant here, so both are silenced."""
    from monai.transforms import LoadImage

    codec_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = codec_log.level
    codec_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*nvImageCodec.*", category=UserWarning)
            return LoadImage(image_only=True, ensure_channel_first=True, reader="NibabelReader")
    finally:
        codec_log.setLevel(level)


def load_ras(path: Path):
    """Load a NIfTI as a channel-first MONAI MetaTensor, reoriented to RAS."""
    from monai.transforms import Orientation

    try:
        image = _nifti_loader()(str(path))
    except Exception as exc:  # MONAI wraps reader errors in several types
        raise ValueError(f"{path}: cannot be read as NIfTI ({exc})") from exc
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(
            f"{path}: expected a 3-D scalar volume, got shape {tuple(image.shape[1:])} x {image.shape[0]} channel(s)"
        )
    return Orientation(axcodes="RAS", labels=RAS_LABELS)(image)


def antialias(image: Any, spacing: Sequence[float]) -> Any:
    """Low-pass a channel-first MetaTensor before it is resampled to the coarser `spacing` (mm per axis), so that
    detail finer than the new voxels does not alias into it: a Gaussian of sigma (new / old - 1) / 2 voxels along
    each axis that gets coarser (scikit-image's `resize` rule), nothing along the others. A scan already at or
    coarser than `spacing` is returned unchanged."""
    from monai.transforms import GaussianSmooth

    ratios = [float(t) / float(s) for t, s in zip(spacing, image.pixdim, strict=True)]
    sigma = [max(0.0, (r - 1.0) / 2.0) if r > 1.01 else 0.0 for r in ratios]
    if not any(sigma):
        return image
    return GaussianSmooth(sigma=sigma)(image)


def preprocess_subject(
    subject: str, scans: Mapping[str, Path], cfg: PreprocessConfig, out_dir: str | Path, seed: int = 0
) -> dict[str, Any]:
    """Preprocess one subject's scans into `out_dir/<subject>/`; return {name: written path}. `seed` (the workflow
    seed) seeds the simulated degradations with the subject's name (reproducible per subject)."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import DivisiblePad, ResampleToMatch, Spacing

    from pipeline.imaging.degrade import degrade, lr_affine
    from pipeline.io.atomic import write_text
    from pipeline.io.nifti import save_nifti

    subject_dir = Path(out_dir) / subject
    ref_modality = next((m for m in cfg.reference_modalities if m in scans), None) or sorted(scans)[0]
    order = [ref_modality] + [m for m in modality_order(scans) if m != ref_modality]

    # Geometry: reference to the target spacing, every other modality onto the reference grid.
    grid: dict[str, Any] = {}
    for modality in order:
        image = load_ras(scans[modality])
        pad = background(modality, cfg)
        if modality == ref_modality:
            if cfg.spacing is not None:
                image = Spacing(pixdim=cfg.spacing, mode="bilinear", padding_mode="zeros")(
                    antialias(image - pad, cfg.spacing)) + pad
            reference = image
        else:
            image = ResampleToMatch(mode="bilinear", padding_mode="zeros")(
                antialias(image - pad, [float(v) for v in reference.pixdim]), img_dst=reference) + pad
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
    if any(m in order for m in cfg.thick.modalities):  # and z by the thick slices' factor
        k[2] = math.lcm(k[2], cfg.thick.factor)
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

    written.update(motion_inputs(subject, order, volumes, affine, cfg, seed, subject_dir, params))
    written.update(gap_inputs(subject, order, volumes, affine, cfg, seed, subject_dir, params))
    written.update(thick_inputs(order, volumes, affine, cfg, subject_dir, params))

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


def motion_inputs(subject: str, order: Sequence[str], volumes: np.ndarray, affine: np.ndarray, cfg: PreprocessConfig,
                  seed: int, subject_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """The motion-corrupted inputs (`preprocess.motion`): `<modality>_motion.nii.gz` on the subject's grid, the
    simulated shots recorded under ``params[modality]["motion"]``; returns {"<modality>_motion": path}."""
    from pipeline.imaging.motion import motion_rng, simulate_motion
    from pipeline.io.nifti import save_nifti

    m = cfg.motion
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    written: dict[str, Any] = {}
    for modality in m.modalities:
        if modality not in order:
            continue
        clean = volumes[order.index(modality)]
        image, shots = simulate_motion(
            clean, motion_rng(seed, subject, modality), spacing=spacing, fraction=m.fraction,
            max_translation_mm=m.max_translation_mm, max_rotation_deg=m.max_rotation_deg, n_shots=m.n_shots,
            pe_axis=m.pe_axis, centre_fraction=m.centre_fraction, ordering=m.ordering)
        written[f"{modality}_motion"] = save_nifti(image, affine, subject_dir / f"{modality}_motion.nii.gz")
        params[modality]["motion"] = {
            "file": f"{modality}_motion.nii.gz", "fraction": m.fraction, "max_translation_mm": m.max_translation_mm,
            "max_rotation_deg": m.max_rotation_deg, "n_shots": m.n_shots, "pe_axis": m.pe_axis,
            "centre_fraction": m.centre_fraction, "ordering": m.ordering, "shots": [s.as_dict() for s in shots],
        }
    return written


def gap_inputs(subject: str, order: Sequence[str], volumes: np.ndarray, affine: np.ndarray, cfg: PreprocessConfig,
               seed: int, subject_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """The inputs with missing slices (`preprocess.gaps`): `<modality>_gaps.nii.gz` on the subject's grid (deleted
    voxels NaN), the deleted slices recorded under ``params[modality]["gaps"]``; returns {"<modality>_gaps": path}."""
    from pipeline.imaging.gaps import simulate_gaps, subject_seed
    from pipeline.io.nifti import save_nifti

    g = cfg.gaps
    written: dict[str, Any] = {}
    for modality in g.modalities:
        if modality not in order:
            continue
        gapped = simulate_gaps(volumes[order.index(modality)], subject_seed(seed, f"{subject}/{modality}/gaps"),
                               n_runs=g.n_runs, run_lengths=g.run_lengths, min_separation=g.min_separation,
                               mask=volumes[-1] > 0.5, n_boxes=g.n_boxes, box_size=g.box_size)
        written[f"{modality}_gaps"] = save_nifti(gapped.volume, affine, subject_dir / f"{modality}_gaps.nii.gz")
        params[modality]["gaps"] = {
            "file": f"{modality}_gaps.nii.gz", "axis": 2, "fill_value": "NaN",
            "deleted_slices": gapped.deleted, "runs": [list(r) for r in gapped.runs],
            "boxes": [list(b) for b in gapped.boxes],
        }
    return written


def thick_inputs(order: Sequence[str], volumes: np.ndarray, affine: np.ndarray, cfg: PreprocessConfig,
                 subject_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """The thick-slice inputs (`preprocess.thick`): `<modality>_thick.nii.gz`, re-sliced along z with the slice
    profile onto the grid `factor` times coarser along z (`pipeline.imaging.degrade.lr_affine`), recorded under
    ``params[modality]["thick"]``; returns {"<modality>_thick": path}."""
    from pipeline.imaging.degrade import lr_affine
    from pipeline.io.nifti import save_nifti
    from pipeline.selfsr.profile import SliceProfile, reslice

    t = cfg.thick
    step_mm = float(np.sqrt((affine[:3, 2] ** 2).sum()))
    spacing_mm = t.factor * step_mm
    thickness_mm = None if t.thickness is None else t.thickness * step_mm
    profile = SliceProfile(t.profile, thickness_mm)
    written: dict[str, Any] = {}
    for modality in t.modalities:
        if modality not in order:
            continue
        thick = reslice(volumes[order.index(modality)], t.factor, profile, spacing_mm, axis=2)
        written[f"{modality}_thick"] = save_nifti(thick, lr_affine(affine, t.factor, (2,)),
                                                  subject_dir / f"{modality}_thick.nii.gz")
        params[modality]["thick"] = {
            "file": f"{modality}_thick.nii.gz", "method": "thick_slice", "scale": t.factor, "axes": [2],
            "profile": t.profile, "spacing_mm": round(spacing_mm, 6),
            "thickness_mm": round(thickness_mm if thickness_mm is not None else spacing_mm, 6),
        }
    return written


def modality_order(names: Iterable[str]) -> list[str]:
    """Known modalities in canonical order, then any others alphabetically."""
    return [m for m in MODALITIES if m in names] + sorted(set(names) - set(MODALITIES))
