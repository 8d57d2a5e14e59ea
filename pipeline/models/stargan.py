"""StarGAN (Choi et al. 2018): one generator for several contrasts (T1w -> T2w, PDw, FLAIR, ...), 2D or 3D.

One generator `G` (CycleGAN's ResNet or MONAI's UNet) conditioned on the one-hot code of the wanted contrast
(`CodedGenerator`), one PatchGAN `D` with an auxiliary classifier of one logit per contrast
(`ClassifyingDiscriminator`). Contrasts in code order: ``[source, *targets]``. Training covers the "star" around
the source (source -> each target, each target -> source), not every pair as in the paper. One step:

1. forward: ``fake_t = G(A, c_t)``, ``fake_s = G(B_t, c_source)``;
2. G step, D frozen: ``adv(D([fake_t, fake_s])) + lambda_cls CE(cls(fake), code)
   + lambda_rec (|G(fake_t, c_source) - A| + |G(fake_s, c_t) - B|)`` (reconstruction back to the source code; the
   adversarial term is one mean over both directions, half of CycleGAN's sum of one per direction, so the default
   lambda_rec 5 is CycleGAN's 10; the default lambda_cls is 0);
3. D step, G frozen: real crops of every contrast against a pool of past fakes and (``d_mismatch``, the default)
   against themselves judged by another contrast's map, plus ``lambda_cls CE(cls(real), contrast)`` and, for
   ``wgan-gp`` (the paper's loss), ``lambda_gp (|grad D(x_hat)| - 1)^2``, `n_critic` D steps per G step. Other
   adversarial terms: `pipeline.gan.losses` (least squares by default, as CycleGAN).

Sampling is CycleGAN's (per target an `UnpairedSampler`: source and target crops from disjoint subjects); inference
(`--direction`/`--target <contrast>`) is CycleGAN's whole-volume translation with that code fixed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

import pipeline.models.cyclegan as cyclegan
import pipeline.models.translation as translation
from pipeline.config import INT_CHOICE, Betas, Distinct, Invalid, PrecisionMode, Section
from pipeline.gan.base import Precision
from pipeline.gan.image_pool import ImagePool
from pipeline.gan.losses import d_loss, g_loss, gradient_penalty
from pipeline.models.contract import Family, Output
from pipeline.models.cyclegan import CycleGAN, CycleGANConfig
from pipeline.nets.discriminators import ClassifyingDiscriminator
from pipeline.nets.resnet_generator import generator_from_kwargs, init_weights, size_multiple

#: the keys that mean for StarGAN what they mean for CycleGAN (defined once); those that make a pair's sampler
_AS_CYCLEGAN = CycleGANConfig.model_fields
_SAMPLER_KEYS = ("source", "spatial_dims", "slice_axis", "train_downsample", "warmup_steps", "warmup_downsample",
                 "warmup_ramp", "patch_size", "batch_size", "flip", "generator", "n_blocks", "ngf", "d_layers")


# ------------------------------------------------------------------------------------------ config
class StarGANConfig(Section):
    """StarGAN multi-contrast translation (stages 4-5): one generator from the source to every target contrast,
    trained on unpaired slices or patches of different subjects. The defaults are the demo's budget configuration."""

    where: ClassVar[str] = "stargan"

    source: str = Field("T1w", description="Input modality (a column of results/preprocess/subjects.tsv).")
    targets: Distinct(str, "contrast") = Field(default_factory=lambda: ["T2w", "PDw"], min_length=1, description=(
        "Output modalities (not the source, each once); each is exported and evaluated as output stargan_<target>."))
    spatial_dims: Annotated[Literal[2, 3], INT_CHOICE] = _AS_CYCLEGAN["spatial_dims"]
    slice_axis: Annotated[Literal[0, 1, 2], INT_CHOICE] = _AS_CYCLEGAN["slice_axis"]
    train_downsample: int = _AS_CYCLEGAN["train_downsample"]
    warmup_steps: int = _AS_CYCLEGAN["warmup_steps"]
    warmup_downsample: int = _AS_CYCLEGAN["warmup_downsample"]
    warmup_ramp: int = Field(3000, ge=0, description=(
        "As cyclegan.warmup_ramp (one grid draw per step, shared by every target's crops; CycleGAN's 3000). Without "
        "batch_size 4 a ramp gave the demo's best T2w SSIM with one seed and its worst with another."))
    patch_size: int = _AS_CYCLEGAN["patch_size"]
    batch_size: int = Field(4, ge=1, description=(
        "Source crops and target crops per step, for each target (CycleGAN's 4): with 2 the demo's T2w SSIM "
        "depended on the training seed (0.50-0.58), with 4 it did not (0.670 with both, d_mismatch false)."))
    flip: bool = _AS_CYCLEGAN["flip"]
    generator: Literal["resnet", "unet"] = _AS_CYCLEGAN["generator"]
    n_blocks: int = _AS_CYCLEGAN["n_blocks"]
    ngf: int = _AS_CYCLEGAN["ngf"]
    ndf: int = _AS_CYCLEGAN["ndf"]
    d_layers: int = _AS_CYCLEGAN["d_layers"]
    d_per_contrast: bool = Field(True, description=(
        "One real/fake map per contrast, each image judged on its own (StarGAN v2's multi-task discriminator); false: "
        "one map for all, as the paper (on the demo G then invented anatomy: validation PSNR 13.1 dB, CycleGAN 18.9)."))
    d_mismatch: bool = Field(True, description=(
        "Real crops judged by another contrast's map count as fakes too (the matching-aware discriminator of Reed "
        "et al. 2016: half the fake term), so that each map learns what its contrast looks like and not only what "
        "a translation's artefacts look like (without it the maps scored a real T1w as high as a real T2w, and on "
        "real folds the T2w output kept the T1w's contrast or every code gave one image). Needs d_per_contrast."))
    gan_loss: Literal["lsgan", "wgan-gp", "nonsaturating", "minimax", "hinge"] = Field("lsgan", description=(
        "Adversarial loss: wgan-gp is the paper's (Wasserstein loss with gradient penalty lambda_gp, n_critic "
        "discriminator steps per generator step); lsgan (least squares, as CycleGAN) and nonsaturating (the classic "
        "log loss) train faster on the CPU."))
    lambda_cls: float = Field(0.0, ge=0, description=(
        "Weight of the contrast classification losses (D's on real crops, G's on its translations). 0: the "
        "per-contrast maps already judge each image as its contrast; on the demo the paper's weight (1 against "
        "its lambda_rec 10) cost 0.16 T2w SSIM."))
    lambda_rec: float = Field(5.0, ge=0, description=(
        "Weight of the reconstruction (cycle) L1 losses, back to each code: 5 against one adversarial term (the "
        "mean over both directions) is CycleGAN's 10 against its two."))
    lambda_gp: float = Field(10.0, ge=0, description="Weight of the gradient penalty (gan_loss wgan-gp only).")
    n_critic: int = Field(1, ge=1, description=(
        "Discriminator steps per generator step (the paper's 5 with wgan-gp): G steps on every n_critic-th step."))
    pool_size: int = _AS_CYCLEGAN["pool_size"]
    lr: float = _AS_CYCLEGAN["lr"]
    betas: Betas = _AS_CYCLEGAN["betas"]
    n_steps: int = _AS_CYCLEGAN["n_steps"]
    n_steps_decay: int = _AS_CYCLEGAN["n_steps_decay"]
    log_every: int = _AS_CYCLEGAN["log_every"]
    checkpoint_every: int = _AS_CYCLEGAN["checkpoint_every"]
    select_best: bool = _AS_CYCLEGAN["select_best"]
    select_metric: Literal["psnr", "ssim"] = _AS_CYCLEGAN["select_metric"]
    precision: PrecisionMode = _AS_CYCLEGAN["precision"]
    deterministic: bool = _AS_CYCLEGAN["deterministic"]
    sw_batch_size: int = _AS_CYCLEGAN["sw_batch_size"]
    overlap: float = _AS_CYCLEGAN["overlap"]
    tta: bool = _AS_CYCLEGAN["tta"]
    tta_views: Literal[2, 4, 8] = _AS_CYCLEGAN["tta_views"]
    detail_transfer: bool = _AS_CYCLEGAN["detail_transfer"]
    planes: bool = _AS_CYCLEGAN["planes"]

    @model_validator(mode="after")
    def _rules(self) -> StarGANConfig:
        translation.check_translation_config(self)  # (steps; the source is not the first target)
        if self.source in self.targets:
            raise Invalid(None, f"the source {self.source!r} is also one of the targets")
        if self.d_mismatch and not self.d_per_contrast:
            raise Invalid("d_mismatch", "needs d_per_contrast (a real/fake map per contrast to judge crops by)")
        return self

    @property
    def contrasts(self) -> list[str]:
        """Every contrast, in code order: the source, then the targets."""
        return [self.source, *self.targets]

    @property
    def target(self) -> str:
        """The default target, the first (a model file's ``translation.target``)."""
        return self.targets[0]


