"""How much of a translation's error is its intensity calibration? Real-corpus folds of `real_data.py`.

    python benchmarks/translation_calibration.py --work DIR [--model-dir cyclegan_default] [--target T2w]

For each fold under DIR (`fold<k>_native`, as `real_data.py --spacing native` leaves them, with the prediction it
saved, `<model-dir>/pred_<subject>_<target>.npy`), scores the held-out subject's prediction inside the mask as it is,
histogram-matched to the *training* subjects' pooled target intensities inside their masks (a calibration a model
could learn), and histogram-matched to the test subject's own target (an oracle: it uses the truth). PSNR dB / SSIM
with the evaluation's metrics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from skimage.exposure import match_histograms

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import EvaluateConfig  # noqa: E402
from pipeline.evaluation.metrics import masked_metrics  # noqa: E402
from pipeline.io.nifti import load_nifti  # noqa: E402
from pipeline.io.tables import read_subjects  # noqa: E402


def matched(pred: np.ndarray, mask: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`pred` with its values inside `mask` mapped onto the histogram of the 1D `reference` values."""
    out = pred.copy()
    out[mask] = match_histograms(pred[mask], reference)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--model-dir", default="cyclegan_default")
    ap.add_argument("--target", default="T2w")
    args = ap.parse_args()
    cfg = EvaluateConfig()
    print("| fold | test | prediction | matched to the training subjects | matched to its own truth (oracle) |")
    print("|---|---|---|---|---|")
    for fold in sorted(args.work.glob("fold*_native")):
        rows = read_subjects(fold / "data" / "subjects.tsv", ["train", "test"])
        test = next(r for r in rows if r["split"] == "test")
        truth, mask = load_nifti(test[args.target])[0], load_nifti(test["mask"])[0] > 0
        pred = np.load(fold / args.model_dir / f"pred_{test['subject']}_{args.target}.npy")
        train = np.concatenate([load_nifti(r[args.target])[0][load_nifti(r["mask"])[0] > 0]
                                for r in rows if r["split"] == "train"])
        cells = [masked_metrics(p, truth, mask, cfg) for p in
                 (pred, matched(pred, mask, train), matched(pred, mask, truth[mask]))]
        print(f"| {fold.name} | {test['subject']} | " + " | ".join(f"{c['psnr']:.2f} / {c['ssim']:.3f}" for c in cells)
              + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
