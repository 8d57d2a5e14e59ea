# Stage 2: DICOM / NIfTI / BIDS -> pseudonymised NIfTI per subject + manifest.tsv (one row per input series or
# file, ingested or skipped with the reason). A checkpoint: later rules read the manifest to learn the subjects.

import os

# With the demo cohort the scans exist only once generate_demo has run; a user's folder is no rule's output.
INGEST_INPUT = [f"{DEMO_DIR}/participants.tsv"] if USE_DEMO else []


def ingest_input_dir(wildcards, input):
    """The folder of scans: the demo cohort's (where its participants.tsv lies) or the user's input_dir."""
    return os.path.dirname(input[0]) if USE_DEMO else INPUT_DIR


checkpoint ingest_scans:
    input:
        INGEST_INPUT,
    output:
        manifest="results/ingest/manifest.tsv",
        key="results/ingest/pseudonym_key.tsv",
    params:
        cfg=section_json("ingest"),
        input_dir=ingest_input_dir,
    log:
        "logs/ingest_scans.log",
    conda:
        "../envs/pipeline.yaml"
    benchmark:
        "results/benchmarks/ingest_scans.tsv"
    shell:
        "python -m pipeline ingest --input {params.input_dir:q} --out $(dirname {output.manifest:q})"
        " --params {params.cfg:q} > {log:q} 2>&1"
