"""Missing slices of a DICOM series, kept with `ingest.fill_missing_slices` (default off: the series is skipped).

`dicom_geometry.geometry` accepts a series whose gaps between slices are whole multiples of the slice spacing when
the option is on; `fill_missing` then inserts the missing positions and fills them, by the inpainting model of
`ingest.fill_model` when one is configured (`pipeline.models.inpaint`), else by linear interpolation along the slice
axis (`pipeline.imaging.gaps`). The filled slices are derived data, never passed off as measured: they are listed in
the manifest's reason, in the sidecar (``filled_slices``, ``derived_slices``) and so in the report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def grid_index(positions: np.ndarray, step_vec: np.ndarray) -> np.ndarray:
    """The index of each slice (positions (n, 3), sorted) on the regular grid of spacing `step_vec`."""
    along = (positions - positions[0]) @ step_vec / float(step_vec @ step_vec)
    return np.rint(along).astype(int)


def insert_missing(data: np.ndarray, index: Sequence[int]) -> tuple[np.ndarray, list[int]]:
    """The stacked slices (x, y, n) placed at `index` on the full grid, the missing slices NaN; and those slices."""
    index = np.asarray(index, dtype=int)
    full = np.full((*data.shape[:2], int(index[-1]) + 1), np.nan, dtype=np.float32)
    full[:, :, index] = data
    missing = sorted(set(range(full.shape[2])) - {int(i) for i in index})
    return full, missing


def fill_missing(full: np.ndarray, missing: Sequence[int], model_path: str = "") -> tuple[np.ndarray, str]:
    """Fill the NaN slices of `full`: by the inpainting model file `model_path` (normalised as the model records,
    mapped back to the series' units) or, without one, by linear interpolation along z. Returns (filled, method)."""
    from pipeline.imaging.gaps import linear_fill, unknown_mask

    if not missing:
        return full, "none"
    if not model_path:
        return linear_fill(full), "linear interpolation"
    from pipeline.config import PreprocessConfig
    from pipeline.imaging.intensity import foreground_mask, normalise
    from pipeline.models import family_of
    from pipeline.models.contract import load_model_file

    blob = load_model_file(model_path)
    family = family_of(blob)
    if family.file_task != "inpainting":
        raise ValueError(f"ingest.fill_model {model_path}: a {family.name} model file, not an inpainting one "
                         "(results/models/inpaint/model.pt)")
    (modality, norm), _ = family.io_modalities(blob, None)
    unknown = unknown_mask(full)
    measured = full[:, :, [z for z in range(full.shape[2]) if z not in set(missing)]]
    if norm.get("method") == "window":  # CT: the recorded HU window
        low, high = (float(v) for v in norm["window"])
    else:  # MR: the recorded percentiles of the measured slices' foreground, as the preprocess stage does
        cfg = PreprocessConfig(mr_percentiles=tuple(norm.get("percentiles", (0.5, 99.5))))
        params = normalise(measured, modality, foreground_mask(measured), cfg)[1]
        low, high = float(params["low"]), float(params["high"])
    scaled = np.where(unknown, np.nan, (full - low) / max(high - low, 1e-6)).astype(np.float32)
    generator = family.load_generator(blob, None, "cpu")
    outcome: dict = {}
    out = family.apply(generator, scaled, blob, "cpu", outcome=outcome)
    filled = np.where(unknown, low + out * (high - low), full).astype(np.float32)
    # the model, or the interpolation its self-check found better on this series' own slices: what really filled it
    return filled, family.outcome_note(outcome) or f"the {family.name} model"


def describe(missing: Sequence[int], n_slices: int, method: str) -> str:
    """The manifest note (and sidecar `derived_slices`) of the filled slices (0-based indices along the series)."""
    listed = ", ".join(str(z) for z in missing[:10]) + (", ..." if len(missing) > 10 else "")
    return (f"{len(missing)} missing slice(s) inserted at index {listed} of {n_slices} and filled by {method} "
            "(derived, not measured)")


def filled_volume(data: np.ndarray, positions: np.ndarray, affine: np.ndarray, model_path: str = "",
                  ) -> tuple[np.ndarray, dict[str, Any], str | None]:
    """The series' stacked slices with its missing slices inserted and filled; the sidecar fields and the manifest
    note (None when no slice is missing)."""
    index = grid_index(positions, np.asarray(affine)[:3, 2] @ np.diag([-1, -1, 1]))
    if index[-1] + 1 == data.shape[2]:
        return data, {}, None
    full, missing = insert_missing(data, index)
    filled, method = fill_missing(full, missing, model_path)
    note = describe(missing, full.shape[2], method)
    log.info("%s", note)
    return filled, {"filled_slices": [int(z) for z in missing], "derived_slices": note}, note
