# Medical imaging GAN pipeline. Wiring only: the rules live in rules/*.smk, the work in the `pipeline` package.
from snakemake.utils import min_version

min_version("8.10")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/demo.smk"


rule all:
    input:
        final_targets(),
    default_target: True
