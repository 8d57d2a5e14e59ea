"""`python -m pipeline export-dicom --output NIFTI --model MODEL --out DIR [--key KEY --reidentify]`: a model
output as a new derived DICOM series (see `pipeline.export.dicom`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True,
                        help="the model output to export (results/infer/<output>/<subject>_<desc>.nii.gz)")
    parser.add_argument("--model", required=True, help="the model file that made it (results/models/<family>/...)")
    parser.add_argument("--out", required=True, help="folder for the series (must not exist or be empty)")
    parser.add_argument("--subject", default=None, help="the pseudonym (default: from the output's file name)")
    parser.add_argument("--direction", default=None, help="the generator of a file that holds several (A2B, B2A)")
    parser.add_argument("--key", default=None, help="ingest's pseudonym key (results/ingest/pseudonym_key.tsv): "
                        "keeps a subject's exports in one study; needed by --reidentify")
    parser.add_argument("--reidentify", action="store_true",
                        help="original patient ID (from --key) and, for DICOM inputs, the source study and series "
                             "references instead of the pseudonym")
    parser.add_argument("--reference", default=None,
                        help="with --reidentify: the source DICOM series folder (default: found with --ingest)")
    parser.add_argument("--ingest", default=None, help="with --reidentify: ingest's output folder (results/ingest)")
    parser.add_argument("--input-dir", default=None, help="with --ingest: the folder ingest read (input_dir)")
    parser.add_argument("--series-number", type=int, default=1001, help="SeriesNumber of the new series")


def main(args: argparse.Namespace) -> int:
    from pipeline.export.dicom import export_dicom

    export_dicom(args.output, args.model, args.out, subject=args.subject, direction=args.direction, key=args.key,
                 reidentify=args.reidentify, reference=args.reference, ingest_dir=args.ingest,
                 input_dir=args.input_dir, series_number=args.series_number)
    return 0
