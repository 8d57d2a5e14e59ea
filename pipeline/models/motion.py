"""Motion-artifact correction: DeblurGAN (Kupyn et al. 2018) on 2D slices (or 3D patches) of motion-corrupted scans.

A ResNet generator (`pipeline.nets.resnet_generator.ResnetGenerator`, CycleGAN's) with a global skip: it predicts
the residual that is added to the corrupted input, ``G(x) = clamp(x + R(x), -1, 1)``, so at initialisation (weights
~ N(0, 0.02)) it is nearly the identity and learns only the correction. A PatchGAN critic (MONAI's
`PatchDiscriminator`) judges the image alone, as in the paper. Loss: content ``lambda_content d(G(x), y)`` (`d`
L1 by default, or the mean squared error; the paper's VGG feature distance needs downloaded weights) plus an
optional image-gradient term ``lambda_grad d(grad G(x), grad y)`` (finite differences, our own) plus ``lambda_adv``
times the adversarial term of `pipeline.gan.losses` (the paper's WGAN-GP is replaced by least
squares by default, which trains stably on CPU in a few minutes; non-saturating, minimax and hinge are options).

Training pairs (`MotionPairs`, a pure function of (seed, step)): the same slice of a training subject's corrupted
and clean image. The corrupted images are the preprocess stage's `<modality>_motion` volumes and, for variety,
`pool_size` more corruptions per subject drawn at start-up from the same simulator
(`pipeline.imaging.motion`) with the severity the preprocess stage recorded, scaled per draw by a factor in
`severity_range` (a fresh corruption per step would cost ~0.2 s per sample for a 3D volume, several times a
training step; the pool costs the same once). Volumes live in an on-disk cache and are read crop by crop.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from pipeline.config import INT_CHOICE, Betas, Invalid, PrecisionMode, Section, to_dict
from pipeline.data.motion_sampler import MotionPairs, pool_corruptions
from pipeline.gan.base import Precision
from pipeline.gan.checkpoint import save_checkpoint
from pipeline.gan.losses import pixel_loss
from pipeline.models.contract import Family, Output, inference_settings, same_modality_io
from pipeline.models.translation import adam_with_linear_decay, crop_roi, place
from pipeline.nets.discriminators import patch_discriminator
from pipeline.nets.resnet_generator import build_generator, init_weights, size_multiple
from pipeline.nets.windows import as_batch, from_batch, round_up, sliding_window, with_context

log = logging.getLogger(__name__)

#: the preprocess stage's motion settings a pool draw reuses (normalisation.json, `<modality>.motion`)
SIM_KEYS = ("fraction", "max_translation_mm", "max_rotation_deg", "n_shots", "pe_axis", "centre_fraction", "ordering")


# ------------------------------------------------------------------------------------------ config
class MotionCorrectionConfig(Section):
    """Motion-artifact correction (DeblurGAN), trained on the preprocess stage's motion-corrupted inputs.

    The defaults are the demo's budget configuration (about 8 CPU-minutes of training on 2 cores)."""

    where: ClassVar[str] = "motion"

    modality: str = Field("T1w", description=(
        "The modality to correct: its corrupted input is the subjects.tsv column <modality>_motion (from "
        "preprocess.motion), its ground truth the clean <modality>."))
    spatial_dims: Annotated[Literal[2, 3], INT_CHOICE] = Field(2, description="2: slices across slice_axis; 3: patches.")
    slice_axis: Annotated[Literal[0, 1, 2], INT_CHOICE] = Field(2, description=(
        "The axis 2D slices are taken across (2: axial for RAS volumes; keep the phase-encode axis in-plane)."))
    context_slices: int = Field(0, ge=0, le=8, description=(
        "2D: the corrupted slices on either side of each slice as extra input channels (2.5D). Motion through the "
        "slice plane moves anatomy between slices, so part of a slice's ghosting comes from its neighbours."))
    patch_size: int = Field(0, ge=0, multiple_of=4, description=(
        "Side of the training crops in voxels (a multiple of 4); 0: whole slices (ghosts run across the whole "
        "field of view, so whole slices see all of them); also the inference window (0: the whole slice)."))
    batch_size: int = Field(8, ge=1, description="Corrupted/clean crop pairs per step.")
    flip: bool = Field(True, description="Random flips of the crops (the same for input and target).")
    pool_size: int = Field(6, ge=0, description=(
        "Extra corruptions per training subject drawn from the motion simulator at start-up (with the preprocess "
        "stage's recorded severity), besides the preprocess stage's own; 0: only the latter."))
    severity_range: tuple[float, float] = Field((0.5, 1.5), strict=False, description=(
        "Each pool draw scales the recorded fraction of moved shots and motion maxima by a factor drawn "
        "uniformly in [low, high] (a fraction is capped at 1)."))
    ngf: int = Field(16, ge=1, description="Filters of the generator's first layer (64 in the paper).")
    n_blocks: int = Field(6, ge=0, description="Residual blocks of the ResNet generator (9 in the paper).")
    ndf: int = Field(16, ge=1, description="Filters of the PatchGAN critic's first layer (64 in the paper).")
    d_layers: int = Field(3, ge=1, description="Layers of the PatchGAN critic (3 gives 70x70 patches in 2D).")
    gan_loss: Literal["lsgan", "nonsaturating", "minimax", "hinge"] = Field("lsgan", description=(
        "Adversarial loss (the paper used WGAN-GP; least squares is the stable CPU default)."))
    lambda_adv: float = Field(1.0, ge=0, description="Weight of the adversarial term (0: content loss only).")
    content_loss: Literal["l1", "mse"] = Field("l1", description=(
        "Pixel distance of the content term: l1 (as pix2pix) or mse (the conditional mean, what PSNR rewards; on "
        "the demo it gained less: validation +0.10 dB after 600 steps against +0.22 dB for l1 after 1500)."))
    lambda_content: float = Field(100.0, ge=0, description=(
        "Weight of the content term (100 in the paper; about 1000 for mse pulls as hard on errors of 0.05)."))
    lambda_grad: float = Field(50.0, ge=0, description=(
        "Weight of the same distance between the images' finite-difference gradients (edges; ghosts are edges)."))
    lr: float = Field(1e-3, gt=0, description="Adam learning rate of generator and critic.")
    betas: Betas = Field((0.5, 0.999), strict=False, description="Adam (beta1, beta2).")
    n_steps: int = Field(600, ge=0, description="Steps at the constant learning rate.")
    n_steps_decay: int = Field(900, ge=0, description="Steps of linear decay of the learning rate to 0 after n_steps.")
    log_every: int = Field(50, ge=1, description="Log the losses every this many steps.")
    checkpoint_every: int = Field(500, ge=1, description="Write a resumable checkpoint every this many steps.")
    precision: PrecisionMode = Field("auto", description=(
        "Arithmetic: auto (CUDA: bf16 or fp16 autocast; CPU: bf16 where supported), fp32, bf16, fp16."))
    deterministic: bool = Field(True, description="Deterministic kernels where PyTorch has them.")
    sw_batch_size: int = Field(8, ge=1, description="Inference: windows per forward pass.")
    overlap: float = Field(0.25, ge=0, lt=1, description="Inference: overlap of the sliding windows.")
    tta: bool = Field(False, description="Inference: average over the window's flips/transposes (8x the time).")

    @model_validator(mode="after")
    def _rules(self) -> MotionCorrectionConfig:
        if self.n_steps + self.n_steps_decay < 1:
            raise Invalid(None, "n_steps + n_steps_decay must be >= 1")
        if self.lambda_content == 0 and self.lambda_grad == 0 and self.lambda_adv == 0:
            raise Invalid(None, "lambda_content, lambda_grad and lambda_adv are all 0: the generator would learn nothing")
        if self.context_slices and self.spatial_dims != 2:
            raise Invalid("context_slices", "neighbouring slices as channels need spatial_dims 2")
        low, high = self.severity_range
        if not 0 <= low <= high:
            raise Invalid("severity_range", f"must be [low, high] with 0 <= low <= high, got {list(self.severity_range)}")
        return self


