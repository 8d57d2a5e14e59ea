"""Conditional DCGAN (Radford et al. 2016; conditioning as in Mirza & Osindero 2014): synthetic 2D slices for data
augmentation, from noise and a condition (a contrast, e.g. T1w/T2w/PDw, and the slice position along an axis).

Slices: every slice across `slice_axis` of a training subject that lies within the extent of its foreground mask
along that axis, zero-padded to a square and resized (area averaging) to `image_size` x `image_size` (64 x 64 by
default: the demo's 84 x 100 axial slices at 2 mm become 64 x 64 at 3.1 mm). The slice position is
``(k - first) / (last - first)`` for the mask's first and last slices, so 0 and 1 are the ends of the head in
every subject whatever its field of view. Values are the preprocess stage's [0, 1], mapped to [-1, 1].

Networks (the DCGAN guidelines): the generator maps ``[z, one-hot contrast, 2 position - 1]`` (a 1x1 map) through
transposed convolutions + batch norm + ReLU to a tanh image (``generator_norm: conditional``: each batch norm's
scale and shift a function of the condition); the discriminator is strided convolutions + batch norm
(none on the first layer) + LeakyReLU(0.2), with the condition either concatenated to the image as constant
maps (``concat``, the conditional GAN's way) or entering a projection term (``projection``, Miyato & Koyama 2018).
The adversarial loss is `pipeline.gan.losses` (default the classic non-saturating objective - the seeds' vanilla
GAN; minimax, lsgan, hinge). One step: the generator step with D frozen, then the discriminator step with G frozen.
The sampler draws real slices with their condition and the noise of each step as a pure function of (seed, step).

There is no ground truth for a sample, so the family exports no per-subject output (`outputs` is empty) and is
judged at the end of its training job (`validate`, `pipeline.models.synthesis_eval`): a contrast classifier and
feature extractor trained here on the real training slices give the fraction of samples classified as the
requested contrast and a Frechet distance of sample vs held-out real features beside the real-vs-real distance,
written to `<out>/synthesis.json` with a grid of samples (`synthesis_grid.png`); the report shows them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from pipeline.config import INT_CHOICE, Betas, Distinct, Invalid, PrecisionMode, Section
from pipeline.data.slice_bank import SliceBank, SliceSampler
from pipeline.gan.base import Precision, adam
from pipeline.gan.checkpoint import save_checkpoint
from pipeline.gan.diffaugment import POLICIES, diff_augment
from pipeline.gan.ema import WeightAverage
from pipeline.gan.losses import d_loss, g_loss
from pipeline.models.contract import Family, Output
from pipeline.nets.dcgan import (
    Discriminator,
    Generator,
    init_dcgan,
    recalibrate_batchnorm,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ config
class DCGANConfig(Section):
    """Conditional DCGAN: synthetic 2D slices of a requested contrast and slice position (data augmentation).

    The defaults are the demo's configuration: 9000 steps, 16-45 minutes of training on 2 CPU cores (bf16 / fp32);
    3000 steps took a third of that and left a quarter of the T2w samples unlike T2w.
    """

    where: ClassVar[str] = "dcgan"

    contrasts: Distinct(str, "contrast") = Field(["T1w", "T2w", "PDw"], min_length=1, description=(
        "The contrasts the generator is conditioned on (columns of results/preprocess/subjects.tsv); each needs "
        "training subjects."))
    slice_axis: Annotated[Literal[0, 1, 2], INT_CHOICE] = Field(2, description=(
        "Volume axis the slices are taken across (2: axial for the RAS-oriented preprocess output)."))
    image_size: Annotated[Literal[32, 64, 128], INT_CHOICE] = Field(64, description=(
        "Side of the square slices in pixels (each slice is zero-padded to a square and resized to it)."))
    min_area: float = Field(0.25, ge=0, le=1, description=(
        "Slices used: from the first to the last whose foreground area is at least this fraction of the largest "
        "(0: the whole extent of the mask; the tiny end slices are hard to tell apart even for real ones)."))
    nz: int = Field(64, ge=1, description="Dimension of the noise vector z.")
    ngf: int = Field(32, ge=1, description="Filters of the generator's last layer (doubling towards its input).")
    ndf: int = Field(32, ge=1, description="Filters of the discriminator's first layer (doubling with depth).")
    generator_norm: Literal["batch", "conditional"] = Field("batch", description=(
        "The generator's normalisation: batch norm (the DCGAN paper; the condition enters with the noise only), or "
        "conditional batch norm (scale and shift of every batch norm from the condition, Miyato & Koyama 2018)."))
    condition: Literal["concat", "projection"] = Field("concat", description=(
        "How the discriminator sees the condition: concatenated to the image as constant maps, or a projection "
        "term on its last features."))
    lambda_cls: float = Field(0.0, ge=0, description=(
        "Weight of AC-GAN's auxiliary contrast classifier (a second head of the discriminator, trained on real "
        "slices; the generator is pushed towards samples it classifies as their requested contrast). Needs "
        "condition: projection. 0: off."))
    augment: Distinct(Literal[POLICIES], "transform") = Field([], description=(  # type: ignore[valid-type]
        "DiffAugment (Zhao et al. 2020): random transforms applied to real and generated slices alike every time the "
        "discriminator sees them, so that with few training slices it cannot memorise them ([]: off)."))
    gan_loss: Literal["nonsaturating", "minimax", "lsgan", "hinge"] = Field("nonsaturating", description=(
        "Adversarial loss; nonsaturating is the classic (vanilla) GAN objective of the DCGAN paper."))
    batch_size: int = Field(32, ge=2, description="Real slices (and samples) per step.")
    lr: float = Field(2e-4, gt=0, description="Adam learning rate of both networks (the paper's 2e-4).")
    betas: Betas = Field((0.5, 0.999), strict=False, description="Adam betas (the paper's 0.5, 0.999).")
    n_steps: int = Field(9000, ge=1, description=(
        "Training steps (the demo's T2w samples needed 7500 or more to be classified as T2w 95% of the time)."))
    ema: float = Field(0.999, ge=0, lt=1, description=(
        "Decay of the exponential moving average of the generator's weights that is exported and judged, with "
        "batch-norm statistics re-estimated for them (0: the last weights). On the demo it cuts the Frechet "
        "distance to real slices 4-30 fold against the last weights."))
    log_every: int = Field(50, ge=1, description="Steps between log lines / history.csv rows.")
    checkpoint_every: int = Field(500, ge=1, description="Steps between checkpoints (resume points).")
    precision: PrecisionMode = Field("auto", description=(
        "Mixed precision: auto - bf16 on CUDA where supported (else fp16) and on CPUs with native bf16 (else "
        "fp32); fp32, bf16 or fp16 force one."))
    deterministic: bool = Field(True, description="Deterministic kernels where PyTorch has them.")
    # -- the evaluation at the end of training (pipeline.models.synthesis_eval)
    eval_splits: Distinct(Literal["val", "test"], "split") = Field(["val", "test"], min_length=1, description=(
        "Held-out subjects whose real slices the samples are compared with (split into two halves by subject "
        "for the real-vs-real distance); at least 2 subjects with each contrast."))
    fd_halvings: int = Field(50, ge=1, description=(
        "Random splits of the held-out subjects into two halves the Frechet distances are averaged over (one split "
        "alone is luck: on the demo the real-vs-real distance of one ranged 30-fold)."))
    classifier_steps: int = Field(1000, ge=1, description=(
        "Steps of the contrast classifier / feature extractor trained on the real training slices."))
    grid_positions: int = Field(8, ge=2, le=16, description="Columns (slice positions) of the sample grid.")

    @model_validator(mode="after")
    def _rules(self) -> DCGANConfig:
        if self.lambda_cls > 0 and self.condition != "projection":
            raise Invalid("lambda_cls", "the auxiliary contrast classifier needs condition: projection (with concat "
                          "the discriminator's features already see the contrast)")
        return self


def generator_kwargs(cfg: DCGANConfig) -> dict[str, Any]:
    """`Generator` arguments (stored in the model file)."""
    return {"nz": cfg.nz, "n_contrasts": len(cfg.contrasts), "ngf": cfg.ngf, "size": cfg.image_size,
            "conditional_norm": cfg.generator_norm == "conditional"}


# ------------------------------------------------------------------------------------------ model
class DCGAN(Family):
    """Conditional DCGAN: synthetic 2D slices of a requested contrast and slice position."""

    name: ClassVar[str] = "dcgan"
    config_class: ClassVar[type] = DCGANConfig
    file_task: ClassVar[str] = "conditional-synthesis"
    loss_names: ClassVar[tuple[str, ...]] = ("G", "D", "d_real", "d_fake", "G_cls", "D_cls")

    def __init__(self, cfg: DCGANConfig, device: str | torch.device = "cpu", precision: Precision | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        device = torch.device(device)
        super().__init__(device, precision or Precision(device, cfg.precision))
        self.cfg, self.meta = cfg, dict(meta or {})
        self.g_kwargs = generator_kwargs(cfg)
        nets = {"G": init_dcgan(Generator(**self.g_kwargs)),
                "D": init_dcgan(Discriminator(len(cfg.contrasts), cfg.ndf, cfg.image_size, cfg.condition,
                                                     classifier=cfg.lambda_cls > 0))}
        self.channels_last = self.precision.channels_last(2)
        fmt = {"memory_format": torch.channels_last} if self.channels_last else {}
        self.networks = {k: n.to(device, **fmt) for k, n in nets.items()}
        self.optimizers = {k: adam(n.parameters(), lr=cfg.lr, betas=tuple(cfg.betas)) for k, n in self.networks.items()}
        self.real: dict[str, torch.Tensor] = {}
        self.fake: torch.Tensor | None = None
        self.average = WeightAverage(self.networks["G"], cfg.ema)

    @property
    def total_steps(self) -> int:
        return self.cfg.n_steps

    def extra_state(self) -> dict[str, Any]:
        return {"average": self.average.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "average" in state:
            self.average.load_state_dict(state["average"], self.device)
        elif "ema" in state:  # a checkpoint written before the shared WeightAverage: the same average, by name
            self.average.load_state_dict({"weights": state["ema"]}, self.device)

    def averaged_generator(self) -> Generator:
        """The generator that is exported and judged: the averaged weights (`ema`) with batch-norm statistics
        re-estimated for them (`recalibrate_batchnorm`; ema 0: the last weights and statistics), in eval mode."""
        net = Generator(**self.g_kwargs)
        net.load_state_dict({k: v.float() if v.dtype.is_floating_point else v for k, v in self.average.weights.items()})
        net = net.to(self.device)
        return recalibrate_batchnorm(net) if self.cfg.ema > 0 else net.eval()

    @classmethod
    def prepare_data(cls, cfg: DCGANConfig, data_dir: str | Path, seed: int,
                     cache_dir: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
        """The sampler of real training slices (all in memory: 64 x 64 slices are small) and the metadata."""
        from pipeline.data.volumes import normalisation_method, recorded_normalisation

        bank = SliceBank.read(data_dir, list(cfg.contrasts), ["train"], cfg.slice_axis, cfg.image_size, cfg.min_area)
        subjects = sorted({s for c in bank.contrasts for s in bank.subjects[c]})
        norms = {c: normalisation_method(recorded_normalisation(data_dir, bank.subjects[c], c)) for c in cfg.contrasts}
        log.info("dcgan: %s training slices from %d subjects",
                 ", ".join(f"{bank.count(c)} {c}" for c in bank.contrasts), len(subjects))
        meta = {"normalisation": norms, "seed": seed, "n_train_subjects": len(subjects), "pixel_mm": bank.pixel_mm,
                "n_train_slices": {c: bank.count(c) for c in bank.contrasts}}
        return SliceSampler(bank, cfg.batch_size, cfg.nz, seed), {"meta": meta}

    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        """Real slices (mapped to [-1, 1]), their condition and the step's noise."""
        image = batch["image"].to(self.device).float() * 2.0 - 1.0
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        self.real = {"image": image, "contrast": batch["contrast"].to(self.device),
                     "position": batch["position"].to(self.device).float(), "z": batch["z"].to(self.device).float()}

    def optimize_step(self, step: int) -> None:
        cfg, amp, r = self.cfg, self.precision, self.real
        G, D = self.networks["G"], self.networks["D"]
        with amp.autocast():
            fake = G(r["z"], r["contrast"], r["position"])

        opt_g = self.optimizers["G"]
        opt_g.zero_grad(set_to_none=True)
        losses: dict[str, torch.Tensor] = {}
        with self.frozen("D"):
            with amp.autocast():
                logits, cls_fake = D(diff_augment(fake, cfg.augment), r["contrast"], r["position"])
                loss_g = g_loss(logits, cfg.gan_loss)
                if cls_fake is not None:
                    losses["G_cls"] = F.cross_entropy(cls_fake.float(), r["contrast"].long())
                    loss_g = loss_g + cfg.lambda_cls * losses["G_cls"]
            amp.backward(loss_g)
            amp.step(opt_g)
        self.average.update(self.networks["G"])

        opt_d = self.optimizers["D"]
        opt_d.zero_grad(set_to_none=True)
        with self.frozen("G"):
            with amp.autocast():
                real_logits, cls_real = D(diff_augment(r["image"], cfg.augment), r["contrast"], r["position"])
                fake_logits, _ = D(diff_augment(fake.detach(), cfg.augment), r["contrast"], r["position"])
            loss_d = d_loss(real_logits, fake_logits, cfg.gan_loss)
            if cls_real is not None:
                losses["D_cls"] = F.cross_entropy(cls_real.float(), r["contrast"].long())
                loss_d = loss_d + cfg.lambda_cls * losses["D_cls"]
            amp.backward(loss_d)
            amp.step(opt_d)
        self.fake = fake.detach()
        self._losses = {"G": loss_g.detach(), "D": loss_d.detach(), "d_real": real_logits.float().mean().detach(),
                        "d_fake": fake_logits.float().mean().detach(), **{k: v.detach() for k, v in losses.items()}}

    def visuals(self) -> dict[str, torch.Tensor]:
        items = {"real": self.real.get("image"), "fake": self.fake}
        return {k: (v.float() + 1.0) / 2.0 for k, v in items.items() if v is not None}

    # -- export ---------------------------------------------------------------------------------------
    def model_file(self) -> dict[str, Any]:
        """The self-describing model file: the generator (its averaged weights, `ema`) and what sampling needs
        (conditions, slice geometry)."""
        cfg = self.cfg
        weights = {k: v.detach().to("cpu").contiguous() for k, v in self.averaged_generator().state_dict().items()}
        return {**self.model_file_header("dcgan"), "state_dict": weights,
                "generator": {"kwargs": dict(self.g_kwargs)},
                "synthesis": {"contrasts": list(cfg.contrasts), "slice_axis": cfg.slice_axis,
                              "image_size": cfg.image_size, "position": "0-1 along the foreground mask's extent",
                              "min_area": cfg.min_area, "pixel_mm": self.meta.get("pixel_mm"),
                              "steps": self.total_steps, "gan_loss": cfg.gan_loss, "condition": cfg.condition,
                              "generator_norm": cfg.generator_norm, "ema": cfg.ema},
                "normalisation": self.meta.get("normalisation", {})}

    def export(self, out_dir: Path) -> list[Path]:
        return [save_checkpoint(self.model_file(), Path(out_dir) / "model.pt")]

    def validate(self, data_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
        """The honest evaluation (`pipeline.models.synthesis_eval.evaluate_synthesis`): synthesis.json + grid."""
        from pipeline.models.synthesis_eval import evaluate_synthesis

        return evaluate_synthesis(self.averaged_generator(), self.cfg, data_dir, out_dir, int(self.meta.get("seed", 0)))

    # -- the family contract ---------------------------------------------------------------------------
    @classmethod
    def outputs(cls, cfg: DCGANConfig) -> list[Output]:
        """None: a sample has no subject and no ground truth. The training job writes `synthesis.json` (the report's
        synthesis section) instead."""
        return []

    @classmethod
    def build_generator(cls, kwargs: dict[str, Any]) -> nn.Module:
        return Generator(**kwargs)

    @classmethod
    def io_modalities(cls, blob: dict[str, Any], direction: str | None) -> tuple[tuple[str, dict], tuple[str, dict]]:
        raise ValueError("dcgan models synthesise slices from noise and have no input scan; use "
                         "`python -m pipeline synthesize --model MODEL --contrast C --n N --output DIR`")

    @classmethod
    def apply(cls, generator: nn.Module, volume: np.ndarray, blob: dict[str, Any],
              device: str | torch.device = "cpu", **settings: Any) -> np.ndarray:
        raise ValueError("dcgan models synthesise slices from noise and have no whole-volume inference; use "
                         "`python -m pipeline synthesize --model MODEL --contrast C --n N --output DIR`")
