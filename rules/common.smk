# Config validation, paths and input functions shared by the rules. What a rule needs from the GAN families
# comes from the package (pipeline.workflow), so adding a family touches no .smk file.
import json
import os
import shlex
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import validate

from pipeline import workflow as wf
from pipeline.io.tables import read_subjects


# Fails before the DAG is built, naming the offending key; fills in the schema's defaults.
validate(config, "../config/config.schema.yaml", set_default=True)

DEMO_DIR = "results/demo"
# The scans the workflow reads: the user's folder, or the generated demo cohort.
INPUT_DIR = config["input_dir"] or DEMO_DIR
USE_DEMO = not config["input_dir"]
PREPROCESS_DIR = "results/preprocess"
# Every generator the families of `models:` export (name, family, model file, task, input and truth columns).
OUTPUTS = {o.name: o for o in wf.outputs(config)}


def section_json(name):
    """A config section as inline JSON for a stage's `--params` (re-validated by the stage).

    Keys keep the config's order: e.g. ingest.modality_patterns is tried in that order.
    """
    return json.dumps(config[name])


_SUBJECTS = {}  # (path, mtime, size) -> rows: input functions run once per job, the table is read once


def preprocessed_rows(splits=None):
    """The rows of the preprocess checkpoint's subjects.tsv (those of `splits`, when given)."""
    path = checkpoints.preprocess_scans.get().output.subjects
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _SUBJECTS:
        _SUBJECTS.clear()
        _SUBJECTS[key] = read_subjects(path)
    return [r for r in _SUBJECTS[key] if splits is None or r["split"] in splits]


def subjects_with(splits, *columns):
    """The rows of `splits` that have a file in each of `columns` (and a mask)."""
    return [r for r in preprocessed_rows(splits) if all(r.get(c) for c in (*columns, "mask"))]


def inference_path(output, subject):
    """Where the infer stage writes `output`'s result for `subject`."""
    return f"results/infer/{output.name}/{subject}_{output.desc}.nii.gz"


_REPORTED = set()


def output_plan():
    """(output -> evaluated subjects, output -> reason it is skipped), from the preprocess checkpoint; says once,
    before any training, what each family runs on or why it is skipped."""
    rows = preprocessed_rows()
    outputs = list(OUTPUTS.values())
    for level, message in wf.plan_messages(rows, outputs, config["evaluate"]["splits"]):
        if message not in _REPORTED:
            _REPORTED.add(message)
            (logger.warning if level == "warning" else logger.info)(message)
    return wf.plan(rows, outputs, config["evaluate"]["splits"])


def final_targets():
    """The targets of the default run: the last output of every stage."""
    targets = [f"{DEMO_DIR}/participants.tsv"] if USE_DEMO else []
    targets += ["results/ingest/manifest.tsv", f"{PREPROCESS_DIR}/subjects.tsv", test_inference_targets]
    if config["models"]:
        targets.append("reports/index.html")
    if OUTPUTS:
        # rules/export.smk: a DICOM series per output and test subject, the BIDS derivatives dataset
        if config["export"]["dicom"]:
            targets.append(export_dicom_targets)
        if config["export"]["bids"]:
            targets.append("results/derivatives/medgan")
    return targets


def test_inference_targets(wildcards):
    """The infer marker of every output that has a test subject with its input, except for skipped outputs."""
    _, skipped = output_plan()
    return [infer_listing(o) for o in OUTPUTS.values() if o.name not in skipped and subjects_with(["test"], o.input)]


# ---- ingest_scans (rules/ingest.smk)
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


# ---- preprocess_scans (rules/preprocess.smk)
def preprocess_params(wildcards):
    return wf.preprocess_params(config)


# ---- train_model (rules/train.smk)
def train_params(wildcards):
    return wf.train_params(config, wildcards.family)


def all_cores(wildcards):
    """Every core of the run (one when none is given, as for `snakemake --report`, which runs nothing): training
    and inference jobs each use all of them."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


# ---- infer_model (rules/infer.smk)
def inferred_subjects(output):
    """The subjects `output` is inferred on: the test subjects with its input (exported) and the evaluated splits'
    subjects with its input and ground truth (scored); none when the output is skipped."""
    run, skipped = output_plan()
    if output.name in skipped:
        return []
    test = {r["subject"] for r in subjects_with(["test"], output.input)}
    return sorted(test | set(run.get(output.name, [])))


def infer_listing(output):
    """The infer job's marker (results/infer/<output>/outputs.tsv): every subject of `output` is inferred."""
    return f"results/infer/{output.name}/outputs.tsv"


