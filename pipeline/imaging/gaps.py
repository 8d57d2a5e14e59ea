"""Missing slices: the gap simulator, the classical fillers (linear and cubic interpolation across a gap) and
the helpers the inpainting family, its evaluation and ingestion share.

Convention: a volume is (x, y, z), slices are taken along z (axis 2), and a voxel that was not measured holds
NaN (`FILL_VALUE`). A NaN marks it unambiguously (0 is a real background value), so a gapped NIfTI says by itself
which voxels are missing: `unknown_mask` finds them, `deleted_slices` lists the slices missing whole.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

import numpy as np

#: the value a deleted voxel holds in a gapped volume
FILL_VALUE = float("nan")
#: the slice axis (z of the RAS-oriented, preprocessed volume)
Z = 2


@dataclasses.dataclass(frozen=True)
class Gaps:
    """A gapped volume and exactly what was deleted."""

    volume: np.ndarray  #: the input with the deleted voxels set to the fill value
    deleted: list[int]  #: indices (along z) of the slices deleted whole, sorted
    runs: list[tuple[int, int]]  #: (first slice, length) of each deleted run
    boxes: list[tuple[int, ...]]  #: (x0, x1, y0, y1, z0, z1) of each deleted box (the `boxes` option)


def subject_seed(seed: int, subject: str) -> int:
    """A seed for one subject: stable across runs and machines (CRC32 of the name, not Python's hash)."""
    return (int(seed) * 1_000_003 + zlib.crc32(subject.encode())) % 2**32


def valid_range(mask: np.ndarray | None, n: int, min_fraction: float = 0.2) -> tuple[int, int]:
    """[first, last] slices where runs may go: slices whose foreground area is at least `min_fraction` of the
    largest (so gaps fall on anatomy and can be scored), one slice in from each end (a gap needs a measured
    neighbour on both sides); the whole range when there is no mask."""
    lo, hi = 1, n - 2
    if mask is not None and mask.any():
        area = np.asarray(mask.sum(axis=(0, 1)), dtype=float)
        inside = np.flatnonzero(area >= min_fraction * area.max())
        lo, hi = max(lo, int(inside[0])), min(hi, int(inside[-1]))
    if hi < lo:
        raise ValueError(f"no slice of a volume of {n} slices can be deleted (it needs measured neighbours)")
    return lo, hi


def draw_runs(rng: np.random.Generator, n_slices: int, n_runs: int, run_lengths: Sequence[int],
              min_separation: int, lo: int | None = None, hi: int | None = None) -> list[tuple[int, int]]:
    """`n_runs` runs of deleted slices, lengths drawn from `run_lengths` (cycled in turn, so every length
    occurs), placed at random within [lo, hi] with at least `min_separation` measured slices between runs.
    Fewer runs are placed when the volume has no room for all of them."""
    lo = 1 if lo is None else lo
    hi = n_slices - 2 if hi is None else hi
    lengths = [int(run_lengths[i % len(run_lengths)]) for i in range(n_runs)]
    rng.shuffle(lengths)
    taken = np.zeros(n_slices, dtype=bool)  # deleted or too close to a deleted slice
    runs: list[tuple[int, int]] = []
    for length in lengths:
        starts = [s for s in range(lo, hi - length + 2)
                  if not taken[max(0, s - min_separation):s + length + min_separation].any()]
        if not starts:
            continue
        s = int(starts[int(rng.integers(len(starts)))])
        taken[s:s + length] = True
        runs.append((s, length))
    return sorted(runs)


def simulate_gaps(volume: np.ndarray, seed: int, n_runs: int = 6, run_lengths: Sequence[int] = (1, 2, 3),
                  min_separation: int = 4, mask: np.ndarray | None = None, n_boxes: int = 0,
                  box_size: int = 16, fill_value: float = FILL_VALUE) -> Gaps:
    """Delete `n_runs` random runs of consecutive slices along z (lengths from `run_lengths`) and, with
    `n_boxes` > 0, random boxes of `box_size` voxels a side (inside the foreground `mask` when given); a pure
    function of `seed`. Returns the gapped copy (deleted voxels = `fill_value`) and the exact deleted slices."""
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    rng = np.random.default_rng(seed)
    n = volume.shape[Z]
    lo, hi = valid_range(mask, n)
    runs = draw_runs(rng, n, n_runs, run_lengths, min_separation, lo, hi)
    out = np.array(volume, dtype=np.float32, copy=True)
    deleted = sorted(z for s, length in runs for z in range(s, s + length))
    out[:, :, deleted] = fill_value
    boxes = []
    for _ in range(n_boxes):
        size = [min(box_size, s) for s in volume.shape]
        if mask is not None and mask.any():
            centre = np.argwhere(mask)[int(rng.integers(int(mask.sum())))]
        else:
            centre = np.array([int(rng.integers(s)) for s in volume.shape])
        start = [int(np.clip(c - k // 2, 0, s - k)) for c, k, s in zip(centre, size, volume.shape, strict=True)]
        box = tuple(v for a in range(3) for v in (start[a], start[a] + size[a]))
        out[box[0]:box[1], box[2]:box[3], box[4]:box[5]] = fill_value
        boxes.append(box)
    return Gaps(out, deleted, runs, boxes)


def unknown_mask(volume: np.ndarray, fill_value: float = FILL_VALUE) -> np.ndarray:
    """The voxels that were not measured (hold the fill value)."""
    return np.isnan(volume) if np.isnan(fill_value) else volume == fill_value


def deleted_slices(volume: np.ndarray, fill_value: float = FILL_VALUE) -> list[int]:
    """The slices (along z) missing whole."""
    return [int(z) for z in np.flatnonzero(unknown_mask(volume, fill_value).all(axis=(0, 1)))]


def runs_of(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive indices grouped into (first, length) runs."""
    runs: list[tuple[int, int]] = []
    for z in sorted(int(i) for i in indices):
        if runs and runs[-1][0] + runs[-1][1] == z:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((z, 1))
    return runs


def run_length_of(indices: Sequence[int]) -> dict[int, int]:
    """Each index -> the length of the run it belongs to."""
    return {z: length for s, length in runs_of(indices) for z in range(s, s + length)}


# ------------------------------------------------------------------------------------------ classical fillers
def linear_fill(volume: np.ndarray, unknown: np.ndarray | None = None) -> np.ndarray:
    """Unknown voxels filled by linear interpolation along z between the nearest measured voxels of the same
    (x, y) column (nearest one beyond the last measured voxel, 0 in a column with none); known voxels unchanged."""
    unknown = unknown_mask(volume) if unknown is None else unknown.astype(bool)
    n = volume.shape[Z]
    idx = np.arange(n)[None, None, :]
    known = ~unknown
    prev = np.maximum.accumulate(np.where(known, idx, -1), axis=Z)
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(known, idx, n), axis=Z), axis=Z), axis=Z)
    vals = np.where(known, volume, 0.0).astype(np.float32)
    has_prev, has_next = prev >= 0, nxt < n
    p = np.take_along_axis(vals, np.clip(prev, 0, n - 1), axis=Z)
    q = np.take_along_axis(vals, np.clip(nxt, 0, n - 1), axis=Z)
    w = np.where(has_prev & has_next, (idx - prev) / np.maximum(nxt - prev, 1), np.where(has_next, 1.0, 0.0))
    interp = np.where(has_prev | has_next, (1 - w) * p + w * q, 0.0)
    return np.where(unknown, interp, volume).astype(np.float32)


def cubic_fill(volume: np.ndarray, unknown: np.ndarray | None = None) -> np.ndarray:
    """Unknown voxels filled by a cubic spline along z (scipy `CubicSpline`, not-a-knot) through the slices
    measured whole; known voxels unchanged. Fewer than 4 measured slices: linear."""
    from scipy.interpolate import CubicSpline

    unknown = unknown_mask(volume) if unknown is None else unknown.astype(bool)
    complete = np.flatnonzero(~unknown.any(axis=(0, 1)))
    if len(complete) < 4:
        return linear_fill(volume, unknown)
    todo = np.flatnonzero(unknown.any(axis=(0, 1)))
    out = np.where(unknown, 0.0, volume).astype(np.float32)
    if todo.size:
        lo, hi = complete[0], complete[-1]
        inside = todo[(todo > lo) & (todo < hi)]
        if inside.size:
            spline = CubicSpline(complete, volume[:, :, complete].astype(np.float64), axis=Z)
            est = spline(inside).astype(np.float32)
            out[:, :, inside] = np.where(unknown[:, :, inside], est, out[:, :, inside])
        outside = np.setdiff1d(todo, inside)
        if outside.size:  # beyond the first/last complete slice: nearest-measured (as linear_fill)
            lin = linear_fill(volume, unknown)
            out[:, :, outside] = lin[:, :, outside]
    return out


FILLERS = {"linear": linear_fill, "cubic": cubic_fill}


def interpolate(volume: np.ndarray, method: str, unknown: np.ndarray | None = None) -> np.ndarray:
    """The classical filler `method` (linear or cubic) of a gapped volume."""
    if method not in FILLERS:
        raise ValueError(f"unknown interpolation {method!r}; choose one of {', '.join(FILLERS)}")
    return FILLERS[method](volume, unknown)
