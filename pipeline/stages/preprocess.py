"""Stage 3, preprocessing: `python -m pipeline preprocess --manifest results/ingest/manifest.tsv --out
results/preprocess --params JSON --seed N [--pseudonym-key results/ingest/pseudonym_key.tsv]` (the library:
`pipeline.preprocessing`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="ingest manifest (results/ingest/manifest.tsv)")
    parser.add_argument("--out", required=True, help="output folder (results/preprocess)")
    parser.add_argument(
        "--params", default=None, help="the `preprocess` config section: inline JSON or a YAML file"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the split (the top-level config seed)")
    parser.add_argument(
        "--pseudonym-key", default=None, metavar="PATH",
        help="ingest's pseudonym key (results/ingest/pseudonym_key.tsv): lets the split override file "
        "(preprocess.split.subjects_file) name subjects by their original IDs; without it only pseudonyms",
    )


def main(args: argparse.Namespace) -> int:
    from pipeline.config import PreprocessConfig, load_params
    from pipeline.preprocessing.run import preprocess

    cfg = load_params(args.params, PreprocessConfig, "preprocess")
    preprocess(args.manifest, args.out, cfg, args.seed, args.pseudonym_key)
    return 0
