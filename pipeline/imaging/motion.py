"""Rigid head motion simulated in k-space: the training pairs and test inputs of motion-artifact correction.

A 3D acquisition samples k-space one phase-encode line at a time (`pe_axis`: one in-plane axis; each line holds
every readout and slice frequency, so both other axes are fully sampled per shot). The lines are acquired in
`n_shots` groups (shots), in `ordering`: ``linear`` (shot j holds a contiguous block of lines, from the most
negative frequency to the most positive: e.g. an MPRAGE's outer loop) or ``interleaved`` (shot j holds every
`n_shots`-th line from line j: a segmented turbo spin echo). During a corrupted shot the head sits in another pose:
its k-space lines are those of the moved image, i.e.

* a translation ``t`` (mm) multiplies them by the linear phase ramp ``exp(-2 pi i k . t / (N s))`` (the Fourier
  shift theorem; ``k`` in cycles per field of view, ``N`` voxels of size ``s`` mm);
* a rotation (degrees about the three volume axes, through the volume's centre, in mm so that anisotropic voxels
  rotate correctly) takes the lines from a rotated copy of the image (`scipy.ndimage.affine_transform`, linear).

The image is the magnitude of the inverse FFT (what a scanner shows). The reference pose is the one in which the
k-space centre was acquired: the central `centre_fraction` of the lines is never moved, so the
uncorrupted scan is the ground truth and the corruption is ghosting and blurring along the phase-encode axis, not
a shift of the whole head. (Linear ordering blurs and rings near edges; interleaved ordering makes ghosts: faint
copies of the moved edges repeated every 1/n_shots of the field of view.) A corruption with no moved shot (severity 0, zero motion) returns the input exactly.

`draw_motion` draws the shots' poses from a seed (`motion_rng(seed, subject, modality)` makes one per subject),
`apply_motion` applies given poses, `simulate_motion` does both. Draws are nested: with the same seed a larger
`fraction` moves a superset of the shots, each in the same pose, and larger maxima scale the same poses, so
severity is monotone.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Shot:
    """One moved shot: its phase-encode lines (indices into the centred frequency axis, 0..N-1, N//2 = DC) and
    the head's pose during it (translation in mm and rotation in degrees, about/along volume axes 0, 1, 2)."""

    lines: tuple[int, ...]  #: the line indices, in centred line order
    translation_mm: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]

    def as_dict(self) -> dict[str, Any]:
        return {"lines": list(self.lines), "translation_mm": [round(float(v), 4) for v in self.translation_mm],
                "rotation_deg": [round(float(v), 4) for v in self.rotation_deg]}


