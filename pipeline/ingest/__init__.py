"""Stage 2, ingestion: `python -m pipeline ingest --input DIR --out results/ingest --params JSON`.

Walks `input_dir` (DICOM in any nesting, NIfTI, BIDS), converts every usable scan to
`<out>/sub-NNN/sub-NNN_<modality>.nii.gz` (+ a JSON sidecar of technical fields), and writes
`<out>/manifest.tsv` (one row per input series or file, ingested or skipped with the reason) and
`<out>/pseudonym_key.tsv` (the only link to the original IDs). Modules: `discover` (walk, header reads),
`dicom_series` (grouping, geometry, pixels), `nifti_inputs`, `modality`, `pseudonym`, `manifest`, `run`.
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
