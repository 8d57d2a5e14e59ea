"""What the image-to-image translation families (CycleGAN, pix2pix, ...) share: crops checked against the
PatchGAN, networks placed on the device, batches mapped to the generators' [-1, 1], the model file's translation
entries, the validation of the source -> target generator, and the background of a translated volume."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.config import Invalid, to_dict
from pipeline.gan.base import Precision, adam
from pipeline.gan.schedules import linear_decay_schedulers

log = logging.getLogger(__name__)


def check_translation_config(cfg: Any) -> None:
    """The cross-key rules of a translation family's config: some steps, two different modalities."""
    if cfg.n_steps + cfg.n_steps_decay < 1:
        raise Invalid(None, "n_steps + n_steps_decay must be >= 1")
    if cfg.source == cfg.target:
        raise Invalid(None, f"source and target are both {cfg.source!r}")


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
                      "overlap": cfg.overlap, "tta": cfg.tta},
        "training": {"steps": steps, "n_train_subjects": model.meta.get("n_train_subjects"), "config": to_dict(cfg)},
    }


def validate_source_to_target(model: Any, data_dir: str | Path, out_dir: str | Path,
                              direction: str | None) -> dict[str, Any]:
    """PSNR (dB) and MAE inside the mask of the source -> target translation of the validation subjects that have
    both modalities (output clipped to [0, 1]); logged and returned - a quick check, not the evaluation stage (no
    test-time augmentation: it would cost 8x the time for a number that selects nothing)."""
    from pipeline.data.volumes import domain_volumes
    from pipeline.gan.checkpoint import load_checkpoint

    src = domain_volumes(data_dir, model.cfg.source, "val")  # read one subject at a time, below
    dst = domain_volumes(data_dir, model.cfg.target, "val")
    common = sorted(set(src.names) & set(dst.names))
    if not common:
        return {}
    blob = load_checkpoint(Path(out_dir) / "model.pt")
    gen = model.load_generator(blob, direction, model.device)
    psnr, mae = [], []
    for s in common:
        out = model.apply(gen, src[src.names.index(s)].image, blob, model.device, tta=False)
        truth = dst[dst.names.index(s)]
        err = (np.clip(out, 0.0, 1.0) - truth.image)[truth.mask]
        psnr.append(float(10 * np.log10(1.0 / max(float(np.mean(err**2)), 1e-12))))
        mae.append(float(np.mean(np.abs(err))))
    result = {"psnr_db": float(np.mean(psnr)), "mae": float(np.mean(mae)), "subjects": len(common)}
    log.info("validation of %s -> %s in the mask (%d subject(s), no TTA): PSNR %.2f dB, MAE %.4f", model.cfg.source,
             model.cfg.target, len(common), result["psnr_db"], result["mae"])
    return result


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
