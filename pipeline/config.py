"""Typed configuration sections.

`config/config.yaml` is validated twice: by Snakemake against `config/config.schema.yaml` before the DAG is
built, and here, section by section, when a stage starts (`python -m pipeline <stage> --params ...`). Each
section is a frozen dataclass that rejects unknown keys and wrong types with a message naming the key.
`tests/unit/test_config.py` checks that schema, YAML and dataclasses agree, so they cannot drift.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, misspelt or of the wrong type."""


# --------------------------------------------------------------------------------------------- sections
def _check_regexes(patterns: list[str], where: str) -> None:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{where}: bad regular expression {pattern!r}: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The embedded demo cohort (stage 1)."""

    n_subjects: int = 12
    n_dicom: int = 4
    voxel_mm: float = 2.0
    seed: int = 20261122
    # false: the noise-free twin of the cohort (same anatomy, contrast and bias field), for measuring what an
    # ideal model could score against the noisy images (benchmarks/translation_ceiling.py)
    noise: bool = True


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """DICOM/NIfTI/BIDS ingestion (stage 2)."""

    # Modality -> regexes searched (case-insensitively) in an MR series' SeriesDescription, ProtocolName and
    # SequenceName; the first modality in this order with a match wins, so FLAIR ("T2 FLAIR") beats T2w and
    # PDw ("PD TSE") beats T2w's "tse".
    modality_patterns: dict[str, list[str]] = dataclasses.field(
        default_factory=lambda: {
            "FLAIR": [r"flair", r"dark.?fluid"],
            "PDw": [r"(?<![a-z])pd(?![a-z])", r"pdw", r"proton.?density"],
            "T1w": [r"t1(?![0-9])", r"mp2?rage", r"spgr", r"tfl3d", r"bravo", r"tfe"],
            "T2w": [r"t2(?![0-9]|\s*\*|_?star)", r"tse", r"fse", r"space"],
        }
    )
    # Regexes on SeriesDescription/ProtocolName of series to skip (besides ImageType LOCALIZER).
    skip_patterns: list[str] = dataclasses.field(
        default_factory=lambda: [r"locali[sz]er", r"scout", r"survey", r"topogram"]
    )
    min_slices: int = 3
    slice_spacing_tolerance: float = 0.02
    keep_duplicates: bool = True

    def __post_init__(self) -> None:
        if self.min_slices < 2:
            raise ConfigError(f"ingest.min_slices: must be >= 2, got {self.min_slices!r}")
        if not 0 < self.slice_spacing_tolerance <= 0.5:
            raise ConfigError(f"ingest.slice_spacing_tolerance: must be in (0, 0.5], got {self.slice_spacing_tolerance!r}")
        for modality, patterns in self.modality_patterns.items():
            if not re.fullmatch(r"[A-Za-z0-9]+", modality):
                raise ConfigError(f"ingest.modality_patterns: modality name {modality!r} must be letters/digits only")
            _check_regexes(patterns, f"ingest.modality_patterns.{modality}")
        _check_regexes(self.skip_patterns, "ingest.skip_patterns")


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """Subject-level train/val/test split (stage 3), seeded by the top-level `seed`."""

    train: float = 0.6
    val: float = 0.2
    test: float = 0.2
    subjects_file: str = "config/subjects.tsv"

    def __post_init__(self) -> None:
        ratios = (self.train, self.val, self.test)
        if min(ratios) < 0 or sum(ratios) <= 0:
            raise ConfigError(f"preprocess.split: ratios must be >= 0 and not all 0, got {ratios}")


@dataclasses.dataclass(frozen=True)
class SRConfig:
    """How the low-resolution inputs for super-resolution are made (stage 3)."""

    modalities: list[str] = dataclasses.field(default_factory=lambda: ["T1w"])
    method: typing.Literal["kspace", "bicubic", "area", "thick_slice"] = "kspace"
    scale: typing.Literal[2, 4] = 4
    axes: typing.Literal["inplane", "all", "through"] = "inplane"

    def __post_init__(self) -> None:
        if self.method == "thick_slice" and self.axes != "through":
            raise ConfigError("preprocess.sr: method thick_slice averages slices along z; set axes: through")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Orientation, resampling, normalisation, masks, split and SR inputs (stage 3)."""

    spacing: tuple[float, float, float] | None = (2.0, 2.0, 2.0)
    reference_modalities: list[str] = dataclasses.field(
        default_factory=lambda: ["T1w", "T2w", "PDw", "FLAIR", "CT"]
    )
    mr_percentiles: tuple[float, float] = (0.5, 99.5)
    ct_window: tuple[float, float] = (-1000.0, 2000.0)
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    sr: SRConfig = dataclasses.field(default_factory=SRConfig)

    def __post_init__(self) -> None:
        if self.spacing is not None and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            raise ConfigError(f"preprocess.spacing: expected 3 positive numbers or null, got {self.spacing!r}")
        pct = tuple(self.mr_percentiles)
        if len(pct) != 2 or not 0 <= pct[0] < pct[1] <= 100:
            raise ConfigError(f"preprocess.mr_percentiles: expected [low, high], 0 <= low < high <= 100, got {pct}")
        if len(self.ct_window) != 2 or not self.ct_window[0] < self.ct_window[1]:
            raise ConfigError(f"preprocess.ct_window: expected [low, high] in HU, low < high, got {self.ct_window}")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Image-quality metrics, baselines and statistics (stage 6); the protocol is in `pipeline/evaluate.py`."""

    splits: list[str] = dataclasses.field(default_factory=lambda: ["test"])
    data_range: float = 1.0
    clip: bool = True
    ssim_kernel: typing.Literal["gaussian", "uniform"] = "gaussian"
    ssim_window: int = 11
    ssim_sigma: float = 1.5
    sr_baselines: list[typing.Literal["bicubic", "trilinear", "zerofill"]] = dataclasses.field(
        default_factory=lambda: ["bicubic", "trilinear", "zerofill"]
    )
    translation_baselines: list[typing.Literal["identity", "histogram_match"]] = dataclasses.field(
        default_factory=lambda: ["identity", "histogram_match"]
    )
    bootstrap_resamples: int = 10000
    confidence: float = 0.95
    seed: int = 20240607
    figure_dpi: int = 110

    def __post_init__(self) -> None:
        if not self.splits or any(s not in ("train", "val", "test") for s in self.splits):
            raise ConfigError(f"evaluate.splits: expected some of train, val, test, got {self.splits!r}")
        if self.data_range <= 0:
            raise ConfigError(f"evaluate.data_range: must be > 0, got {self.data_range!r}")
        if self.ssim_window < 3 or self.ssim_window % 2 == 0:
            raise ConfigError(f"evaluate.ssim_window: must be an odd integer >= 3, got {self.ssim_window!r}")
        if self.ssim_sigma <= 0:
            raise ConfigError(f"evaluate.ssim_sigma: must be > 0, got {self.ssim_sigma!r}")
        if self.bootstrap_resamples < 100:
            raise ConfigError(f"evaluate.bootstrap_resamples: must be >= 100, got {self.bootstrap_resamples!r}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"evaluate.confidence: must be in (0, 1), got {self.confidence!r}")


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """The HTML report (stage 7): it assembles what evaluation wrote and computes nothing."""

    title: str = "GAN super-resolution and modality translation"
    decimals: int = 3


@dataclasses.dataclass(frozen=True)
class SRGANConfig:
    """SRGAN super-resolution (stages 4-5): data, networks, the two training phases, inference.

    The upsampling factor and axes come from the data (the preprocess stage's `sr` section).
    """

    modality: str = "T1w"
    spatial_dims: typing.Literal[2, 3] = 2
    patch_size: int = 0
    batch_size: int = 8
    flip: bool = True
    context_slices: int = 2  # 2D only (3D patches have their through-plane context)
    channels: int = 64
    n_blocks: int = 6
    norm: typing.Literal["batch", "instance", "none"] = "none"
    interp_skip: typing.Literal["zerofill", "bicubic", "trilinear", "nearest", "none"] = "zerofill"
    outer_kernel: int = 9
    upsampler: typing.Literal["stages", "final"] = "final"
    discriminator: typing.Literal["patch", "vgg"] = "patch"
    d_channels: int = 32
    d_layers: int = 3
    pretrain_steps: int = 3600
    gan_steps: int = 250
    pixel_loss: typing.Literal["l1", "mse"] = "mse"
    pixel_weight: float = 1.0
    adv_loss: typing.Literal["nonsaturating", "minimax", "lsgan", "hinge"] = "nonsaturating"
    adv_weight: float = 1e-3
    fm_weight: float = 0.0
    lr: float = 8e-4
    warmup_steps: int = 200
    lr_gan: float = 5e-5
    lr_d: float = 1e-4
    lr_min_ratio: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    log_every: int = 100
    checkpoint_every: int = 250
    precision: typing.Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    deterministic: bool = True
    roi_size: int = 64
    sw_batch_size: int = 16
    overlap: float = 0.25
    tta: bool = False

    def __post_init__(self) -> None:
        for key in ("batch_size", "channels", "log_every", "checkpoint_every", "sw_batch_size", "roi_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"srgan.{key}: must be >= 1, got {getattr(self, key)!r}")
        for key in ("n_blocks", "pretrain_steps", "gan_steps", "warmup_steps", "context_slices", "patch_size",
                    "fm_weight", "pixel_weight", "adv_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"srgan.{key}: must be >= 0, got {getattr(self, key)!r}")
        if self.pretrain_steps + self.gan_steps < 1:
            raise ConfigError("srgan: pretrain_steps + gan_steps must be >= 1")
        if self.outer_kernel < 1 or self.outer_kernel % 2 == 0:
            raise ConfigError(f"srgan.outer_kernel: must be odd, got {self.outer_kernel!r}")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"srgan.overlap: must be in [0, 1), got {self.overlap!r}")
        if len(self.betas) != 2:
            raise ConfigError(f"srgan.betas: expected two numbers, got {self.betas!r}")


@dataclasses.dataclass(frozen=True)
class CycleGANConfig:
    """CycleGAN modality translation (stages 4-5): unpaired source <-> target, 2D slices or 3D patches.

    The shipped defaults are the demo's budget configuration (a small ResNet generator trained for a few
    minutes on 2 CPU cores); `config/cyclegan_full.yaml` is the longer reference-like one.
    """

    source: str = "T1w"
    target: str = "T2w"
    spatial_dims: typing.Literal[2, 3] = 2
    slice_axis: typing.Literal[0, 1, 2] = 2
    train_downsample: int = 1
    warmup_steps: int = 1200
    warmup_downsample: int = 2
    patch_size: int = 48
    batch_size: int = 4
    flip: bool = True
    generator: typing.Literal["resnet", "unet"] = "resnet"
    n_blocks: int = 4
    ngf: int = 16
    ndf: int = 16
    d_layers: int = 3
    gan_loss: typing.Literal["lsgan", "nonsaturating", "minimax", "hinge"] = "lsgan"
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.0
    pool_size: int = 50
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    n_steps: int = 1200
    n_steps_decay: int = 3000
    log_every: int = 50
    checkpoint_every: int = 200
    precision: typing.Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    deterministic: bool = True
    sw_batch_size: int = 16
    overlap: float = 0.25
    tta: bool = True

    def __post_init__(self) -> None:
        for key in ("batch_size", "ngf", "ndf", "d_layers", "log_every", "checkpoint_every", "sw_batch_size",
                    "train_downsample", "warmup_downsample"):
            if getattr(self, key) < 1:
                raise ConfigError(f"cyclegan.{key}: must be >= 1, got {getattr(self, key)!r}")
        for key in ("n_blocks", "patch_size", "n_steps", "n_steps_decay", "pool_size", "lambda_cycle",
                    "lambda_identity", "warmup_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"cyclegan.{key}: must be >= 0, got {getattr(self, key)!r}")
        if self.n_steps + self.n_steps_decay < 1:
            raise ConfigError("cyclegan: n_steps + n_steps_decay must be >= 1")
        if self.source == self.target:
            raise ConfigError(f"cyclegan: source and target are both {self.source!r}")
        if self.patch_size and self.patch_size % 4:
            raise ConfigError(f"cyclegan.patch_size: must be a multiple of 4 (or 0: whole slices), got {self.patch_size}")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"cyclegan.overlap: must be in [0, 1), got {self.overlap!r}")
        if len(self.betas) != 2:
            raise ConfigError(f"cyclegan.betas: expected two numbers, got {self.betas!r}")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """The whole workflow configuration (`config/config.yaml`)."""

    input_dir: str = ""
    seed: int = 42
    demo: DemoConfig = dataclasses.field(default_factory=DemoConfig)
    ingest: IngestConfig = dataclasses.field(default_factory=IngestConfig)
    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)
    cyclegan: CycleGANConfig = dataclasses.field(default_factory=CycleGANConfig)
    srgan: SRGANConfig = dataclasses.field(default_factory=SRGANConfig)


# --------------------------------------------------------------------------------------------- parsing
def _check_type(value: Any, hint: Any, where: str) -> Any:
    """Return `value` checked (and for nested dataclasses, parsed) against the type hint `hint`."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return parse_section(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            try:
                return _check_type(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} matches none of {hint}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        items = [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        _, vtype = typing.get_args(hint) or (Any, Any)
        return {k: _check_type(v, vtype, f"{where}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if hint in (str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def parse_section(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build the dataclass `cls` from `data`, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(fields))}")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def load_params(source: str | None, cls: type[T], where: str) -> T:
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
    return parse_section(cls, data, where)


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a whole `config.yaml`."""
    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    return parse_section(PipelineConfig, data, where=str(path))


def to_dict(section: Any) -> dict[str, Any]:
    """The resolved section as plain data (for provenance and checkpoints)."""
    return dataclasses.asdict(section)
