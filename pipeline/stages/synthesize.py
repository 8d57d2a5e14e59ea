"""`python -m pipeline synthesize --model results/models/dcgan/model.pt --contrast T2w --n 16 --output DIR`

Draws synthetic slices from a conditional slice generator (the dcgan family): `n` samples of one contrast at
slice positions spread evenly over [0.1, 0.9] (or `--positions`), noise from `--seed`. Writes
`<contrast>_<k>.png` (8-bit, shown as the grid shows them), `<contrast>_samples.nii.gz` (the slices stacked along
the third axis, values in [0, 1], the model's pixel size) and `<contrast>_samples.tsv` (file, position). Synthetic
data: every file name says so, nothing in them is a patient's.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="a dcgan model file (results/models/dcgan/model.pt)")
    parser.add_argument("--contrast", required=True, help="the contrast to draw (one the model was trained on)")
    parser.add_argument("--n", type=int, default=16, help="number of samples")
    parser.add_argument("--positions", default=None,
                        help="comma-separated slice positions in [0, 1] (cycled over the samples); default: even")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument("--output", required=True, type=Path, help="output folder")


def main(args: argparse.Namespace) -> int:
    import logging

    import numpy as np

    from pipeline.io.atomic import atomic_path, write_text
    from pipeline.io.nifti import save_nifti
    from pipeline.models import family_of
    from pipeline.models.contract import load_model_file
    from pipeline.models.dcgan import DCGAN
    from pipeline.nets.dcgan import sample

    blob = load_model_file(args.model)
    if family_of(blob) is not DCGAN:
        raise ValueError(f"{args.model}: a {blob.get('family')} model, not a slice generator (dcgan)")
    contrasts = blob["synthesis"]["contrasts"]
    if args.contrast not in contrasts:
        raise ValueError(f"{args.model}: trained on {', '.join(contrasts)}, not {args.contrast!r}")
    if args.n < 1:
        raise ValueError("--n must be at least 1")
    if args.positions:
        try:
            given = [float(p) for p in args.positions.split(",")]
        except ValueError:
            raise ValueError(f"--positions {args.positions!r}: expected numbers separated by commas") from None
        if not all(0.0 <= p <= 1.0 for p in given):
            raise ValueError(f"--positions {args.positions!r}: each must lie in [0, 1]")
        positions = np.resize(np.asarray(given, np.float32), args.n)
    else:
        positions = np.linspace(0.1, 0.9, args.n).astype(np.float32)
    generator = DCGAN.load_generator(blob, None, "cpu")
    slices = sample(generator, contrasts.index(args.contrast), positions, seed=args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    rows = ["file\tposition"]
    for k, (im, p) in enumerate(zip(slices, positions, strict=True)):
        name = f"{args.contrast}_{k:03d}.png"
        with atomic_path(out / name) as tmp:
            Image.fromarray(np.round(np.rot90(im) * 255).astype(np.uint8)).save(tmp, format="PNG")
        rows.append(f"{name}\t{p:.4f}")
    pixel = blob["synthesis"].get("pixel_mm") or [1.0, 1.0]
    affine = np.diag([pixel[0], pixel[1], 1.0, 1.0])
    save_nifti(np.moveaxis(slices, 0, -1), affine, out / f"{args.contrast}_samples.nii.gz")
    write_text(out / f"{args.contrast}_samples.tsv", "\n".join(rows) + "\n")
    logging.getLogger(__name__).info("wrote %d synthetic %s slices to %s", args.n, args.contrast, out)
    return 0