# ------------------------------------------------------------------------------------------ networks
class ResidualGenerator(nn.Module):
    """DeblurGAN's generator: a ResNet generator whose output is added to its input (the global skip). With
    ``in_channels`` 1 + 2 context (2.5D) the input is a slice and its neighbours, and the skip is the centre one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.body = build_generator(**kwargs)
        self.multiple = size_multiple(self.body)
        self.centre = int(kwargs.get("in_channels", 1)) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x[:, self.centre : self.centre + 1] + self.body(x), -1.0, 1.0)

    def start_as_identity(self) -> ResidualGenerator:
        """Zero the body's output convolution, so that the untrained generator returns its input exactly."""
        last = [m for m in self.body.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))][-1]
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)
        return self


def generator_kwargs(cfg: MotionCorrectionConfig) -> dict[str, Any]:
    """`ResidualGenerator` arguments (stored in the model file)."""
    kwargs: dict[str, Any] = {"kind": f"resnet_{cfg.n_blocks}blocks", "spatial_dims": cfg.spatial_dims, "ngf": cfg.ngf}
    if cfg.context_slices:
        kwargs["in_channels"] = 1 + 2 * cfg.context_slices
    return kwargs


def gradient_distance(a: torch.Tensor, b: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean distance (`kind`: l1 or mse) of the forward differences of `a` and `b` along every spatial axis."""
    total = a.new_zeros(())
    for axis in range(2, a.dim()):
        total = total + pixel_loss(torch.diff(a, dim=axis), torch.diff(b, dim=axis), kind)
    return total / (a.dim() - 2)


# ------------------------------------------------------------------------------------------ model
class MotionCorrection(Family):
    """DeblurGAN motion-artifact correction (a residual ResNet generator, a PatchGAN critic)."""

    name: ClassVar[str] = "motion"
    config_class: ClassVar[type] = MotionCorrectionConfig
    file_task: ClassVar[str] = "motion-correction"
    inference_keys: ClassVar[tuple[str, ...]] = ("sw_batch_size", "overlap", "tta")
    loss_names: ClassVar[tuple[str, ...]] = ("G_adv", "L1", "MSE", "grad", "G", "D", "d_real", "d_fake")

    def __init__(self, cfg: MotionCorrectionConfig, device: str | torch.device = "cpu",
                 precision: Precision | None = None, meta: dict[str, Any] | None = None,
                 roi_size: Sequence[int] | None = None) -> None:
        device = torch.device(device)
        super().__init__(device, precision or Precision(device, cfg.precision))
        self.cfg = cfg
        self.meta = dict(meta or {})
        self.g_kwargs = generator_kwargs(cfg)
        self.roi_size = crop_roi(self.name, cfg, roi_size)
        nets = {"G": init_weights(ResidualGenerator(**self.g_kwargs)).start_as_identity(),
                "D": patch_discriminator(cfg.spatial_dims, cfg.ndf, cfg.d_layers, norm="INSTANCE", bias=True)}
        self.networks, self.channels_last = place(nets, self.precision, cfg.spatial_dims)
        self.optimizers, self.schedulers = adam_with_linear_decay(self.networks, cfg)
        self.real: dict[str, torch.Tensor] = {}
        self.fake: torch.Tensor | None = None

    @property
    def total_steps(self) -> int:
        return self.cfg.n_steps + self.cfg.n_steps_decay

    # -- data -----------------------------------------------------------------------------------------
    @classmethod
    def prepare_data(cls, cfg: MotionCorrectionConfig, data_dir: str | Path, seed: int,
                     cache_dir: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
        """The paired (corrupted, clean) sampler of the training subjects, with the pool's corruptions, and the
        constructor arguments it implies (crop size, metadata)."""
        import time

        from pipeline.data.cache import VolumeCache
        from pipeline.data.volumes import domain_volumes, normalisation_method, recorded_normalisation

        column = f"{cfg.modality}_motion"
        clean_vols = domain_volumes(data_dir, cfg.modality, "train")
        try:
            bad_vols = domain_volumes(data_dir, column, "train")
        except ValueError as exc:
            raise ValueError(f"motion: {exc}; enable preprocess.motion for {cfg.modality} "
                             f"(preprocess.motion.modalities)") from None
        subjects = sorted(set(clean_vols.names) & set(bad_vols.names))
        if not subjects:
            raise ValueError(f"motion: no training subject has both {cfg.modality} and {column} in {data_dir}")
        recorded = recorded_normalisation(data_dir, subjects, cfg.modality)
        sim = recorded.get("motion")
        if cfg.pool_size and not sim:
            raise ValueError(f"motion: {data_dir}/{subjects[0]}/normalisation.json records no motion settings for "
                             f"{cfg.modality}; re-run preprocess, or set motion.pool_size: 0")
        cache = VolumeCache(cache_dir, prefix="motion-")
        try:
            started = time.perf_counter()
            clean, versions, masks = [], [], []
            for s in subjects:
                c = clean_vols[clean_vols.names.index(s)]
                v = bad_vols[bad_vols.names.index(s)]
                if v.image.shape != c.image.shape or not np.allclose(v.affine, c.affine, atol=1e-3):
                    raise ValueError(f"{s}: {column} is not on the grid of {cfg.modality}")
                pool = pool_corruptions(c.image, c.affine, sim, cfg.pool_size, cfg.severity_range, seed, s,
                                        cfg.modality) if cfg.pool_size else []
                clean.append(c.image)
                versions.append([v.image, *pool])
                masks.append(c.mask)
            sampler = MotionPairs(subjects, clean, versions, masks, cfg, seed, cache)
        except BaseException:
            cache.close()
            raise
        log.info("motion: %d training subject(s), %d pool corruption(s) each, prepared in %.1f s", len(subjects),
                 cfg.pool_size, time.perf_counter() - started)
        meta = {"n_train_subjects": len(subjects),
                "normalisation": {cfg.modality: normalisation_method(recorded)},
                "simulation": {k: sim[k] for k in SIM_KEYS if k in sim} if sim else {}}
        return sampler, {"meta": meta, "roi_size": [sampler.patch[a] for a in sampler.axes]}

    # -- the loop contract ----------------------------------------------------------------------------
    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        """``A`` (corrupted) and ``B`` (clean), values in [0, 1], mapped to [-1, 1]."""
        fmt = {"memory_format": torch.channels_last} if self.channels_last else {}
        self.real = {k: (batch[k].to(self.device).float() * 2.0 - 1.0).contiguous(**fmt) for k in ("A", "B")}

    def optimize_step(self, step: int) -> None:
        cfg, amp = self.cfg, self.precision
        real_a, real_b = self.real["A"], self.real["B"]
        losses: dict[str, torch.Tensor] = {}
        with amp.autocast():
            fake_b = self.networks["G"](real_a)

        fake32 = fake_b.float()
        losses["L1"] = pixel_loss(fake32, real_b, "l1")
        losses["MSE"] = pixel_loss(fake32, real_b, "mse")
        losses["grad"] = gradient_distance(fake32, real_b, cfg.content_loss)
        content = losses["MSE"] if cfg.content_loss == "mse" else losses["L1"]
        self.supervised_gan_step(cfg.lambda_content * content + cfg.lambda_grad * losses["grad"], fake_b, real_b,
                                 lambda image: self.networks["D"](image)[-1], cfg.lambda_adv, cfg.gan_loss, losses)
        self.fake = fake_b.detach()
        self._losses = {k: v.detach() for k, v in losses.items()}

    def visuals(self) -> dict[str, torch.Tensor]:
        """Corrupted input, clean target and correction, in [0, 1]."""
        items = {"corrupted": self.real.get("A"), "clean": self.real.get("B"), "corrected": self.fake}
        return {k: (v.float() + 1.0) / 2.0 for k, v in items.items() if v is not None}

    # -- export ---------------------------------------------------------------------------------------
    def model_file(self, steps: int) -> dict[str, Any]:
        """The self-describing model file: generator, modality, simulation it was trained on, inference settings."""
        cfg = self.cfg
        weights = {k: v.detach().to("cpu") for k, v in self.networks["G"].state_dict().items()}
        return {
            **self.model_file_header("deblurgan"),
            "generator": {"builder": "pipeline.models.motion.ResidualGenerator", "kwargs": copy.deepcopy(self.g_kwargs)},
            "state_dict": weights,
            "restoration": {"modality": cfg.modality, "input": f"{cfg.modality}_motion", "degradation": "motion",
                            "simulation": copy.deepcopy(self.meta.get("simulation", {})),
                            "spatial_dims": cfg.spatial_dims,
                            "slice_axis": cfg.slice_axis if cfg.spatial_dims == 2 else None,
                            "context_slices": cfg.context_slices},
            "normalisation": copy.deepcopy(self.meta.get("normalisation", {})),
            "inference": {"roi_size": list(self.roi_size), "whole_slices": cfg.patch_size == 0,
                          "sw_batch_size": cfg.sw_batch_size, "overlap": cfg.overlap, "tta": cfg.tta},
            "training": {"steps": steps, "n_train_subjects": self.meta.get("n_train_subjects"), "config": to_dict(cfg)},
        }

    def export(self, out_dir: Path) -> list[Path]:
        return [save_checkpoint(self.model_file(self.total_steps), Path(out_dir) / "model.pt")]

    def validate(self, data_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
        """PSNR (dB) inside the mask of the validation subjects' corrupted input and of its correction (a quick
        check, not the evaluation stage)."""
        from pipeline.data.volumes import domain_volumes
        from pipeline.gan.checkpoint import load_checkpoint

        try:
            bad = domain_volumes(data_dir, f"{self.cfg.modality}_motion", "val")
        except ValueError:
            return {}
        clean = domain_volumes(data_dir, self.cfg.modality, "val")
        common = sorted(set(bad.names) & set(clean.names))
        if not common:
            return {}
        blob = load_checkpoint(Path(out_dir) / "model.pt")
        gen = self.load_generator(blob, None, self.device)

        def psnr(x: np.ndarray, truth: Any) -> float:
            err = (np.clip(x, 0.0, 1.0) - truth.image)[truth.mask]
            return float(10 * np.log10(1.0 / max(float(np.mean(err**2)), 1e-12)))

        before, after = [], []
        for s in common:
            x, truth = bad[bad.names.index(s)].image, clean[clean.names.index(s)]
            before.append(psnr(x, truth))
            after.append(psnr(self.apply(gen, x, blob, self.device), truth))
        result = {"input_psnr_db": float(np.mean(before)), "psnr_db": float(np.mean(after)), "subjects": len(common)}
        log.info("validation (%d subject(s)) in the mask: corrupted input PSNR %.2f dB, corrected %.2f dB",
                 len(common), result["input_psnr_db"], result["psnr_db"])
        return result

    # -- the family contract ---------------------------------------------------------------------------
    @classmethod
    def outputs(cls, cfg: MotionCorrectionConfig) -> list[Output]:
        """The corrector, evaluated as a restoration (against the corrupted input)."""
        return [Output(cls.name, cls.name, "model.pt", "restoration", f"{cfg.modality}_motion", cfg.modality,
                       f"{cfg.modality}-motioncorrected")]

    @classmethod
    def build_generator(cls, kwargs: dict[str, Any]) -> nn.Module:
        return ResidualGenerator(**kwargs)

    @classmethod
    def io_modalities(cls, blob: dict[str, Any], direction: str | None) -> tuple[tuple[str, dict], tuple[str, dict]]:
        cls.direction(direction)
        return same_modality_io(blob, "restoration")

    @classmethod
    def apply(cls, generator: nn.Module, volume: np.ndarray, blob: dict[str, Any],
              device: str | torch.device = "cpu", **settings: Any) -> np.ndarray:
        """The corrected (x, y, z) volume (values in [0, 1] in, the same grid out): slices across the model's
        slice axis (or 3D patches) through the shared sliding window; whole slices when trained on them."""
        s = inference_settings(blob, **settings)
        info = blob["restoration"]
        dims = info["spatial_dims"]
        x = as_batch(volume, dims, info["slice_axis"])
        if dims == 2:  # with context: each slice and its neighbours as channels
            x = with_context(x, int(info.get("context_slices", 0)))
        multiple = size_multiple(generator)
        if s.get("whole_slices") and settings.get("roi_size") is None:
            roi = [round_up(n, multiple) for n in x.shape[2:]]
        else:
            roi = [int(r) for r in s["roi_size"]]

        def net(v: torch.Tensor) -> torch.Tensor:
            return generator(v * 2.0 - 1.0)

        out = sliding_window(x, net, roi, int(s.get("sw_batch_size", 8)), float(s.get("overlap", 0.25)),
                             torch.device(device), s.get("precision", "auto"), bool(s.get("tta")),
                             transpose=dims == 2 and roi[0] == roi[-1], multiple=multiple,
                             finish=lambda y: (y + 1.0) / 2.0)
        out = from_batch(out, dims, info["slice_axis"])
        if tuple(out.shape) != tuple(volume.shape):
            raise RuntimeError(f"output shape {tuple(out.shape)} != input shape {tuple(volume.shape)}")
        return out.numpy().astype(np.float32)
