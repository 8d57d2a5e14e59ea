"""What the image-to-image translation families (CycleGAN, pix2pix, ...) share: crops checked against the
PatchGAN, networks placed on the device, batches mapped to the generators' [-1, 1], the model file's translation
entries, the validation of the source -> target generator, and whole-volume translation (`translate`: coarse grids,
detail transfer, the background of a translated volume)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.config import EvaluateConfig, Invalid, to_dict
from pipeline.gan.base import Precision, adam
from pipeline.gan.schedules import linear_decay_schedulers
from pipeline.imaging.similarity import masked_psnr, ssim_kwargs
from pipeline.nets.interp import detail_transfer, downsample, upsample
from pipeline.nets.resnet_generator import size_multiple
from pipeline.nets.windows import as_batch, from_batch, sliding_window

log = logging.getLogger(__name__)


def check_translation_config(cfg: Any) -> None:
    """The cross-key rules of a translation family's config: some steps, two different modalities."""
    if cfg.n_steps + cfg.n_steps_decay < 1:
        raise Invalid(None, "n_steps + n_steps_decay must be >= 1")
    if cfg.source == cfg.target:
        raise Invalid(None, f"source and target are both {cfg.source!r}")


def auto_train_downsample(cfg: Any, volumes: Any, mm: float) -> Any:
    """`cfg` with `train_downsample` 0 (auto) resolved from the first training volume: the factor that brings its
    finest voxel side nearest `mm`."""
    if cfg.train_downsample or not len(volumes):
        return cfg
    from pipeline.imaging.geometry import voxel_sizes

    spacing = float(voxel_sizes(volumes[0].affine).min())
    factor = max(1, round(mm / spacing))
    log.info("train_downsample auto: voxels of %.3g mm -> factor %d (about %g mm)", spacing, factor, spacing * factor)
    return cfg.model_copy(update={"train_downsample": factor})


def crop_roi(name: str, cfg: Any, roi_size: Sequence[int] | None) -> list[int]:
    """The training crop (= inference window) size, checked to be large enough for the PatchGAN."""
    roi = [int(r) for r in roi_size] if roi_size else [cfg.patch_size or 64] * cfg.spatial_dims
    smallest = 3 * 2**cfg.d_layers
    if min(roi) < smallest:
        raise ValueError(f"{name}: crops of {roi} voxels are too small for a {cfg.d_layers}-layer "
                         f"PatchGAN discriminator (needs >= {smallest}); raise patch_size or lower d_layers")
    return roi


def place(nets: dict[str, nn.Module], precision: Precision, spatial_dims: int) -> tuple[dict[str, nn.Module], bool]:
    """The networks on the precision's device (channels-last where `Precision.channels_last` says), and whether
    channels-last is used."""
    device = precision.device
    channels_last = precision.channels_last(spatial_dims)
    fmt = {"memory_format": torch.channels_last} if channels_last else {}
    return {k: net.to(device, **fmt) for k, net in nets.items()}, channels_last


def adam_with_linear_decay(networks: dict[str, nn.Module], cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """One Adam per network (`cfg.lr`, `cfg.betas`) and, under the same names, the schedule of `cfg.n_steps` at
    that rate then `cfg.n_steps_decay` of linear decay to 0: (optimizers, schedulers)."""
    optimizers = {k: adam(net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas)) for k, net in networks.items()}
    return optimizers, linear_decay_schedulers(optimizers, cfg.n_steps, cfg.n_steps_decay)


