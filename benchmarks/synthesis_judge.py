"""How strict the DCGAN's judge is: its verdicts on *real* held-out slices, slightly blurred (run by hand, not in CI).

    python benchmarks/synthesis_judge.py --data results/preprocess [--seed 42] [--sigmas 0.5 0.7 1.0]

`pipeline.models.synthesis_eval` judges samples with a CNN trained on the real training slices: the share classified
as the requested contrast (>= 95% asked) and the Frechet distance of its features to one half of the held-out
subjects' slices, divided by the distance between the two real halves (< 3x asked). This script trains the same
judge (same seed, steps and slices as the DCGAN's defaults) and scores the real half-B slices themselves after an
in-plane Gaussian blur of each sigma (pixels): how much less sharp than a real slice a sample may be before the
judge stops accepting it. Prints a markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage

from pipeline.data.slice_bank import SliceBank
from pipeline.models.dcgan import DCGANConfig
from pipeline.models.synthesis_eval import (
    classified_rate,
    frechet_distance,
    halves,
    run_classifier,
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
    print("| contrast | real half B | " + " | ".join(f"blurred, sigma {s:g} px" for s in args.sigmas) + " |")
    print("|---|---|" + "---|" * len(args.sigmas))
    for ci, c in enumerate(contrasts):
        a, b = halves(held, c)
        f_a, _, _ = run_classifier(judge, held.images[c][a])
        f_b, l_b, _ = run_classifier(judge, held.images[c][b])
        base = frechet_distance(f_b, f_a)
        cells = [f"{100 * classified_rate(l_b, ci):.0f}%, 1x"]
        for s in args.sigmas:
            blurred = np.stack([ndimage.gaussian_filter(im, s) for im in held.images[c][b]]).astype(np.float32)
            f, lg, _ = run_classifier(judge, blurred)
            cells.append(f"{100 * classified_rate(lg, ci):.0f}%, {frechet_distance(f, f_a) / base:.0f}x")
        print(f"| {c} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