def infer_model_input(wildcards):
    """The family's model.pt (the training job's marker) and the input scan of every subject the output runs on."""
    output = OUTPUTS[wildcards.output]
    subjects = inferred_subjects(output)
    if not subjects:
        raise ValueError(f"{output.name}: no subject to infer (no {output.input} in {PREPROCESS_DIR}/subjects.tsv "
                         "for the test or evaluated subjects)")
    rows = {r["subject"]: r for r in preprocessed_rows()}
    return {"model": f"results/models/{output.family}/model.pt",
            "scans": [str(rows[s][output.input]) for s in subjects]}


def infer_scan_arguments(wildcards):
    """`--input SCAN --output OUT` for each subject of the output (OUT: inference_path)."""
    output = OUTPUTS[wildcards.output]
    rows = {r["subject"]: r for r in preprocessed_rows()}
    args = []
    for subject in inferred_subjects(output):
        args += ["--input", str(rows[subject][output.input]), "--output", inference_path(output, subject)]
    return " ".join(shlex.quote(a) for a in args)


def infer_model_file(wildcards):
    output = OUTPUTS[wildcards.output]
    return f"results/models/{output.family}/{output.model_file}"


def infer_arguments(wildcards):
    return wf.infer_arguments(config, OUTPUTS[wildcards.output])


# ---- build_report (rules/report.smk)
def trained_models(wildcards):
    """The model file of every family the run trains: a family without per-subject outputs (a synthesis family,
    judged by its own training job) reaches the report only through this input."""
    _, skipped = output_plan()
    return [f"results/models/{name}/model.pt" for name in wf.trained_families(config, skipped)]


# ---- evaluate_models (rules/evaluate.smk)
def evaluation_inputs(wildcards):
    """The infer marker of each evaluated output (its results for the evaluated splits' subjects)."""
    run, _ = output_plan()
    return [infer_listing(OUTPUTS[name]) for name, subjects in run.items() if subjects]


def evaluated_outputs(wildcards):
    run, _ = output_plan()
    return json.dumps([OUTPUTS[name].as_dict() for name in run])


def skipped_outputs(wildcards):
    """The outputs that are not evaluated, with the reason (the report says it in their place)."""
    _, skipped = output_plan()
    return json.dumps([{**OUTPUTS[name].as_dict(), "reason": reason} for name, reason in skipped.items()])


# ---- export_dicom, export_bids (rules/export.smk)
def export_dicom_targets(wildcards):
    """A DICOM series folder per output (not skipped) and test subject (every subject it ran on, for an output with
    no ground truth: the cohort's own scans super-resolved): the infer rule's results, exported."""
    _, skipped = output_plan()
    return [f"results/export/dicom/{o.name}/{subject}" for o in OUTPUTS.values() if o.name not in skipped
            for subject in (inferred_subjects(o) if o.truth == o.input
                            else [r["subject"] for r in subjects_with(["test"], o.input)])]


def export_dicom_input(wildcards):
    """The output's infer marker (its image: export_dicom_image), its family's model.pt (the training job's marker)
    and ingest's key and tables."""
    output = OUTPUTS[wildcards.output]
    return {"inferred": infer_listing(output), "model": f"results/models/{output.family}/model.pt",
            "key": "results/ingest/pseudonym_key.tsv", "manifest": "results/ingest/manifest.tsv",
            "files": "results/ingest/files.tsv"}


def export_dicom_image(wildcards):
    return inference_path(OUTPUTS[wildcards.output], wildcards.subject)


def export_dicom_options(wildcards):
    """The generator (--direction), a series number per output, and re-identification with the source lookup."""
    output = OUTPUTS[wildcards.output]
    args = list(output.infer_args[:2]) if output.infer_args[:1] == ("--direction",) else []
    args += ["--series-number", str(1001 + list(OUTPUTS).index(output.name))]
    if config["export"]["reidentify"]:
        args += ["--reidentify", "--ingest", "results/ingest", "--input-dir", INPUT_DIR]
    return " ".join(shlex.quote(a) for a in args)


def export_bids_models(wildcards):
    _, skipped = output_plan()
    return sorted({f"results/models/{o.family}/model.pt" for o in OUTPUTS.values() if o.name not in skipped})


def export_bids_outputs(wildcards):
    _, skipped = output_plan()
    return json.dumps([o.as_dict() for o in OUTPUTS.values() if o.name not in skipped])
