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


class Invalid(ValueError):
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


def Distinct(item: Any, noun: str) -> Any:
    """A list that names each item at most once (`Distinct(str, "contrast")`): checked here and flagged
    `uniqueItems` in the schema, so that our validation and Snakemake's agree."""

    def check(items: list[Any]) -> list[Any]:
        repeated = next((x for i, x in enumerate(items) if x in items[:i]), None)
        if repeated is not None:
            raise ValueError(f"lists the {noun} {repeated!r} twice")
        return items

    return Annotated[list[item], AfterValidator(check), Field(json_schema_extra={"uniqueItems": True})]


#: modality names (columns of subjects.tsv), each once
Modalities = Distinct(str, "modality")
#: an int choice: `Annotated[Literal[2, 4], INT_CHOICE]`
INT_CHOICE = BeforeValidator(_not_bool)
#: an odd integer, checked here and in the schema
OddInt = Annotated[int, AfterValidator(_odd), Field(json_schema_extra={"not": {"multipleOf": 2}})]
Positive = Annotated[float, Field(gt=0)]
Percentile = Annotated[float, Field(ge=0, le=100)]
Beta = Annotated[float, Field(ge=0, lt=1)]
#: Adam's (beta1, beta2)
Betas = tuple[Beta, Beta]
#: a family's `precision` key
PrecisionMode = Literal["auto", "fp32", "bf16", "fp16"]


def _check_regexes(patterns: list[str], key: str) -> None:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise Invalid(key, f"bad regular expression {pattern!r}: {exc}") from exc


