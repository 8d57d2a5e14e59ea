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
    return targets
