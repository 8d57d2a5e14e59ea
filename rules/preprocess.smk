# Stage 3: RAS orientation, resampling, normalisation, masks, subject-level split and the super-resolution
# inputs. A checkpoint: later rules read its subjects.tsv to learn the subjects of each split.
import os

# The optional split override file is an input only when it exists (its edits then re-run the split); it may name
# subjects by their pseudonyms or by their original IDs (mapped through the pseudonym key, never logged).
_SPLIT_FILE = config["preprocess"]["split"]["subjects_file"]
PREPROCESS_SPLIT_FILE = [_SPLIT_FILE] if _SPLIT_FILE and os.path.isfile(_SPLIT_FILE) else []


checkpoint preprocess_scans:
    input:
        manifest="results/ingest/manifest.tsv",
        key="results/ingest/pseudonym_key.tsv",
        split_file=PREPROCESS_SPLIT_FILE,
    output:
        subjects=f"{PREPROCESS_DIR}/subjects.tsv",
    params:
        cfg=preprocess_params,
        seed=config["seed"],
    log:
        "logs/preprocess_scans.log",
    benchmark:
        "results/benchmarks/preprocess_scans.tsv"
    shell:
        "python -m pipeline preprocess --manifest {input.manifest:q}"
        ' --out "$(dirname {output.subjects:q})"'
        " --pseudonym-key {input.key:q} --params {params.cfg:q} --seed {params.seed} > {log:q} 2>&1"