# --------------------------------------------------------------------------------------------- sections
class DemoConfig(Section):
    """The embedded demo cohort (stage 1), simulated offline from the MNI152 2009 template shipped in nilearn."""

    where: ClassVar[str] = "demo"

    n_subjects: int = Field(26, ge=3, description=(
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
            raise Invalid(None, f"n_dicom must be between 0 and n_subjects ({self.n_subjects}), "
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
    fill_missing_slices: bool = Field(False, description=(
        "A DICOM series with missing slices (gaps that are whole multiples of the slice spacing) is kept instead "
        "of skipped: the missing positions are inserted and filled (by the inpainting model of fill_model, else "
        "by linear interpolation along the slice axis); the filled slices are listed in the manifest's reason and "
        "the sidecar (filled_slices): derived data, not measured."))
    fill_model: str = Field("", description=(
        "A trained inpainting model file (results/models/inpaint/model.pt) that fills the missing slices of "
        "fill_missing_slices; empty: linear interpolation."))
    keep_duplicates: bool = Field(True, description=(
        "Several series of one modality for one subject: true keeps all (the primary, the finest resolution, "
        "as sub-NNN_<modality>, the others as sub-NNN_run-2_<modality>, ...; the manifest's primary column "
        "says which); false keeps only the primary and lists the others as skipped."))

    @model_validator(mode="after")
    def _rules(self) -> IngestConfig:
        for modality, patterns in self.modality_patterns.items():
            if not re.fullmatch(MODALITY_NAME, modality):
                raise Invalid("modality_patterns", f"modality name {modality!r} must be letters/digits only")
            _check_regexes(patterns, f"modality_patterns.{modality}")
        _check_regexes(self.skip_patterns, "skip_patterns")
        return self


class SplitConfig(Section):
    """Subject-level split into train/val/test (stage 3), seeded by the top-level seed."""

    where: ClassVar[str] = "preprocess.split"

    train: float = Field(0.6, ge=0, description=(
        "Share of subjects for training (ratios are normalised by their sum)."))
    val: float = Field(0.1, ge=0, description=(
        "Share of subjects for validation (model selection only: a few subjects suffice)."))
    test: float = Field(0.3, ge=0, description=(
        "Share of subjects for testing. Every split with a share > 0 gets at least one subject; fewer "
        "subjects than such splits is an error (with 2 subjects, set val to 0)."))
    subjects_file: str = Field("config/subjects.tsv", description=(
        "Optional TSV with columns subject and split (train, val or test) that fixes the split of the "
        "subjects it lists; the rest are split at random to keep the ratios. Used only if it exists. A subject "
        "is a pseudonym (sub-003) or your own ID (BIDS label, PatientID, folder name: mapped through the "
        "pseudonym key); an optional id_type column (pseudonym, bids, dicom, nifti) settles an ID that "
        "matches several. An ID that matches nothing is an error."))

    @model_validator(mode="after")
    def _rules(self) -> SplitConfig:
        ratios = (self.train, self.val, self.test)
        if sum(ratios) <= 0:
            raise Invalid(None, f"ratios must not all be 0, got {ratios}")
        return self


class SRConfig(Section):
    """The low-resolution inputs for super-resolution (<modality>_lr.nii.gz, stage 3)."""

    where: ClassVar[str] = "preprocess.sr"

    modalities: Modalities = Field(default_factory=lambda: ["T1w"], description=(
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
            raise Invalid(None, "method thick_slice averages slices along z; set axes: through")
        return self


class MotionConfig(Section):
    """Motion-corrupted inputs for motion-artifact correction (<modality>_motion.nii.gz, stage 3): rigid head motion
    simulated in k-space (`pipeline.imaging.motion`), seeded by the workflow seed and the subject."""

    where: ClassVar[str] = "preprocess.motion"

    modalities: Modalities = Field(default_factory=lambda: ["T1w"], description=(
        "Modalities for which a motion-corrupted image is made (when the subject has them); [] makes none."))
    fraction: float = Field(0.3, ge=0, le=1, description=(
        "Severity: the share of the shots acquired in another pose (less their lines in the k-space centre, "
        "see centre_fraction); 0 gives the clean image exactly."))
    max_translation_mm: float = Field(3.0, ge=0, description=(
        "Largest translation of a moved shot along each axis, in mm (drawn uniformly in +-this)."))
    max_rotation_deg: float = Field(3.0, ge=0, description=(
        "Largest rotation of a moved shot about each axis, in degrees (drawn uniformly in +-this)."))
    n_shots: int = Field(16, ge=1, description=(
        "Groups of phase-encode lines (shots) acquired in one pose each."))
    ordering: Literal["linear", "interleaved"] = Field("linear", description=(
        "Which lines a shot holds: linear (contiguous blocks, e.g. an MPRAGE: motion blurs and rings) or "
        "interleaved (every n_shots-th line, a segmented turbo spin echo: motion makes ghosts)."))
    pe_axis: Annotated[Literal[0, 1, 2], INT_CHOICE] = Field(1, description=(
        "The phase-encode axis of the (RAS) volume: 1 (anterior-posterior, usual for axial brain scans); the "
        "ghosts run along it."))
    centre_fraction: float = Field(0.08, ge=0, lt=1, description=(
        "The central share of the phase-encode lines, always acquired in the reference pose (the ground truth's)."))


class GapsConfig(Section):
    """Inputs with missing slices for inpainting (<modality>_gaps.nii.gz, stage 3): random runs of consecutive
    slices along z deleted (set to NaN) on the subject's grid, seeded by the workflow seed and the subject; the
    deleted slices are recorded in normalisation.json (`pipeline.imaging.gaps`)."""

    where: ClassVar[str] = "preprocess.gaps"

    modalities: Modalities = Field(default_factory=lambda: ["T1w"], description=(
        "Modalities for which an image with missing slices is made (when the subject has them); [] makes none."))
    run_lengths: list[Annotated[int, Field(ge=1, le=16)]] = Field(default_factory=lambda: [1, 2, 3], min_length=1,
                                                                  description=(
        "Lengths (in slices) of the deleted runs, used in turn so that each occurs; evaluation reports each "
        "length separately."))
    n_runs: int = Field(6, ge=1, description="Runs of deleted slices per volume (fewer when the volume has no room).")
    min_separation: int = Field(6, ge=1, description=(
        "Measured slices at least between two runs (and runs only where the foreground covers at least 20% of "
        "its largest slice area, so every gap can be scored)."))
    n_boxes: int = Field(0, ge=0, description=(
        "Random boxes (inside the foreground) deleted as well; 0: missing slices only."))
    box_size: int = Field(16, ge=2, description="Side of the deleted boxes in voxels.")


class ThickConfig(Section):
    """Thick-slice inputs for self-supervised through-plane super-resolution (<modality>_thick.nii.gz, stage 3): the
    image re-sliced along z into slices `factor` voxels apart with a slice profile (`pipeline.selfsr.profile`), on
    a grid `factor` times coarser along z; scored against the image itself."""

    where: ClassVar[str] = "preprocess.thick"

    modalities: Modalities = Field(default_factory=lambda: ["T1w"], description=(
        "Modalities for which a thick-slice image is made (when the subject has them); [] makes none."))
    factor: int = Field(4, ge=2, le=8, description=(
        "Slice spacing in voxels of the subject's grid (4 on a 1 mm grid: 4 mm slices); z is padded to a multiple."))
    profile: Literal["rect", "gaussian"] = Field("rect", description=(
        "Slice profile: rect (the mean of the voxels a slice covers) or gaussian (FWHM = thickness)."))
    thickness: float | None = Field(None, gt=0, description=(
        "Slice thickness (rect width or Gaussian FWHM) in voxels of the subject's grid; null: the spacing "
        "(contiguous slices); less than factor leaves a gap."))


class PreprocessConfig(Section):
    """Preprocessing (stage 3): RAS orientation, resampling onto one grid per subject, intensity
    normalisation, foreground mask, subject-level split, and the low-resolution inputs for super-resolution."""

    where: ClassVar[str] = "preprocess"

    spacing: tuple[Positive, Positive, Positive] | None = Field(None, strict=False, description=(
        "Voxel size in mm (x, y, z) each subject's reference scan is resampled to (all its other modalities "
        "follow onto the same grid; finer scans are anti-aliased first); null (the default) keeps the reference "
        "scan's own grid, so super-resolution works at the scans' resolution (real 1 mm T1w, leave-one-out: "
        "about +1 dB over zero-filling at 1 mm, +0.4 dB at 2 mm)."))
    reference_modalities: Modalities = Field(
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
    motion: MotionConfig = Field(default_factory=MotionConfig)
    gaps: GapsConfig = Field(default_factory=GapsConfig)
    thick: ThickConfig = Field(default_factory=ThickConfig)

    @model_validator(mode="after")
    def _rules(self) -> PreprocessConfig:
        if not self.mr_percentiles[0] < self.mr_percentiles[1]:
            raise Invalid(None, f"mr_percentiles must be [low, high] with low < high, "
                                 f"got {list(self.mr_percentiles)}")
        if not self.ct_window[0] < self.ct_window[1]:
            raise Invalid(None, f"ct_window must be [low, high] in HU with low < high, "
                                 f"got {list(self.ct_window)}")
        return self


class EvaluateConfig(Section):
    """Evaluation (stage 6): PSNR, SSIM, MAE and NRMSE in 3D over the foreground mask, for every model and its
    classical baselines, with bootstrap CIs and paired Wilcoxon tests against the strongest baseline."""

    where: ClassVar[str] = "evaluate"

    splits: Distinct(Literal["train", "val", "test"], "split") = Field(
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
    sr_baselines: Distinct(Literal["bicubic", "trilinear", "zerofill"], "baseline") = Field(
        default_factory=lambda: ["bicubic", "trilinear", "zerofill"], description=(
            "Super-resolution baselines (interpolations of the LR input); zerofill (zero-filled k-space) is used "
            "only when preprocess.sr.method is kspace. The strongest (highest mean PSNR) is the one a model is "
            "judged against."))
    translation_baselines: Distinct(Literal["identity", "histogram_match", "histogram_match_inverted"],
                                    "baseline") = Field(
        default_factory=lambda: ["identity", "histogram_match", "histogram_match_inverted"], description=(
            "Translation baselines - the source image, the source histogram-matched to the target, and the "
            "inverted source histogram-matched to it (a decreasing intensity map: T1w -> T2w is mostly one)."))
    inpainting_baselines: Distinct(Literal["linear", "cubic"], "baseline") = Field(
        default_factory=lambda: ["linear", "cubic"], min_length=1, description=(
            "Inpainting baselines: linear and cubic-spline interpolation along z across each gap from the measured "
            "slices. Inpainting metrics are computed inside the deleted voxels (and the mask) only."))
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


class ExportConfig(Section):
    """Exports of the test subjects' outputs (rules/export.smk): derived DICOM series, BIDS derivatives."""

    where: ClassVar[str] = "export"

    dicom: bool = Field(False, description=(
        "Each output of each test subject as a new derived DICOM series (DERIVED\\SECONDARY, marked synthetic, "
        "not for diagnosis) in results/export/dicom/<output>/<subject>/."))
    bids: bool = Field(True, description=(
        "The test subjects' outputs as a BIDS derivatives dataset in results/derivatives/medgan/."))
    reidentify: bool = Field(False, description=(
        "DICOM export with the original patient ID (from the pseudonym key) and, for DICOM inputs, the source's "
        "identification, StudyInstanceUID and series references, to file it into the patient's study in PACS; "
        "false: the pseudonym as patient ID and name, a new study, no source UID."))


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
    export: ExportConfig = Field(default_factory=ExportConfig)


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
    if kind == "value_error" and isinstance(ctx.get("error"), Invalid):
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
