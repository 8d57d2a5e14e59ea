# Stage 2: DICOM / NIfTI / BIDS -> pseudonymised NIfTI per subject + manifest.tsv (one row per input series or
# file, ingested or skipped with the reason) + files.tsv (every input file -> its manifest row or its reason).
# When nothing is usable the stage fails and leaves results/ingest/why_nothing.tsv (not an output, so it
# survives). A checkpoint: later rules read the manifest to learn the subjects.

import os
from pathlib import Path


def ingest_input(wildcards):
    """The demo cohort's participants.tsv (its scans exist only once generate_demo has run), or every file of the
    user's input_dir: adding, removing or changing a scan re-runs ingestion and what depends on it."""
    if USE_DEMO:
        return [f"{DEMO_DIR}/participants.tsv"]
    if not os.path.isdir(INPUT_DIR):
        raise ValueError(f"input_dir {INPUT_DIR!r} is not a folder")
    return sorted(str(p) for p in Path(INPUT_DIR).rglob("*") if p.is_file())


def ingest_input_dir(wildcards, input):
    """The folder of scans: the demo cohort's (where its participants.tsv lies) or the user's input_dir."""
    return os.path.dirname(input[0]) if USE_DEMO else INPUT_DIR


checkpoint ingest_scans:
    input:
        ingest_input,
    output:
        manifest="results/ingest/manifest.tsv",
        files="results/ingest/files.tsv",
        key="results/ingest/pseudonym_key.tsv",
    params:
        cfg=section_json("ingest"),
        input_dir=ingest_input_dir,
    log:
        "logs/ingest_scans.log",
    benchmark:
        "results/benchmarks/ingest_scans.tsv"
    shell:
        "python -m pipeline ingest --input {params.input_dir:q} --out $(dirname {output.manifest:q})"
        " --params {params.cfg:q} > {log:q} 2>&1"
