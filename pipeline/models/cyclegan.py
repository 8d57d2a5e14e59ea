"""CycleGAN (Zhu et al. 2017) for unpaired modality translation (T1w <-> T2w, MR <-> CT), 2D or 3D.

Two generators (`G_AB`: source -> target, `G_BA`: target -> source; ResNet generators of
`pipeline.nets.resnet_generator` or MONAI's UNet) and two PatchGAN discriminators (MONAI
`PatchDiscriminator`, instance norm; `D_A` judges domain A, `D_B` domain B). One step, as in the reference
implementation (junyanz/pytorch-CycleGAN-and-pix2pix, `models/cycle_gan_model.py`):

1. forward: ``fake_B = G_AB(A)``, ``rec_A = G_BA(fake_B)``, ``fake_A = G_BA(B)``, ``rec_B = G_AB(fake_A)``;
2. generator step with both discriminators frozen:
   ``adv(D_B(fake_B)) + adv(D_A(fake_A)) + lambda_cycle (|rec_A - A| + |rec_B - B|)
   + lambda_identity lambda_cycle (|G_AB(B) - B| + |G_BA(A) - A|)``;
3. discriminator step: real images against fakes drawn from a pool of 50 past fakes (`ImagePool`),
   ``1/2 J_D`` per discriminator.

Adversarial terms come from `pipeline.gan.losses` (least squares by default; ``nonsaturating`` is the classic
log loss). The reference's least-squares generator term is ``MSE(D(G(x)), 1)``, twice our ``g_loss`` (which
carries the 1/2 of Mao et al.), so it is doubled here to keep the reference's balance against lambda 10.
Adam (betas 0.5/0.999; the reference's 2e-4, the demo default 1e-3) for both pairs; the learning rate is
constant for `n_steps`, then decays linearly to 0 over `n_steps_decay` (`LambdaLR`, stepped per iteration by
the loop).

Data: images in [0, 1] (the preprocess stage's normalisation) are mapped to the generators' [-1, 1] inside
the model. The sampler (`UnpairedSampler`) draws A and B crops from disjoint sets of subjects in every step,
so the model never sees a registered pair. Training can run on a coarser grid (`train_downsample`); inference
then averages the input down by the same factor and interpolates the output back onto the input grid.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from pipeline.config import INT_CHOICE, Betas, PrecisionMode, Section
from pipeline.gan.base import Precision, adam
from pipeline.gan.ema import WeightAverage
from pipeline.gan.image_pool import ImagePool
from pipeline.gan.losses import d_loss, g_loss
from pipeline.gan.schedules import linear_decay_schedulers
from pipeline.models.contract import Family, Output, inference_settings
from pipeline.models.translation import (
    SelectsCheckpoints,
    auto_train_downsample,
    cached_sampler,
    check_translation_config,
    crop_roi,
    generator_range,
    model_file_entries,
    place,
    plane_axes,
    training_metadata,
    translate,
)
from pipeline.nets.discriminators import patch_discriminator
from pipeline.nets.resnet_generator import build_generator, generator_from_kwargs, init_weights, size_multiple

#: `train_downsample: 0` picks the factor that brings the training voxels nearest this side (mm)
AUTO_SPACING_MM = 2.0


# ------------------------------------------------------------------------------------------ config
class CycleGANConfig(Section):
    """CycleGAN modality translation (stages 4-5), trained on unpaired slices or patches of different subjects.

    The defaults are the demo's budget configuration (a small ResNet generator trained for a few minutes on
    2 CPU cores); `config/cyclegan_full.yaml` is the longer reference-like one.
    """

    where: ClassVar[str] = "cyclegan"

    source: str = Field("T1w", description=(
        "Modality of domain A (a column of results/preprocess/subjects.tsv)."))
    target: str = Field("T2w", description=(
        "Modality of domain B (not the source); CT outputs are written in Hounsfield units."))
    spatial_dims: Annotated[Literal[2, 3], INT_CHOICE] = Field(2, description=(
        "2 for slices, 3 for volumetric patches."))
    slice_axis: Annotated[Literal[0, 1, 2], INT_CHOICE] = Field(2, description=(
        "Axis 2D slices are taken across (0 sagittal, 1 coronal, 2 axial on RAS volumes)."))
    train_downsample: int = Field(0, ge=0, description=(
        "Train and translate on a grid this many times coarser (block averages); the output is upsampled back "
        "to the input grid. 1 keeps the input resolution; 0 (auto) picks the factor that brings the training "
        "scans' finest voxel side nearest to 2 mm (the demo's 2 mm: 1; real 1 mm scans: 2, where at 1 mm the "
        "crops see too little anatomy: held-out SSIM 0.51 against -0.21). The model file records the factor."))
    warmup_steps: int = Field(1200, ge=0, description=(
        "Resolution curriculum - the first warmup_steps steps train on crops from a grid warmup_downsample "
        "times coarser, at most its whole slices (the contrast mapping is found quickly on small images with "
        "the whole anatomy in view, then refined at full resolution); 0 disables it."))
    warmup_downsample: int = Field(2, ge=1, description=(
        "How much coarser the warm-up grid is than the training grid."))
    warmup_ramp: int = Field(3000, ge=0, description=(
        "Steps after the warm-up over which the share of warm-up-grid batches falls from 1 to 0 (the demo: to the "
        "end). Switching at once (0), or by mid-run, left some seeds in a poor mode (see the README's seed study)."))
    patch_size: int = Field(48, ge=0, multiple_of=4, description=(
        "Side of the training crops in voxels (a multiple of 4; 0 whole slices); also the sliding-window size "
        "of inference."))
    batch_size: int = Field(4, ge=1, description="Crops of each domain per step.")
    flip: bool = Field(True, description="Random flips of the crops.")
    generator: Literal["resnet", "unet"] = Field("resnet", description=(
        "ResNet generator (reflection padding, instance norm; n_blocks residual blocks, ngf filters) or MONAI's "
        "UNet (widths ngf..8 ngf)."))
    n_blocks: int = Field(4, ge=0, description=(
        "Residual blocks of the ResNet generator (6 or 9 in the reference)."))
    ngf: int = Field(16, ge=1, description="Filters of the generator's first layer (64 in the reference).")
    ndf: int = Field(16, ge=1, description=(
        "Filters of the PatchGAN discriminator's first layer (64 in the reference)."))
    d_layers: int = Field(3, ge=1, description=(
        "Layers of the PatchGAN discriminators (3 gives 70x70 patches in 2D)."))
    gan_loss: Literal["lsgan", "nonsaturating", "minimax", "hinge"] = Field("lsgan", description=(
        "Adversarial loss; nonsaturating is the classic log loss."))
    lambda_cycle: float = Field(10.0, ge=0, description="Weight of the cycle-consistency L1 losses.")
    lambda_identity: float = Field(0.0, ge=0, description=(
        "Weight of the identity L1 losses, as a fraction of lambda_cycle (0 disables them). Off by default: it "
        "pulls the source->target generator towards the identity (keeping the source contrast), which slows "
        "the T1w -> T2w contrast inversion in a short run; the paper's 0.5 suits photo translation."))
    pool_size: int = Field(50, ge=0, description=(
        "Past fakes kept for the discriminators (0 disables the pool)."))
    lr: float = Field(1e-3, gt=0, description=(
        "Adam learning rate of generators and discriminators (the paper's 2e-4 is several times slower to "
        "invert the contrast with the demo's small networks; 1e-3 stays stable with them)."))
    betas: Betas = Field((0.5, 0.999), strict=False, description="Adam betas.")
    ema: float = Field(0.0, ge=0, lt=1, description=(
        "Decay of an exponential moving average of both generators' weights (`pipeline.gan.ema`, the first "
        "updates with a smaller decay), which selection scores and the model file holds. 0: off, the weights "
        "themselves."))
    n_steps: int = Field(1200, ge=0, description="Steps at the constant learning rate.")
    n_steps_decay: int = Field(3000, ge=0, description=(
        "Steps of linear decay of the learning rate to 0 after n_steps."))
    log_every: int = Field(50, ge=1, description="Steps between log lines / history.csv rows.")
    checkpoint_every: int = Field(200, ge=1, description=(
        "Steps between checkpoints (training resumes from the last one); each is scored on the validation "
        "subjects when select_best is on."))
    select_best: bool = Field(True, description=(
        "Export the checkpoint with the best validation select_metric (16 slices per subject, in the mask)."))
    select_metric: Literal["psnr", "ssim"] = Field("psnr", description=(
        "What select_best maximises (the 2D SSIM of 16 slices per subject picked a poor pix2pix on the demo)."))
    precision: PrecisionMode = Field("auto", description=(
        "Mixed precision: auto - bf16 on CUDA where supported (else fp16) and on CPUs with native bf16 (else "
        "fp32); fp32, bf16 or fp16 force one (as for srgan.precision)."))
    deterministic: bool = Field(True, description="Deterministic kernels where PyTorch has them.")
    sw_batch_size: int = Field(16, ge=1, description=(
        "Windows (slices or patches) per forward pass at inference."))
    overlap: float = Field(0.25, ge=0, lt=1, description="Overlap of inference windows (Gaussian-blended).")
    tta: bool = Field(True, description=(
        "Inference: average the translations of views of every window (its flips/transposes; tta_views of them). "
        "The GAN's invented texture differs between them, the anatomy does not (demo, one plane, 8 views: +1.7 dB, "
        "+0.11 SSIM)."))
    tta_views: Literal[2, 4, 8] = Field(2, description=(
        "How many views tta averages (its time is proportional): 8 every flip/transpose (3D: every flip), 4 the "
        "rotations, 2 the identity and the 180-degree rotation. With planes (three planes, so 3 x tta_views views) "
        "8 views scored +0.008 SSIM on the demo and +0.003 on the real folds over 2, at 4x the time (README)."))
    detail_transfer: bool = Field(True, description=(
        "Inference with train_downsample > 1: add the source's detail that the coarse grid lost, scaled by the "
        "local slope of the translation against the coarse source (`pipeline.nets.interp.detail_transfer`; real "
        "1 mm T1w -> T2w: see the README). No effect at factor 1."))
    planes: bool = Field(True, description=(
        "Inference of a 2D model on a scan with cubic voxels: translate the slices across each of the three "
        "volume axes and average (3x the time; demo and real 1 mm T1w -> T2w: see the README). Other scans: "
        "across slice_axis only."))

    @model_validator(mode="after")
    def _rules(self) -> CycleGANConfig:
        check_translation_config(self)
        return self

#: factor between the reference implementation's generator term and `g_loss` (see the module docstring)
_G_ADV_SCALE = {"lsgan": 2.0}


# ------------------------------------------------------------------------------------------ networks
def generator_kwargs(cfg: CycleGANConfig) -> dict[str, Any]:
    """`build_generator` arguments (stored in the model file)."""
    kind = f"resnet_{cfg.n_blocks}blocks" if cfg.generator == "resnet" else "unet"
    return {"kind": kind, "spatial_dims": cfg.spatial_dims, "in_channels": 1, "out_channels": 1, "ngf": cfg.ngf}


def build_discriminator(cfg: CycleGANConfig) -> nn.Module:
    """The PatchGAN discriminator with instance norm and biased convolutions, as in the reference (70x70
    receptive field in 2D with 3 layers; 2.765 M parameters for 64 filters and 3 input channels)."""
    return patch_discriminator(cfg.spatial_dims, cfg.ndf, cfg.d_layers, norm="INSTANCE", bias=True)


# ------------------------------------------------------------------------------------------ model
class CycleGAN(SelectsCheckpoints, Family):
    """CycleGAN unpaired modality translation (two generators, two PatchGAN discriminators)."""

    name: ClassVar[str] = "cyclegan"
    config_class: ClassVar[type] = CycleGANConfig
    file_task: ClassVar[str] = "translation"
    takes_affine: ClassVar[bool] = True  # planes: tri-planar only on cubic voxels
    inference_keys: ClassVar[tuple[str, ...]] = ("sw_batch_size", "overlap", "tta", "tta_views", "detail_transfer",
                                                  "planes")
    directions: ClassVar[tuple[str, ...]] = ("A2B", "B2A")  # source -> target, and back
    min_train_subjects: ClassVar[int] = 2  # (the unpaired sampler: source and target from different subjects)
    loss_names: ClassVar[tuple[str, ...]] = (
        "G_AB", "G_BA", "cycle_A", "cycle_B", "idt_A", "idt_B", "G", "D_A", "D_B",
    )

    def __init__(
        self,
        cfg: CycleGANConfig,
        device: str | torch.device = "cpu",
        precision: Precision | None = None,
        seed: int = 0,
        meta: dict[str, Any] | None = None,
        roi_size: Sequence[int] | None = None,
        train_downsample: int | None = None,
        val_dir: str | Path | None = None,
    ) -> None:
        device = torch.device(device)
        super().__init__(device, precision or Precision(device, cfg.precision))
        self.cfg = cfg
        # the factor prepare_data resolved (auto: from the data); without data, the config's (auto: 1)
        self.train_downsample = int(train_downsample or cfg.train_downsample or 1)
        self.meta = dict(meta or {})
        self.g_kwargs = generator_kwargs(cfg)
        self.roi_size = crop_roi(self.name, cfg, roi_size)
        nets: dict[str, nn.Module] = {
            "G_AB": init_weights(generator_from_kwargs(self.g_kwargs)),
            "G_BA": init_weights(generator_from_kwargs(self.g_kwargs)),
            "D_A": build_discriminator(cfg),
            "D_B": build_discriminator(cfg),
        }
        self.networks, self.channels_last = place(nets, self.precision, cfg.spatial_dims)
        nets = self.networks
        betas = tuple(cfg.betas)
        self.optimizers = {
            "G": adam(itertools.chain(nets["G_AB"].parameters(), nets["G_BA"].parameters()), lr=cfg.lr, betas=betas),
            "D": adam(itertools.chain(nets["D_A"].parameters(), nets["D_B"].parameters()), lr=cfg.lr, betas=betas),
        }
        self.schedulers = linear_decay_schedulers(self.optimizers, cfg.n_steps, cfg.n_steps_decay)
        # pools of past fakes of each domain, each with its own seeded generator (saved in checkpoints)
        self.pools = {"A": ImagePool(cfg.pool_size, seed=seed * 2 + 1), "B": ImagePool(cfg.pool_size, seed=seed * 2 + 2)}
        self.real: dict[str, torch.Tensor] = {}
        self.out: dict[str, torch.Tensor] = {}
        self.averages = ({g: WeightAverage(self.networks[g], cfg.ema, warmup=True) for g in ("G_AB", "G_BA")}
                         if cfg.ema > 0 else {})
        self.start_selection(val_dir)

    @property
    def total_steps(self) -> int:
        return self.cfg.n_steps + self.cfg.n_steps_decay

    # -- data -----------------------------------------------------------------------------------------
    @classmethod
    def prepare_data(cls, cfg: CycleGANConfig, data_dir: str | Path, seed: int,
                     cache_dir: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
        """The unpaired training sampler and the constructor arguments it implies (seed, ROI, metadata).

        The training volumes are read one at a time and cached on disk in a new folder under `cache_dir`
        (None: the system's temporary folder); `sampler.close()` deletes it.
        """
        from pipeline.data.unpaired_sampler import UnpairedSampler
        from pipeline.data.volumes import domain_volumes

        a_vols = domain_volumes(data_dir, cfg.source, "train")
        b_vols = domain_volumes(data_dir, cfg.target, "train")
        multiple = size_multiple(build_generator(generator_kwargs(cfg)["kind"], cfg.spatial_dims, ngf=1))
        if cfg.patch_size % multiple:
            raise ValueError(f"cyclegan.patch_size {cfg.patch_size} is not a multiple of {multiple}, which the "
                             f"{cfg.generator} generator needs")
        cfg = auto_train_downsample(cfg, a_vols, AUTO_SPACING_MM)
        sampler = cached_sampler(cache_dir, "cyclegan-",
                                 lambda cache: UnpairedSampler(a_vols, b_vols, cfg, seed, multiple, cache=cache))
        meta = training_metadata(data_dir, sampler.subjects, cfg, {cfg.source: a_vols, cfg.target: b_vols})
        roi = [sampler.patch[a] for a in sampler.axes]
        return sampler, {"seed": seed, "meta": meta, "roi_size": roi, "train_downsample": cfg.train_downsample,
                         "val_dir": str(data_dir)}

    # -- the contract ---------------------------------------------------------------------------------
    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        """Take ``A`` and ``B`` (values in [0, 1]) and map them to the generators' [-1, 1]."""
        self.real = generator_range(batch, self.device, self.channels_last)

    def optimize_step(self, step: int) -> None:
        cfg, nets, amp = self.cfg, self.networks, self.precision
        real_a, real_b = self.real["A"], self.real["B"]
        adv_scale = _G_ADV_SCALE.get(cfg.gan_loss, 1.0)
        lam_idt = cfg.lambda_identity * cfg.lambda_cycle
        losses: dict[str, torch.Tensor] = {}

        # forward
        with amp.autocast():
            fake_b = nets["G_AB"](real_a)
            rec_a = nets["G_BA"](fake_b)
            fake_a = nets["G_BA"](real_b)
            rec_b = nets["G_AB"](fake_a)

        # generator step, discriminators frozen
        opt_g = self.optimizers["G"]
        opt_g.zero_grad(set_to_none=True)
        with self.frozen("D_A", "D_B"):
            with amp.autocast():
                logits_fake_b = nets["D_B"](fake_b)[-1]
                logits_fake_a = nets["D_A"](fake_a)[-1]
            losses["G_AB"] = adv_scale * g_loss(logits_fake_b, cfg.gan_loss)
            losses["G_BA"] = adv_scale * g_loss(logits_fake_a, cfg.gan_loss)
            losses["cycle_A"] = F.l1_loss(rec_a.float(), real_a)
            losses["cycle_B"] = F.l1_loss(rec_b.float(), real_b)
            total = losses["G_AB"] + losses["G_BA"] + cfg.lambda_cycle * (losses["cycle_A"] + losses["cycle_B"])
            if lam_idt > 0:
                with amp.autocast():
                    idt_b = nets["G_AB"](real_b)  # G_AB should leave B images as they are
                    idt_a = nets["G_BA"](real_a)
                losses["idt_A"] = F.l1_loss(idt_a.float(), real_a)
                losses["idt_B"] = F.l1_loss(idt_b.float(), real_b)
                total = total + lam_idt * (losses["idt_A"] + losses["idt_B"])
            losses["G"] = total
            amp.backward(total)
            amp.step(opt_g)
        for g, average in self.averages.items():
            average.update(nets[g])

        # discriminator step, generators frozen, fakes from the history pools
        opt_d = self.optimizers["D"]
        opt_d.zero_grad(set_to_none=True)
        with self.frozen("G_AB", "G_BA"):
            pooled_b = self.pools["B"].query(fake_b.detach())
            pooled_a = self.pools["A"].query(fake_a.detach())
            with amp.autocast():
                real_b_logits, fake_b_logits = nets["D_B"](real_b)[-1], nets["D_B"](pooled_b)[-1]
                real_a_logits, fake_a_logits = nets["D_A"](real_a)[-1], nets["D_A"](pooled_a)[-1]
            losses["D_B"] = 0.5 * d_loss(real_b_logits, fake_b_logits, cfg.gan_loss)
            losses["D_A"] = 0.5 * d_loss(real_a_logits, fake_a_logits, cfg.gan_loss)
            amp.backward(losses["D_A"] + losses["D_B"])
            amp.step(opt_d)

        self.out = {"fake_B": fake_b.detach(), "rec_A": rec_a.detach(), "fake_A": fake_a.detach(),
                    "rec_B": rec_b.detach()}
        self._losses = {k: v.detach() for k, v in losses.items()}

    def visuals(self) -> dict[str, torch.Tensor]:
        """Real, translated and reconstructed images of both domains, in [0, 1]."""
        items = {"real_A": self.real.get("A"), "real_B": self.real.get("B"), **self.out}
        return {k: (v.float() + 1.0) / 2.0 for k, v in items.items() if v is not None}

    def extra_state(self) -> dict[str, Any]:
        return {"pools": {k: p.state_dict() for k, p in self.pools.items()}, **self.selection_state(),
                "averages": {g: a.state_dict() for g, a in self.averages.items()}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.load_selection_state(state)
        for g, average in self.averages.items():
            if g in state.get("averages", {}):
                average.load_state_dict(state["averages"][g], self.device)
        for k, pool in self.pools.items():
            if "pools" in state:
                pool.load_state_dict(state["pools"][k])
                pool.to(self.device)

    # -- export ---------------------------------------------------------------------------------------
    def model_file(self, steps: int) -> dict[str, Any]:
        """The self-describing model file: both generators (their weight averages with `ema`) and everything
        inference needs (weights_only-safe)."""
        def state(g: str) -> dict[str, torch.Tensor]:
            return self.averages[g].weights if g in self.averages else self.networks[g].state_dict()

        weights = {"state_dicts": {d: {k: v.detach().to("cpu") for k, v in state(g).items()}
                                   for d, g in (("A2B", "G_AB"), ("B2A", "G_BA"))}}
        return {**self.model_file_header("cyclegan"),
                **model_file_entries(self, weights, steps, train_downsample=self.train_downsample)}

    def translations(self) -> list[tuple[str, str | None, str]]:
        return [(self.name, "A2B", self.cfg.target)]  # selected and validated on source -> target

    # -- the family contract ---------------------------------------------------------------------------
    @classmethod
    def outputs(cls, cfg: CycleGANConfig) -> list[Output]:
        """The source -> target generator (the reverse one is in the model file too: `--direction B2A`)."""
        return [Output(cls.name, cls.name, "model.pt", "translation", cfg.source, cfg.target, cfg.target,
                       ("--direction", "A2B"))]

    @classmethod
    def load_generator(cls, blob: dict[str, Any], direction: str | None, device: str | torch.device) -> nn.Module:
        """The generator of `direction` (A2B: source -> target, B2A: back), in eval mode."""
        direction = cls.direction(direction)
        net = generator_from_kwargs(blob["generator"]["kwargs"])
        net.load_state_dict(blob["state_dicts"][direction])
        return net.to(torch.device(device)).eval()

    @classmethod
    def io_modalities(cls, blob: dict[str, Any], direction: str | None) -> tuple[tuple[str, dict], tuple[str, dict]]:
        info, norms = blob["translation"], blob.get("normalisation", {})
        src, dst = info["source"], info["target"]
        if cls.direction(direction) == "B2A":
            src, dst = dst, src
        return (src, norms.get(src, {})), (dst, norms.get(dst, {}))

    @classmethod
    def apply(cls, generator: nn.Module, volume: np.ndarray, blob: dict[str, Any],
              device: str | torch.device = "cpu", affine: np.ndarray | None = None, **settings: Any) -> np.ndarray:
        """`translate` with the model file's inference settings (overridden by the non-None `settings`); `affine`
        (the scan's) tells `planes` whether its voxels are cubes."""
        s = inference_settings(blob, **settings)
        info = blob["translation"]
        roi = s.get("roi_size")
        if isinstance(roi, int):
            roi = [roi] * info["spatial_dims"]
        axes = plane_axes(info["slice_axis"], affine) if s.get("planes") and info["spatial_dims"] == 2 else None
        return translate(volume, generator, blob, device, roi_size=roi, sw_batch_size=s.get("sw_batch_size", 16),
                         overlap=s.get("overlap", 0.5), precision=s.get("precision", "auto"),
                         tta=bool(s.get("tta", False)), tta_views=s.get("tta_views"),
                         detail=bool(s.get("detail_transfer", False)), axes=axes)
