"""Missing-slice inpainting (family ``inpaint``): a 2.5D U-Net generator fills deleted slices from their
neighbours, trained with a pixel loss (`pixel_loss`: mse or l1) + (optionally, `lambda_adv` > 0) the adversarial
loss of a conditional PatchGAN (a context encoder, Pathak et al. 2016, in the pix2pix setting). The default is the
pixel loss only: on the demo's noisy slices the adversarial term makes the generator add noise-like texture, which
costs PSNR inside the gaps.

The generator sees a window of ``2 context + 1`` consecutive slices around the slice to fill: the slices with their
unmeasured voxels set to 0, one "measured" mask channel per slice, and the interpolation across the gap of the
centre slice (`base`: linear or cubic; ``auto`` takes the one that fills the training volumes' own deleted slices
better). It predicts the centre slice as that interpolation plus a learned residual; only the unmeasured
voxels are replaced, so measured voxels pass through bit for bit. Training deletes random runs of 1-3 slices (and,
as an option, boxes) on the fly from the training volumes: the sampler is a pure function of (seed, step).

Inputs mark unmeasured voxels with NaN (`pipeline.imaging.gaps`: the preprocess stage's `<modality>_gaps.nii.gz`,
or ingestion of a DICOM series with missing slices); `apply` fills exactly those.
"""

from __future__ import annotations

import copy
import functools
import logging
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from pipeline.config import Betas, Invalid, PrecisionMode, Section, to_dict
from pipeline.data.gap_sampler import MULTIPLE, GapSampler, choose_base, fill_slices, in_channels, self_check
from pipeline.gan.base import Precision
from pipeline.gan.checkpoint import save_checkpoint
from pipeline.gan.losses import pixel_loss
from pipeline.imaging.gaps import Z, interpolate, unknown_mask
from pipeline.models.contract import Family, Output, inference_settings, same_modality_io
from pipeline.models.translation import adam_with_linear_decay, place
from pipeline.nets.discriminators import patch_discriminator

log = logging.getLogger(__name__)



