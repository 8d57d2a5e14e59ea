"""How far self-supervision is from supervision: `selfsr` against the same network trained on the truth's own pairs.

    python benchmarks/selfsr_oracle.py [--corpus ../shared/corpus/real_brain_ms] [--profiles rect4 rect5gap6]
        [--subjects sub-ms26] [--threads 2] [--settings '{"steps": 3000}'] [--self-only]

For each corpus T1w scan and slice profile (`benchmarks/selfsr_corpus.py`: the same truth, thick slices and
metrics) the network of `pipeline.selfsr` is trained twice with the default `TrainSettings`: as `selfsr` does,
on the scan's in-plane slices re-sliced along an in-plane axis (self-supervised), and on the 1 mm truth's own
sagittal and coronal slices re-sliced along z (supervised: the pairs a user never has, so an upper bound for this
network and schedule). Both are applied the same way (every view, flips, data consistency) and scored inside the
brain against the truth beside cubic interpolation; one row per run is printed (PSNR dB). `--settings` changes
`TrainSettings` fields for both (JSON); `--self-only` skips the supervised run. Nothing here is used by the workflow.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from selfsr_corpus import DEFAULT_CORPUS, PROFILES, truth  # noqa: E402

from pipeline.imaging.degrade import upsample  # noqa: E402
from pipeline.imaging.similarity import masked_psnr  # noqa: E402
from pipeline.selfsr.profile import SliceProfile, consistency, reslice  # noqa: E402
from pipeline.selfsr.train import PairBank, TrainSettings, apply_through_plane, train_net  # noqa: E402


def supervised(bank: PairBank, hr: np.ndarray, scale: int, profile: SliceProfile, spacing: float) -> PairBank:
    """`bank` with the truth's sagittal (x; z, y) and coronal (y; z, x) slices as pairs, z the degraded axis."""
    bank.hr = [np.ascontiguousarray(np.transpose(hr, order), dtype=np.float32) for order in ((0, 2, 1), (1, 2, 0))]
    bank.lr = [np.ascontiguousarray(reslice(h, scale, profile, spacing, axis=1), dtype=np.float32) for h in bank.hr]
    return bank


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    ap.add_argument("--subjects", nargs="+", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settings", type=json.loads, default={}, help="TrainSettings fields to change, as JSON")
    ap.add_argument("--self-only", action="store_true", help="train the self-supervised network only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = dataclasses.replace(TrainSettings(), **args.settings)
    scans = sorted(args.corpus.glob("sub-*/anat/sub-*_T1w.nii.gz"))
    scans = [s for s in scans if not args.subjects or s.name.split("_")[0] in args.subjects]
    if not scans:
        raise SystemExit(f"no T1w scans under {args.corpus}")
    print("| profile | subject | cubic | self-supervised (gain) | supervised by the truth (gain) |\n|---|---|---|---|---|")
    for scan in scans:
        subject = scan.name.split("_")[0]
        hr, _, mask = truth(scan)
        for name in args.profiles:
            kind, thickness, spacing = PROFILES[name]
            scale, profile = int(round(spacing)), SliceProfile(kind, thickness)
            lr = reslice(hr, scale, profile, spacing, axis=2).astype(np.float32)
            s99 = float(np.percentile(lr[lr > 0], 99.5))  # as `selfsr_volume` scales its input
            cubic = masked_psnr(upsample(lr, scale, "bicubic", (2,)), hr, mask)
            scores = []
            for oracle in (False,) if args.self_only else (False, True):
                bank = PairBank(lr / s99, scale, profile, spacing, foreground=0.05)
                if oracle:
                    bank = supervised(bank, hr / s99, scale, profile, spacing)
                net, _ = train_net(bank, settings)
                out = apply_through_plane(net, lr / s99, scale, flips=settings.tta, rotations=settings.rotations)
                scores.append(masked_psnr(consistency(out * s99, lr, scale, profile, spacing, axis=2), hr, mask))
            cells = [f"{score:.2f} ({score - cubic:+.2f})" for score in scores] + ["-"] * (2 - len(scores))
            print(f"| {name} | {subject} | {cubic:.2f} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
