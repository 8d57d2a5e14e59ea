"""Stage 2, ingestion: `python -m pipeline ingest --input DIR --out results/ingest --params JSON`.

DICOM/NIfTI/BIDS -> pseudonymised NIfTI per subject + `manifest.tsv` + `files.tsv` (every input file's fate)
(the library: `pipeline.ingest`). Exits 1 when nothing is usable, with the most common reasons in the message
and every file's reason in `<out>/why_nothing.tsv`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="folder of scans (DICOM, NIfTI, BIDS)")
    parser.add_argument("--out", type=Path, default=Path("results/ingest"), help="output folder (default: %(default)s)")
    parser.add_argument(
        "--params", default=None, help="the config's `ingest` section: inline JSON or a YAML file (default: defaults)"
    )


def main(args: argparse.Namespace) -> int:
    from pipeline.config import IngestConfig, load_params
    from pipeline.ingest.run import ingest

    cfg = load_params(args.params, IngestConfig, "ingest")
    ingest(args.input, args.out, cfg)
    return 0
