"""Stage 6, evaluate: metrics, statistics and figures of the generator outputs the model families export.

    python -m pipeline evaluate --subjects results/preprocess/subjects.tsv --outputs OUTPUTS_JSON \
        --skipped SKIPPED_JSON --degradation SR_INPUTS_JSON --params EVALUATE_JSON

`--outputs` is a JSON list (inline, or a file) with one object per generator output:
`{"name", "family", "task", "input", "truth", "desc"}` (see `pipeline.evaluation.tasks`). `--skipped` lists
the outputs the workflow did not train or infer, the same objects plus `"reason"` (shown in the report as
"not evaluated: <reason>"); each gets a header-only `<name>.csv`. The library is `pipeline.evaluation`; this
module only parses the arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subjects", type=Path, required=True, help="results/preprocess/subjects.tsv")
    parser.add_argument("--outputs", required=True,
                        help='the generator outputs to evaluate, a JSON list (inline or a file) of objects '
                             '{"name", "family", "task": "sr"|"translation", "input", "truth", "desc"} '
                             '([] when every output is in --skipped)')
    parser.add_argument("--skipped", default="[]",
                        help='outputs not trained or inferred, a JSON list (inline or a file) of the objects of '
                             '--outputs plus "reason" (e.g. "no test subject has T1w and T2w"); default: none')
    parser.add_argument("--degradation", default="", help="how each SR input column was made, JSON "
                        '(inline or a file): {"T1w_lr": {"method": "kspace", "scale": 4, "axes": "inplane"}, ...}')
    parser.add_argument("--infer", type=Path, default=Path("results/infer"), help="folder of model outputs (<name>/<subject>_<desc>.nii.gz)")
    parser.add_argument("--histories", type=Path, default=Path("results/models"), help="folder of <family>/history.csv")
    parser.add_argument("--metrics", type=Path, default=Path("results/metrics"), help="output folder of <name>.csv and summary.json")
    parser.add_argument("--figures", type=Path, default=Path("results/figures"), help="output folder of the figures")
    parser.add_argument("--viewer", type=Path, default=Path("results/viewer"),
                        help="output folder of the report's slice viewer and reader study images (and the study's key)")
    parser.add_argument("--params", default=None, help="the `evaluate` config section (inline JSON or YAML file)")
    parser.add_argument("--workers", type=int, default=1,
                        help="threads; more than 1 encode the slice viewer's images alongside the rest")


def main(args: argparse.Namespace) -> int:
    from pipeline.config import EvaluateConfig, load_params
    from pipeline.evaluation.run import evaluate
    from pipeline.evaluation.tasks import parse_json, parse_outputs, parse_skipped

    cfg = load_params(args.params, EvaluateConfig, "evaluate")
    evaluate(
        args.subjects,
        parse_outputs(parse_json(args.outputs, "--outputs")),
        cfg,
        skipped=parse_skipped(parse_json(args.skipped, "--skipped")),
        degradations=parse_json(args.degradation, "--degradation") if args.degradation else {},
        infer_dir=args.infer,
        histories=args.histories,
        metrics_dir=args.metrics,
        figures_dir=args.figures,
        viewer_dir=args.viewer,
        workers=args.workers,
    )
    return 0