# ------------------------------------------------------------------------------------------ config
class InpaintConfig(Section):
    """Missing-slice inpainting (stages 4-5): a 2.5D U-Net fills deleted slices from their neighbours.

    The defaults are the demo's budget configuration (about 11 minutes of training on 2 CPU cores).
    """

    where: ClassVar[str] = "inpaint"

    modality: str = Field("T1w", description=(
        "The modality to fill; its input is the subjects.tsv column <modality>_gaps (preprocess.gaps)."))
    context: int = Field(4, ge=1, le=8, description=(
        "Slices on each side of the slice to fill that the generator sees (window of 2 context + 1 slices; 4 "
        "rather than 3 gave the demo +0.29 / +0.17 dB for 1- / 3-slice gaps with the mse loss)."))
    run_lengths: list[Annotated[int, Field(ge=1, le=16)]] = Field(default_factory=lambda: [1, 2, 3], min_length=1, description=(
        "Lengths of the runs of slices deleted on the fly for training (drawn uniformly)."))
    base: Literal["auto", "linear", "cubic"] = Field("auto", description=(
        "The interpolation across the gap that the generator's residual starts from (and sees as an input channel). "
        "auto: linear or cubic, whichever fills the training subjects' own deleted slices better, recorded in the "
        "model file (noisy slices favour linear, which averages the noise: the demo; clean ones cubic, which "
        "follows the anatomy: the real corpus, where a linear base lost 1.8 dB to cubic on 1-slice gaps)."))
    extra_run_prob: float = Field(0.1, ge=0, le=1, description=(
        "Probability that a second run is deleted somewhere else in the window (gaps close together)."))
    box_prob: float = Field(0.0, ge=0, le=1, description=(
        "Probability that a training sample deletes a random box of the run's slices instead of whole slices "
        "(to fill regions as well; 0: whole slices only)."))
    patch_size: int = Field(0, ge=0, multiple_of=MULTIPLE, description=(
        "Side of the in-plane training crops in voxels (a multiple of 8); 0 (the default): whole slices, as "
        "inference fills them (demo, 1500 steps: crops of 64 filled 1-slice gaps 0.6 dB worse than whole slices)."))
    batch_size: int = Field(8, ge=1, description="Crops per step.")
    flip: bool = Field(True, description="Random left-right flips of the training crops.")
    augment: bool = Field(True, description=(
        "Random in-plane rotations (up to 10 deg), zooms and intensity gains (up to 10%) of the training windows, "
        "against memorising the training subjects' anatomy."))
    ngf: int = Field(24, ge=1, description="Filters of the U-Net's first level (widths ngf, 2, 4, 8 ngf).")
    num_res_units: int = Field(1, ge=0, description="Residual units per level of the U-Net (MONAI UNet).")
    ndf: int = Field(16, ge=1, description="Filters of the PatchGAN discriminator's first layer.")
    d_layers: int = Field(2, ge=1, description="Layers of the PatchGAN discriminator.")
    gan_loss: Literal["nonsaturating", "lsgan", "minimax", "hinge"] = Field("nonsaturating", description=(
        "Adversarial loss of the conditional discriminator (pipeline.gan.losses)."))
    lambda_adv: float = Field(0.0, ge=0, description=(
        "Weight of the adversarial term of the conditional PatchGAN (0, the default: the pixel loss only, the "
        "discriminator is not trained). On the demo's noisy slices even 0.05 makes the generator add noise-like "
        "texture: 0.5 dB below linear interpolation inside the gaps, against +0.3 dB at 0 (2500 steps)."))
    lambda_l1: float = Field(100.0, ge=0, description="Weight of the pixel loss over the deleted voxels.")
    pixel_loss: Literal["l1", "mse"] = Field("mse", description=(
        "The pixel loss over the deleted voxels: mse (mean squared error, whose minimiser is the conditional mean "
        "of the slice given its neighbours, what PSNR rewards; the demo: +0.07 / +0.11 dB for 1- / 3-slice gaps "
        "over l1) or l1 (mean absolute error: the conditional median)."))
    lr: float = Field(1e-3, gt=0, description="Adam learning rate of generator and discriminator.")
    betas: Betas = Field((0.5, 0.999), strict=False, description="Adam (beta1, beta2).")
    select_best: bool = Field(True, description=(
        "Export the checkpoint (every checkpoint_every steps) with the best validation PSNR inside the deleted "
        "slices, not the last: the U-Net memorises its training subjects, so more steps can score worse (demo: "
        "5000 steps 1 dB below 2500). Without a validation subject the last weights are exported."))
    n_steps: int = Field(1000, ge=0, description="Steps at the constant learning rate.")
    n_steps_decay: int = Field(1500, ge=0, description="Steps of linear decay of the learning rate to 0.")
    log_every: int = Field(50, ge=1, description="Log the losses every this many steps.")
    checkpoint_every: int = Field(500, ge=1, description="Write a resumable checkpoint every this many steps.")
    precision: PrecisionMode = Field("auto", description=(
        "auto: bf16 on CPUs with native bf16 and on CUDA, else fp32; or force fp32 / bf16 / fp16."))
    deterministic: bool = Field(True, description="Deterministic algorithms (exact resume and reruns).")
    sw_batch_size: int = Field(16, ge=1, description="Inference: slices filled per forward pass.")
    tta: bool = Field(True, description=(
        "Inference: average the fills of the window and of its left-right flip (the flip training augments with; "
        "2x the time of the few filled slices)."))
    self_check: bool = Field(True, description=(
        "Inference: before filling, hide a few runs of the scan's own measured slices, fill them with the model and "
        "with linear and cubic interpolation, and fill the real gaps with the better interpolation when the model is "
        "worse slice by slice (one-sided Wilcoxon, p < 0.05; logged), so that a model trained on other data that "
        "loses clearly is caught (a demo-trained model lost 1.3-1.9 dB to cubic on the real corpus)."))

    @model_validator(mode="after")
    def _rules(self) -> InpaintConfig:
        if self.n_steps + self.n_steps_decay < 1:
            raise Invalid(None, "n_steps + n_steps_decay must be >= 1")
        if self.lambda_adv == 0 and self.lambda_l1 == 0:
            raise Invalid(None, "lambda_adv and lambda_l1 are both 0: the generator would learn nothing")
        if max(self.run_lengths) > 2 * self.context + 1:
            raise Invalid("run_lengths", f"runs longer than the window of 2 context + 1 = {2 * self.context + 1} "
                                         f"slices cannot be learnt")
        return self


# ------------------------------------------------------------------------------------------ networks
class InpaintGenerator(nn.Module):
    """MONAI's 2D U-Net on the window's channels; output = the centre slice's interpolation (the last channel) +
    ``gate`` x the U-Net's residual. The gate (one learnt scalar, from 0) makes training start at the interpolation
    itself: on the real corpus (2 training subjects) an ungated residual ended below cubic interpolation (-0.21 dB)
    and the gated one above it (+0.37 dB). Model files without it (``gated`` False) add the residual as is."""

    def __init__(self, context: int, ngf: int, num_res_units: int, gated: bool = False) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        self.unet = UNet(spatial_dims=2, in_channels=in_channels(context), out_channels=1,
                         channels=(ngf, 2 * ngf, 4 * ngf, 8 * ngf), strides=(2, 2, 2),
                         num_res_units=num_res_units, norm="INSTANCE")
        self.gate = nn.Parameter(torch.zeros(1)) if gated else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.unet(x)
        return x[:, -1:] + (residual if self.gate is None else self.gate * residual)


