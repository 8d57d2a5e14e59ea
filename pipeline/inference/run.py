"""Apply a trained model to a whole scan, for any family.

`python -m pipeline infer --model results/models/srgan/model.pt --input SCAN --output OUT.nii.gz`

SCAN is a NIfTI file or a DICOM series folder. The model file says what it needs (family, normalisation,
generator, inference settings). Inputs are taken as normalised to [0, 1] as the preprocess stage does, unless
`normalise` is set (then the recorded normalisation of the input modality is applied; a raw CT in HU is windowed
automatically). The output is mapped back to the input's units when input and output are one modality (SR), and
to Hounsfield units when the output modality has a fixed HU window (CT); other outputs stay in [0, 1]. It is
written on the grid the family gives: for super-resolution the HR grid whose affine is the inverse of
`pipeline.imaging.degrade.lr_affine` (so it overlays the ground truth exactly), else the input's.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def device_for(name: str):
    """A torch device from `auto` (CUDA when present), `cpu`, `cuda`, `cuda:1`, ..."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def normalise_scan(data: np.ndarray, norm: dict[str, Any], modality: str) -> tuple[np.ndarray, float, float]:
    """Apply a model file's recorded normalisation to a raw scan; return it and (low, high) to map back."""
    from pipeline.config import PreprocessConfig
    from pipeline.imaging.intensity import foreground_mask, normalise

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


def infer_array(family: Any, blob: dict[str, Any], generator: Any, data: np.ndarray, direction: str | None = None,
                normalise: bool = False, device: Any = "cpu", where: str = "the input",
                affine: np.ndarray | None = None, outcome: dict[str, Any] | None = None,
                **settings: Any) -> tuple[np.ndarray, str]:
    """The model applied to one (x, y, z) scan array: normalised as the model file records when `normalise` (or for
    a raw CT), the family's `apply`, the output mapped back (see the module docstring). Returns (output, its unit).
    A family that `takes_affine` also gets the scan's `affine`; one that `reports_outcome` fills `outcome`."""
    (src, src_norm), (dst, dst_norm) = family.io_modalities(blob, direction)
    data = np.asarray(data, dtype=np.float32)
    raw = bool(data.min() < -0.5 or data.max() > 1.5)
    low = high = None
    if normalise or (raw and src_norm.get("method") == "window"):
        data, low, high = normalise_scan(data, src_norm, src)
    elif raw:
        log.warning("%s: intensities span [%.3g, %.3g] but the model expects [0, 1] (use --normalise for raw scans)",
                    where, float(data.min()), float(data.max()))
    if family.takes_affine:
        settings = {**settings, "affine": affine}
    if family.reports_outcome and outcome is not None:
        settings = {**settings, "outcome": outcome}
    out = family.apply(generator, data, blob, device, **settings)
    if dst == src and low is not None:  # the input's own units
        return (low + out * (high - low)).astype(np.float32), "the input's units"
    if dst != src and dst_norm.get("method") == "window":
        w_low, w_high = (float(v) for v in dst_norm["window"])
        return (w_low + np.clip(out, 0.0, 1.0) * (w_high - w_low)).astype(np.float32), dst_norm.get("unit", "HU")
    return out, "normalised [0, 1]"


def infer_scan(model: str | Path, input_path: str | Path, output: str | Path, direction: str | None = None,
               normalise: bool = False, device: str = "auto", resolution_mismatch: str = "refuse",
               notes: dict[str, str] | None = None, **settings: Any) -> Path:
    """Apply the model file `model` to the scan `input_path`, write `output` (NIfTI); see the module docstring.

    `direction` picks the generator of a file that holds several (CycleGAN: A2B, B2A); `settings` override the
    model file's inference settings (roi_size, sw_batch_size, overlap, tta; None: the file's).
    `resolution_mismatch` (refuse | resample | ignore): what to do when the scan's voxel size is not the one the
    model was trained on (see `pipeline.inference.resolution`). `notes` receives {output: note} when the output
    was not made by the model as usual (`Family.outcome_note`: an inpainting self-check's interpolation).
    """
    loaded = LoadedModel(model, direction, device)
    path = loaded.infer(input_path, output, normalise, resolution_mismatch, **settings)
    if notes is not None:
        notes.update(loaded.notes)
    return path


def infer_scans(model: str | Path, pairs: list[tuple[str | Path, str | Path]], direction: str | None = None,
                normalise: bool = False, device: str = "auto", resolution_mismatch: str = "refuse",
                notes: dict[str, str] | None = None, **settings: Any) -> dict[str, str]:
    """`infer_scan` for several (input, output) pairs with one load of the model (the workflow infers every subject
    of an output in one process: starting Python and importing torch and MONAI costs more than a small scan's
    inference). One scan's failure does not stop the others: returns {input: error message} of those that failed;
    `notes` as `infer_scan`'s."""
    loaded = LoadedModel(model, direction, device)
    failed: dict[str, str] = {}
    for input_path, output in pairs:
        try:
            loaded.infer(input_path, output, normalise, resolution_mismatch, **settings)
        except (OSError, ValueError, RuntimeError) as exc:
            log.error("%s: %s", input_path, exc)
            failed[str(input_path)] = str(exc)
    if notes is not None:
        notes.update(loaded.notes)
    return failed


class LoadedModel:
    """A model file's generator (of `direction`), loaded once on `device`, applied to scans by `infer`; `notes`:
    {output: `Family.outcome_note`} of the outputs the model did not make as usual."""

    def __init__(self, model: str | Path, direction: str | None = None, device: str = "auto") -> None:
        from pipeline.models import family_of
        from pipeline.models.contract import load_model_file

        self.blob = load_model_file(model)
        self.family = family_of(self.blob)
        self.direction = self.family.direction(direction)
        self.device = device_for(device)
        self.generator = self.family.load_generator(self.blob, self.direction, self.device)
        self.notes: dict[str, str] = {}

    def infer(self, input_path: str | Path, output: str | Path, normalise: bool = False,
              resolution_mismatch: str = "refuse", **settings: Any) -> Path:
        """Read the scan `input_path`, apply the generator, write `output` in the family's output geometry."""
        from pipeline.inference.resolution import infer_resampled, needs_resampling
        from pipeline.inference.scans import read_scan
        from pipeline.io.nifti import save_nifti

        family, blob, direction, dev = self.family, self.blob, self.direction, self.device
        (src, _), (dst, _) = family.io_modalities(blob, direction)
        data, affine = read_scan(input_path)
        resample = needs_resampling(blob, affine, resolution_mismatch, str(input_path))
        started = time.perf_counter()
        outcome: dict[str, Any] = {}

        def run(x: np.ndarray) -> tuple[np.ndarray, str]:
            return infer_array(family, blob, self.generator, x, direction, normalise, dev, str(input_path),
                               affine, outcome, **settings)

        if resample:
            out, unit = infer_resampled(run, data, affine, blob, family.output_affine(affine, blob),
                                        str(input_path), settings)
        else:
            out, unit = run(data)
        save_nifti(out, family.output_affine(affine, blob), output)
        note = family.outcome_note(outcome) if outcome else None
        if note:
            self.notes[str(output)] = note
            log.warning("%s: filled by %s", output, note)
        log.info("%s -> %s: %s %s -> %s %s, %s (%s %s, %.1f s on %s)", input_path, output, src, data.shape, dst,
                 out.shape, unit, family.name, blob.get("kind"), time.perf_counter() - started, dev)
        return Path(output)
