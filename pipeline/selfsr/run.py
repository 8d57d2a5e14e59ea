"""Self-supervised through-plane super-resolution of one scan: read, learn from itself, apply, correct, write.

`plan` reads the geometry (the through-plane axis is the one with the largest voxel size; the scale is the
ratio to the in-plane voxel size, rounded to an integer) and `selfsr_volume` does the work on an array, with no
file access (`pipeline.selfsr.scan` reads and writes files). The output lies on the grid whose
voxel `m*scale + (scale-1)/2` along the through-plane axis is centred on input slice `m` (the world extent and
centre of the input, `pipeline.imaging.geometry.hr_affine_from_lr`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from pipeline.selfsr.profile import SliceProfile, consistency
from pipeline.selfsr.train import PairBank, TrainSettings, apply_through_plane, train_net

log = logging.getLogger(__name__)

#: the through-plane voxel must be at least this many times the in-plane one
MIN_RATIO = 1.5


@dataclass(frozen=True)
class Plan:
    axis: int  # the through-plane axis of the (RAS) array
    scale: int  # slices per input slice in the output
    spacing_mm: float  # input slice spacing
    inplane_sizes: tuple[float, float]  # the in-plane voxel sizes (mm), in axis order

    @property
    def inplane_mm(self) -> float:
        return float(np.mean(self.inplane_sizes))

    @property
    def square(self) -> bool:
        """Whether the in-plane voxels are square (to 1%), so the volume can be turned about the slice axis."""
        return max(self.inplane_sizes) <= 1.01 * min(self.inplane_sizes)

    @property
    def step_mm(self) -> float:
        return self.spacing_mm / self.scale


def plan(shape: tuple[int, ...], affine: np.ndarray, where: str = "the input") -> Plan:
    """The through-plane axis and the integer scale from the voxel sizes; a clear error when there is nothing to do."""
    from pipeline.imaging.geometry import fmt, voxel_sizes

    if len(shape) != 3:
        raise ValueError(f"{where}: expected a 3-D volume, got shape {tuple(shape)}")
    sizes = voxel_sizes(affine)
    axis = int(np.argmax(sizes))
    inplane = [float(sizes[a]) for a in range(3) if a != axis]
    ratio = float(sizes[axis]) / max(inplane)
    if ratio < MIN_RATIO:
        raise ValueError(f"{where}: voxels of {fmt(sizes)} are (nearly) isotropic; through-plane super-resolution "
                         f"needs slices at least {MIN_RATIO}x the in-plane voxel size: nothing to do")
    if shape[axis] < 4:
        raise ValueError(f"{where}: only {shape[axis]} slices along the through-plane axis; need at least 4")
    scale = round(float(sizes[axis]) / float(np.mean(inplane)))
    p = Plan(axis, scale, float(sizes[axis]), (inplane[0], inplane[1]))
    if abs(p.step_mm - p.inplane_mm) > 0.1 * p.inplane_mm or max(inplane) > 1.1 * min(inplane):
        log.warning("selfsr: %s: voxels of %s; the output's %.3g mm through-plane step is not the in-plane voxel "
                    "size, and training treats in-plane voxels as that step (no in-plane resampling)",
                    where, fmt(sizes), p.step_mm)
    return p


def output_affine(affine: np.ndarray, p: Plan) -> np.ndarray:
    from pipeline.imaging.geometry import hr_affine_from_lr

    factors = [1, 1, 1]
    factors[p.axis] = p.scale
    return hr_affine_from_lr(affine, factors)


def selfsr_volume(volume: np.ndarray, affine: np.ndarray, profile: SliceProfile,
                  settings: TrainSettings | None = None, data_consistency: bool = True,
                  where: str = "the input") -> tuple[np.ndarray, np.ndarray, dict]:
    """Super-resolve the through-plane axis of `volume` (voxel -> world `affine`).

    Returns (output, its affine, a summary dict). The output re-slices with `profile` to `volume` exactly when
    `data_consistency` is on.
    """
    import torch

    from pipeline.imaging.geometry import fmt

    settings = settings or TrainSettings()
    p = plan(volume.shape, affine, where)
    start, cpu0 = time.monotonic(), time.process_time()
    x = np.moveaxis(np.asarray(volume, dtype=np.float32), p.axis, 2)  # through-plane axis last
    finite = np.isfinite(x)
    if not finite.all():
        raise ValueError(f"{where}: {int((~finite).sum())} voxels are NaN or infinite")
    fg = np.abs(x) > 0
    scale_to = float(np.percentile(np.abs(x[fg]), 99.5)) if fg.any() else 0.0
    if scale_to <= 0:
        raise ValueError(f"{where}: the volume is empty (all voxels 0)")
    x_norm = x / scale_to
    log.info("selfsr: %s, through-plane axis %d, %d slices of %.3g mm -> x%d (%.3g mm), in-plane %.3g mm; %s",
             where, p.axis, x.shape[2], p.spacing_mm, p.scale, p.step_mm, p.inplane_mm,
             profile.describe(p.spacing_mm))
    rotations = settings.rotations
    if any(r % 360 for r in rotations) and not p.square:
        log.info("selfsr: %s: in-plane voxels of %s are not square, so the network sees the sagittal and coronal "
                 "slices only (no turned views)", where, fmt(p.inplane_sizes))
        rotations = (0.0,)
    bank = PairBank(x_norm, p.scale, profile, p.spacing_mm, foreground=0.05)
    net, summary = train_net(bank, settings)
    t_apply = time.monotonic()
    with torch.inference_mode():
        out = apply_through_plane(net, x_norm, p.scale, flips=settings.tta, rotations=rotations) * scale_to
    summary["apply_seconds"] = time.monotonic() - t_apply
    if data_consistency:
        before = out
        out = consistency(out, x, p.scale, profile, p.spacing_mm, axis=2)
        summary["consistency_rms_change"] = float(np.sqrt(np.mean((out - before) ** 2)) / scale_to)
    summary.update(axis=p.axis, scale=p.scale, rotations=list(rotations), spacing_mm=p.spacing_mm, step_mm=p.step_mm,
                   seconds=time.monotonic() - start, cpu_seconds=time.process_time() - cpu0)
    log.info("selfsr: done in %.0f s (%.0f CPU s): training %.0f s, applying %.0f s", summary["seconds"],
             summary["cpu_seconds"], summary["l1_seconds"], summary["apply_seconds"])
    return np.ascontiguousarray(np.moveaxis(out, 2, p.axis)), output_affine(affine, p), summary