def _mse(output: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    return float(np.mean((np.clip(output, 0, 1) - truth)[region] ** 2))


def _psnr(mses: list[float]) -> float:
    """PSNR (dB, data range 1) of the mean of per-subject mean squared errors."""
    return float(10 * np.log10(1.0 / max(float(np.mean(mses)), 1e-12)))


def generator_kwargs(cfg: InpaintConfig) -> dict[str, Any]:
    return {"context": cfg.context, "ngf": cfg.ngf, "num_res_units": cfg.num_res_units, "gated": True}


# ------------------------------------------------------------------------------------------ model
class Inpaint(Family):
    """Missing-slice inpainting: a 2.5D U-Net generator and a conditional PatchGAN discriminator."""

    name: ClassVar[str] = "inpaint"
    config_class: ClassVar[type] = InpaintConfig
    file_task: ClassVar[str] = "inpainting"
    inference_keys: ClassVar[tuple[str, ...]] = ("sw_batch_size", "tta", "self_check")
    reports_outcome: ClassVar[bool] = True
    loss_names: ClassVar[tuple[str, ...]] = ("G_adv", "L1", "MSE", "G", "D", "d_real", "d_fake")

    def __init__(self, cfg: InpaintConfig, device: str | torch.device = "cpu", precision: Precision | None = None,
                 meta: dict[str, Any] | None = None, val_dir: str | Path | None = None) -> None:
        device = torch.device(device)
        super().__init__(device, precision or Precision(device, cfg.precision))
        self.cfg = cfg
        self.meta = dict(meta or {})
        self.g_kwargs = generator_kwargs(cfg)
        #: the interpolation the residual starts from (``auto`` resolved by `prepare_data`)
        self.base = self.meta.get("base", "linear" if cfg.base == "auto" else cfg.base)
        nets = {"G": InpaintGenerator(**self.g_kwargs),
                "D": patch_discriminator(2, cfg.ndf, cfg.d_layers, norm="INSTANCE", bias=True, in_channels=2)}
        self.networks, self.channels_last = place(nets, self.precision, 2)
        self.optimizers, self.schedulers = adam_with_linear_decay(self.networks, cfg)
        self.real: dict[str, torch.Tensor] = {}
        self.fake: torch.Tensor | None = None
        #: checkpoint selection: the validation data folder (None: off), its cases (read once), the best so far
        self.val_dir = Path(val_dir) if val_dir is not None and cfg.select_best else None
        self._val_cases: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self.best: dict[str, Any] | None = None  # {"psnr", "step", "model_file"}

    @property
    def total_steps(self) -> int:
        return self.cfg.n_steps + self.cfg.n_steps_decay

    @classmethod
    def prepare_data(cls, cfg: InpaintConfig, data_dir: str | Path, seed: int,
                     cache_dir: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
        """The on-the-fly gap sampler of the training volumes and the metadata the model file records."""
        from pipeline.data.volumes import domain_volumes
        from pipeline.models.translation import cached_sampler, training_metadata

        vols = domain_volumes(data_dir, cfg.modality, "train")
        base = cfg.base
        if base == "auto":
            base, psnr = choose_base(vols, cfg.run_lengths, seed)
            log.info("base interpolation: %s (the training subjects' deleted slices: %s)", base,
                     ", ".join(f"{m} {v:.2f} dB" for m, v in psnr.items()))
        sampler = cached_sampler(cache_dir, "inpaint-", lambda cache: GapSampler(vols, cfg, seed, cache, base))
        meta = {**training_metadata(data_dir, sampler.subjects, cfg, {cfg.modality: vols}), "base": base}
        return sampler, {"meta": meta, "val_dir": str(data_dir)}

    def _fmt(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.device).float()
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last else t

    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        self.real = {k: self._fmt(v) for k, v in batch.items()}

    def discriminate(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Logits of the conditional discriminator: the slice given its interpolation (the last input channel)."""
        return self.networks["D"](torch.cat([x[:, -1:], image], dim=1))[-1]

    def optimize_step(self, step: int) -> None:
        cfg, amp = self.cfg, self.precision
        x, truth, unknown = self.real["x"], self.real["truth"], self.real["unknown"]
        losses: dict[str, torch.Tensor] = {}
        with amp.autocast():
            pred = self.networks["G"](x)
        pred = pred.float()
        fake = torch.where(unknown > 0.5, pred, truth)

        pixel = losses[cfg.pixel_loss.upper()] = pixel_loss(pred, truth, cfg.pixel_loss, mask=unknown)
        self.supervised_gan_step(cfg.lambda_l1 * pixel, fake, truth,
                                 lambda image: self.discriminate(x, image), cfg.lambda_adv, cfg.gan_loss, losses)
        self.fake = fake.detach()
        self._losses = {k: v.detach() for k, v in losses.items()}

    def visuals(self) -> dict[str, torch.Tensor]:
        items = {"interpolation": self.real["x"][:, -1:] if self.real else None, "truth": self.real.get("truth"),
                 "filled": self.fake}
        return {k: v.float().clamp(0, 1) for k, v in items.items() if v is not None}

    # -- export ---------------------------------------------------------------------------------------
    def model_file(self, steps: int) -> dict[str, Any]:
        cfg = self.cfg
        return {
            **self.model_file_header("inpaint"),
            "generator": {"builder": "pipeline.models.inpaint.InpaintGenerator", "kwargs": copy.deepcopy(self.g_kwargs)},
            "state_dict": {k: v.detach().to("cpu") for k, v in self.networks["G"].state_dict().items()},
            "inpainting": {"modality": cfg.modality, "context": cfg.context, "slice_axis": Z, "fill_value": "NaN",
                           "run_lengths": list(cfg.run_lengths), "base": self.base},
            "normalisation": copy.deepcopy(self.meta.get("normalisation", {})),
            "inference": {"sw_batch_size": cfg.sw_batch_size, "tta": cfg.tta, "self_check": cfg.self_check},
            "training": {"steps": steps, "n_train_subjects": self.meta.get("n_train_subjects"), "config": to_dict(cfg)},
        }

    def export(self, out_dir: Path) -> list[Path]:
        """The model file of the checkpoint selected on validation (its step and score recorded), else the last."""
        blob = self.model_file(self.total_steps)
        if self.best is not None:
            blob = self.best["model_file"]
            blob["training"]["selected"] = {"step": self.best["step"], "of_steps": self.total_steps, "by": "psnr",
                                            "validation_psnr_db": round(self.best["psnr"], 3)}
            log.info("exporting the checkpoint of step %d of %d (validation PSNR %.2f dB inside the deleted slices)",
                     self.best["step"], self.total_steps, self.best["psnr"])
        return [save_checkpoint(blob, Path(out_dir) / "model.pt")]

    @staticmethod
    def validation_cases(data_dir: str | Path, modality: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(gapped input, truth, deleted voxels inside the mask) of each validation subject with a gapped input."""
        from pipeline.data.volumes import split_rows
        from pipeline.io.nifti import load_nifti

        column = f"{modality}_gaps"
        _, rows = split_rows(data_dir, "val")
        cases = []
        for row in rows:
            if row.get(column) and row.get(modality) and row.get("mask"):
                gapped, truth = load_nifti(row[column])[0], load_nifti(row[modality])[0]
                region = unknown_mask(gapped) & (load_nifti(row["mask"])[0] > 0)
                if region.any():
                    cases.append((gapped, truth, region))
        return cases

    def validation_step(self, step: int) -> int | None:
        """Checkpoint selection: the model's PSNR inside the deleted slices of the validation subjects (the model
        file of the best step so far is kept)."""
        if self.val_dir is None:
            return None
        if self._val_cases is None:
            self._val_cases = self.validation_cases(self.val_dir, self.cfg.modality)
            if not self._val_cases:
                log.warning("no validation subject with %s_gaps: no checkpoint selection, the last weights are "
                            "exported", self.cfg.modality)
        if not self._val_cases:
            return None
        blob = self.model_file(step)
        gen = self.load_generator(blob, None, self.device)
        psnr = _psnr([_mse(self.apply(gen, x, blob, self.device, self_check=False), y, r)
                      for x, y, r in self._val_cases])
        if self.best is None or psnr > self.best["psnr"]:
            # a copy: on the CPU the model file's tensors are the live weights, which training goes on updating
            self.best = {"psnr": psnr, "step": step, "model_file": copy.deepcopy(blob)}
        log.info("step %d: validation PSNR %.2f dB inside the deleted slices (best at step %d)", step, psnr,
                 self.best["step"])
        return None

    def extra_state(self) -> dict[str, Any]:
        return {"selection_best": self.best}  # (a resumed run selects as an uninterrupted one)

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.best = state.get("selection_best")

    def validate(self, data_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
        """PSNR inside the deleted slices of the validation subjects' gapped inputs: the model, linear and cubic
        interpolation (a quick check, not the evaluation stage)."""
        from pipeline.gan.checkpoint import load_checkpoint

        cases = self.validation_cases(data_dir, self.cfg.modality)
        if not cases:
            return {}
        blob = load_checkpoint(Path(out_dir) / "model.pt")
        gen = self.load_generator(blob, None, self.device)
        errors: dict[str, list[float]] = {self.name: [], "linear": [], "cubic": []}
        for gapped, truth, region in cases:
            outs = {self.name: self.apply(gen, gapped, blob, self.device, self_check=False),  # (the model itself)
                    **{m: interpolate(gapped, m) for m in ("linear", "cubic")}}
            for k, out in outs.items():
                errors[k].append(_mse(out, truth, region))
        psnr = {k: _psnr(v) for k, v in errors.items()}
        baseline = max(("linear", "cubic"), key=lambda k: psnr[k])
        result = {"psnr_db": psnr, "subjects": len(errors[self.name]), "baseline": baseline,
                  "losing": [self.name] if psnr[self.name] < psnr[baseline] else []}
        log.info("validation inside the deleted slices (%d subject(s)): %s", result["subjects"],
                 ", ".join(f"{k} {v:.2f} dB" for k, v in psnr.items()))
        return result

    # -- the family contract ---------------------------------------------------------------------------
    @classmethod
    def outputs(cls, cfg: InpaintConfig) -> list[Output]:
        """The filled volume, evaluated inside the deleted slices against linear and cubic interpolation."""
        return [Output(cls.name, cls.name, "model.pt", "inpainting", f"{cfg.modality}_gaps", cfg.modality, "inpaint")]

    @classmethod
    def build_generator(cls, kwargs: dict[str, Any]) -> nn.Module:
        return InpaintGenerator(**kwargs)

    @classmethod
    def io_modalities(cls, blob: dict[str, Any], direction: str | None) -> tuple[tuple[str, dict], tuple[str, dict]]:
        cls.direction(direction)
        return same_modality_io(blob, "inpainting")

    @classmethod
    def outcome_note(cls, outcome: dict[str, Any]) -> str | None:
        """The interpolation that filled the gaps when the self-check replaced the model (None: the model did)."""
        filler = outcome.get("filler", "model")
        return None if filler == "model" else (
            f"{filler} interpolation (the {cls.name} model lost to it on this scan's own measured slices)")

    @classmethod
    def apply(cls, generator: nn.Module, volume: np.ndarray, blob: dict[str, Any],
              device: str | torch.device = "cpu", outcome: dict[str, Any] | None = None, **settings: Any) -> np.ndarray:
        """Fill the unmeasured (NaN) voxels of a normalised (x, y, z) volume; every measured voxel is returned
        unchanged. Slices along z with an unmeasured voxel are filled one by one from their window (in batches of
        ``sw_batch_size``; with ``tta`` averaged with the fill of the left-right flipped window). With
        ``self_check`` the better interpolation fills instead when the model is worse on hidden measured slices of
        this volume (`pipeline.data.gap_sampler.self_check`); `outcome`, when given, receives which filled it
        (``filler``: model, linear or cubic) and the self-check's scores (``self_check``), for provenance."""
        s = inference_settings(blob, **settings)
        volume = np.asarray(volume, dtype=np.float32)
        if volume.ndim != 3:
            raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
        unknown = unknown_mask(volume)
        todo = [int(z) for z in np.flatnonzero(unknown.any(axis=(0, 1)))]
        if not todo:
            log.info("no unmeasured (NaN) voxel: the volume is returned unchanged")
            return volume.copy()
        info = blob["inpainting"]
        fill = functools.partial(fill_slices, generator, context=int(info["context"]),
                                 base=info.get("base", "linear"),  # (model files before the option: linear)
                                 batch=int(s.get("sw_batch_size") or 16), tta=bool(s.get("tta")), device=device)
        method, check = "model", None
        if s.get("self_check"):
            check = self_check(fill, volume, unknown, info.get("run_lengths") or [1])
            method = check["chosen"]
        if outcome is not None:
            outcome.update(filler=method, self_check=check)
        if method != "model":
            return interpolate(volume, method, unknown)
        out = volume.copy()
        for z, filled in zip(todo, fill(volume, unknown, todo), strict=True):
            out[:, :, z] = np.where(unknown[:, :, z], filled, volume[:, :, z])
        return out.astype(np.float32)
