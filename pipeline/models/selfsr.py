"""Self-supervised through-plane super-resolution (`pipeline.selfsr`) as a workflow family.

Its network learns from each scan itself (the in-plane detail, re-sliced with the slice profile), so there is no
cohort training: the training job writes the *recipe* (the settings below) as the model file, and inference
(`apply`) trains one small network per scan and applies it. That keeps the generic workflow: `models: [selfsr]`
infers every subject with a thick-slice input in one `infer_model` job (about 3-5 CPU-minutes per scan: demo
163-179 s, a 240 x 240 x 40 scan 323 s), evaluation scores it where an isotropic ground truth exists (against cubic
interpolation of the same slices) and the report shows input / cubic / self-SR panels. `python -m pipeline infer
--model results/models/selfsr/model.pt --input thick.nii.gz` does the same for one scan (as does `python -m
pipeline selfsr`).

Its input by default is preprocess.thick's `<modality>_thick` (thick slices made from the subject's own scan, so it
can be scored); on a cohort of thick-slice scans with no isotropic twin, keep their grid (`preprocess.spacing:
null`, the thick scan as the reference modality) and set `input` to that modality: every subject is super-resolved
and nothing is scored (the output's truth column is its input: `pipeline.workflow.plan`, evaluation's `unscorable`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from pipeline.config import Section, to_dict
from pipeline.models.contract import Family, Output, inference_settings

log = logging.getLogger(__name__)


class SelfSRConfig(Section):
    """Self-supervised through-plane SR of thick-slice scans (SMORE/ECLARE's idea, our implementation)."""

    where: ClassVar[str] = "selfsr"

    modality: str = Field("T1w", description=(
        "The modality: its thick-slice input is the subjects.tsv column <modality>_thick (preprocess.thick), "
        "scored against <modality> itself."))
    input: str | None = Field(None, description=(
        "null: <modality>_thick. A modality column instead (e.g. T2w) super-resolves the cohort's own thick-slice "
        "scans (keep their grid: preprocess.spacing null, that modality first in preprocess.reference_modalities): "
        "every subject with one, of any split; with no ground truth they are not scored."))
    slice_profile: Literal["rect", "gaussian"] = Field("rect", description=(
        "The slice profile the training pairs are made with (preprocess.thick's for the demo)."))
    slice_thickness_mm: float | None = Field(None, gt=0, description=(
        "Slice thickness in mm (rect width or Gaussian FWHM); null: the slice spacing (contiguous slices)."))
    steps: int = Field(1500, ge=1, description="L1 training steps per scan (corpus: 3000 gained +0.07 dB over 1500).")
    adversarial_steps: int = Field(0, ge=0, description="SRGAN fine-tuning steps per scan after the L1 phase (0: off).")
    data_consistency: bool = Field(True, description=(
        "Correct each output so that it re-slices exactly to its input (inference only)."))
    tta: bool = Field(True, description="Average each slice over its 4 flips (inference only).")
    rotations: list[float] = Field([0.0, 45.0], min_length=1, description=(
        "Turns (degrees) of the volume about its through-plane axis that the network is applied in, two views "
        "each: 0 the sagittal and coronal slices, 45 the two diagonal planes (corpus, 4 mm slices: +0.06-0.08 dB "
        "for 1.7x the CPU time; [0] is the two views alone). Non-square in-plane voxels get [0]."))


class SelfSR(Family):
    """Self-supervised through-plane super-resolution: one network per scan, learnt from the scan itself."""

    name: ClassVar[str] = "selfsr"
    config_class: ClassVar[type] = SelfSRConfig
    file_task: ClassVar[str] = "selfsr"
    inference_keys: ClassVar[tuple[str, ...]] = ("data_consistency", "tta")
    self_supervised: ClassVar[bool] = True
    takes_affine: ClassVar[bool] = True  # the scan's geometry: axes, ratio, output grid

    @classmethod
    def outputs(cls, cfg: SelfSRConfig) -> list[Output]:
        if cfg.input:  # the scans themselves: no ground truth (the truth column is the input's)
            return [Output("selfsr", cls.name, "model.pt", "sr", cfg.input, cfg.input, "selfsr")]
        return [Output("selfsr", cls.name, "model.pt", "sr", f"{cfg.modality}_thick", cfg.modality, "selfsr")]

    @classmethod
    def recipe(cls, cfg: SelfSRConfig, seed: int) -> dict[str, Any]:
        """The model file (kind "self-supervised"): what `apply` trains each scan's network with (no weights)."""
        modality = cfg.input or cfg.modality  # the contrast of the scans it super-resolves (BIDS suffix, DICOM)
        return {**cls.model_file_header("self-supervised"), "modality": modality,
                "settings": {**to_dict(cfg), "seed": seed},
                "inference": {"data_consistency": cfg.data_consistency, "tta": cfg.tta}}

    @classmethod
    def load_generator(cls, blob: dict[str, Any], direction: str | None, device: str | torch.device) -> None:
        """None: the network is trained for each scan by `apply`."""
        cls.direction(direction)
        return None

    @classmethod
    def io_modalities(cls, blob: dict[str, Any], direction: str | None) -> tuple[tuple[str, dict], tuple[str, dict]]:
        modality = blob.get("modality", "")
        return (modality, {}), (modality, {})

    @classmethod
    def apply(cls, generator: nn.Module | None, volume: np.ndarray, blob: dict[str, Any],
              device: str | torch.device = "cpu", affine: np.ndarray | None = None, **settings: Any) -> np.ndarray:
        """Train a network on `volume` (its voxel sizes from `affine`) and super-resolve its through-plane axis."""
        from pipeline.selfsr.profile import SliceProfile
        from pipeline.selfsr.run import selfsr_volume
        from pipeline.selfsr.train import TrainSettings

        if affine is None:
            raise ValueError("selfsr needs the scan's affine (its voxel sizes give the through-plane axis and scale)")
        recipe = blob["settings"]
        s = inference_settings(blob, **settings)
        train = TrainSettings(steps=int(recipe["steps"]), adv_steps=int(recipe["adversarial_steps"]),
                              tta=bool(s.get("tta", True)), seed=int(recipe.get("seed", 0)),
                              # a recipe from before the diagonal views was applied in two views
                              rotations=tuple(float(r) for r in recipe.get("rotations", [0.0])))
        profile = SliceProfile.parse(recipe["slice_profile"], recipe.get("slice_thickness_mm"))
        out, _, summary = selfsr_volume(volume, affine, profile, train, bool(s.get("data_consistency", True)))
        log.info("selfsr summary: %s", json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                                   for k, v in summary.items()}))
        return out

    @classmethod
    def output_affine(cls, affine: np.ndarray, blob: dict[str, Any]) -> np.ndarray:
        from pipeline.selfsr.run import output_affine, plan

        return output_affine(affine, plan((4, 4, 4), affine))

    @classmethod
    def write_recipe(cls, cfg: SelfSRConfig, out_dir: Path, seed: int) -> list[Path]:
        """The training job of a self-supervised family: the model file (the recipe) and an empty history."""
        from pipeline.gan.checkpoint import save_checkpoint
        from pipeline.io.atomic import write_text

        out_dir.mkdir(parents=True, exist_ok=True)
        write_text(out_dir / "history.csv", "step\n")
        summary = {"steps": f"{cfg.steps} per scan", "device": "each scan, at inference", "precision": "fp32",
                   "self_supervised": True, "files": ["model.pt"],
                   "note": "no cohort training: each scan trains its own network at inference"}
        write_text(out_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")
        save_checkpoint(cls.recipe(cfg, seed), out_dir / "model.pt")  # last: the job's marker
        return [out_dir / "history.csv", out_dir / "train_summary.json", out_dir / "model.pt"]
