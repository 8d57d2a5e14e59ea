"""Stage 5: `python -m pipeline infer --model MODEL --input SCAN --output OUT.nii.gz` (see `pipeline.inference`).

`--input`/`--output` may be repeated (pairs, in order): the model is loaded once for all of them, a scan that fails
is named and skipped, the others are written, and the exit status is 1. `--listing FILE` then writes a TSV of the
pairs written (the workflow's marker that every subject of an output is done), with a note on each output the model
did not make as usual (an inpainting model replaced by interpolation by its self-check), which the report shows."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model file (results/models/<family>/model.pt)")
    parser.add_argument("--input", required=True, action="append",
                        help="the scan: a NIfTI file or a DICOM series folder (repeat with --output for several)")
    parser.add_argument("--output", required=True, action="append", help="output NIfTI (.nii.gz)")
    parser.add_argument("--listing", default=None,
                        help="write a TSV (input, output) of the scans written, once all of them succeeded")
    parser.add_argument("--normalise", action="store_true",
                        help="the input is raw: apply the model's recorded normalisation (output mapped back)")
    parser.add_argument("--direction", "--target", dest="direction", default=None,
                        help="which generator of a file that holds several (CycleGAN: A2B, the default, or B2A; "
                        "StarGAN: the target contrast, e.g. T2w, default the first it maps to)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--roi-size", type=int, default=None, help="sliding-window side in input voxels "
                        "(default: the model's)")
    parser.add_argument("--sw-batch-size", type=int, default=None, help="windows per forward pass (default: the model's)")
    parser.add_argument("--overlap", type=float, default=None, help="window overlap in [0, 1) (default: the model's)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="self-ensemble over flips/transposes (default: the model's setting)")
    parser.add_argument("--tta-views", type=int, choices=(2, 4, 8), default=None,
                        help="translation: how many views --tta averages (8 every flip/transpose, 4 the rotations, "
                        "2 the identity and the 180-degree rotation; default: the model's setting)")
    parser.add_argument("--data-consistency", action=argparse.BooleanOptionalAction, default=None,
                        help="super-resolution: correct the output to degrade exactly to the input, by the "
                        "model's recorded degradation (default: the model's setting, else on)")
    parser.add_argument("--detail-transfer", action=argparse.BooleanOptionalAction, default=None,
                        help="translation trained on a coarser grid: add the source's lost detail with the output's "
                        "local contrast (default: the model's setting)")
    parser.add_argument("--planes", action=argparse.BooleanOptionalAction, default=None,
                        help="2D translation of a scan with cubic voxels: translate across each of the three axes "
                        "and average (default: the model's setting)")
    parser.add_argument("--self-check", action=argparse.BooleanOptionalAction, default=None,
                        help="inpainting: fill with the model, linear or cubic interpolation, whichever best fills "
                             "hidden measured slices of the scan (default: the model file's)")
    parser.add_argument("--resolution-mismatch", choices=("refuse", "resample", "ignore"), default="refuse",
                        help="when the scan's voxel size differs (>10%% on an axis) from the one the SR model was "
                        "trained on: refuse (default), resample (onto the model's grid and back) or ignore (warn)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")


def main(args: argparse.Namespace) -> int:
    import torch

    from pipeline.inference.run import infer_scan, infer_scans
    from pipeline.io.tables import write_listing

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.overlap is not None and not 0 <= args.overlap < 1:
        raise ValueError(f"--overlap must be in [0, 1), got {args.overlap}")
    for name in ("roi_size", "sw_batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if len(args.input) != len(args.output):
        raise ValueError(f"{len(args.input)} --input but {len(args.output)} --output: give them in pairs")
    options = dict(direction=args.direction, normalise=args.normalise, device=args.device,
                   roi_size=args.roi_size, sw_batch_size=args.sw_batch_size, data_consistency=args.data_consistency,
                   overlap=args.overlap, tta=args.tta, tta_views=args.tta_views, detail_transfer=args.detail_transfer,
                   planes=args.planes, self_check=args.self_check,
                   resolution_mismatch=args.resolution_mismatch)
    pairs = list(zip(args.input, args.output, strict=True))
    notes: dict[str, str] = {}
    if len(pairs) == 1:  # one scan: its error is the command's error
        infer_scan(args.model, *pairs[0], notes=notes, **options)
        failed = {}
    else:
        failed = infer_scans(args.model, pairs, notes=notes, **options)
    if failed:
        log.error("%d of %d scan(s) failed, the others were written: %s", len(failed), len(pairs),
                  "; ".join(f"{k}: {v}" for k, v in failed.items()))
        return 1
    if args.listing:
        write_listing(args.listing, pairs, notes)
    return 0
