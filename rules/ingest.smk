# Stage 2: DICOM / NIfTI / BIDS -> pseudonymised NIfTI per subject + manifest.tsv (one row per input series or
# file, ingested or skipped with the reason) + files.tsv (every input file -> its manifest row or its reason).
# When nothing is usable the stage fails and leaves results/ingest/why_nothing.tsv (not an output, so it
# survives). A checkpoint: later rules read the manifest to learn the subjects.


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
