"""Every slice of a subject's volumes as 8-bit PNG sprite sheets, for the report's slice viewer.

Per subject and task, the panels the task's outputs share (input, strongest baseline, ground truth, the
baseline's error) are written once; per output its own (output, error). A sprite sheet holds every slice of one
plane of one volume as tiles in a grid (row-major, slice 0 top left), each tile oriented as the mid-slice figures
show it (axial and coronal: patient's right on the right, anterior / superior up; sagittal: anterior on the right).

Windowing is the mid-slice figures': intensities [0, data_range] -> 0..255 in grey (a greyscale PNG); absolute
errors [0, error_max] -> 0..255 through the inferno colour map (a palette PNG, one byte a pixel), one error scale
per subject and task (the baseline and every output of the task), which the mid-slice figures use too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io.atomic import atomic_path

PLANES = ("axial", "coronal", "sagittal")
#: per plane: the volume's axis the slider moves along, and the tile's (row, column) axes before the flip
PLANE_AXES = {"axial": (2, (1, 0)), "coronal": (1, (2, 0)), "sagittal": (0, (2, 1))}


def error_scale(errors: Sequence[np.ndarray], mask: np.ndarray, data_range: float) -> float:
    """Upper end of the error colour scale: the 99.5th percentile of all `errors` inside the mask (everywhere
    when the mask is empty), at least 1e-3 * data_range."""
    inside = np.concatenate([e[mask] if mask.any() else e.ravel() for e in errors])
    return max(float(np.percentile(inside, 99.5)) if inside.size else 0.0, 1e-3 * data_range)


def plane_stack(vol: np.ndarray, plane: str) -> np.ndarray:
    """(n, rows, cols) slices of an (x, y, z) RAS volume in `plane`, row 0 at the top of the displayed image."""
    axis, (row, col) = PLANE_AXES[plane]
    return np.flip(np.transpose(vol, (axis, row, col)), axis=1)


def sprite_sheet(stack: np.ndarray) -> tuple[np.ndarray, int]:
    """Tiles of a (n, h, w) stack in a grid of ceil(sqrt(n)) columns; returns (image, columns)."""
    n, h, w = stack.shape
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    sheet = np.zeros((rows * h, cols * w), dtype=stack.dtype)
    for i in range(n):
        r, c = divmod(i, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = stack[i]
    return sheet, cols


def to_uint8(vol: np.ndarray, vmax: float) -> np.ndarray:
    """[0, vmax] -> 0..255 (clipped, rounded)."""
    return np.round(np.clip(np.asarray(vol, dtype=np.float32) / vmax, 0.0, 1.0) * 255.0).astype(np.uint8)


def _inferno_palette() -> list[int]:
    from matplotlib import colormaps

    lut = np.round(colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    return lut.ravel().tolist()


def write_png(path: Path, image: np.ndarray, palette: list[int] | None = None) -> None:
    """An 8-bit PNG (greyscale, or indexed with `palette`), no metadata, written atomically."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))  # 2D uint8: mode L
    if palette is not None:
        img = img.convert("P")
        img.putpalette(palette)
    with atomic_path(path) as tmp:
        # zlib level 6 without PIL's `optimize` search: a demo axial sheet in 0.05 s instead of 0.28 s, 2% larger
        img.save(tmp, format="PNG", compress_level=6)


class PngWriter:
    """`write_png` on `workers` background threads (zlib and PIL's encoder release the GIL, so the encoding
    overlaps the caller's work, e.g. matplotlib's); 0 or 1 worker: in the calling thread. `close` (or leaving the
    `with` block) waits for every write and raises the first error. At most `MAX_PENDING` images wait in memory."""

    MAX_PENDING = 32

    def __init__(self, workers: int = 1) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(int(workers), thread_name_prefix="png") if workers > 1 else None
        self._pending: list[Any] = []

    def write(self, path: Path, image: np.ndarray, palette: list[int] | None = None) -> None:
        if self._pool is None:
            write_png(path, image, palette)
            return
        if len(self._pending) >= self.MAX_PENDING:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(write_png, path, image, palette))

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.pop(0).result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> PngWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        elif self._pool is not None:  # already failing: that error is the one to report
            self._pool.shutdown(wait=True, cancel_futures=True)


