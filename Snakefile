# Medical imaging GAN pipeline. Wiring only: the rules live in rules/*.smk, the work in the `pipeline` package.
from snakemake.utils import min_version

min_version("8.10")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/ingest.smk"
include: "rules/preprocess.smk"
include: "rules/train.smk"
include: "rules/infer.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/export.smk"


rule all:
    input:
        final_targets(),
    default_target: True
