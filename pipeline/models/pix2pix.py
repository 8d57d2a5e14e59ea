"""pix2pix (Isola et al. 2017) for paired modality translation (T1w -> T2w, MR -> CT), 2D or 3D.

One generator `G` (the ResNet generator CycleGAN uses, or a U-Net with skip connections - MONAI's `UNet` with
instance norm and a tanh head, `pipeline.nets.resnet_generator.TanhUNet`) and one conditional PatchGAN
discriminator `D` (MONAI `PatchDiscriminator`, instance norm) that judges the (source, image) pair: its input is
the source and the real or translated target stacked as 2 channels, so it learns whether the target fits *this*
source. One step, as in the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix,
`models/pix2pix_model.py`):

1. forward: ``fake_B = G(A)``;
2. generator step with D frozen: ``lambda_adv J_G(D(A, fake_B)) + lambda_l1 |fake_B - B|``;
3. discriminator step with G frozen: ``1/2 J_D(D(A, B), D(A, fake_B))``.

Adversarial terms come from `pipeline.gan.losses` (the classic non-saturating log loss by default - the
reference's ``vanilla`` - or least squares, minimax, hinge). Adam (betas 0.5/0.999) for both; the learning rate
is constant for `n_steps`, then decays linearly to 0 over `n_steps_decay`. Images in [0, 1] (the preprocess
stage's normalisation) are mapped to [-1, 1] inside the model. The sampler (`pipeline.data.paired_sampler`)
takes the same subject and the same crop from both modalities and refuses a subject whose two images are not on
one grid. Whole-volume inference is CycleGAN's (`pipeline.models.translation.translate`: slices or patches through
the shared sliding window, optional test-time augmentation).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from pipeline.config import INT_CHOICE, Betas, Invalid, PrecisionMode, Section
from pipeline.gan.base import Precision
from pipeline.gan.losses import pixel_loss
from pipeline.models.contract import Family, Output
from pipeline.models.cyclegan import CycleGAN, CycleGANConfig
from pipeline.models.translation import (
    SelectsCheckpoints,
    adam_with_linear_decay,
    cached_sampler,
    check_translation_config,
    crop_roi,
    generator_range,
    model_file_entries,
    place,
    training_metadata,
)
from pipeline.nets.discriminators import patch_discriminator
from pipeline.nets.resnet_generator import generator_from_kwargs, init_weights, size_multiple

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ config
#: the keys that mean for pix2pix exactly what they mean for CycleGAN: type, default, range and description are
#: defined once, in `CycleGANConfig`
_AS_CYCLEGAN = CycleGANConfig.model_fields


class Pix2PixConfig(Section):
    """pix2pix paired modality translation (stages 4-5), trained on co-registered slices or patches of one subject.

    The defaults are the demo's budget configuration (a small ResNet generator trained for a few minutes on 2 CPU
    cores), tuned on the demo's training and validation subjects.
    """

    where: ClassVar[str] = "pix2pix"

    source: str = Field("T1w", description="Input modality (a column of results/preprocess/subjects.tsv).")
    target: str = Field("T2w", description=(
        "Output modality (not the source), on the source's grid; CT outputs are written in Hounsfield units."))
    spatial_dims: Annotated[Literal[2, 3], INT_CHOICE] = _AS_CYCLEGAN["spatial_dims"]
    slice_axis: Annotated[Literal[0, 1, 2], INT_CHOICE] = _AS_CYCLEGAN["slice_axis"]
    patch_size: int = Field(48, ge=0, multiple_of=4, description=(
        "Side of the training crops in voxels (a multiple of the generator's size factor: 8 for the U-Net, 4 "
        "for ResNet; 0 whole slices); also the sliding-window size of inference."))
    batch_size: int = Field(8, ge=1, description="Source/target crop pairs per step.")
    flip: bool = Field(True, description="Random flips of the crops (the same for source and target).")
    generator: Literal["resnet", "unet"] = Field("resnet", description=(
        "The ResNet generator of CycleGAN (n_blocks residual blocks) or a U-Net with skip connections (MONAI's "
        "UNet, instance norm, widths ngf..8 ngf, num_res_units residual units per level). On the demo's 7 training "
        "subjects the ResNet generalises better (validation SSIM 0.753 against 0.746 for the U-Net; wider or "
        "longer-trained U-Nets fit the training subjects better and the validation ones worse)."))
    ngf: int = Field(16, ge=1, description="Filters of the generator's first level (64 in the reference).")
    num_res_units: int = Field(1, ge=0, description="Residual units per level of the U-Net (0: plain convolutions).")
    n_blocks: int = Field(4, ge=0, description="Residual blocks of the ResNet generator.")
    ndf: int = Field(16, ge=1, description=(
        "Filters of the PatchGAN discriminator's first layer (64 in the reference)."))
    d_layers: int = Field(3, ge=1, description=(
        "Layers of the PatchGAN discriminator (3 gives 70x70 patches in 2D)."))
    gan_loss: Literal["nonsaturating", "lsgan", "minimax", "hinge"] = Field("nonsaturating", description=(
        "Adversarial loss of the conditional discriminator; nonsaturating is the paper's log loss, lsgan least "
        "squares."))
    lambda_adv: float = Field(1.0, ge=0, description="Weight of the adversarial term (0: L1 regression only).")
    lambda_l1: float = Field(1000.0, ge=0, description=(
        "Weight of the L1 term (100 in the paper; the demo's 1000 keeps the GAN's invented texture, which no "
        "metric against a noisy target rewards, small: U-Net validation SSIM 0.746 against 0.723 at 100)."))
    lr: float = Field(1e-3, gt=0, description=(
        "Adam learning rate of generator and discriminator (the paper's 2e-4 is slow for a short demo run)."))
    betas: Betas = _AS_CYCLEGAN["betas"]
    n_steps: int = Field(2000, ge=0, description="Steps at the constant learning rate.")
    n_steps_decay: int = Field(4000, ge=0, description=(
        "Steps of linear decay of the learning rate to 0 after n_steps (demo: 6000 steps in all, SSIM 0.761; "
        "4500 scored 0.759)."))
    log_every: int = _AS_CYCLEGAN["log_every"]
    checkpoint_every: int = _AS_CYCLEGAN["checkpoint_every"]
    select_best: bool = _AS_CYCLEGAN["select_best"]
    select_metric: Literal["psnr", "ssim"] = _AS_CYCLEGAN["select_metric"]
    precision: PrecisionMode = _AS_CYCLEGAN["precision"]
    deterministic: bool = _AS_CYCLEGAN["deterministic"]
    sw_batch_size: int = _AS_CYCLEGAN["sw_batch_size"]
    overlap: float = _AS_CYCLEGAN["overlap"]
    tta: bool = Field(True, description=(
        "Inference: average the translations of tta_views views of every window (as cyclegan's). With planes and "
        "2 views: +0.005 to +0.008 SSIM and +0.07 to +0.12 dB on the demo and every real fold, at 2x the time."))
    tta_views: Literal[2, 4, 8] = _AS_CYCLEGAN["tta_views"]
    planes: bool = _AS_CYCLEGAN["planes"]

    @model_validator(mode="after")
    def _rules(self) -> Pix2PixConfig:
        check_translation_config(self)
        if self.lambda_adv == 0 and self.lambda_l1 == 0:
            raise Invalid(None, "lambda_adv and lambda_l1 are both 0: the generator would learn nothing")
        return self


# ------------------------------------------------------------------------------------------ networks
def generator_kwargs(cfg: Pix2PixConfig) -> dict[str, Any]:
    """`build_generator` arguments (stored in the model file)."""
    if cfg.generator == "resnet":
        return {"kind": f"resnet_{cfg.n_blocks}blocks", "spatial_dims": cfg.spatial_dims, "ngf": cfg.ngf}
    return {"kind": "unet", "spatial_dims": cfg.spatial_dims, "ngf": cfg.ngf, "num_res_units": cfg.num_res_units}


def build_discriminator(cfg: Pix2PixConfig) -> nn.Module:
    """The conditional PatchGAN: 2 input channels, the source and the (real or translated) target."""
    return patch_discriminator(cfg.spatial_dims, cfg.ndf, cfg.d_layers, norm="INSTANCE", bias=True, in_channels=2)


# ------------------------------------------------------------------------------------------ model
class Pix2Pix(SelectsCheckpoints, Family):
    """pix2pix paired modality translation (a U-Net generator, a conditional PatchGAN discriminator)."""

    name: ClassVar[str] = "pix2pix"
    config_class: ClassVar[type] = Pix2PixConfig
    file_task: ClassVar[str] = "paired-translation"
    takes_affine: ClassVar[bool] = True  # planes: tri-planar only on cubic voxels
    inference_keys: ClassVar[tuple[str, ...]] = ("sw_batch_size", "overlap", "tta", "tta_views", "planes")
    loss_names: ClassVar[tuple[str, ...]] = ("G_adv", "L1", "G", "D", "d_real", "d_fake")

    def __init__(
        self,
        cfg: Pix2PixConfig,
        device: str | torch.device = "cpu",
        precision: Precision | None = None,
        meta: dict[str, Any] | None = None,
        roi_size: Sequence[int] | None = None,
        val_dir: str | Path | None = None,
    ) -> None:
        device = torch.device(device)
        super().__init__(device, precision or Precision(device, cfg.precision))
        self.cfg = cfg
        self.meta = dict(meta or {})
        self.g_kwargs = generator_kwargs(cfg)
        self.roi_size = crop_roi(self.name, cfg, roi_size)
        nets = {"G": init_weights(generator_from_kwargs(self.g_kwargs)), "D": build_discriminator(cfg)}
        self.networks, self.channels_last = place(nets, self.precision, cfg.spatial_dims)
        self.optimizers, self.schedulers = adam_with_linear_decay(self.networks, cfg)
        self.real: dict[str, torch.Tensor] = {}
        self.fake: torch.Tensor | None = None
        self.start_selection(val_dir)

    @property
    def total_steps(self) -> int:
        return self.cfg.n_steps + self.cfg.n_steps_decay

    # -- data -----------------------------------------------------------------------------------------
    @classmethod
    def prepare_data(cls, cfg: Pix2PixConfig, data_dir: str | Path, seed: int,
                     cache_dir: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
        """The paired training sampler and the constructor arguments it implies (ROI, metadata).

        The training volumes are read one subject at a time and cached on disk in a new folder under
        `cache_dir` (None: the system's temporary folder); `sampler.close()` deletes it.
        """
        from pipeline.data.paired_sampler import PairedSampler
        from pipeline.data.volumes import domain_volumes

        vols = {"A": domain_volumes(data_dir, cfg.source, "train"), "B": domain_volumes(data_dir, cfg.target, "train")}
        multiple = size_multiple(generator_from_kwargs({**generator_kwargs(cfg), "ngf": 1}))
        if cfg.patch_size % multiple:
            raise ValueError(f"pix2pix.patch_size {cfg.patch_size} is not a multiple of {multiple}, which the "
                             f"{cfg.generator} generator needs")
        sampler = cached_sampler(cache_dir, "pix2pix-", lambda cache: PairedSampler(vols, cfg, seed, multiple, cache=cache))
        meta = training_metadata(data_dir, sampler.subjects, cfg, {cfg.source: vols["A"], cfg.target: vols["B"]})
        return sampler, {"meta": meta, "roi_size": [sampler.patch[a] for a in sampler.axes], "val_dir": str(data_dir)}

    # -- the contract ---------------------------------------------------------------------------------
    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        """Take ``A`` (source) and ``B`` (its registered target), values in [0, 1], mapped to [-1, 1]."""
        self.real = generator_range(batch, self.device, self.channels_last)

    def discriminate(self, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The conditional discriminator's logits for `image` given `source` (both (N, 1, *spatial))."""
        return self.networks["D"](torch.cat([source, image], dim=1))[-1]

    def optimize_step(self, step: int) -> None:
        cfg, amp = self.cfg, self.precision
        real_a, real_b = self.real["A"], self.real["B"]
        losses: dict[str, torch.Tensor] = {}
        with amp.autocast():
            fake_b = self.networks["G"](real_a)

        losses["L1"] = pixel_loss(fake_b, real_b, "l1")
        self.supervised_gan_step(cfg.lambda_l1 * losses["L1"], fake_b, real_b,
                                 lambda image: self.discriminate(real_a, image), cfg.lambda_adv, cfg.gan_loss, losses)
        self.fake = fake_b.detach()
        self._losses = {k: v.detach() for k, v in losses.items()}

    def visuals(self) -> dict[str, torch.Tensor]:
        """Source, target and translation, in [0, 1]."""
        items = {"real_A": self.real.get("A"), "real_B": self.real.get("B"), "fake_B": self.fake}
        return {k: (v.float() + 1.0) / 2.0 for k, v in items.items() if v is not None}

    # -- export ---------------------------------------------------------------------------------------
    def model_file(self, steps: int) -> dict[str, Any]:
        """The self-describing model file: the generator, the contrasts it maps and what inference needs."""
        weights = {"state_dict": {k: v.detach().to("cpu") for k, v in self.networks["G"].state_dict().items()}}
        return {**self.model_file_header("pix2pix"),
                **model_file_entries(self, weights, steps, paired=True, train_downsample=1)}

    def translations(self) -> list[tuple[str, str | None, str]]:
        return [(self.name, None, self.cfg.target)]

    # -- the family contract ---------------------------------------------------------------------------
    @classmethod
    def outputs(cls, cfg: Pix2PixConfig) -> list[Output]:
        """The source -> target generator, evaluated as a translation (against the source and histogram matching)."""
        return [Output(cls.name, cls.name, "model.pt", "translation", cfg.source, cfg.target, cfg.target)]

    @classmethod
    def build_generator(cls, kwargs: dict[str, Any]) -> nn.Module:
        """The source -> target generator (pix2pix files hold one: no `direction`)."""
        return generator_from_kwargs(kwargs)

    @classmethod
    def io_modalities(cls, blob: dict[str, Any], direction: str | None) -> tuple[tuple[str, dict], tuple[str, dict]]:
        cls.direction(direction)
        info, norms = blob["translation"], blob.get("normalisation", {})
        return (info["source"], norms.get(info["source"], {})), (info["target"], norms.get(info["target"], {}))

    @classmethod
    def apply(cls, generator: nn.Module, volume: np.ndarray, blob: dict[str, Any],
              device: str | torch.device = "cpu", **settings: Any) -> np.ndarray:
        """The whole-volume translation of CycleGAN's generators (`pipeline.models.translation.translate`: the same
        model-file layout), with the model file's inference settings overridden by the non-None `settings`."""
        return CycleGAN.apply(generator, volume, blob, device, **settings)
