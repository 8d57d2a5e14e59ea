"""How strict the DCGAN's judge is: its verdicts on *real* held-out slices, slightly blurred (run by hand, not in CI).

    python benchmarks/synthesis_judge.py --data results/preprocess [--seed 42] [--sigmas 0.5 0.7 1.0]

`pipeline.models.synthesis_eval` judges samples with a CNN trained on the real training slices: the share classified
as the requested contrast (>= 95% asked) and the Frechet distance of its features to one half of the held-out
subjects' slices, divided by the distance between the two real halves, both averaged over random halvings of the
subjects (< 3x asked). This script trains the same judge (same seed, steps, slices and halvings as the DCGAN's
defaults) and scores the real held-out slices themselves after an in-plane Gaussian blur of each sigma (pixels),
in place of the samples: how much less sharp than a real slice a sample may be before the judge stops accepting
it. Prints a markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage

from pipeline.data.slice_bank import SliceBank
from pipeline.models.dcgan import DCGANConfig
from pipeline.models.synthesis_eval import (
    classified_rate,
    halvings,
    run_classifier,
    split_distances,
    train_classifier,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a finished run's results/preprocess")
    ap.add_argument("--seed", type=int, default=42, help="the judge's seed (the DCGAN run's --seed)")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 0.7, 1.0])
    args = ap.parse_args()
    cfg = DCGANConfig()
    contrasts = list(cfg.contrasts)
    read = lambda splits: SliceBank.read(args.data, contrasts, splits, cfg.slice_axis, cfg.image_size,  # noqa: E731
                                         cfg.min_area)
    train, held = read(["train"]), read(list(cfg.eval_splits))
    judge = train_classifier(train, cfg.classifier_steps, args.seed)
    print("| contrast | real held-out | " + " | ".join(f"blurred, sigma {s:g} px" for s in args.sigmas) + " |")
    print("|---|---|" + "---|" * len(args.sigmas))
    for ci, c in enumerate(contrasts):
        splits = halvings(held, c, cfg.fd_halvings, args.seed)
        f_real, l_real, _ = run_classifier(judge, held.images[c])
        d_real = split_distances(f_real, f_real, splits)
        cells = [f"{100 * classified_rate(l_real, ci):.0f}%, 1x"]
        for s in args.sigmas:
            blurred = np.stack([ndimage.gaussian_filter(im, s) for im in held.images[c]]).astype(np.float32)
            f, lg, _ = run_classifier(judge, blurred)
            cells.append(f"{100 * classified_rate(lg, ci):.0f}%, "
                         f"{split_distances(f, f_real, splits).mean() / d_real.mean():.1f}x")
        print(f"| {c} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
