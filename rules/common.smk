# Config validation and input functions shared by the rules.
import json

from snakemake.utils import validate


# Fails before the DAG is built, naming the offending key; fills in the schema's defaults.
validate(config, "../config/config.schema.yaml", set_default=True)

DEMO_DIR = "results/demo"
# The scans the workflow reads: the user's folder, or the generated demo cohort.
INPUT_DIR = config["input_dir"] or DEMO_DIR
USE_DEMO = not config["input_dir"]


def section_json(name):
    """A config section as inline JSON for a stage's `--params` (re-validated by the stage's dataclass).

    Keys keep the config's order: e.g. ingest.modality_patterns is tried in that order.
    """
    return json.dumps(config[name])


def final_targets():
    """The targets of the default run: the last output of every stage built so far."""
    targets = []
    if USE_DEMO:
        targets.append(f"{DEMO_DIR}/participants.tsv")
    targets.append("results/ingest/manifest.tsv")
    targets.append("results/preprocess/subjects.tsv")
    # SRGAN + SRResNet outputs of every test subject (rules/srgan.smk; an input function: reads the checkpoint).
    targets.append(srgan_infer_targets)
    # CycleGAN translations of every test subject (rules/cyclegan.smk; an input function: reads the checkpoint).
    if "cyclegan_infer_targets" in globals():
        targets.append(cyclegan_infer_targets)
    # The report (rules/report.smk, included last), once some model can be evaluated.
    targets.extend(report_targets())
    return targets


# ---- evaluation and report (rules/evaluate.smk, rules/report.smk; included after the model rules)
# model -> task. SR outputs are results/infer/<model>/<subject>_sr.nii.gz, translation outputs
# results/infer/<model>/<subject>_<target>.nii.gz. A model is evaluated when some rule makes its outputs.
EVALUATE_CANDIDATES = {"srresnet": "sr", "srgan": "sr", "cyclegan": "translation"}


def inference_path(model, subject):
    """Where the infer stage writes `model`'s output for `subject`."""
    desc = "sr" if EVALUATE_CANDIDATES[model] == "sr" else config.get("cyclegan", {}).get("target", "T2w")
    return f"results/infer/{model}/{subject}_{desc}.nii.gz"


def evaluated_models(task=None):
    """The candidate models (of `task`) that a rule of the workflow can make outputs for."""
    return [m for m, t in EVALUATE_CANDIDATES.items() if task in (None, t)
            and any(r.is_producer(inference_path(m, "sub-000")) for r in workflow.rules)]


def evaluation_columns(model):
    """The subjects.tsv columns a subject needs to be evaluated with `model` (its input and ground truth)."""
    if EVALUATE_CANDIDATES[model] == "sr":
        modality = config.get("srgan", {}).get("modality") or config["preprocess"]["sr"]["modalities"][0]
        return [modality, f"{modality}_lr"]
    cyc = config.get("cyclegan", {})
    return [cyc.get("source", "T1w"), cyc.get("target", "T2w")]


def preprocessed_rows(splits=None):
    """The rows of the preprocess checkpoint's subjects.tsv (those of `splits`, when given)."""
    import csv

    with open(checkpoints.preprocess_scans.get().output.subjects, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [r for r in rows if splits is None or r["split"] in splits]


def subjects_with(split, *columns):
    """Subjects of `split` that have a file in each of `columns`."""
    return [r["subject"] for r in preprocessed_rows([split]) if all(r.get(c) for c in columns)]


def subject_scan(subject, column):
    """One subject's file in `column` (a path relative to the working directory, as subjects.tsv has it)."""
    for row in preprocessed_rows():
        if row["subject"] == subject and row.get(column):
            return row[column]
    raise ValueError(f"{subject}: no {column} in {PREPROCESS_DIR}/subjects.tsv")


def evaluation_inputs(wildcards):
    """Each evaluated model's output for each subject of the evaluated splits that has the model's input and
    ground truth (from the preprocess checkpoint's subjects.tsv)."""
    rows = preprocessed_rows(config["evaluate"]["splits"])
    return [inference_path(m, r["subject"]) for m in evaluated_models() for r in rows
            if all(r.get(c) for c in evaluation_columns(m))]


def evaluation_arguments():
    """The models and their tasks for the evaluate command line."""
    import shlex

    args = []
    sr, translation = evaluated_models("sr"), evaluated_models("translation")
    if sr:
        args += ["--sr", *sr, "--sr-modality", evaluation_columns(sr[0])[0],
                 "--degradation", json.dumps(config["preprocess"]["sr"])]
    if translation:
        source, target = evaluation_columns(translation[0])
        args += ["--translation", *translation, "--source", source, "--target", target]
    return " ".join(shlex.quote(a) for a in args)


def report_targets():
    """The report, once some model can be evaluated."""
    return ["reports/index.html"] if evaluated_models() else []


# ---- CycleGAN (rules/cyclegan.smk)
CYCLEGAN_DIR = "results/models/cyclegan"
CYCLEGAN_TARGET = config.get("cyclegan", {}).get("target", "T2w")


def cyclegan_subjects(split="test"):
    """Subjects of `split` with both the source and the target modality (from the preprocess checkpoint)."""
    return subjects_with(split, config["cyclegan"]["source"], config["cyclegan"]["target"])


def cyclegan_scan(wildcards):
    """The source scan of one subject."""
    return subject_scan(wildcards.subject, config["cyclegan"]["source"])


def cyclegan_infer_targets(wildcards):
    """The translated scan of every test subject (for rule all)."""
    target = config["cyclegan"]["target"]
    return [f"results/infer/cyclegan/{s}_{target}.nii.gz" for s in cyclegan_subjects("test")]


# ---- super-resolution (rules/srgan.smk)
SRGAN_DIR = "results/models/srgan"
# exported generator per reported model: the SRResNet (end of phase 1) and the SRGAN (end of phase 2)
SRGAN_MODEL_FILES = {"srresnet": f"{SRGAN_DIR}/srresnet.pt", "srgan": f"{SRGAN_DIR}/model.pt"}


def srgan_subjects(split="test"):
    """Subjects of `split` that have an SR input, from the preprocess checkpoint's subjects.tsv."""
    return subjects_with(split, f"{config['srgan']['modality']}_lr")


def srgan_scan(wildcards):
    """The LR input of one subject."""
    return subject_scan(wildcards.subject, f"{config['srgan']['modality']}_lr")


def srgan_model_file(wildcards):
    return SRGAN_MODEL_FILES[wildcards.model]


def srgan_infer_targets(wildcards):
    """Both generators' outputs for every test subject (for rule all)."""
    return [f"results/infer/{m}/{s}_sr.nii.gz" for m in SRGAN_MODEL_FILES for s in srgan_subjects("test")]
