# Medical imaging GAN pipeline. Wiring only: the rules live in rules/*.smk, the work in the `pipeline` package.
from snakemake.utils import min_version

min_version("8.10")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/ingest.smk"
include: "rules/preprocess.smk"
include: "rules/srgan.smk"
include: "rules/cyclegan.smk"
# Keep these two last: evaluation finds the models to evaluate among the rules included above.
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    input:
        final_targets(),
    default_target: True