# ------------------------------------------------------------------------------------------ networks
def one_hot_maps(code: torch.Tensor, n_codes: int, like: torch.Tensor) -> torch.Tensor:
    """(N,) contrast indices as (N, n_codes, *spatial of `like`) constant one-hot maps."""
    maps = F.one_hot(code.to(like.device).long(), n_codes).to(like.dtype)
    return maps.view(*maps.shape, *([1] * (like.dim() - 2))).expand(-1, -1, *like.shape[2:])


class CodedGenerator(nn.Module):
    """A translation generator conditioned on the target contrast's one-hot code: as ``n_codes`` extra input channels
    (the paper's) and as a per-contrast scale and shift after each instance norm (conditional instance norm, Dumoulin
    et al. 2017). The second makes the code count: the first convolution turns constant code channels into
    per-channel constants that the instance norm after it subtracts (every code gave the same output without it).
    ``forward(x, code)`` takes (N,) contrast indices; with `fixed` (inference) ``forward(x)`` uses that code."""

    def __init__(self, net: nn.Module, n_codes: int, fixed: int | None = None) -> None:
        super().__init__()
        self.net, self.n_codes, self.fixed = net, n_codes, fixed
        self.multiple = size_multiple(net)
        norms = [m for m in net.modules() if isinstance(m, nn.modules.instancenorm._InstanceNorm)]
        self.styles = nn.ModuleList(nn.Embedding(n_codes, 2 * m.num_features) for m in norms)
        for norm, emb in zip(norms, self.styles, strict=True):
            nn.init.normal_(emb.weight, 0.0, 0.02)
            norm.register_forward_hook(functools.partial(self._modulate, emb))
        self._code: torch.Tensor | None = None

    def _modulate(self, emb: nn.Embedding, module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        gamma, beta = emb(self._code).to(out.dtype).view(*self._code.shape, -1, *([1] * (out.dim() - 2))).chunk(2, 1)
        return out * (1.0 + gamma) + beta

    def forward(self, x: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        if code is None:  # (inference: the fixed code; an unset one fails in `one_hot`)
            code = torch.full((x.shape[0],), -1 if self.fixed is None else self.fixed, dtype=torch.long)
        self._code = code.to(x.device).long()
        try:
            return self.net(torch.cat([x, one_hot_maps(self._code, self.n_codes, x)], dim=1))
        finally:
            self._code = None


def build_networks(cfg: StarGANConfig) -> tuple[dict[str, Any], dict[str, nn.Module]]:
    """The generator's `build_generator` arguments (stored in the model file) and the two networks."""
    g_kwargs = {**cyclegan.generator_kwargs(cfg), "in_channels": 1 + len(cfg.contrasts)}
    body = cyclegan.build_discriminator(cfg)  # CycleGAN's PatchGAN
    disc = ClassifyingDiscriminator(body, cfg.ndf * 2**cfg.d_layers, len(cfg.contrasts), cfg.spatial_dims,
                                    cfg.d_per_contrast)
    return g_kwargs, {"G": CodedGenerator(init_weights(generator_from_kwargs(g_kwargs)), len(cfg.contrasts)),
                      "D": disc}


# ------------------------------------------------------------------------------------------ sampling
class StarSampler:
    """``sampler(step) -> batch``: for each target, CycleGAN's unpaired (source, target) crops (a pure function of
    (seed, step), each pair's sampler with its own seed). ``A``: the source crops, ``B``: the target crops, ``code``:
    the target's index in `StarGANConfig.contrasts` (what each A crop is translated to, each B crop's own)."""

    def __init__(self, samplers: Sequence[Any], codes: Sequence[int], seed: int) -> None:
        self.samplers, self.codes, self.seed = list(samplers), list(codes), seed
        self.subjects, self.axes, self.patch = (getattr(self.samplers[0], k) for k in ("subjects", "axes", "patch"))

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        parts = [s(step) for s in self.samplers]
        code = [torch.full((len(p["A"]),), c, dtype=torch.int64) for p, c in zip(parts, self.codes, strict=True)]
        return {"A": torch.cat([p["A"] for p in parts]), "B": torch.cat([p["B"] for p in parts]),
                "code": torch.cat(code)}

    def close(self) -> None:
        for s in self.samplers:
            s.close()

    def state_dict(self) -> dict[str, Any]:
        return {"pairs": [s.state_dict() for s in self.samplers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Each pair's sampler checks its seed (batches depend on (seed, step) only)."""
        for sampler, pair in zip(self.samplers, state["pairs"], strict=True):
            sampler.load_state_dict(pair)


# ------------------------------------------------------------------------------------------ model
class StarGAN(translation.SelectsCheckpoints, Family):
    """StarGAN: one code-conditioned generator for every target contrast, one discriminator with a contrast classifier."""

    name: ClassVar[str] = "stargan"
    config_class: ClassVar[type] = StarGANConfig
    file_task: ClassVar[str] = "multi-translation"
    takes_affine: ClassVar[bool] = True  # planes: tri-planar only on cubic voxels
    inference_keys: ClassVar[tuple[str, ...]] = CycleGAN.inference_keys
    min_train_subjects: ClassVar[int] = 2  # (the unpaired sampler: source and target from different subjects)
    loss_names: ClassVar[tuple[str, ...]] = ("G_adv", "G_cls", "rec", "G", "D_adv", "D_cls", "gp", "D")

    def __init__(self, cfg: StarGANConfig, device: str | torch.device = "cpu", precision: Precision | None = None,
                 seed: int = 0, meta: dict[str, Any] | None = None, roi_size: Sequence[int] | None = None,
                 train_downsample: int | None = None, val_dir: str | Path | None = None) -> None:
        device = torch.device(device)
        super().__init__(device, precision or Precision(device, cfg.precision))
        self.cfg = cfg
        self.train_downsample = int(train_downsample or cfg.train_downsample or 1)
        self.meta = dict(meta or {})
        self.roi_size = translation.crop_roi(self.name, cfg, roi_size)
        self.g_kwargs, nets = build_networks(cfg)
        self.networks, self.channels_last = translation.place(nets, self.precision, cfg.spatial_dims)
        self.optimizers, self.schedulers = translation.adam_with_linear_decay(self.networks, cfg)
        self.pool = ImagePool(cfg.pool_size, seed=seed * 2 + 1)
        self.real: dict[str, torch.Tensor] = {}
        self.out: dict[str, torch.Tensor] = {}
        self.start_selection(val_dir)  # scored on every target

    @property
    def total_steps(self) -> int:
        return self.cfg.n_steps + self.cfg.n_steps_decay

    # -- data -----------------------------------------------------------------------------------------
    @classmethod
    def prepare_data(cls, cfg: StarGANConfig, data_dir: str | Path, seed: int,
                     cache_dir: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
        """One CycleGAN unpaired sampler per target (`CycleGAN.prepare_data`: disjoint subjects, warm-up, auto
        `train_downsample`, on-disk cache), combined; and the constructor arguments the data implies."""
        samplers, kwargs = [], {}
        meta: dict[str, Any] = {"normalisation": {}}
        try:  # (seeds of their own, so the pairs draw different crops, but one grid: a step's crops are stacked)
            for i, target in enumerate(cfg.targets):
                pair = CycleGANConfig(**{k: getattr(cfg, k) for k in _SAMPLER_KEYS}, target=target)
                sampler, kwargs = CycleGAN.prepare_data(pair, data_dir, seed * len(cfg.targets) + i, cache_dir)
                sampler.grid_seed = seed
                samplers.append(sampler)
                meta["normalisation"].update(kwargs["meta"]["normalisation"])
                meta["n_train_subjects"] = max(meta.get("n_train_subjects", 0), kwargs["meta"]["n_train_subjects"])
        except BaseException:
            for s in samplers:
                s.close()
            raise
        kwargs.update(seed=seed, meta=meta)
        return StarSampler(samplers, range(1, len(cfg.contrasts)), seed), kwargs

    # -- the contract ---------------------------------------------------------------------------------
    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        """Take ``A`` (source crops), ``B`` (target crops), values in [0, 1] mapped to [-1, 1], and ``code``."""
        self.real = translation.generator_range(batch, self.device, self.channels_last)
        self.real["code"] = batch["code"].to(self.device)

    def _adv_g(self, logits: torch.Tensor) -> torch.Tensor:  # (least squares doubled as CycleGAN's)
        kind = self.cfg.gan_loss
        return -logits.float().mean() if kind == "wgan-gp" else cyclegan._G_ADV_SCALE.get(kind, 1.0) * g_loss(logits, kind)

    def _adv_d(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        kind = self.cfg.gan_loss
        return fake.float().mean() - real.float().mean() if kind == "wgan-gp" else 0.5 * d_loss(real, fake, kind)

    def optimize_step(self, step: int) -> None:
        cfg, nets, amp = self.cfg, self.networks, self.precision
        real_a, real_b, code = self.real["A"], self.real["B"], self.real["code"]
        source = torch.zeros_like(code)  # the source's code is 0
        losses: dict[str, torch.Tensor] = {}
        g_step = step % cfg.n_critic == 0

        with amp.autocast(), torch.set_grad_enabled(g_step):
            fake_t = nets["G"](real_a, code)  # source -> each crop's target
            fake_s = nets["G"](real_b, source)  # target -> source
        fakes, fake_codes = torch.cat([fake_t, fake_s]), torch.cat([code, source])

        # generator step, discriminator frozen
        if g_step:
            self.optimizers["G"].zero_grad(set_to_none=True)
            with self.frozen("D"):
                with amp.autocast():
                    rec_a = nets["G"](fake_t, source)  # back to the source code
                    rec_b = nets["G"](fake_s, code)
                    logits, classes = nets["D"](fakes, fake_codes)
                losses["G_adv"] = self._adv_g(logits)
                losses["G_cls"] = F.cross_entropy(classes.float(), fake_codes)
                losses["rec"] = F.l1_loss(rec_a.float(), real_a) + F.l1_loss(rec_b.float(), real_b)
                losses["G"] = losses["G_adv"] + cfg.lambda_cls * losses["G_cls"] + cfg.lambda_rec * losses["rec"]
                amp.backward(losses["G"])
                amp.step(self.optimizers["G"])
            self.out = {"fake_t": fake_t.detach(), "rec_A": rec_a.detach(), "fake_s": fake_s.detach()}

        # discriminator step, generator frozen; fakes from the pool of past fakes
        self.optimizers["D"].zero_grad(set_to_none=True)
        with self.frozen("G"):
            reals, real_codes = torch.cat([real_a, real_b]), torch.cat([source, code])
            # past fakes with their codes (stored as a constant channel, so the pool keeps them together)
            code_map = fake_codes.to(fakes.dtype).view(-1, *([1] * (fakes.dim() - 1))).expand_as(fakes)
            pooled = self.pool.query(torch.cat([fakes.detach(), code_map], 1))
            pooled, pooled_codes = pooled[:, :1], pooled[:, 1].flatten(1)[:, 0].round().long()
            judge_by = real_codes
            if cfg.d_mismatch:  # each real crop under another contrast's map too (torch's RNG: exact resume)
                other = torch.randint(1, len(cfg.contrasts), real_codes.shape).to(real_codes.device)
                judge_by = torch.stack([real_codes, (real_codes + other) % len(cfg.contrasts)], 1)
            with amp.autocast():
                real_logits, real_classes = nets["D"](reals, judge_by)  # (both maps from one pass)
                fake_logits, _ = nets["D"](pooled, pooled_codes)
            losses["D_adv"] = self._adv_d(real_logits[:, :1], fake_logits)
            if cfg.d_mismatch:  # the mismatched reals as fakes: half the fake term
                losses["D_adv"] = 0.5 * (losses["D_adv"] + self._adv_d(real_logits[:, :1], real_logits[:, 1:]))
            losses["D_cls"] = F.cross_entropy(real_classes.float(), real_codes)
            total = losses["D_adv"] + cfg.lambda_cls * losses["D_cls"]
            if cfg.gan_loss == "wgan-gp" and cfg.lambda_gp > 0:
                losses["gp"] = gradient_penalty(lambda x: nets["D"](x, real_codes)[0], reals, pooled)
                total = total + cfg.lambda_gp * losses["gp"]
            losses["D"] = total
            amp.backward(total)
            amp.step(self.optimizers["D"])
        self._losses = {k: v.detach() for k, v in losses.items()}

    def visuals(self) -> dict[str, torch.Tensor]:  # crops, translations, reconstructions in [0, 1]
        items = {"real_A": self.real.get("A"), "real_B": self.real.get("B"), **self.out}
        return {k: (v.float() + 1.0) / 2.0 for k, v in items.items() if v is not None}

    def extra_state(self) -> dict[str, Any]:
        return {"pool": self.pool.state_dict(), **self.selection_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.load_selection_state(state)
        self.pool.load_state_dict(state["pool"])
        self.pool.to(self.device)

    # -- export ---------------------------------------------------------------------------------------
    def model_file(self, steps: int) -> dict[str, Any]:
        """The self-describing model file: the generator, the contrasts in code order, the targets it maps to."""
        net = getattr(self.networks["G"], "module", self.networks["G"])  # (unwrapped from DDP)
        weights = {"state_dict": {k: v.detach().to("cpu") for k, v in net.state_dict().items()}}
        info = {"targets": list(self.cfg.targets), "contrasts": self.cfg.contrasts,
                "train_downsample": self.train_downsample}
        return {**self.model_file_header("stargan"), **translation.model_file_entries(self, weights, steps, **info)}

    def translations(self) -> list[tuple[str, str | None, str]]:
        return [(f"{self.name}_{t}", t, t) for t in self.cfg.targets]  # named as `outputs` names them

    # -- the family contract ---------------------------------------------------------------------------
    @classmethod
    def outputs(cls, cfg: StarGANConfig) -> list[Output]:
        """One output per target contrast, each evaluated as a translation: ``stargan_<target>``."""
        return [Output(f"{cls.name}_{t}", cls.name, "model.pt", "translation", cfg.source, t, t, ("--direction", t))
                for t in cfg.targets]

    @classmethod
    def direction(cls, requested: str | None) -> str | None:
        """The target contrast `--direction`/`--target` names (None: the file's first), checked against the model file."""
        return requested

    @classmethod
    def _target(cls, blob: dict[str, Any], requested: str | None) -> str:
        info = blob["translation"]
        target = requested or info["target"]
        if target not in info["targets"]:
            raise ValueError(f"this StarGAN model maps {info['source']} to {', '.join(info['targets'])}; "
                             f"--direction/--target {target!r} is not one of them")
        return target

    @classmethod
    def load_generator(cls, blob: dict[str, Any], direction: str | None, device: str | torch.device) -> nn.Module:
        """The generator with the code of the target `direction` (None: the first target) fixed, in eval mode."""
        contrasts = blob["translation"]["contrasts"]
        net = generator_from_kwargs(blob["generator"]["kwargs"])
        coded = CodedGenerator(net, len(contrasts), fixed=contrasts.index(cls._target(blob, direction)))
        coded.load_state_dict(blob["state_dict"])
        return coded.to(torch.device(device)).eval()

    @classmethod
    def io_modalities(cls, blob: dict[str, Any], direction: str | None) -> tuple[tuple[str, dict], tuple[str, dict]]:
        src, dst = blob["translation"]["source"], cls._target(blob, direction)
        norms = blob.get("normalisation", {})
        return (src, norms.get(src, {})), (dst, norms.get(dst, {}))

    @classmethod
    def apply(cls, generator: nn.Module, volume: np.ndarray, blob: dict[str, Any],
              device: str | torch.device = "cpu", **settings: Any) -> np.ndarray:
        """CycleGAN's whole-volume translation (the same model-file layout), the target code fixed in `generator`."""
        return CycleGAN.apply(generator, volume, blob, device, **settings)
