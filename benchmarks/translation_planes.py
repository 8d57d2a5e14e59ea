"""Tri-planar inference of a trained 2D translation model: one plane or three, with and without TTA.

    python benchmarks/translation_planes.py --data results/preprocess --model results/models/cyclegan/model.pt

Scores the model on the test subjects inside the mask (`real_data.score_translation`: the workflow's inference and
metrics), once per variant of the inference settings `planes` (the model's slice axis alone, or all three axes
averaged, for scans with cubic voxels) and `tta` (`tta_views` flips/transposes of each window, or none), and the
evaluation's strongest baseline (histogram matching of the inverted source). Prints mean PSNR / SSIM and the mean
inference seconds per subject; StarGAN: one block per target. Run it from the run's folder (subjects.tsv's paths
are relative to it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_data import score_translation  # noqa: E402

from pipeline.config import EvaluateConfig  # noqa: E402
from pipeline.gan.checkpoint import load_checkpoint  # noqa: E402
from pipeline.io.tables import read_subjects  # noqa: E402

VARIANTS = {"one plane, TTA 8 views": {"planes": False, "tta": True, "tta_views": 8},
            "three planes, TTA 8 views": {"planes": True, "tta": True, "tta_views": 8},
            "three planes, TTA 4 views": {"planes": True, "tta": True, "tta_views": 4},
            "three planes, TTA 2 views": {"planes": True, "tta": True, "tta_views": 2},
            "one plane, no TTA": {"planes": False, "tta": False}, "three planes, no TTA": {"planes": True, "tta": False}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="the preprocess folder (subjects.tsv)")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    blob = load_checkpoint(args.model)
    info, family = blob["translation"], blob["family"]
    rows = read_subjects(args.data / "subjects.tsv", [args.split])
    cfg = EvaluateConfig()
    for target in info.get("targets", [info["target"]]):
        direction = target if family == "stargan" else ("A2B" if family == "cyclegan" else None)
        cases = [r for r in rows if r.get(target)]
        print(f"{family} {info['source']} -> {target}, {len(cases)} {args.split} subjects (PSNR dB / SSIM, s per subject)")
        for name, settings in VARIANTS.items():
            scores = [score_translation(args.model, r, cfg, info["source"], target, direction, settings=settings)
                      for r in cases]
            psnr, ssim = (np.mean([s["model"][k] for s in scores]) for k in ("psnr", "ssim"))
            secs = np.mean([s["infer_s"] for s in scores])
            print(f"  {name:26s} {psnr:.2f} / {ssim:.3f}  {secs:.1f} s", flush=True)
        base = [s["histogram_match_inverted"] for s in scores]
        print(f"  {'inverted hist. match':26s} {np.mean([b['psnr'] for b in base]):.2f} / "
              f"{np.mean([b['ssim'] for b in base]):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
