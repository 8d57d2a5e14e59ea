"""Typed configuration sections: the one source of every key's type, default, range and description.

Each section of `config/config.yaml` is a frozen pydantic model (`Section`) that rejects unknown keys and
wrong types with a `ConfigError` naming the key. A stage validates its section when it starts
(`python -m pipeline <stage> --params ...`, see `load_params`); Snakemake validates the whole file before the
DAG is built against `config/config.schema.yaml`, which `pipeline.workflow_config` generates from these models
(a test fails when the committed schema is stale). Per-key ranges live in `Field(...)`, so they reach the
schema; rules across keys are `model_validator`s and are checked in Python only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

S = TypeVar("S", bound="Section")

#: what a modality name (a key of ingest.modality_patterns, a column of subjects.tsv) may consist of
MODALITY_NAME = r"^[A-Za-z0-9]+$"


class ConfigError(ValueError):
    """A configuration value is missing, misspelt, of the wrong type or out of range."""


class _Invalid(ValueError):
    """Raised by a section's own rules: a key's (`key`, relative to the section) or, with `key` None, a rule
    across keys, which the message then names at the section (`srgan: pretrain_steps + gan_steps ...`)."""

    def __init__(self, key: str | None, text: str) -> None:
        super().__init__(text)
        self.key = key


# --------------------------------------------------------------------------------------------- base
class Section(BaseModel):
    """A config section: frozen, unknown keys rejected, strict types (a bool is not an int, a string is not a
    number; an int is fine for a float and a list for a tuple). Invalid values raise `ConfigError`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)
    #: where the section sits in config.yaml, for messages of sections built directly (`DemoConfig(...)`)
    where: ClassVar[str] = "config"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(describe(exc, type(self), type(self).where)) from None


