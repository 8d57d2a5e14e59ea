"""reader-results: un-blind and summarise the ratings files of the report's blinded reader study.

    python -m pipeline reader-results ratings.json [more.json ...] [--key results/viewer/reader/key.json] [--out S.json]

Prints per output the mean 1-5 rating of model and strongest baseline (paired difference with its t interval)
and the share of pairs where the model was preferred (Wilson interval, binomial p). The library is
`pipeline.evaluation.reader`; this module only parses the arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", type=Path, nargs="+", help="ratings file(s) downloaded from reports/reader.html")
    parser.add_argument("--key", type=Path, default=Path("results/viewer/reader/key.json"),
                        help="the study's key, written by the evaluate stage (never part of the report)")
    parser.add_argument("--out", type=Path, default=None, help="also write the summary as JSON here")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals")


def main(args: argparse.Namespace) -> int:
    import json

    from pipeline.evaluation.reader import format_summary, summarise
    from pipeline.io.atomic import write_text

    summary = summarise(args.files, args.key, args.confidence)
    if args.out is not None:
        write_text(args.out, json.dumps(summary, indent=2) + "\n")
    sys.stdout.write(format_summary(summary))
    return 0