def generator_range(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    """The batch's ``A`` and ``B`` images (values in [0, 1]) on `device`, mapped to the generators' [-1, 1]."""
    real = {}
    for dom in ("A", "B"):
        x = batch[dom].to(device).float() * 2.0 - 1.0
        real[dom] = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    return real


def cached_sampler(cache_dir: str | Path | None, prefix: str, build: Callable[[Any], Any]) -> Any:
    """`build(cache)` with a new on-disk `VolumeCache` (deleted again if building the sampler fails)."""
    from pipeline.data.cache import VolumeCache

    cache = VolumeCache(cache_dir, prefix=prefix)
    try:
        return build(cache)
    except BaseException:
        cache.close()
        raise


def training_metadata(data_dir: str | Path, subjects: Sequence[str], cfg: Any, volumes: dict[str, Any]) -> dict:
    """What the model file records about the training data: the subject count and each modality's normalisation."""
    from pipeline.data.volumes import normalisation_method, recorded_normalisation, subject_names

    return {"n_train_subjects": len(subjects),
            "normalisation": {m: normalisation_method(recorded_normalisation(data_dir, subject_names(v), m))
                              for m, v in volumes.items()}}


def model_file_entries(model: Any, weights: dict[str, Any], steps: int, **translation: Any) -> dict[str, Any]:
    """A translation model file's entries after the family's header: generator, weights, translation, inference."""
    cfg = model.cfg
    return {
        "generator": {"builder": "pipeline.nets.resnet_generator.build_generator",
                      "kwargs": copy.deepcopy(model.g_kwargs)},
        **weights,
        "translation": {"source": cfg.source, "target": cfg.target, **translation, "spatial_dims": cfg.spatial_dims,
                        "slice_axis": cfg.slice_axis if cfg.spatial_dims == 2 else None},
        "normalisation": copy.deepcopy(model.meta.get("normalisation", {})),
        "inference": {"roi_size": list(model.roi_size), "sw_batch_size": cfg.sw_batch_size,
                      "overlap": cfg.overlap, "tta": cfg.tta, "tta_views": cfg.tta_views,
                      "detail_transfer": bool(getattr(cfg, "detail_transfer", False)), "planes": cfg.planes},
        "training": {"steps": steps, "n_train_subjects": model.meta.get("n_train_subjects"), "config": to_dict(cfg)},
    }


#: what a translation is checked against on validation (the evaluation's translation baselines)
VALIDATION_BASELINES = ("identity", "histogram_match", "histogram_match_inverted")


def validate_translations(model: Any, data_dir: str | Path, out_dir: str | Path,
                          outputs: Sequence[tuple[str, str | None, str]]) -> dict[str, Any]:
    """For each (output name, direction, target modality): the PSNR (dB) inside the mask of the exported model
    file's translation of the whole validation volumes (no test-time augmentation) and of the evaluation's
    baselines (the source itself, histogram matching of it and of the inverted source to the target). Logged,
    with a warning naming each output below its strongest baseline, and returned in the shape of SRGAN's check
    for the report's warnings: `psnr_db` (output -> dB), `subjects`, `losing`, `baselines` (output -> the
    name and PSNR of its strongest baseline) and `selected_steps`. A quick check, not the evaluation stage."""
    from pipeline.data.volumes import domain_volumes
    from pipeline.gan.checkpoint import load_checkpoint
    from pipeline.imaging.degrade import histogram_match, histogram_match_inverted

    blob = load_checkpoint(Path(out_dir) / "model.pt")
    src = domain_volumes(data_dir, model.cfg.source, "val")  # read one subject at a time, below
    result: dict[str, Any] = {"psnr_db": {}, "subjects": 0, "baselines": {}, "losing": []}
    for name, direction, target in outputs:
        dst = domain_volumes(data_dir, target, "val")
        common = sorted(set(src.names) & set(dst.names))
        if not common:
            continue
        gen = model.load_generator(blob, direction, model.device)
        scores: dict[str, list[float]] = {}
        for s in common:
            x, truth = src[src.names.index(s)].image, dst[dst.names.index(s)]
            y, m = truth.image, truth.mask
            for k, out in ((name, model.apply(gen, x, blob, model.device, tta=False)), ("identity", x),
                           ("histogram_match", histogram_match(x, y, mask=m)),
                           ("histogram_match_inverted", histogram_match_inverted(x, y, m))):
                scores.setdefault(k, []).append(masked_psnr(out, y, m))
        mean = {k: float(np.mean(v)) for k, v in scores.items()}
        best = max(VALIDATION_BASELINES, key=lambda b: mean[b])
        result["psnr_db"][name] = mean[name]
        result["baselines"][name] = {"name": best, "psnr_db": mean[best]}
        result["subjects"] = max(result["subjects"], len(common))
        log.info("validation of %s (%s -> %s) in the mask (%d subject(s), no TTA): PSNR %s", name, model.cfg.source,
                 target, len(common), ", ".join(f"{k} {v:.2f} dB" for k, v in mean.items()))
        if mean[name] < mean[best]:
            result["losing"].append(name)
            log.warning("%s scores %.2f dB on the validation subject(s), below %s (%.2f dB): it does not beat that "
                        "baseline on data it was not trained on; do not use it in place of it", name, mean[name],
                        best, mean[best])
    selection = getattr(model, "selection", None)
    if selection is not None and selection.best is not None:
        result["selected_steps"] = {model.name: selection.best["step"]}
    return result if result["psnr_db"] else {}


def masked_ssim(output: np.ndarray, truth: np.ndarray, mask: np.ndarray, slice_axis: int | None) -> float:
    """SSIM (the evaluation's default window) of `output` clipped to [0, 1] against `truth`, averaged inside
    `mask`: in 2D on each slice across `slice_axis` (for a sample of non-adjacent slices), None: in 3D."""
    from skimage.metrics import structural_similarity

    ev = EvaluateConfig()
    out, ref = np.clip(output, 0.0, 1.0).astype(np.float64), truth.astype(np.float64)
    kw = {**ssim_kwargs(ev.ssim_kernel, ev.ssim_sigma, ev.ssim_window, 1.0), "full": True}
    if slice_axis is None:
        smap = structural_similarity(ref, out, **kw)[1]
    else:
        smap = np.stack([structural_similarity(np.take(ref, k, slice_axis), np.take(out, k, slice_axis), **kw)[1]
                         for k in range(ref.shape[slice_axis])], axis=slice_axis)
    return float(smap[mask].mean())


#: validation slices per subject that checkpoint selection translates (2D models; evenly spaced through the mask)
SELECTION_SLICES = 16


class CheckpointSelection:
    """Model selection for a translation family: at every checkpoint the source -> target translation (each of
    `targets`: (direction, target modality)) of the validation subjects is scored by PSNR and SSIM inside the
    mask, and the model file of the checkpoint best by `metric` is kept; that one is exported, not the last. Adversarial training
    does not improve monotonically: a run can drift into a poor mode late and still end there (a demo CycleGAN
    seed with a short resolution ramp: 16.95 dB on validation at step 2000, 13.97 dB at 2400); a run that is poor
    from the start (a StarGAN seed on the demo) it cannot rescue. 2D models are scored on `SELECTION_SLICES`
    slices of each subject (a second or so per checkpoint on the demo), 3D models on whole volumes; no
    test-time augmentation. Without validation subjects nothing is selected and the last weights are exported."""

    def __init__(self, val_dir: str | Path | None, source: str, targets: Sequence[tuple[str | None, str]],
                 spatial_dims: int, slice_axis: int, metric: str = "psnr") -> None:
        self.val_dir, self.source, self.targets, self.metric = val_dir, source, list(targets), metric
        self.spatial_dims, self.slice_axis = spatial_dims, slice_axis
        self._data: list[tuple[str | None, np.ndarray, np.ndarray, np.ndarray]] | None = None
        self.best: dict[str, Any] | None = None  # {"psnr", "ssim", "step", "model_file"}

    def data(self) -> list[tuple[str | None, np.ndarray, np.ndarray, np.ndarray]]:
        """(direction, source, truth, mask) per validation subject and target (read once; [] without any)."""
        if self._data is None:
            from pipeline.data.volumes import domain_volumes

            self._data = []
            if self.val_dir is not None:
                src = domain_volumes(self.val_dir, self.source, "val")
                for direction, target in self.targets:
                    dst = domain_volumes(self.val_dir, target, "val")
                    for s in sorted(set(src.names) & set(dst.names)):
                        truth = dst[dst.names.index(s)]
                        arrays = (src[src.names.index(s)].image, truth.image, truth.mask)
                        self._data.append((direction, *self._sample(*arrays)))
                if not self._data:
                    log.warning("no validation subject with %s and %s: no checkpoint selection, the last weights "
                                "are exported", self.source, " / ".join(t for _, t in self.targets))
        return self._data

    def _sample(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        if self.spatial_dims == 3:
            return arrays
        axis, mask = self.slice_axis, arrays[-1]
        inside = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if inside.size == 0:
            return arrays
        picked = np.unique(inside[np.linspace(0, inside.size - 1, min(SELECTION_SLICES, inside.size)).round().astype(int)])
        return tuple(np.take(a, picked, axis=axis) for a in arrays)

    def update(self, model: Any, step: int) -> None:
        """Score the model's current generator(s) at `step`; keep its model file if it is the best so far."""
        data = self.data()
        if not data:
            return
        blob = model.model_file(step)
        generators = {d: model.load_generator(blob, d, model.device) for d, _ in self.targets}
        axis = self.slice_axis if self.spatial_dims == 2 else None
        psnr, ssim = [], []
        for d, x, y, m in data:
            out = model.apply(generators[d], x, blob, model.device, tta=False)
            psnr.append(masked_psnr(out, y, m))
            ssim.append(masked_ssim(out, y, m, axis))
        scores = {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}
        if self.best is None or scores[self.metric] > self.best[self.metric]:
            # a copy: on the CPU the model file's tensors are the live weights, which training goes on updating
            self.best = {**scores, "step": step, "model_file": copy.deepcopy(blob)}
        log.info("step %d: validation PSNR %.2f dB, SSIM %.3f (best %s at step %d)", step, scores["psnr"],
                 scores["ssim"], self.metric.upper(), self.best["step"])

    def model_file(self, model: Any) -> dict[str, Any]:
        """The model file to export: the selected checkpoint's (its step and score recorded), else the last."""
        if self.best is None:
            return model.model_file(model.total_steps)
        blob = self.best["model_file"]
        blob["training"]["selected"] = {"step": self.best["step"], "of_steps": model.total_steps, "by": self.metric,
                                        "validation_psnr_db": round(self.best["psnr"], 3),
                                        "validation_ssim": round(self.best["ssim"], 4)}
        log.info("exporting the checkpoint of step %d of %d (validation PSNR %.2f dB, SSIM %.3f)", self.best["step"],
                 model.total_steps, self.best["psnr"], self.best["ssim"])
        return blob

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")


class SelectsCheckpoints:
    """The part of a translation `Family` that exports the checkpoint `self.selection` selects (None: the last) and
    checks it against the baselines on validation; the family lists its translations once, in `translations`."""

    selection: CheckpointSelection | None = None

    def translations(self) -> list[tuple[str, str | None, str]]:
        """(output name, generator direction, target modality) of each translation the family exports."""
        raise NotImplementedError

    def start_selection(self, val_dir: str | Path | None) -> None:
        """Score every translation at each checkpoint when `select_best` is on and there is a validation folder."""
        cfg = self.cfg  # type: ignore[attr-defined]
        if cfg.select_best and val_dir is not None:
            self.selection = CheckpointSelection(val_dir, cfg.source, [(d, t) for _, d, t in self.translations()],
                                                 cfg.spatial_dims, cfg.slice_axis, cfg.select_metric)

    def validate(self, data_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
        """Each translation against the baselines on the validation subjects (`validate_translations`)."""
        return validate_translations(self, data_dir, out_dir, self.translations())

    def validation_step(self, step: int) -> int | None:
        if self.selection is not None:
            self.selection.update(self, step)
        return None

    def export(self, out_dir: Path) -> list[Path]:
        from pipeline.gan.checkpoint import save_checkpoint

        blob = self.selection.model_file(self) if self.selection is not None else self.model_file(self.total_steps)
        return [save_checkpoint(blob, Path(out_dir) / "model.pt")]

    def selection_state(self) -> dict[str, Any]:
        """The selection's part of `extra_state` (a resumed run selects as an uninterrupted one)."""
        return {"selection": self.selection.state_dict()} if self.selection is not None else {}

    def load_selection_state(self, state: dict[str, Any]) -> None:
        if self.selection is not None and "selection" in state:
            self.selection.load_state_dict(state["selection"])

    def extra_state(self) -> dict[str, Any]:
        return self.selection_state()

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.load_selection_state(state)


#: voxels further than this (in voxels of the input grid) from any input signal are background in a translation
SUPPORT_RADIUS = 4


def keep_background(output: np.ndarray, source: np.ndarray, radius: int = SUPPORT_RADIUS) -> np.ndarray:
    """`output` set to 0 (the target's background) where the source has no signal (> 0) within `radius` voxels.

    The generators normalise each window by its own statistics (instance norm), so a window with a few voxels of
    head in much air (the first and last slices through the skull; the air around a skull-stripped brain) is
    painted grey. Where the source is 0 far and wide there is nothing to translate. A source with signal (noise)
    everywhere is left as it is; so is everything within `radius` of a measured voxel.
    """
    from scipy import ndimage

    support = ndimage.binary_dilation(np.asarray(source) > 0, ndimage.generate_binary_structure(3, 1), radius)
    return np.where(support, output, 0).astype(output.dtype, copy=False)


#: slices per pass of detail transfer in 2D (bounds its memory; slices are filtered independently)
DETAIL_SLICES = 32


def plane_axes(slice_axis: int, affine: np.ndarray | None, tolerance: float = 0.1) -> list[int]:
    """The volume axes to slice across for `planes` (tri-planar inference): the model's `slice_axis` first, then
    the other two when the scan's voxels are cubes (sizes within `tolerance`), since only then are the other
    planes' pixels squares as in training; otherwise (or with no `affine` to tell) `slice_axis` alone, logged."""
    from pipeline.imaging.geometry import voxel_sizes

    if affine is not None:
        sizes = voxel_sizes(affine)
        if sizes.max() <= (1.0 + tolerance) * sizes.min():
            return [slice_axis] + [a for a in range(3) if a != slice_axis]
        log.info("planes: voxels of %s mm are not cubes; translating across axis %d only",
                 "x".join(f"{v:.3g}" for v in sizes), slice_axis)
    else:
        log.info("planes: no voxel sizes given; translating across axis %d only", slice_axis)
    return [slice_axis]


def translate(
    volume: np.ndarray,
    generator: nn.Module,
    blob: dict[str, Any],
    device: str | torch.device = "cpu",
    roi_size: Sequence[int] | None = None,
    sw_batch_size: int = 16,
    overlap: float = 0.5,
    precision: str = "auto",
    tta: bool = False,
    detail: bool = False,
    axes: Sequence[int] | None = None,
    tta_views: int | None = None,
) -> np.ndarray:
    """Translate a whole (x, y, z) volume (values in [0, 1]); the output (in [0, 1]) has the input's grid.

    2D models run on the slices across the model's slice axis (or across each of `axes`, the translations
    averaged: tri-planar inference, see `plane_axes`), 3D models on the volume; both through MONAI's
    `SlidingWindowInferer` with windows of the training crop size (`roi_size`, None: 64 per side;
    Gaussian-blended), so instance norm sees what it saw in training. With `train_downsample` the input is
    block-averaged first and the output interpolated back; with `detail` it then gets the source's detail that
    the coarse grid lost, with the output's local contrast (`pipeline.nets.interp.detail_transfer`). With `tta`
    every window is translated in `tta_views` of its flips/transposes (None: all 8; `pipeline.nets.tta.views`),
    the outputs mapped back and averaged (the texture a GAN invents differs between views, the anatomy does not).
    Blank windows (constant input) and voxels far from any input signal (`keep_background`) come out as 0."""
    device = torch.device(device)
    info = blob["translation"]
    dims, factor = info["spatial_dims"], int(info.get("train_downsample", 1))
    roi = [int(r) for r in (roi_size or [64] * dims)]

    def net(v: torch.Tensor) -> torch.Tensor:
        y = generator(v * 2.0 - 1.0)  # [0, 1] <-> the generator's [-1, 1]
        blank = (v.flatten(1).amax(1) - v.flatten(1).amin(1) <= 1e-6).view(-1, *[1] * (y.dim() - 1))
        return torch.where(blank, -1.0, y)  # blank: instance norm would make it a uniform grey

    def across(axis: int | None) -> torch.Tensor:
        source = as_batch(volume, dims, axis)  # (N, 1, *spatial)
        size = source.shape[2:]
        out = sliding_window(downsample(source, factor, dims), net, roi, sw_batch_size, overlap, device, precision,
                             tta, transpose=dims == 2, tta_views=tta_views, multiple=size_multiple(generator),
                             finish=lambda y: (y + 1.0) / 2.0)
        out = upsample(out, factor, size)
        if detail:  # 2D: a few slices at a time (the box filters' temporaries are volume-sized otherwise)
            chunk = DETAIL_SLICES if dims == 2 else out.shape[0]
            out = torch.cat([detail_transfer(o, s.to(o.dtype), factor)
                             for o, s in zip(out.split(chunk), source.split(chunk), strict=True)]).clamp(0.0, 1.0)
        return from_batch(out, dims, axis).float()

    planes = [None] if dims == 3 else list(axes or [info["slice_axis"]])
    out = across(planes[0])
    for axis in planes[1:]:
        out = out + across(axis)  # (inference-mode tensors: no in-place update)
    out = out / len(planes)
    if tuple(out.shape) != tuple(volume.shape):
        raise RuntimeError(f"output shape {tuple(out.shape)} != input shape {tuple(volume.shape)}")
    return keep_background(out.numpy().astype(np.float32), volume)
