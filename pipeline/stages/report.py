"""Stage 7, report: assemble `reports/index.html` and one page per subject from what evaluation wrote.

    python -m pipeline report --summary results/metrics/summary.json --out reports

The library is `pipeline.report` (`build.build_report`); this module only parses the arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--summary", type=Path, default=Path("results/metrics/summary.json"), help="evaluation summary")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output folder (index.html, subjects/, assets/)")
    parser.add_argument("--benchmarks", type=Path, default=Path("results/benchmarks"), help="Snakemake benchmark files")
    parser.add_argument("--subjects", type=Path, default=Path("results/preprocess/subjects.tsv"), help="subjects and splits")
    parser.add_argument("--manifest", type=Path, default=Path("results/ingest/manifest.tsv"), help="ingestion manifest")
    parser.add_argument("--models", type=Path, default=Path("results/models"), help="folder of trained model families (<family>/train_summary.json)")
    parser.add_argument("--workflow-config", default=None, help="the resolved workflow config (inline JSON or YAML file)")
    parser.add_argument("--params", default=None, help="the `report` config section (inline JSON or YAML file)")


def main(args: argparse.Namespace) -> int:
    from pipeline.config import ReportConfig, load_params
    from pipeline.report.build import build_report

    cfg = load_params(args.params, ReportConfig, "report")
    build_report(
        args.summary,
        args.out,
        cfg,
        benchmarks=args.benchmarks,
        subjects_tsv=args.subjects,
        manifest=args.manifest,
        models_dir=args.models,
        workflow_config=args.workflow_config,
    )
    return 0