def plane_geometry(shape: Sequence[int], affine: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per plane: slices, tile size, grid columns, pixel aspect (height / width of a voxel as shown) and the
    world coordinate (mm) of slice 0 and its step along the slider's axis."""
    spacing = [float(np.linalg.norm(affine[:3, a])) for a in range(3)]
    out: dict[str, dict[str, Any]] = {}
    for plane in PLANES:
        axis, (row, col) = PLANE_AXES[plane]
        n = int(shape[axis])
        out[plane] = {
            "n": n, "width": int(shape[col]), "height": int(shape[row]), "columns": max(1, math.ceil(math.sqrt(n))),
            "aspect": spacing[row] / spacing[col], "axis": "xyz"[axis],
            "first_mm": float(affine[axis, 3]), "step_mm": float(affine[axis, axis]),
        }
    return out


def write_volume(folder: Path, name: str, vol: np.ndarray, vmax: float, palette: list[int] | None = None,
                 writer: PngWriter | None = None) -> dict[str, str]:
    """Three sprite sheets `<folder>/<name>_<plane>.png` of one volume (through `writer`, else at once); returns
    {plane: path}."""
    values = to_uint8(vol, vmax)
    writer = writer if writer is not None else PngWriter()  # one worker: written here and now
    paths: dict[str, str] = {}
    for plane in PLANES:
        sheet, _ = sprite_sheet(plane_stack(values, plane))
        path = folder / f"{name}_{plane}.png"
        writer.write(path, sheet, palette)
        paths[plane] = path.as_posix()
    return paths


def write_subject_slices(
    folder: Path,
    *,
    source: np.ndarray,
    baseline: np.ndarray,
    truth: np.ndarray,
    outputs: dict[str, np.ndarray],
    mask: np.ndarray,
    affine: np.ndarray,
    labels: dict[str, str],
    data_range: float,
    error_max: float,
    centre: Sequence[int],
    writer: PngWriter | None = None,
) -> dict[str, dict[str, Any]]:
    """Sprite sheets of one subject and task under `folder` (shared panels there, each output's in
    `<folder>/<output>/`; written through `writer`, else at once); returns {output: viewer entry} as
    summary.json's `figures.viewer.<subject>` holds it.

    `labels` names the panels: "input", "baseline", "truth" and each output's name.
    """
    palette = _inferno_palette()
    shared = {
        "input": write_volume(folder, "input", source, data_range, writer=writer),
        "baseline": write_volume(folder, "baseline", baseline, data_range, writer=writer),
        "truth": write_volume(folder, "truth", truth, data_range, writer=writer),
        "error_baseline": write_volume(folder, "error-baseline", np.abs(baseline - truth), error_max, palette,
                                       writer),
    }
    geometry = plane_geometry(truth.shape, affine)
    start = {plane: int(centre[PLANE_AXES[plane][0]]) for plane in PLANES}
    entries: dict[str, dict[str, Any]] = {}
    for name, pred in outputs.items():
        own = folder / name
        panels = [
            ("input", labels["input"], shared["input"]),
            ("baseline", labels["baseline"], shared["baseline"]),
            ("output", labels[name], write_volume(own, "output", pred, data_range, writer=writer)),
            ("truth", labels["truth"], shared["truth"]),
            ("error_baseline", f"|{labels['baseline']} − truth|", shared["error_baseline"]),
            ("error_output", f"|{labels[name]} − truth|", write_volume(own, "error", np.abs(pred - truth), error_max, palette, writer)),
        ]
        entries[name] = {
            "planes": geometry,
            "start": start,
            "data_range": data_range,
            "error_max": error_max,
            "panels": [{"key": k, "label": label, "sprites": sprites} for k, label, sprites in panels],
        }
    return entries
