"""`python -m pipeline export-bids --outputs JSON --out results/derivatives/medgan`: the workflow's inference outputs
as a BIDS derivatives dataset (see `pipeline.export.bids`)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--outputs", required=True,
                        help="JSON list of the outputs to export (name, family, model_file, input, desc, infer_args)")
    parser.add_argument("--out", default="results/derivatives/medgan", help="the derivatives dataset's folder")
    parser.add_argument("--subjects", default="results/preprocess/subjects.tsv", help="preprocess's subjects.tsv")
    parser.add_argument("--infer", default="results/infer", help="the infer stage's folder")
    parser.add_argument("--models", default="results/models", help="the families' model folders")
    parser.add_argument("--splits", nargs="+", default=["test"], help="the subjects of these splits are exported")


def main(args: argparse.Namespace) -> int:
    from pipeline.export.bids import export_bids, workflow_items

    items = workflow_items(json.loads(args.outputs), args.subjects, args.infer, args.models, args.splits)
    export_bids(items, args.out)
    return 0
