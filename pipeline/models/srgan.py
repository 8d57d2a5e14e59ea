"""SRGAN (Ledig et al. 2017) for single-channel 2D slices or 3D patches.

Phase 1 (`pretrain_steps`): the SRResNet generator alone, pixel loss (L1 or MSE), Adam with a cosine
schedule. Phase 2 (`gan_steps`): adversarial fine-tuning from the SRResNet, ``pixel_weight * content +
adv_weight * J_G (+ fm_weight * discriminator feature matching)``, against a discriminator (MONAI
`PatchDiscriminator` or the paper's VGG-style one) trained with J_D. Both generators are exported:
`srresnet.pt` (end of phase 1) and `model.pt` (end of phase 2), since they are reported separately.
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

from pipeline.config import INT_CHOICE, Betas, Invalid, OddInt, PrecisionMode, Section, to_dict
from pipeline.gan.base import Precision, adam
from pipeline.gan.checkpoint import save_checkpoint
from pipeline.gan.ema import WeightAverage
from pipeline.gan.losses import d_loss, feature_matching_loss, g_loss, pixel_loss
from pipeline.gan.schedules import cosine_factor
from pipeline.imaging.geometry import hr_affine_from_lr
from pipeline.imaging.similarity import masked_psnr
from pipeline.models.contract import Family, Output, inference_settings
from pipeline.nets.discriminators import VGGStyleDiscriminator, patch_discriminator
from pipeline.nets.srresnet import SRResNet
from pipeline.nets.windows import as_batch, from_batch, sliding_window, with_context

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ config
class SRGANConfig(Section):
    """SRGAN super-resolution (stages 4-5): data, networks, the two training phases, inference.

    The upsampling factor and axes come from the data (the preprocess stage's `sr` section).
    """

    where: ClassVar[str] = "srgan"

    # data
    modality: str = Field("T1w", description=(
        "Modality to super-resolve; its LR input (`<modality>_lr`) is made by preprocess.sr."))
    spatial_dims: Annotated[Literal[2, 3], INT_CHOICE] = Field(2, description=(
        "2: in-plane slices along an axis that is not degraded (z for in-plane SR); 3: patches."))
    patch_size: int = Field(32, ge=0, description=(
        "HR side of the training crops in voxels (divisible by the scale); crop centres lie inside the "
        "foreground mask. 0: whole slices (2D) / volumes (3D). Whole slices let the network memorise its few "
        "training subjects (real corpus, 2 mm, leave-one-out: -0.67 dB against zero-filling with whole slices, "
        "+0.45 dB with 32-voxel crops, -0.08 dB with 64)."))
    batch_size: int = Field(8, ge=1, description="Crops per training step.")
    flip: bool = Field(True, description="Random flips of the training crops.")
    context_slices: int = Field(2, ge=0, description=(
        "2D: give the generator this many neighbouring LR slices on either side of each slice as extra input "
        "channels (2.5D; they show the through-plane structure; 0 is plain 2D). Ignored in 3D."))
    # generator (SRResNet + interpolation skip)
    channels: int = Field(64, ge=1, description="SRResNet feature width (64 in the paper).")
    n_blocks: int = Field(6, ge=0, description="SRResNet residual blocks (16 in the paper).")
    norm: Literal["batch", "instance", "none"] = Field("none", description=(
        "Normalisation in the residual blocks: batch (as in the paper), instance or none."))
    interp_skip: Literal["zerofill", "bicubic", "trilinear", "nearest", "none"] = Field("zerofill", description=(
        "Interpolation added to the generator's output, output = interp(LR) + net(LR), so the network learns "
        "only the residual: zerofill (k-space zero filling, exact for k-space-truncated inputs), bicubic, "
        "trilinear, nearest, or none (the paper's network)."))
    outer_kernel: OddInt = Field(9, ge=1, description=(
        "Kernel size of the generator's first and last convolution (9 in the paper; odd)."))
    upsampler: Literal["stages", "final"] = Field("final", description=(
        "Generator upsampling: stages (the paper: x2 sub-pixel stages, MONAI SubpixelUpsample, then the "
        "outer-kernel convolution at HR) or final (ESPCN-style: one sub-pixel convolution from the LR features "
        "to the output; no convolution at HR, several times cheaper)."))
    # discriminator (phase 2)
    discriminator: Literal["patch", "vgg"] = Field("patch", description=(
        "patch: MONAI PatchDiscriminator; vgg: the SRGAN paper's VGG-style discriminator."))
    d_channels: int = Field(32, ge=1, description="Discriminator width (channels of its first layer).")
    d_layers: int = Field(3, ge=1, description="Discriminator depth: strided layers (patch) or levels (vgg).")
    # training: phase 1 = SRResNet (pixel loss), phase 2 = adversarial fine-tuning
    pretrain_steps: int = Field(7200, ge=0, description=(
        "Phase 1: SRResNet steps with the pixel loss only; the result is exported as srresnet.pt (with "
        "validation subjects: the best of its checkpoints, see select_best)."))
    gan_steps: int = Field(250, ge=0, description=(
        "Phase 2: adversarial fine-tuning steps from the SRResNet; the result is exported as model.pt."))
    pixel_loss: Literal["l1", "mse"] = Field("mse", description="Content (pixel) loss: l1 or mse.")
    pixel_weight: float = Field(1.0, ge=0, description="Weight of the content loss.")
    adv_loss: Literal["nonsaturating", "minimax", "lsgan", "hinge"] = Field("nonsaturating", description=(
        "Adversarial objective on logits: nonsaturating (G minimises -log D(G(z))), minimax (G minimises "
        "log(1 - D(G(z)))), lsgan or hinge."))
    adv_weight: float = Field(1e-3, ge=0, description=(
        "Weight of the adversarial loss in phase 2 (1e-3 in the paper); 0 switches the discriminator off."))
    fm_weight: float = Field(0.0, ge=0, description=(
        "Weight of discriminator feature matching (L1 between D's features of real and generated images) in "
        "phase 2; 0: off."))
    lr: float = Field(8e-4, gt=0, description=(
        "Generator learning rate in phase 1 (Adam, cosine decay to lr * lr_min_ratio)."))
    warmup_steps: int = Field(200, ge=0, description=(
        "Phase 1 starts with the learning rate rising linearly from lr / warmup_steps to lr over this many "
        "steps (keeps the high demo learning rate stable; 0: no warmup)."))
    lr_gan: float = Field(5e-5, ge=0, description="Generator learning rate in phase 2 (cosine decay).")
    lr_d: float = Field(1e-4, ge=0, description="Discriminator learning rate (cosine decay over phase 2).")
    lr_min_ratio: float = Field(0.01, ge=0, description=(
        "Final learning rate of each cosine schedule, as a fraction of its initial value."))
    betas: Betas = Field((0.9, 0.999), strict=False, description="Adam betas.")
    ema: float = Field(0.0, ge=0, lt=1, description=(
        "Decay of an exponential moving average of the generator's weights (per phase; the first updates use a "
        "smaller decay, see `pipeline.gan.ema`); validation, selection and export use the average. 0: off, "
        "the weights themselves."))
    # loop
    log_every: int = Field(100, ge=1, description="Steps between log lines (and rows of history.csv).")
    checkpoint_every: int = Field(250, ge=1, description=(
        "Steps between checkpoints; a killed run restarts from the last one. Model selection scores the "
        "generator on the validation subjects at every checkpoint."))
    select_best: bool = Field(True, description=(
        "Model selection: export, for each phase, the checkpoint with the best validation PSNR (inside the "
        "mask) rather than the last; phase 2 starts from the selected SRResNet. Needs validation subjects "
        "(without them the last weights are exported, with a warning)."))
    patience: int = Field(4, ge=0, description=(
        "Early stopping: end a phase after this many validations in a row without a better validation PSNR "
        "(0: never stop early). With select_best only."))
    precision: PrecisionMode = Field("auto", description=(
        "auto: bf16 autocast on CUDA (fp16 + grad scaler where bf16 is missing) and on CPUs with native bf16 "
        "(AVX-512 BF16, AMX), else fp32; fp32, bf16 or fp16 force one (a CPU runs fp32 for fp16, and for bf16 "
        "without native support)."))
    deterministic: bool = Field(True, description=(
        "Deterministic kernels where PyTorch has them (exact resume on CPU; may be slower on CUDA)."))
    # inference (whole volumes)
    roi_size: int = Field(64, ge=1, description=(
        "Inference: sliding-window side in LR voxels (2D: slices larger than this are tiled)."))
    sw_batch_size: int = Field(16, ge=1, description=(
        "Inference: windows (2D: slices) per forward pass; bounds the memory used."))
    overlap: float = Field(0.25, ge=0, lt=1, description=(
        "Inference: overlap of neighbouring sliding windows (fraction of the window)."))
    tta: bool = Field(True, description=(
        "Inference: average the generator's residual over the flips (and in-plane transposes) of the input, "
        "undone on the output (self-ensemble; 8x the inference compute; on a real held-out 1 mm T1w +0.11 dB, "
        "on the demo with whole-slice training 21.36 vs 21.40 dB)."))
    data_consistency: bool = Field(True, description=(
        "Inference: correct the output so that it degrades exactly to its input, by the smallest change that does "
        "(`pipeline.imaging.degrade.data_consistency`: for kspace LR the output's central k-space band is replaced "
        "by the measured one; block means and bicubic: their pseudo-inverse), using the degradation the model file "
        "records (skipped, with a warning, where it records none). It only fixes what the input measured: on a "
        "real 1 mm T1w at x4 in-plane kspace it raised bicubic from 20.55 to 20.87 dB and zerofill + a smooth "
        "0.05 error from 20.06 to 21.04 dB, but zerofill + 0.05 white noise only from 19.84 to 19.90 dB (the "
        "1/16 of the noise inside the measured band)."))

    @model_validator(mode="after")
    def _rules(self) -> SRGANConfig:
        if self.pretrain_steps + self.gan_steps < 1:
            raise Invalid(None, "pretrain_steps + gan_steps must be >= 1")
        return self



def context_slices(cfg: SRGANConfig) -> int:
    """Neighbouring slices on either side given as input channels (2D only; 3D patches have their own)."""
    return cfg.context_slices if cfg.spatial_dims == 2 else 0


def generator_kwargs(cfg: SRGANConfig, model_factors: Sequence[int]) -> dict[str, Any]:
    """The SRResNet constructor arguments (stored in the model file)."""
    return {
        "spatial_dims": cfg.spatial_dims,
        "factors": [int(f) for f in model_factors],
        "in_channels": 1 + 2 * context_slices(cfg),
        "out_channels": 1,
        "channels": cfg.channels,
        "n_blocks": cfg.n_blocks,
        "norm": cfg.norm,
        "interp_skip": cfg.interp_skip,
        "outer_kernel": cfg.outer_kernel,
        "upsampler": cfg.upsampler,
    }


def build_discriminator(cfg: SRGANConfig) -> nn.Module:
    """MONAI's `PatchDiscriminator` with batch norm (``patch``) or the paper's VGG-style network (``vgg``)."""
    if cfg.discriminator == "patch":
        return patch_discriminator(cfg.spatial_dims, cfg.d_channels, cfg.d_layers, norm="BATCH")
    if cfg.discriminator == "vgg":
        return VGGStyleDiscriminator(cfg.spatial_dims, in_channels=1, channels=cfg.d_channels, levels=cfg.d_layers)
    raise ValueError(f"unknown discriminator {cfg.discriminator!r}; choose one of patch, vgg")


def build_generator(blob: dict[str, Any], device: str | torch.device = "cpu") -> SRResNet:
    """The generator of a model file (see `SRGAN.model_file`), weights loaded, in eval mode."""
    name = blob["generator"]["class"]
    if name != "SRResNet":
        raise ValueError(f"model file: unknown SR generator class {name!r} (expected SRResNet)")
    net = SRResNet(**blob["generator"]["kwargs"])
    net.load_state_dict(blob["state_dict"])
    return net.to(torch.device(device)).eval()


def super_resolve(
    lr: np.ndarray,
    generator: SRResNet,
    sr: dict[str, Any],
    device: str | torch.device = "cpu",
    roi_size: int = 64,
    sw_batch_size: int = 16,
    overlap: float = 0.25,
    precision: str = "auto",
    tta: bool = False,
) -> np.ndarray:
    """Super-resolve a whole (x, y, z) volume (normalised as in training) with an SRResNet.

    `sr` is the model file's ``sr`` entry (factors per volume axis, spatial_dims, slice_axis, context_slices).
    2D: every slice along the slice axis is a window (tiled if larger than `roi_size`), `sw_batch_size`
    slices per forward pass; with context, its neighbouring slices come along as channels (edges repeated).
    3D: MONAI `SlidingWindowInferer` windows of `roi_size` LR voxels per side,
    Gaussian-blended. The interpolation skip is computed on the whole volume, as the training sampler does.
    Memory is bounded by the ROI size and the window batch (plus the input and output volumes).
    `tta`: average the learnt residual over the 8 flips/transposes of a 2D window (8 flips of a 3D window),
    undone on the outputs (self-ensemble; 8x the compute).
    """
    device = torch.device(device)
    factors = [int(f) for f in sr["factors"]]
    two_d = sr["spatial_dims"] == 2
    slice_axis = sr.get("slice_axis")
    x = as_batch(lr, sr["spatial_dims"], slice_axis)  # (N, 1, *spatial)
    if two_d:  # (N, 1 + 2 context, *spatial): slice n with its neighbours n - context .. n + context
        x = with_context(x, int(sr.get("context_slices", 0)))
    model_factors = [f for a, f in enumerate(factors) if not two_d or a != slice_axis]
    can_transpose = two_d and model_factors[0] == model_factors[1]
    out = sliding_window(x, generator.residual, [int(roi_size)] * (x.dim() - 2), sw_batch_size, overlap, device,
                         precision, tta, transpose=can_transpose)
    with torch.inference_mode():
        skip = generator.skip(x.to(device))
        if skip is not None:
            out = out + skip.float().cpu()
    out = from_batch(out, sr["spatial_dims"], slice_axis)
    expected = tuple(n * f for n, f in zip(lr.shape, factors, strict=True))
    if tuple(out.shape) != expected:
        raise RuntimeError(f"output shape {tuple(out.shape)} != expected {expected}")
    return out.numpy().astype(np.float32)


class SRGAN(Family):
    """SRGAN super-resolution: SRResNet pretraining, then adversarial fine-tuning."""

    name: ClassVar[str] = "srgan"
    config_class: ClassVar[type] = SRGANConfig
    file_task: ClassVar[str] = "super-resolution"
    inference_keys: ClassVar[tuple[str, ...]] = ("roi_size", "sw_batch_size", "overlap", "tta", "data_consistency")
    loss_names: ClassVar[tuple[str, ...]] = ("pixel", "adv", "fm", "G", "D", "d_real", "d_fake")

    def __init__(
        self,
        cfg: SRGANConfig,
        factors: Sequence[int],
        slice_axis: int | None = None,
        device: str | torch.device = "cpu",
        precision: Precision | None = None,
        meta: dict[str, Any] | None = None,
        val_dir: str | Path | None = None,
    ) -> None:
        device = torch.device(device)
        super().__init__(device, precision or Precision(device, cfg.precision))
        self.cfg = cfg
        self.factors = [int(f) for f in factors]  # per volume axis (x, y, z)
        if cfg.spatial_dims == 2:
            if slice_axis is None or self.factors[slice_axis] != 1:
                raise ValueError(f"2D SRGAN needs a slice axis that is not upsampled (factors {self.factors})")
            self.model_factors = [f for a, f in enumerate(self.factors) if a != slice_axis]
        else:
            self.model_factors = list(self.factors)
        self.slice_axis = slice_axis if cfg.spatial_dims == 2 else None
        self.meta = dict(meta or {})
        self.g_kwargs = generator_kwargs(cfg, self.model_factors)
        G = SRResNet(**self.g_kwargs).to(self.device)
        D = build_discriminator(cfg).to(self.device)
        if self.precision.channels_last(cfg.spatial_dims):
            G = G.to(memory_format=torch.channels_last)
            D = D.to(memory_format=torch.channels_last)
        self.networks = {"G": G, "D": D}
        self.optimizers = {
            "G": adam(G.parameters(), lr=cfg.lr, betas=tuple(cfg.betas)),
            "D": adam(D.parameters(), lr=cfg.lr_d, betas=tuple(cfg.betas)),
        }
        P, N, r = cfg.pretrain_steps, cfg.gan_steps, cfg.lr_min_ratio
        gan_ratio = cfg.lr_gan / cfg.lr if cfg.lr > 0 else 0.0

        warmup = min(cfg.warmup_steps, P)

        def g_factor(step: int) -> float:
            if step < P:  # linear warmup, then cosine decay
                return cosine_factor(step, P, r) * (min(1.0, (step + 1) / warmup) if warmup else 1.0)
            return gan_ratio * cosine_factor(step - P, N, r)

        def d_factor(step: int) -> float:
            return cosine_factor(step - P, N, r)

        self.schedulers = {
            "G": torch.optim.lr_scheduler.LambdaLR(self.optimizers["G"], g_factor),
            "D": torch.optim.lr_scheduler.LambdaLR(self.optimizers["D"], d_factor),
        }
        self.pretrained: dict[str, torch.Tensor] | None = None
        self.batch: dict[str, torch.Tensor] = {}
        self.fake: torch.Tensor | None = None
        # model selection: per phase the best validation PSNR, its step and weights, validations since it
        self.val_dir = Path(val_dir) if val_dir is not None and cfg.select_best else None
        self._val_pairs: list[Any] | None = None
        self.selection: dict[str, dict[str, Any]] = {}
        self.milestones = (cfg.pretrain_steps,) if 0 < cfg.pretrain_steps < self.total_steps else ()
        self.average = WeightAverage(G, cfg.ema, warmup=True) if cfg.ema > 0 else None

    @property
    def total_steps(self) -> int:
        return self.cfg.pretrain_steps + self.cfg.gan_steps

    @property
    def uses_discriminator(self) -> bool:
        return self.cfg.adv_weight > 0 or self.cfg.fm_weight > 0

    # -- data -----------------------------------------------------------------------------------------
    @classmethod
    def prepare_data(cls, cfg: SRGANConfig, data_dir: str | Path, seed: int,
                     cache_dir: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
        """The training sampler and the constructor arguments it implies (factors, slice axis, metadata).

        The training subjects are read one at a time and their arrays cached on disk in a new folder under
        `cache_dir` (None: the system's temporary folder); `sampler.close()` deletes it.
        """
        from pipeline.data.cache import VolumeCache
        from pipeline.data.sr_sampler import SRPatchSampler
        from pipeline.data.volumes import (
            normalisation_method,
            recorded_normalisation,
            sr_pairs,
            training_resolution,
        )

        pairs = sr_pairs(data_dir, cfg.modality, "train")
        cache = VolumeCache(cache_dir, prefix="srgan-")
        try:
            sampler = SRPatchSampler(pairs, cfg.spatial_dims, cfg.patch_size, cfg.batch_size, seed,
                                     interp=cfg.interp_skip, flip=cfg.flip, context_slices=context_slices(cfg),
                                     cache=cache)
        except BaseException:
            cache.close()
            raise
        info = recorded_normalisation(data_dir, pairs.names, cfg.modality)
        lr_info = info.get("lr", {})
        meta: dict[str, Any] = {"modality": cfg.modality, "n_train_subjects": len(pairs),
                                "normalisation": normalisation_method(info),
                                "degradation": {k: lr_info[k] for k in ("method", "scale", "axes") if k in lr_info},
                                "resolution": training_resolution(data_dir, cfg.modality, pairs)}
        return sampler, {"factors": list(sampler.factors), "slice_axis": sampler.slice_axis, "meta": meta,
                         "val_dir": str(data_dir)}

    # -- the contract ---------------------------------------------------------------------------------
    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch
        if self.precision.channels_last(self.cfg.spatial_dims):
            self.batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}

    def forward(self) -> torch.Tensor:
        with self.precision.autocast():
            self.fake = self.networks["G"](self.batch["lr"], self.batch.get("skip"))
        return self.fake

    def optimize_step(self, step: int) -> None:
        cfg, D = self.cfg, self.networks["D"]
        adversarial = step >= cfg.pretrain_steps
        if step == cfg.pretrain_steps:
            self._end_pretraining(step)
        fake = self.forward()
        hr = self.batch["hr"]
        losses: dict[str, torch.Tensor] = {}

        # generator step, discriminator frozen
        opt_g = self.optimizers["G"]
        opt_g.zero_grad(set_to_none=True)
        with self.frozen("D"):
            total = cfg.pixel_weight * pixel_loss(fake, hr, cfg.pixel_loss)
            losses["pixel"] = total.detach() / max(cfg.pixel_weight, 1e-12)
            if adversarial and self.uses_discriminator:
                with self.precision.autocast():
                    feats_fake = D(fake)
                if cfg.adv_weight > 0:
                    losses["adv"] = g_loss(feats_fake[-1], cfg.adv_loss)
                    total = total + cfg.adv_weight * losses["adv"]
                if cfg.fm_weight > 0:
                    with torch.no_grad(), self.precision.autocast():
                        feats_real = D(hr)
                    losses["fm"] = feature_matching_loss(feats_real, feats_fake)
                    total = total + cfg.fm_weight * losses["fm"]
            losses["G"] = total
            self.precision.backward(total)
            self.precision.step(opt_g)
        if self.average is not None:
            self.average.update(self.networks["G"])

        # discriminator step, generator frozen and its output detached
        if adversarial and self.uses_discriminator:
            opt_d = self.optimizers["D"]
            opt_d.zero_grad(set_to_none=True)
            with self.frozen("G"):
                with self.precision.autocast():
                    real_logits = D(hr)[-1]
                    fake_logits = D(fake.detach())[-1]
                loss_d = d_loss(real_logits, fake_logits, cfg.adv_loss)
                self.precision.backward(loss_d)
                self.precision.step(opt_d)
            losses["D"] = loss_d
            losses["d_real"] = real_logits.detach().float().mean()
            losses["d_fake"] = fake_logits.detach().float().mean()
        self._losses = {k: v.detach() for k, v in losses.items()}

    def _end_pretraining(self, step: int) -> None:
        """Keep the SRResNet (the phase-1 generator: the selected one, if any) and give the adversarial phase a
        fresh optimizer state, starting from it."""
        best = self.selection.get("srresnet")
        if best is not None and (best["step"] != step or self.average is not None):
            self.networks["G"].load_state_dict(best["state"])
            log.info("step %d: phase 2 starts from the SRResNet selected at step %d (validation PSNR %.2f dB)",
                     step, best["step"], best["psnr"])
        elif self.average is not None:
            self.networks["G"].load_state_dict(self.average.weights)
        if self.average is not None:
            self.average.reset(self.networks["G"])
        self.pretrained = {k: v.detach().to("cpu", copy=True) for k, v in self.networks["G"].state_dict().items()}
        self.optimizers["G"].state.clear()
        if self.cfg.gan_steps:
            log.info("step %d: pretraining done; adversarial phase for %d steps", step, self.cfg.gan_steps)

    def visuals(self) -> dict[str, torch.Tensor]:
        out = {"lr": self.batch.get("lr"), "hr": self.batch.get("hr"), "sr": self.fake}
        if "skip" in self.batch:
            out["interp"] = self.batch["skip"]
        return {k: v.detach() for k, v in out.items() if v is not None}

    def extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"selection": self.selection}
        if self.pretrained is not None:
            state["pretrained"] = self.pretrained
        if self.average is not None:
            state["average"] = self.average.state_dict()
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.pretrained = state.get("pretrained")
        self.selection = state.get("selection", {})
        if self.average is not None and "average" in state:
            self.average.load_state_dict(state["average"], self.device)

    def current_generator(self) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        """The generator that is validated and exported now, in eval mode, and its weights: the weight average
        (`ema`), else the trained network itself (under DDP its module)."""
        G = self.networks["G"]
        G = getattr(G, "module", G)
        if self.average is None:
            return G.eval(), G.state_dict()
        net = copy.deepcopy(G)
        net.load_state_dict(self.average.weights)
        return net.eval(), self.average.weights

    # -- model selection ------------------------------------------------------------------------------
    def _validation_pairs(self) -> list[Any]:
        """The validation subjects' SR pairs (read once, kept in memory), or [] without any."""
        if self._val_pairs is None:
            from pipeline.data.volumes import sr_pairs

            try:
                self._val_pairs = list(sr_pairs(self.val_dir, self.cfg.modality, "val")) if self.val_dir else []
            except ValueError:
                self._val_pairs = []
            if self.val_dir is not None and not self._val_pairs:
                log.warning("no validation subject with %s: no model selection, the last weights are exported",
                            self.cfg.modality)
        return self._val_pairs

    def _inference_blob(self) -> dict[str, Any]:
        """What `apply` reads from a model file, for the current generator."""
        return {"sr": self._sr_entry(), "degradation": self.meta.get("degradation", {}),
                "inference": {"roi_size": self.cfg.roi_size, "sw_batch_size": self.cfg.sw_batch_size,
                              "overlap": self.cfg.overlap, "tta": False}}

    def validation_psnr(self, generator: nn.Module, pairs: Sequence[Any]) -> float:
        """Mean PSNR (dB, inside the mask, output clipped to [0, 1]) of `generator` on `pairs`."""
        blob = self._inference_blob()
        return float(np.mean([masked_psnr(self.apply(generator, p.lr, blob, self.device), p.hr, p.mask) for p in pairs]))

    def validation_step(self, step: int) -> int | None:
        """Score the generator on the validation subjects; keep the best of each phase; end a phase early after
        `patience` validations without improvement (phase 1 continues with phase 2, phase 2 ends training)."""
        P = self.cfg.pretrain_steps
        phase = "srresnet" if step <= P else "srgan"
        pairs = self._validation_pairs()
        if not pairs or (phase == "srresnet" and P == 0):
            return None
        G, weights = self.current_generator()
        try:  # under DDP the network is wrapped: score the module itself (every rank the same)
            score = self.validation_psnr(G, pairs)
        finally:
            self.networks["G"].train(True)
        best = self.selection.get(phase)
        if best is None or score > best["psnr"]:
            best = {"psnr": score, "step": step, "stale": 0,
                    "state": {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}}
            self.selection[phase] = best
        else:
            best["stale"] += 1
        log.info("step %d: validation PSNR %.2f dB (%s; best %.2f dB at step %d)", step, score, phase,
                 best["psnr"], best["step"])
        end = P if phase == "srresnet" else self.total_steps
        if self.cfg.patience and best["stale"] >= self.cfg.patience and step < end:
            log.info("step %d: no better validation PSNR in %d validations: %s ends early (continuing at step "
                     "%d)", step, best["stale"], phase, end)
            return end
        return None

    # -- export ---------------------------------------------------------------------------------------
    def _sr_entry(self) -> dict[str, Any]:
        return {
            "scale": max(self.factors),
            "factors": list(self.factors),
            "axes": [a for a, f in enumerate(self.factors) if f > 1],
            "spatial_dims": self.cfg.spatial_dims,
            "slice_axis": self.slice_axis,
            "context_slices": context_slices(self.cfg),
            "interp_skip": self.cfg.interp_skip,
        }

    def model_file(self, kind: str, state: dict[str, torch.Tensor], steps: int) -> dict[str, Any]:
        """The self-describing model file: everything inference needs, loadable with weights_only=True."""
        return {
            **self.model_file_header(kind),
            "generator": {"class": "SRResNet", "kwargs": copy.deepcopy(self.g_kwargs)},
            "state_dict": {k: v.detach().to("cpu") for k, v in state.items()},
            "sr": self._sr_entry(),
            "modality": self.meta.get("modality", self.cfg.modality),
            "normalisation": self.meta.get("normalisation", {"method": "unknown"}),
            "degradation": self.meta.get("degradation", {}),
            # voxel sizes (mm per axis) of the training pairs, checked by infer; absent in older files
            **({"resolution": copy.deepcopy(self.meta["resolution"])} if self.meta.get("resolution") else {}),
            "inference": {"roi_size": self.cfg.roi_size, "sw_batch_size": self.cfg.sw_batch_size,
                          "overlap": self.cfg.overlap, "tta": self.cfg.tta},
            "training": {"steps": steps, "pretrain_steps": self.cfg.pretrain_steps,
                         "gan_steps": self.cfg.gan_steps, "config": to_dict(self.cfg)},
        }

    # -- the family contract ---------------------------------------------------------------------------
    @classmethod
    def outputs(cls, cfg: SRGANConfig) -> list[Output]:
        """The SRResNet (end of phase 1) and the SRGAN (end of phase 2), reported side by side."""
        return [Output(name, cls.name, file, "sr", f"{cfg.modality}_lr", cfg.modality, "sr")
                for name, file in (("srresnet", "srresnet.pt"), ("srgan", "model.pt"))]

    @classmethod
    def load_generator(cls, blob: dict[str, Any], direction: str | None, device: str | torch.device) -> nn.Module:
        return build_generator(blob, device)

    @classmethod
    def io_modalities(cls, blob: dict[str, Any], direction: str | None) -> tuple[tuple[str, dict], tuple[str, dict]]:
        modality, norm = blob.get("modality", ""), blob.get("normalisation", {})
        return (modality, norm), (modality, norm)

    @classmethod
    def apply(cls, generator: nn.Module, volume: np.ndarray, blob: dict[str, Any],
              device: str | torch.device = "cpu", **settings: Any) -> np.ndarray:
        """`super_resolve` with the model file's inference settings (overridden by the non-None `settings`), then,
        with `data_consistency` (default: on), corrected to degrade exactly to `volume` by the recorded degradation."""
        from pipeline.imaging.degrade import AXES, DEGRADE_METHODS, data_consistency

        s = inference_settings(blob, **settings)
        out = super_resolve(volume, generator, blob["sr"], device, roi_size=s.get("roi_size", 64),
                            sw_batch_size=s.get("sw_batch_size", 16), overlap=s.get("overlap", 0.25),
                            precision=s.get("precision", "auto"), tta=s.get("tta", False))
        if not s.get("data_consistency", True):
            return out
        degradation = blob.get("degradation") or {}
        method, factors = degradation.get("method"), [int(f) for f in blob["sr"]["factors"]]
        axes = tuple(a for a, f in enumerate(factors) if f > 1)
        recorded = degradation.get("axes", axes)
        recorded = AXES.get(recorded) if isinstance(recorded, str) else tuple(int(a) for a in recorded)
        if method not in DEGRADE_METHODS:
            log.warning("data consistency skipped: the model file records no known degradation (%r)", method)
        elif not axes or len({factors[a] for a in axes}) != 1 or recorded != axes \
                or int(degradation.get("scale", factors[axes[0]])) != factors[axes[0]]:
            log.warning("data consistency skipped: the model's factors %s do not match its recorded degradation %s",
                        factors, degradation)
        else:
            out = data_consistency(out, volume, factors[axes[0]], method, axes)
        return out

    @classmethod
    def output_affine(cls, affine: np.ndarray, blob: dict[str, Any]) -> np.ndarray:
        """The HR grid the LR input came from (`pipeline.imaging.degrade.lr_affine` inverted)."""
        return hr_affine_from_lr(affine, blob["sr"]["factors"])

    def validate(self, data_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
        """PSNR (dB, inside the mask, output clipped to [0, 1]) on the validation subjects of the exported
        generators and of the interpolation baselines (zero-filled k-space where it applies, cubic); logged and
        returned, with a warning naming each exported generator that scores below the strongest baseline (a
        quick check, not the evaluation)."""
        from pipeline.data.volumes import sr_pairs
        from pipeline.gan.checkpoint import load_checkpoint
        from pipeline.imaging.degrade import upsample

        try:
            pairs = sr_pairs(data_dir, self.cfg.modality, "val")
        except ValueError:
            return {}
        generators = {}
        for name in ("srresnet", "model"):
            blob = load_checkpoint(Path(out_dir) / f"{name}.pt")
            key = "srgan" if name == "model" and blob["kind"] == "srgan" else name
            generators[key] = (build_generator(blob, self.device), blob)
        method = self.meta.get("degradation", {}).get("method")
        baselines = ["zerofill", "bicubic"] if method == "kspace" else ["bicubic"]
        axes = tuple(a for a, f in enumerate(self.factors) if f > 1)
        vals: dict[str, list[float]] = {}
        for p in pairs:  # one subject in memory at a time
            for b in baselines:
                vals.setdefault(b, []).append(masked_psnr(upsample(p.lr, max(self.factors), b, axes), p.hr, p.mask))
            for key, (gen, blob) in generators.items():
                vals.setdefault(key, []).append(masked_psnr(self.apply(gen, p.lr, blob, self.device), p.hr, p.mask))
        scores = {k: float(np.mean(v)) for k, v in vals.items()}
        baseline = max(baselines, key=lambda b: scores[b])
        losing = [k for k in generators if scores[k] < scores[baseline]]
        log.info("validation PSNR in the mask (%d subject(s)): %s", len(pairs),
                 ", ".join(f"{k} {v:.2f} dB" for k, v in scores.items()))
        for k in losing:
            log.warning("%s scores %.2f dB on the validation subject(s), below %s (%.2f dB): it does not beat "
                        "interpolation on data it was not trained on; do not use it in place of %s", k, scores[k],
                        baseline, scores[baseline], baseline)
        selected = {phase: sel["step"] for phase, sel in self.selection.items()}
        return {"psnr_db": scores, "subjects": len(pairs), "baseline": baseline, "losing": losing,
                "selected_steps": selected}

    def export(self, out_dir: Path) -> list[Path]:
        """srresnet.pt (phase 1) and model.pt (phase 2), each the selected checkpoint when validation ran."""
        out_dir = Path(out_dir)
        cfg = self.cfg
        final, final_steps = self.current_generator()[1], self.total_steps
        if "srgan" in self.selection:
            final, final_steps = self.selection["srgan"]["state"], self.selection["srgan"]["step"]
        if self.pretrained is None:  # no adversarial phase ran (gan_steps == 0)
            log.warning("gan_steps is 0: model.pt is the SRResNet (no adversarial fine-tuning)")
            if "srresnet" in self.selection:
                final, final_steps = self.selection["srresnet"]["state"], self.selection["srresnet"]["step"]
            pretrained, pretrained_steps, kind = final, final_steps, "srresnet"
        else:
            pretrained, kind = self.pretrained, "srgan"
            pretrained_steps = self.selection.get("srresnet", {}).get("step", cfg.pretrain_steps)
            if cfg.pretrain_steps == 0:
                log.warning("pretrain_steps is 0: srresnet.pt holds the untrained generator (interpolation only)")
        for phase, sel in self.selection.items():
            log.info("%s: exporting the weights of step %d (validation PSNR %.2f dB)", phase, sel["step"], sel["psnr"])
        paths = [
            save_checkpoint(self.model_file("srresnet", pretrained, pretrained_steps), out_dir / "srresnet.pt"),
            save_checkpoint(self.model_file(kind, final, final_steps), out_dir / "model.pt"),
        ]
        return paths
