"""What an ideal missing-slice filler could score on the demo's test subjects (run by hand, not in CI).

    python benchmarks/inpaint_ceiling.py [--run-dir /path/to/finished/demo/run/with/inpaint]

The inpainting evaluation scores a filled slice against the measured one, and the measured slice carries the
demo's Rician noise, which nothing can predict from the slice's neighbours. This script measures the ceiling that
noise sets: like `translation_ceiling.py` it simulates the demo cohort with and without noise (same anatomy,
contrast and bias field; the noisy run's deleted slices), runs ingest and preprocess with `config/config.yaml`, and scores each
test subject's deleted slices inside the mask with the evaluation's own `gap_metrics`, per gap length:

- ``linear`` / ``cubic``: the evaluation's baselines (`pipeline.imaging.gaps.interpolate`) on the noisy input;
- ``noise-free slice, fitted``: the noise-free image (least-squares affine intensity map onto the noisy one in the
  mask, fitted on the truth, so slightly optimistic): an upper bound for any filler, since no filler knows the
  deleted slice's own noise;
- ``linear, noise-free neighbours``: linear interpolation of the noise-free input, fitted the same way: the error
  the anatomy alone leaves to a linear filler;
- ``linear, neighbours smoothed``: linear interpolation of the noisy input smoothed in-plane (Gaussian, sigma
  0.5 voxel): the simplest denoise-then-interpolate filler, which a model has to beat to have learnt anatomy;
- with ``--run-dir``: the run's inpainting outputs (``results/infer/inpaint/<subject>_inpaint.nii.gz``).

Prints a markdown table (mean PSNR over subjects per gap length, SSIM over all gaps) and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def smoothed(gapped: np.ndarray, unknown: np.ndarray, sigma: float = 0.5) -> np.ndarray:
    """`gapped` (deleted voxels NaN) smoothed in-plane, its deleted voxels NaN again."""
    from scipy import ndimage

    out = ndimage.gaussian_filter(np.nan_to_num(gapped), (sigma, sigma, 0))
    return np.where(unknown, np.nan, out).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    from translation_ceiling import fitted, prepare, write_table

    from pipeline.config import EvaluateConfig, load_params
    from pipeline.evaluation.inpainting import gap_metrics, length_regions
    from pipeline.imaging.gaps import interpolate, unknown_mask
    from pipeline.io.nifti import load_nifti
    from pipeline.io.tables import read_subjects

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--modality", default="T1w")
    parser.add_argument("--run-dir", type=Path, default=None, help="a finished run with inpainting outputs")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "inpaint_ceiling.md")
    args = parser.parse_args(argv)

    config = {**yaml.safe_load(args.config.read_text()), "models": ["inpaint"]}  # preprocessing makes the gaps
    cfg = load_params(json.dumps(config.get("evaluate") or {}), EvaluateConfig, "evaluate")
    splits = set(cfg.splits)
    # (method, gap length or "all") -> subject -> metrics
    scores: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="inpaint-ceiling-") as tmp:
        noisy_tsv = prepare(Path(tmp) / "noisy", config, noise=True)
        clean_tsv = prepare(Path(tmp) / "clean", config, noise=False)
        subjects = [r["subject"] for r in read_subjects(noisy_tsv, splits=splits)]

        def load(tsv: Path, subject: str, name: str) -> np.ndarray:
            return load_nifti(tsv.parent / subject / f"{name}.nii.gz")[0]

        for subject in subjects:
            truth = load(noisy_tsv, subject, args.modality)
            mask = load(noisy_tsv, subject, "mask") > 0
            gapped = load(noisy_tsv, subject, f"{args.modality}_gaps")
            clean = load(clean_tsv, subject, args.modality)
            if clean.shape != truth.shape:
                raise RuntimeError(f"{subject}: the noisy and noise-free runs made different grids")
            # the slices the noisy run deleted (the noise-free run draws its own: its mask differs slightly)
            unknown = unknown_mask(gapped)
            clean_gapped = np.where(unknown, np.nan, clean).astype(np.float32)
            candidates = {
                "linear interpolation": interpolate(gapped, "linear", unknown),
                "cubic interpolation": interpolate(gapped, "cubic", unknown),
                "linear, noise-free neighbours": fitted(interpolate(clean_gapped, "linear", unknown), truth, mask),
                "linear, neighbours smoothed in-plane (sigma 0.5 voxel)": interpolate(smoothed(gapped, unknown),
                                                                                     "linear", unknown),
                "noise-free slice, fitted (ceiling)": fitted(clean, truth, mask),
            }
            if args.run_dir is not None:
                path = args.run_dir / "results" / "infer" / "inpaint" / f"{subject}_inpaint.nii.gz"
                if path.is_file():
                    candidates["model: inpaint"] = load_nifti(path)[0]
            regions = {str(k): v for k, v in length_regions(unknown, mask).items()}
            regions["all"] = unknown & mask
            for name, image in candidates.items():
                for length, region in regions.items():
                    scores.setdefault(name, {}).setdefault(length, {})[subject] = gap_metrics(image, truth, region, cfg)

    lengths = sorted((k for k in next(iter(scores.values())) if k != "all"), key=int)

    def mean(name: str, length: str, metric: str, digits: int = 2) -> str:
        per = scores[name].get(length, {})
        return f"{statistics.mean(m[metric] for m in per.values()):.{digits}f}" if per else "-"

    lines = [f"# Inpainting ceiling: {args.modality} of the demo's {'/'.join(sorted(splits))} subjects "
             f"({len(subjects)})", "",
             f"Command: `python benchmarks/inpaint_ceiling.py {' '.join(argv or sys.argv[1:])}`", "",
             "PSNR (dB) inside the deleted slices and the mask, mean over subjects, scored against the noisy "
             "measured slice.", "",
             "| filler | " + " | ".join(f"{k}-slice gaps" for k in lengths) + " | all gaps | SSIM, all gaps |",
             "|---" * (len(lengths) + 3) + "|"]
    for name in scores:
        lines.append(f"| {name} | " + " | ".join(mean(name, k, "psnr") for k in lengths)
                     + f" | {mean(name, 'all', 'psnr')} | {mean(name, 'all', 'ssim', 3)} |")
    write_table(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