def _not_bool(value: Any) -> Any:
    """Int choices (`Literal[2, 4]`) reject bools and floats, as int keys do."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    return value


def _odd(value: int) -> int:
    if value % 2 == 0:
        raise ValueError("must be odd")
    return value


#: an int choice: `Annotated[Literal[2, 4], INT_CHOICE]`
INT_CHOICE = BeforeValidator(_not_bool)
#: an odd integer, checked here and in the schema
OddInt = Annotated[int, AfterValidator(_odd), Field(json_schema_extra={"not": {"multipleOf": 2}})]
Positive = Annotated[float, Field(gt=0)]
Percentile = Annotated[float, Field(ge=0, le=100)]
Beta = Annotated[float, Field(ge=0, lt=1)]
#: Adam's (beta1, beta2)
Betas = tuple[Beta, Beta]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


def _check_regexes(patterns: list[str], key: str) -> None:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _Invalid(key, f"bad regular expression {pattern!r}: {exc}") from exc


# --------------------------------------------------------------------------------------------- sections
class DemoConfig(Section):
    """The embedded demo cohort (stage 1), simulated offline from the MNI152 2009 template shipped in nilearn."""

    where: ClassVar[str] = "demo"

    n_subjects: int = Field(12, ge=3, description=(
        "Number of simulated subjects (each with T1w, T2w, PDw); 3 at least, so that train, val and test "
        "each get one."))
    n_dicom: int = Field(4, ge=0, description=(
        "How many of them (at most n_subjects) are written as DICOM series (the rest as NIfTI in a BIDS layout)."))
    voxel_mm: float = Field(2.0, ge=0.5, le=8.0, description=(
        "Isotropic voxel size of the simulated volumes in mm (0.5 to 8)."))
    seed: int = Field(20261122, description="Seed of the simulation; the same seed gives identical voxels.")
    noise: bool = Field(True, description=(
        "Rician noise on the images. false gives the noise-free twin of the same cohort (same anatomy, "
        "contrast and bias field), to measure what an ideal model could score against the noisy images "
        "(benchmarks/translation_ceiling.py)."))

    @model_validator(mode="after")
    def _rules(self) -> DemoConfig:
        if self.n_dicom > self.n_subjects:
            raise _Invalid(None, f"n_dicom must be between 0 and n_subjects ({self.n_subjects}), "
                                 f"got {self.n_dicom}")
        return self


class IngestConfig(Section):
    """Ingestion of DICOM / NIfTI / BIDS inputs (stage 2)."""

    where: ClassVar[str] = "ingest"

    modality_patterns: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "FLAIR": [r"flair", r"dark.?fluid"],
            "PDw": [r"(?<![a-z])pd(?![a-z])", r"pdw", r"proton.?density"],
            "T1w": [r"t1(?![0-9])", r"mp2?rage", r"spgr", r"tfl3d", r"bravo", r"tfe"],
            "T2w": [r"t2(?![0-9]|\s*\*|_?star)", r"tse", r"fse", r"space"],
        },
        json_schema_extra={"propertyNames": {"pattern": MODALITY_NAME}},
        description=(
            "Modality -> case-insensitive regular expressions searched in an MR series' SeriesDescription, "
            "ProtocolName and SequenceName; the first modality (in this order) with a match wins, so list the "
            "specific ones (FLAIR, PDw) before the broad ones. CT is recognised from the Modality tag. Modality "
            "names (letters and digits) also name the output files and are accepted as BIDS suffixes and "
            "file-name tokens of NIfTI inputs."))
    skip_patterns: list[str] = Field(
        default_factory=lambda: [r"locali[sz]er", r"scout", r"survey", r"topogram"],
        description=(
            "Case-insensitive regular expressions searched in a DICOM series' SeriesDescription and "
            "ProtocolName; a match skips the series (localizers, scouts), in addition to ImageType LOCALIZER."))
    min_slices: int = Field(3, ge=2, description=(
        "A DICOM series or NIfTI axis with fewer slices than this is not a volume and is skipped."))
    slice_spacing_tolerance: float = Field(0.02, gt=0, le=0.5, description=(
        "Largest deviation of a gap between adjacent DICOM slices from the median gap, as a fraction of it; "
        "beyond it the series is skipped as unevenly spaced (gaps near a multiple of the spacing are reported "
        "as missing slices)."))
    keep_duplicates: bool = Field(True, description=(
        "Several series of one modality for one subject: true keeps all (the primary, the finest resolution, "
        "as sub-NNN_<modality>, the others as sub-NNN_run-2_<modality>, ...; the manifest's primary column "
        "says which); false keeps only the primary and lists the others as skipped."))

    @model_validator(mode="after")
    def _rules(self) -> IngestConfig:
        for modality, patterns in self.modality_patterns.items():
            if not re.fullmatch(MODALITY_NAME, modality):
                raise _Invalid("modality_patterns", f"modality name {modality!r} must be letters/digits only")
            _check_regexes(patterns, f"modality_patterns.{modality}")
        _check_regexes(self.skip_patterns, "skip_patterns")
        return self


class SplitConfig(Section):
    """Subject-level split into train/val/test (stage 3), seeded by the top-level seed."""

    where: ClassVar[str] = "preprocess.split"

    train: float = Field(0.6, ge=0, description=(
        "Share of subjects for training (ratios are normalised by their sum)."))
    val: float = Field(0.2, ge=0, description="Share of subjects for validation.")
    test: float = Field(0.2, ge=0, description=(
        "Share of subjects for testing. With 3 or more subjects every split with a share > 0 gets at least "
        "one subject."))
    subjects_file: str = Field("config/subjects.tsv", description=(
        "Optional TSV with columns subject and split (train, val or test) that fixes the split of the "
        "subjects it lists; the rest are split at random to keep the ratios. Used only if it exists."))

    @model_validator(mode="after")
    def _rules(self) -> SplitConfig:
        ratios = (self.train, self.val, self.test)
        if sum(ratios) <= 0:
            raise _Invalid(None, f"ratios must not all be 0, got {ratios}")
        return self


class SRConfig(Section):
    """The low-resolution inputs for super-resolution (<modality>_lr.nii.gz, stage 3)."""

    where: ClassVar[str] = "preprocess.sr"

    modalities: list[str] = Field(default_factory=lambda: ["T1w"], description=(
        "Modalities for which a low-resolution image is made (when the subject has them)."))
    method: Literal["kspace", "bicubic", "area", "thick_slice"] = Field("kspace", description=(
        "kspace: keep the central 1/scale of k-space (an MR scanner's smaller matrix); bicubic: anti-aliased "
        "bicubic downsampling; area: block mean; thick_slice: mean of scale adjacent slices (z only, needs "
        "axes: through)."))
    scale: Annotated[Literal[2, 4], INT_CHOICE] = Field(4, description=(
        "Downsampling factor along each degraded axis."))
    axes: Literal["inplane", "all", "through"] = Field("inplane", description=(
        "Degraded axes - inplane (x, y; for 2D models), all (x, y, z; 3D) or through (z)."))

    @model_validator(mode="after")
    def _rules(self) -> SRConfig:
        if self.method == "thick_slice" and self.axes != "through":
            raise _Invalid(None, "method thick_slice averages slices along z; set axes: through")
        return self


class PreprocessConfig(Section):
    """Preprocessing (stage 3): RAS orientation, resampling onto one grid per subject, intensity
    normalisation, foreground mask, subject-level split, and the low-resolution inputs for super-resolution."""

    where: ClassVar[str] = "preprocess"

    spacing: tuple[Positive, Positive, Positive] | None = Field((2.0, 2.0, 2.0), strict=False, description=(
        "Voxel size in mm (x, y, z) each subject's reference scan is resampled to (all its other modalities "
        "follow onto the same grid); null keeps the reference scan's own grid."))
    reference_modalities: list[str] = Field(
        default_factory=lambda: ["T1w", "T2w", "PDw", "FLAIR", "CT"], min_length=1, description=(
            "Priority list: the first of these modalities a subject has defines its grid and its foreground mask; "
            "the others are resampled onto it so that they overlay voxel for voxel."))
    mr_percentiles: tuple[Percentile, Percentile] = Field((0.5, 99.5), strict=False, description=(
        "MR intensities are clipped to these percentiles [low, high] of the foreground (low < high), then "
        "scaled to [0, 1]."))
    ct_window: tuple[float, float] = Field((-1000.0, 2000.0), strict=False, description=(
        "CT intensities are clipped to this window [low, high] in HU (low < high), then scaled to [0, 1]."))
    split: SplitConfig = Field(default_factory=SplitConfig)
    sr: SRConfig = Field(default_factory=SRConfig)

    @model_validator(mode="after")
    def _rules(self) -> PreprocessConfig:
        if not self.mr_percentiles[0] < self.mr_percentiles[1]:
            raise _Invalid(None, f"mr_percentiles must be [low, high] with low < high, "
                                 f"got {list(self.mr_percentiles)}")
        if not self.ct_window[0] < self.ct_window[1]:
            raise _Invalid(None, f"ct_window must be [low, high] in HU with low < high, "
                                 f"got {list(self.ct_window)}")
        return self


class EvaluateConfig(Section):
    """Evaluation (stage 6): PSNR, SSIM, MAE and NRMSE in 3D over the foreground mask, for every model and its
    classical baselines, with bootstrap CIs and paired Wilcoxon tests against the strongest baseline."""

    where: ClassVar[str] = "evaluate"

    splits: list[Literal["train", "val", "test"]] = Field(
        default_factory=lambda: ["test"], min_length=1, description=(
            "Subjects of these splits are scored; each needs an output of every evaluated model."))
    data_range: float = Field(1.0, gt=0, description=(
        "Intensity range of the normalised images (1.0 for [0, 1]); PSNR's peak and SSIM's dynamic range L."))
    clip: bool = Field(True, description=(
        "Clip model outputs and baselines to [0, data_range] before scoring."))
    ssim_kernel: Literal["gaussian", "uniform"] = Field("gaussian", description=(
        "SSIM window, Gaussian (Wang et al. 2004) or uniform."))
    ssim_window: OddInt = Field(11, ge=3, description=(
        "SSIM window width in voxels (odd). For the Gaussian it must equal the width scikit-image uses, "
        "2 * int(3.5 * sigma + 0.5) + 1 (11 for sigma 1.5)."))
    ssim_sigma: float = Field(1.5, gt=0, description=(
        "Standard deviation of the Gaussian SSIM window in voxels."))
    sr_baselines: list[Literal["bicubic", "trilinear", "zerofill"]] = Field(
        default_factory=lambda: ["bicubic", "trilinear", "zerofill"], description=(
            "Super-resolution baselines (interpolations of the LR input); zerofill (zero-filled k-space) is used "
            "only when preprocess.sr.method is kspace. The strongest (highest mean PSNR) is the one a model is "
            "judged against."))
    translation_baselines: list[Literal["identity", "histogram_match"]] = Field(
        default_factory=lambda: ["identity", "histogram_match"], description=(
            "Translation baselines - the source image, and the source histogram-matched to the target."))
    bootstrap_resamples: int = Field(10000, ge=100, description=(
        "Resamples of the percentile bootstrap for CIs of means and of paired differences."))
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of the intervals.")
    seed: int = Field(20240607, description="Seed of the bootstrap (the same seed gives the same intervals).")
    figure_dpi: int = Field(110, ge=50, description="Resolution of the PNG figures.")


class ReportConfig(Section):
    """The HTML report (stage 7), assembled from what evaluation wrote; it computes nothing."""

    where: ClassVar[str] = "report"

    title: str = Field("GAN super-resolution and modality translation", description=(
        "Title of reports/index.html."))
    decimals: int = Field(3, ge=1, le=6, description=(
        "Decimal places of SSIM, MAE and NRMSE in the tables (PSNR always 2)."))


# --------------------------------------------------------------------------------------------- model families
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
    patch_size: int = Field(0, ge=0, description=(
        "HR side of the training crops in voxels (divisible by the scale); crop centres lie inside the "
        "foreground mask. 0: whole slices (2D) / volumes (3D)."))
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
    pretrain_steps: int = Field(3600, ge=0, description=(
        "Phase 1: SRResNet steps with the pixel loss only; the result is exported as srresnet.pt."))
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
    # loop
    log_every: int = Field(100, ge=1, description="Steps between log lines (and rows of history.csv).")
    checkpoint_every: int = Field(250, ge=1, description=(
        "Steps between checkpoints; a killed run restarts from the last one."))
    precision: Precision = Field("auto", description=(
        "auto: bf16 autocast on CUDA (fp16 + grad scaler where bf16 is missing), fp32 on CPU; fp32, bf16 or "
        "fp16 force one (autocast on CUDA only)."))
    deterministic: bool = Field(True, description=(
        "Deterministic kernels where PyTorch has them (exact resume on CPU; may be slower on CUDA)."))
    # inference (whole volumes)
    roi_size: int = Field(64, ge=1, description=(
        "Inference: sliding-window side in LR voxels (2D: slices larger than this are tiled)."))
    sw_batch_size: int = Field(16, ge=1, description=(
        "Inference: windows (2D: slices) per forward pass; bounds the memory used."))
    overlap: float = Field(0.25, ge=0, lt=1, description=(
        "Inference: overlap of neighbouring sliding windows (fraction of the window)."))
    tta: bool = Field(False, description=(
        "Inference: average the generator's residual over the flips (and in-plane transposes) of the input, "
        "undone on the output (self-ensemble; 8x the inference compute; on the demo it did not help: 21.36 vs "
        "21.40 dB)."))

    @model_validator(mode="after")
    def _rules(self) -> SRGANConfig:
        if self.pretrain_steps + self.gan_steps < 1:
            raise _Invalid(None, "pretrain_steps + gan_steps must be >= 1")
        return self


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
    train_downsample: int = Field(1, ge=1, description=(
        "Train and translate on a grid this many times coarser (block averages); the output is upsampled back "
        "to the input grid. 1 keeps the input resolution."))
    warmup_steps: int = Field(1200, ge=0, description=(
        "Resolution curriculum - the first warmup_steps steps train on crops from a grid warmup_downsample "
        "times coarser, at most its whole slices (the contrast mapping is found quickly on small images with "
        "the whole anatomy in view, then refined at full resolution); 0 disables it."))
    warmup_downsample: int = Field(2, ge=1, description=(
        "How much coarser the warm-up grid is than the training grid."))
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
    n_steps: int = Field(1200, ge=0, description="Steps at the constant learning rate.")
    n_steps_decay: int = Field(3000, ge=0, description=(
        "Steps of linear decay of the learning rate to 0 after n_steps."))
    log_every: int = Field(50, ge=1, description="Steps between log lines / history.csv rows.")
    checkpoint_every: int = Field(200, ge=1, description=(
        "Steps between checkpoints (training resumes from the last one)."))
    precision: Precision = Field("auto", description=(
        "Mixed precision on CUDA (auto - bf16 where supported, else fp16); CPU always fp32."))
    deterministic: bool = Field(True, description="Deterministic kernels where PyTorch has them.")
    sw_batch_size: int = Field(16, ge=1, description=(
        "Windows (slices or patches) per forward pass at inference."))
    overlap: float = Field(0.25, ge=0, lt=1, description="Overlap of inference windows (Gaussian-blended).")
    tta: bool = Field(True, description=(
        "Inference: average the translations of every window's 8 flips/transposes (3D: 8 flips; 8x the time). "
        "The GAN's invented texture differs between them, the anatomy does not (demo: +1.7 dB, +0.11 SSIM)."))

    @model_validator(mode="after")
    def _rules(self) -> CycleGANConfig:
        if self.n_steps + self.n_steps_decay < 1:
            raise _Invalid(None, "n_steps + n_steps_decay must be >= 1")
        if self.source == self.target:
            raise _Invalid(None, f"source and target are both {self.source!r}")
        return self


# --------------------------------------------------------------------------------------------- the workflow
class WorkflowBase(Section):
    """Configuration of the workflow (config/config.yaml). Unknown keys are errors, so a misspelt key fails
    before any job runs. The sections of the model families are added by `pipeline.workflow_config`."""

    where: ClassVar[str] = ""  # top-level keys are named as they are (`models`, `demo.n_subjects`)
    input_dir: str = Field("", description=(
        "Folder of scans (DICOM in any nesting, NIfTI, BIDS). Empty generates and uses the demo cohort."))
    seed: int = Field(42, description="Seed for splits, sampling and training.")
    models: list[str] = Field(default_factory=lambda: ["srgan", "cyclegan"], description=(
        "The GAN families this run trains, applies and evaluates (each a registered family, once)."))
    demo: DemoConfig = Field(default_factory=DemoConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)


# --------------------------------------------------------------------------------------------- parsing
_EXPECTED = {"int_type": "expected an integer", "float_type": "expected a number",
             "bool_type": "expected true or false", "string_type": "expected a string",
             "list_type": "expected a list", "tuple_type": "expected a list",
             "dict_type": "expected a mapping", "model_type": "expected a mapping"}
_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<="), "multiple_of": ("multiple_of", "a multiple of")}


def _fields_at(cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the section found at `loc` below `cls`."""
    for part in loc:
        sub = cls.model_fields[part].annotation if part in cls.model_fields else None
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return []
        cls = sub
    return list(cls.model_fields)