def motion_rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator that is a pure function of `seed` and the strings `keys` (e.g. subject and modality), stable
    across processes and Python versions (CRC-32 of the keys, not `hash`)."""
    return np.random.default_rng([int(seed) % 2**63, *(zlib.crc32(k.encode()) for k in keys)])


ORDERINGS = ("linear", "interleaved")


def shot_lines(n_lines: int, n_shots: int, ordering: str = "linear") -> list[tuple[int, ...]]:
    """The lines (centred indices) of each of `n_shots` shots covering `n_lines` lines: contiguous blocks as equal
    as can be (``linear``) or every `n_shots`-th line (``interleaved``)."""
    if n_shots < 1:
        raise ValueError(f"n_shots must be >= 1, got {n_shots}")
    if ordering not in ORDERINGS:
        raise ValueError(f"unknown k-space ordering {ordering!r}; choose one of {', '.join(ORDERINGS)}")
    n_shots = min(n_shots, n_lines)
    if ordering == "interleaved":
        return [tuple(range(j, n_lines, n_shots)) for j in range(n_shots)]
    edges = np.linspace(0, n_lines, n_shots + 1).round().astype(int)
    return [tuple(range(int(a), int(b))) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def draw_motion(shape: Sequence[int], rng: np.random.Generator, *, fraction: float, max_translation_mm: float,
                max_rotation_deg: float, n_shots: int = 16, pe_axis: int = 1,
                centre_fraction: float = 0.08, ordering: str = "linear") -> list[Shot]:
    """The moved shots of one simulated scan of `shape`: ``round(fraction * n_shots)`` shots, each in a pose drawn
    uniformly within +-`max_translation_mm` / +-`max_rotation_deg` on every axis, less their lines in the central
    `centre_fraction` of the phase-encode lines (never moved). Everything is drawn whatever the severity, so a
    larger severity with the same generator state moves a superset of shots in scaled poses."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"motion fraction must be in [0, 1], got {fraction}")
    if max_translation_mm < 0 or max_rotation_deg < 0:
        raise ValueError("motion maxima must be >= 0")
    n = int(shape[pe_axis])
    groups = shot_lines(n, n_shots, ordering)
    half = centre_fraction * n / 2.0
    order = rng.permutation(len(groups))
    poses = rng.uniform(-1.0, 1.0, size=(len(groups), 2, 3))
    chosen = sorted(int(i) for i in order[:int(round(fraction * len(groups)))])
    shots = []
    for i in chosen:
        lines = tuple(k for k in groups[i] if abs(k - n // 2) > half)
        t = tuple(float(v) for v in poses[i, 0] * max_translation_mm)
        r = tuple(float(v) for v in poses[i, 1] * max_rotation_deg)
        if lines and (any(t) or any(r)):
            shots.append(Shot(lines, t, r))
    return shots


def _rotated(volume: np.ndarray, rotation_deg: Sequence[float], spacing: np.ndarray) -> np.ndarray:
    """`volume` rotated by the angles (degrees, about axes 0, 1, 2 in that order) about its centre, in mm."""
    from scipy.ndimage import affine_transform
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    # output voxel p reads input voxel S^-1 R^-1 S (p - c) + c  (S: voxel -> mm)
    matrix = np.diag(1.0 / spacing) @ rot.T @ np.diag(spacing)
    centre = (np.asarray(volume.shape, dtype=np.float64) - 1) / 2.0
    offset = centre - matrix @ centre
    return affine_transform(volume, matrix, offset=offset, order=1, mode="constant", cval=0.0)


def apply_motion(volume: np.ndarray, shots: Sequence[Shot], spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 pe_axis: int = 1, magnitude: bool = True) -> np.ndarray:
    """The magnitude image (float32) of a scan of `volume` whose `shots` were acquired in their poses; with
    `magnitude` False the complex image (complex128), whose k-space is the corrupted one exactly.

    No shot (or none that moves): `volume` itself, exactly (a copy)."""
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"motion simulation needs a 3D volume, got shape {volume.shape}")
    shots = [s for s in shots if any(s.translation_mm) or any(s.rotation_deg)]
    if not shots:
        return volume.copy()
    import scipy.fft as sfft

    spacing = np.asarray(spacing, dtype=np.float64)
    n = volume.shape[pe_axis]
    kspace = sfft.fftshift(sfft.fftn(volume, workers=1), axes=pe_axis)
    freqs = [sfft.fftfreq(volume.shape[a]) / spacing[a] for a in range(3)]  # cycles per mm
    freqs[pe_axis] = sfft.fftshift(freqs[pe_axis])
    rotated: dict[tuple[float, ...], np.ndarray] = {}
    for shot in shots:
        rows = np.asarray(shot.lines, dtype=np.intp)
        if rows.ndim != 1 or not len(rows) or rows.min() < 0 or rows.max() >= n:
            raise ValueError(f"shot lines {shot.lines} outside the {n} phase-encode lines")
        index: Any = [slice(None)] * 3
        index[pe_axis] = rows
        index = tuple(index)
        if any(shot.rotation_deg):
            key = tuple(shot.rotation_deg)
            if key not in rotated:
                moved = sfft.fftshift(sfft.fftn(_rotated(volume, key, spacing), workers=1), axes=pe_axis)
                rotated[key] = moved
            lines = rotated[key][index]
        else:
            lines = kspace[index]
        ramp = np.ones((1, 1, 1), dtype=np.complex128)
        for a in range(3):
            if shot.translation_mm[a]:
                f = freqs[a][rows] if a == pe_axis else freqs[a]
                shape = [1, 1, 1]
                shape[a] = len(f)
                ramp = ramp * np.exp(-2j * np.pi * f * shot.translation_mm[a]).reshape(shape)
        kspace[index] = lines * ramp
    image = sfft.ifftn(sfft.ifftshift(kspace, axes=pe_axis), workers=1)
    return np.abs(image).astype(np.float32) if magnitude else image


def simulate_motion(volume: np.ndarray, rng: np.random.Generator, *, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                    fraction: float, max_translation_mm: float, max_rotation_deg: float, n_shots: int = 16,
                    pe_axis: int = 1, centre_fraction: float = 0.08,
                    ordering: str = "linear") -> tuple[np.ndarray, list[Shot]]:
    """`volume` corrupted by motion drawn from `rng` (`draw_motion`, `apply_motion`); returns (image, shots)."""
    shots = draw_motion(volume.shape, rng, fraction=fraction, max_translation_mm=max_translation_mm,
                        max_rotation_deg=max_rotation_deg, n_shots=n_shots, pe_axis=pe_axis,
                        centre_fraction=centre_fraction, ordering=ordering)
    return apply_motion(volume, shots, spacing, pe_axis), shots
