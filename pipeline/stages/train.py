"""Stage 4: `python -m pipeline train <family> --data results/preprocess --out results/models/<family> ...`

See `pipeline.training` (resume, multi-GPU, what is written).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.models import FAMILIES

    sub = parser.add_subparsers(dest="family", metavar="<family>", required=True)
    for name, cls in FAMILIES.items():
        p = sub.add_parser(name, help=(cls.__doc__ or name).strip().splitlines()[0])
        p.add_argument("--data", required=True, help="the preprocess stage's folder (with subjects.tsv)")
        p.add_argument("--out", required=True, help=f"output folder (results/models/{name})")
        p.add_argument("--params", default=None, help=f"the `{name}` config section: inline JSON or a YAML file")
        p.add_argument("--seed", type=int, default=42, help="seed of sampling and initialisation (config `seed`)")
        p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
        p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
        p.add_argument("--fresh", action="store_true", help="delete existing checkpoints and start from scratch")


def main(args: argparse.Namespace) -> int:
    from pipeline.training import run_training

    return run_training(args.family, args.params, args.data, args.out, seed=args.seed, device=args.device,
                        threads=args.threads, fresh=args.fresh)