def _path(where: str, loc: tuple[Any, ...]) -> str:
    """`where` and a pydantic error location as a key path: `preprocess.split.train`, `srgan.betas[0]`."""
    path = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    return path.lstrip(".") or "config"


def _one(error: Any, cls: type[BaseModel], where: str) -> str:
    loc = tuple(error["loc"])
    kind, ctx, value = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "extra_forbidden":
        allowed = ", ".join(sorted(_fields_at(cls, loc[:-1])))
        return f"{_path(where, loc[:-1])}: unknown key {loc[-1]!r}; allowed: {allowed}"
    if kind == "value_error" and isinstance(ctx.get("error"), ConfigError):
        return str(ctx["error"])  # a nested section's own __init__ named the key already
    if kind == "value_error" and isinstance(ctx.get("error"), _Invalid):
        if ctx["error"].key:
            loc = (*loc, ctx["error"].key)
        value = None  # the message says what it got
    path = _path(where, loc)
    if kind in _BOUNDS:
        name, op = _BOUNDS[kind]
        bound = ctx[name]
        text = f"must be {op} {int(bound) if isinstance(bound, float) and bound.is_integer() else bound}"
    elif kind == "too_short":
        text = f"must have at least {ctx['min_length']} item(s)"
    elif kind == "too_long":
        text = f"must have at most {ctx['max_length']} item(s)"
    elif kind == "missing" and loc and isinstance(loc[-1], int):
        text = "missing (too few items)"
    elif kind == "literal_error":
        text = f"must be {ctx['expected']}"
    elif kind in _EXPECTED:
        text = _EXPECTED[kind]
    elif kind == "value_error":
        text = str(ctx["error"])
    else:
        text = error["msg"][:1].lower() + error["msg"][1:]
    if value is None or isinstance(value, dict) or kind == "missing":
        return f"{path}: {text}"
    shown = f"{type(value).__name__} {value!r}" if text.startswith("expected") else repr(value)
    return f"{path}: {text}, got {shown}"


def describe(exc: ValidationError, cls: type[BaseModel], where: str) -> str:
    """pydantic's errors as one line per key, each naming the key path, e.g. `srgan.lr: must be > 0, got -1`."""
    return "; ".join(_one(error, cls, where) for error in exc.errors())


def parse(cls: type[S], data: Any, where: str) -> S:
    """Validate plain data (a mapping, or None for the defaults) as the section `cls` found at `where`.

    Messages name keys by their path in config.yaml (`srgan.lr`), from the sections' `where`.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, cls, where)) from None


def load_params(source: str | None, cls: type[S], where: str) -> S:
    """Parse a section given on the command line as inline JSON, a YAML/JSON file path, or nothing (defaults)."""
    if not source:
        return cls()
    text = source.strip()
    if text.startswith("{"):
        data = json.loads(text)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"--params: {source!r} is neither inline JSON nor an existing file")
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and list(data) == [where]:  # a config file holding just this section
            data = data[where]
    return parse(cls, data, where)


def to_dict(section: BaseModel) -> dict[str, Any]:
    """The resolved section as plain data (for provenance and checkpoints; tuples stay tuples)."""
    return section.model_dump()
