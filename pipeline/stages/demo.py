"""Stage 1, the embedded demo cohort: `python -m pipeline demo --params JSON --out DIR` (the library:
`pipeline.demo`)."""

from __future__ import annotations

import argparse
import logging
import time

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", help="the `demo` config section: inline JSON or a YAML file (default: defaults)")
    parser.add_argument("--out", default="results/demo", help="output folder (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="processes simulating subjects (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    from pipeline.config import DemoConfig, load_params
    from pipeline.demo.cohort import generate_demo

    cfg = load_params(args.params, DemoConfig, "demo")
    start = time.perf_counter()
    path = generate_demo(cfg, args.out, workers=max(1, args.workers))
    log.info("demo cohort: %d subjects (%d DICOM) in %.1f s -> %s", cfg.n_subjects, cfg.n_dicom,
             time.perf_counter() - start, path)
    return 0
