"""Stage 5: apply a trained model to a whole scan.

`python -m pipeline infer --model results/models/srgan/model.pt --input SCAN --output OUT.nii.gz`

SCAN is a NIfTI file or a DICOM series folder. Super-resolution: the input is the low-resolution scan; the
output is written on the HR grid whose affine is the inverse of `pipeline.degrade.lr_affine` (voxel size
divided by the factor, LR voxel centres at the centres of their HR blocks), so it overlays the ground truth
exactly. 2D models run slice by slice (batches of slices), 3D models with MONAI's `SlidingWindowInferer`;
the memory used is bounded by the ROI size and the window batch. The model file says what it needs (task,
factors, normalisation, generator); inputs are assumed normalised as the preprocess stage does, unless
`--normalise` is given (then the recorded normalisation is applied, and the output mapped back to the input's
intensity units).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MODEL_FORMAT = "medgan-model/1"


# ------------------------------------------------------------------------------------------ model files
def load_model_file(path: str | Path) -> dict[str, Any]:
    """Read a model file safely (weights_only) and check it is one of ours."""
    from pipeline.gan.checkpoint import load_checkpoint

    blob = load_checkpoint(path, map_location="cpu")
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else None
        raise ValueError(f"{path}: not a model file of this pipeline (format {found!r}, expected "
                         f"{MODEL_FORMAT!r}; checkpoints/last.pt is a training checkpoint, use model.pt)")
    return blob


def read_scan(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI file or a DICOM series folder as (data (x, y, z) float32, RAS affine), reoriented to RAS."""
    import nibabel as nib

    path = Path(path)
    if path.is_dir():
        data, affine = _read_dicom_folder(path)
        img = nib.Nifti1Image(data, affine)
    elif path.is_file():
        try:
            img = nib.load(str(path))
        except Exception as exc:  # nibabel raises several types for unreadable files
            raise ValueError(f"{path}: cannot be read as NIfTI ({exc})") from exc
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    if len(img.shape) != 3:
        raise ValueError(f"{path}: expected a 3-D scalar volume, got shape {img.shape}")
    img = nib.as_closest_canonical(img)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine.copy()


def _read_dicom_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """One DICOM series from a folder, with the ingest stage's reader."""
    try:
        from pipeline.config import IngestConfig
        from pipeline.ingest.dicom_series import group_series, load_series
        from pipeline.ingest.discover import discover
    except ImportError as exc:  # pragma: no cover - the ingest package ships with the pipeline
        raise ValueError(f"{folder}: DICOM input needs pipeline.ingest ({exc})") from exc
    found = discover(folder.resolve())
    series = group_series(found.dicom)
    if len(series) != 1:
        raise ValueError(f"{folder}: expected one DICOM series, found {len(series)}; point --input at one series")
    volume = load_series(series[0], IngestConfig())
    return np.asarray(volume.data, dtype=np.float32), np.asarray(volume.affine, dtype=np.float64)


def _normalise(data: np.ndarray, norm: dict[str, Any], modality: str) -> tuple[np.ndarray, float, float]:
    """Apply the recorded normalisation to a raw scan; return it and (low, high) to map back."""
    from pipeline.config import PreprocessConfig
    from pipeline.preprocess import foreground_mask, normalise

    method = norm.get("method")
    if method == "percentile":
        cfg = PreprocessConfig(mr_percentiles=tuple(norm["percentiles"]))
        mask = foreground_mask(data, is_ct=False)
    elif method == "window":
        cfg = PreprocessConfig(ct_window=tuple(norm["window"]))
        mask, modality = None, "CT"
    else:
        raise ValueError(f"the model file records no usable normalisation ({norm}); normalise the input yourself")
    normed, params = normalise(data, modality, mask, cfg)
    return normed, float(params["low"]), float(params["high"])


def run_super_resolution(blob: dict[str, Any], args: argparse.Namespace) -> None:
    """`infer` for a super-resolution model file."""
    from pipeline.data import hr_affine_from_lr
    from pipeline.io.nifti import save_nifti
    from pipeline.models.srgan import build_generator, super_resolve

    device = _device(args.device)
    data, affine = read_scan(args.input)
    low = high = None
    if args.normalise:
        data, low, high = _normalise(data, blob.get("normalisation", {}), blob.get("modality", ""))
    elif data.min() < -0.5 or data.max() > 1.5:
        log.warning("%s: intensities span [%.3g, %.3g] but the model expects [0, 1] (use --normalise for raw scans)",
                    args.input, float(data.min()), float(data.max()))
    inference = blob.get("inference", {})
    generator = build_generator(blob, device)
    started = time.perf_counter()
    out = super_resolve(
        data, generator, blob["sr"], device,
        roi_size=args.roi_size or inference.get("roi_size", 64),
        sw_batch_size=args.sw_batch_size or inference.get("sw_batch_size", 16),
        overlap=inference.get("overlap", 0.25),
        tta=inference.get("tta", False) if args.tta is None else args.tta,
    )
    if low is not None:
        out = low + out * (high - low)
    out_affine = hr_affine_from_lr(affine, blob["sr"]["factors"])
    save_nifti(out, out_affine, args.output)
    log.info("%s -> %s: %s -> %s (%s, %.1f s on %s)", args.input, args.output, data.shape, out.shape,
             blob.get("kind"), time.perf_counter() - started, device)


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_translation(blob: dict[str, Any], args: argparse.Namespace) -> None:
    """`infer` for a translation (CycleGAN) model file, in the direction `--direction` (A2B or B2A)."""
    from pipeline.models.cyclegan import run_inference

    run_inference(blob, args)


# task -> runner; a model file's "task" picks one (translation models add theirs here)
TASKS: dict[str, Callable[[dict[str, Any], argparse.Namespace], None]] = {
    "super-resolution": run_super_resolution,
    "translation": run_translation,
}


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model file (results/models/<model>/model.pt)")
    parser.add_argument("--input", required=True, help="the scan: a NIfTI file or a DICOM series folder")
    parser.add_argument("--output", required=True, help="output NIfTI (.nii.gz)")
    parser.add_argument("--normalise", action="store_true",
                        help="the input is raw: apply the model's recorded normalisation (output mapped back)")
    parser.add_argument("--direction", default=None, help="translation models: A2B or B2A")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--roi-size", type=int, default=0, help="sliding-window side in input voxels (0: model's)")
    parser.add_argument("--sw-batch-size", type=int, default=0, help="windows per forward pass (0: model's)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="self-ensemble over flips (default: the model's setting)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")


def main(args: argparse.Namespace) -> int:
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    blob = load_model_file(args.model)
    task = blob.get("task")
    if task not in TASKS:
        raise ValueError(f"{args.model}: task {task!r} has no inference here; known: {', '.join(TASKS)}")
    TASKS[task](blob, args)
    return 0
