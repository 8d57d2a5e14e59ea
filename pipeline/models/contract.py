"""The model-family contract: what every GAN family module offers, and its model files.

A family is one module under `pipeline/models/` holding
  * its typed config section (`config_class`; one block of `config/config.yaml`, keyed by the family's name),
  * its training sampler, built by `prepare_data` (a pure function of (seed, step); `pipeline.data` has samplers),
  * its `GANModel` for the one training loop (`pipeline.gan.base`): a subclass of `Family` below,
  * its pure ``apply(generator, volume, blob, ...)``, which the shared whole-volume inference
    (`pipeline.inference`) calls,
and one entry in `pipeline.models.FAMILIES`. The workflow's rules, the infer stage, evaluation and the report are
generic over families: they learn what a family exports from `outputs(cfg)` (one `Output` per exported
generator) and from the model files themselves.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from pipeline import __version__
from pipeline.gan.base import GANModel

MODEL_FORMAT = "medgan-model/1"


@dataclasses.dataclass(frozen=True)
class Output:
    """One generator a family exports, as the workflow infers and evaluates it."""

    name: str  #: results/infer/<name>/ and results/metrics/<name>.csv
    family: str  #: results/models/<family>/ holds its model file, history.csv and train_summary.json
    model_file: str  #: the model file's name in results/models/<family>/
    task: str  #: an evaluation task kind (`pipeline.evaluation.tasks.TASK_KINDS`: sr, translation, restoration, ...)
    input: str  #: the subjects.tsv column of the input scan
    truth: str  #: the subjects.tsv column of the ground truth (the input's: none; self-supervised, not scored)
    desc: str  #: outputs are results/infer/<name>/<subject>_<desc>.nii.gz
    infer_args: tuple[str, ...] = ()  #: extra `python -m pipeline infer` arguments (e.g. a direction)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Family(GANModel):
    """A GAN family: the loop contract of `GANModel` plus what training export and inference need."""

    #: the model file's "task" (kept for model files written before "family" was recorded)
    file_task: ClassVar[str] = ""
    #: config keys that only inference reads (the infer rule passes them; changing them does not retrain)
    inference_keys: ClassVar[tuple[str, ...]] = ()
    #: the generators of a model file that `--direction` chooses between (empty: the file has one)
    directions: ClassVar[tuple[str, ...]] = ()
    #: a self-supervised family learns from each scan at inference, not from the cohort: its training job only
    #: writes the recipe as the model file (`write_recipe`)
    self_supervised: ClassVar[bool] = False
    #: `apply` also gets the scan's `affine` (None when unknown): self-supervised SR (its geometry), tri-planar
    #: translation (its voxel sizes)
    takes_affine: ClassVar[bool] = False
    #: training subjects (with the input or the truth) training needs; the workflow skips the family, and says why,
    #: when the split gives it fewer (unpaired sampling takes source and target from different subjects: 2)
    min_train_subjects: ClassVar[int] = 1
    #: `apply` takes an ``outcome`` dict and records in it what really produced the output (inpainting: the model,
    #: or the interpolation its self-check chose); `outcome_note` words it for the listing and the report
    reports_outcome: ClassVar[bool] = False

    # -- the workflow -----------------------------------------------------------------------------------
    @classmethod
    def outputs(cls, cfg: Any) -> list[Output]:
        """The generators this family's training exports and the workflow infers and evaluates."""
        raise NotImplementedError

    # -- inference --------------------------------------------------------------------------------------
    @classmethod
    def direction(cls, requested: str | None) -> str | None:
        """The generator `--direction` picks (its default: the first), checked."""
        if not cls.directions:
            if requested:
                raise ValueError(f"{cls.name} model files hold one generator; --direction is not for them")
            return None
        if requested is None:
            return cls.directions[0]
        if requested not in cls.directions:
            raise ValueError(f"--direction must be one of {', '.join(cls.directions)}, got {requested!r}")
        return requested

    @classmethod
    def build_generator(cls, kwargs: dict[str, Any]) -> nn.Module:
        """An untrained generator from a model file's ``generator.kwargs`` (what the default `load_generator` needs)."""
        raise NotImplementedError

    @classmethod
    def load_generator(cls, blob: dict[str, Any], direction: str | None, device: str | torch.device) -> nn.Module:
        """The generator (of `direction`) of a model file, weights loaded, in eval mode on `device`. Default: a
        file with one generator, `build_generator` of its ``generator.kwargs`` loaded with its ``state_dict``."""
        cls.direction(direction)
        net = cls.build_generator(blob["generator"]["kwargs"])
        net.load_state_dict(blob["state_dict"])
        return net.to(torch.device(device)).eval()

    @classmethod
    def io_modalities(cls, blob: dict[str, Any], direction: str | None) -> tuple[tuple[str, dict], tuple[str, dict]]:
        """((input modality, its recorded normalisation), (output modality, its recorded normalisation))."""
        raise NotImplementedError

    @classmethod
    def apply(cls, generator: nn.Module, volume: np.ndarray, blob: dict[str, Any],
              device: str | torch.device = "cpu", **settings: Any) -> np.ndarray:
        """The generator applied to a whole normalised (x, y, z) volume: pure, no file access. `settings`
        (roi_size, sw_batch_size, overlap, tta, precision; None: the model file's ``inference`` entry)."""
        raise NotImplementedError

    @classmethod
    def outcome_note(cls, outcome: dict[str, Any]) -> str | None:
        """What a reader of an output must know about how it was made, from `apply`'s `outcome` (None: the
        model made it, as its name says)."""
        return None

    @classmethod
    def write_recipe(cls, cfg: Any, out_dir: Path, seed: int) -> list[Path]:
        """A self-supervised family's training job: write the model file (and history.csv) from the config."""
        raise NotImplementedError

    @classmethod
    def output_affine(cls, affine: np.ndarray, blob: dict[str, Any]) -> np.ndarray:
        """The affine of the output's grid, given the input's (default: the same grid)."""
        return affine

    # -- model files --------------------------------------------------------------------------------------
    @classmethod
    def model_file_header(cls, kind: str) -> dict[str, Any]:
        """The keys every model file starts with."""
        return {"format": MODEL_FORMAT, "family": cls.name, "task": cls.file_task, "kind": kind,
                "package_version": __version__, "torch_version": str(torch.__version__)}


def same_modality_io(blob: dict[str, Any], entry: str) -> tuple[tuple[str, dict], tuple[str, dict]]:
    """`Family.io_modalities` of a family whose output has its input's modality, recorded in the model file's
    ``<entry>.modality`` (so --normalise maps a restored scan back to the input's units)."""
    modality = blob[entry]["modality"]
    norm = blob.get("normalisation", {}).get(modality, {})
    return (modality, norm), (modality, norm)


def inference_settings(blob: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The model file's ``inference`` entry with the given non-None `overrides` applied."""
    settings = dict(blob.get("inference", {}))
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings


def load_model_file(path: str | Path) -> dict[str, Any]:
    """Read a model file safely (weights_only) and check it is one of ours."""
    from pipeline.gan.checkpoint import load_checkpoint

    blob = load_checkpoint(path, map_location="cpu")
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else None
        raise ValueError(f"{path}: not a model file of this pipeline (format {found!r}, expected "
                         f"{MODEL_FORMAT!r}; checkpoints/last.pt is a training checkpoint, use model.pt)")
    return blob
