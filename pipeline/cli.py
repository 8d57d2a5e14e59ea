"""`python -m pipeline <stage> ...`: one subcommand per workflow stage.

The top level imports nothing heavy (so `--help` answers at once); a stage's module, and with it
torch/MONAI where that stage needs them, is imported only when the stage runs. Each stage module offers
`add_arguments(parser)` and `main(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pipeline import __version__

# stage name -> (module, one-line help). Order is the order of the workflow.
STAGES: dict[str, tuple[str, str]] = {
    "demo": ("pipeline.stages.demo", "generate the embedded demo cohort (DICOM + BIDS NIfTI) offline"),
    "ingest": ("pipeline.stages.ingest", "DICOM/NIfTI/BIDS -> pseudonymised NIfTI per subject + manifest.tsv"),
    "preprocess": ("pipeline.stages.preprocess", "RAS, resampling, normalisation, masks, split, SR inputs"),
    "train": ("pipeline.stages.train", "train a GAN family (srgan, cyclegan, ...) on the preprocessed subjects; resumes exactly"),
    "infer": ("pipeline.stages.infer", "apply a trained model to a scan (NIfTI file or DICOM folder)"),
    "synthesize": ("pipeline.stages.synthesize", "draw synthetic slices of a contrast from a slice generator (dcgan)"),
    "selfsr": ("pipeline.stages.selfsr", "self-supervised through-plane super-resolution of one anisotropic scan"),
    "evaluate": ("pipeline.stages.evaluate", "PSNR/SSIM/MAE/NRMSE of models and baselines, statistics, figures"),
    "report": ("pipeline.stages.report", "assemble reports/index.html and one page per subject (computes nothing)"),
    "export-dicom": ("pipeline.stages.export_dicom", "write model outputs as derived DICOM series for PACS"),
    "export-bids": ("pipeline.stages.export_bids", "write the test subjects' outputs as BIDS derivatives"),
    "export-bundle": ("pipeline.stages.export_bundle", "write a trained model as a MONAI bundle"),
    "reader-results": ("pipeline.stages.reader_results", "un-blind and summarise a reader study's ratings file"),
}

log = logging.getLogger("pipeline")


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Medical imaging GAN pipeline: run one stage of the workflow by hand.",
        epilog="Run `python -m pipeline <stage> --help` for the options of a stage.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="stage", metavar="<stage>", required=True)
    for name, (_, help_text) in STAGES.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def setup_logging(level: str) -> None:
    """Configure logging once, for every stage."""
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    # Parse only up to the stage name; the stage's own parser (built after its import) takes the rest.
    stage_at = next((i for i, a in enumerate(argv) if a in STAGES), None)
    if stage_at is None:
        top.parse_args(argv)  # prints help / errors and exits
        return 2
    top_args = top.parse_args(argv[: stage_at + 1])
    stage = argv[stage_at]
    module = importlib.import_module(STAGES[stage][0])
    parser = argparse.ArgumentParser(prog=f"python -m pipeline {stage}", description=STAGES[stage][1])
    module.add_arguments(parser)
    args = parser.parse_args(argv[stage_at + 1 :])
    setup_logging(top_args.log_level)
    try:
        return int(module.main(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # user-facing errors: no traceback
        if top_args.log_level == "DEBUG":
            raise
        log.error("%s: %s", stage, exc)
        return 1
