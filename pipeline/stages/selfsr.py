"""`python -m pipeline selfsr --input SCAN --output OUT.nii.gz`: self-supervised through-plane SR of one scan
(see `pipeline.selfsr`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="an anisotropic scan: a NIfTI file or a DICOM series folder")
    parser.add_argument("--output", required=True, help="output NIfTI (.nii.gz), isotropic-ish, in the input's world "
                        "geometry")
    parser.add_argument("--slice-thickness", type=float, default=None, metavar="MM",
                        help="slice thickness in mm (rect width or Gaussian FWHM; default: SliceThickness of a DICOM "
                        "series, else the slice spacing). Thinner than the spacing means a gap between slices")
    parser.add_argument("--slice-profile", default="rect", metavar="rect|gaussian|FILE",
                        help="the slice profile: rect (default), gaussian, or a text file of two columns "
                        "(offset from the slice centre in mm, relative sensitivity)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 1500)")
    parser.add_argument("--adversarial-steps", type=int, default=0,
                        help="SRGAN fine-tuning steps after the L1 phase (default 0: off)")
    parser.add_argument("--data-consistency", action=argparse.BooleanOptionalAction, default=True,
                        help="correct the output so that it re-slices exactly to the input (default on)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")


def main(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from pipeline.selfsr.scan import selfsr_scan
    from pipeline.selfsr.train import TrainSettings

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.adversarial_steps < 0:
        raise ValueError(f"--adversarial-steps must be >= 0, got {args.adversarial_steps}")
    settings = TrainSettings(seed=args.seed, adv_steps=args.adversarial_steps)
    if args.steps is not None:
        settings = dataclasses.replace(settings, steps=args.steps)
    selfsr_scan(args.input, args.output, profile=args.slice_profile, thickness_mm=args.slice_thickness,
                settings=settings, data_consistency=args.data_consistency)
    return 0
