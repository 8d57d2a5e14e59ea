"""`python -m pipeline export-bundle --model MODEL --out DIR [--direction A2B]`: a trained model as a MONAI bundle
(see `pipeline.export.bundle`; apply it with `python -m monai.bundle run --config_file DIR/configs/inference.json
--bundle_root DIR --input_path SCAN.nii.gz --output_dir OUT`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model file (results/models/<family>/model.pt)")
    parser.add_argument("--out", required=True, help="the bundle's folder (configs/, models/, docs/ are written)")
    parser.add_argument("--direction", default=None,
                        help="which generator of a file that holds several (CycleGAN: A2B, the default, or B2A)")


def main(args: argparse.Namespace) -> int:
    from pipeline.export.bundle import export_bundle

    export_bundle(args.model, args.out, direction=args.direction)
    return 0
