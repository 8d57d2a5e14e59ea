# Stage 5: apply each exported generator (OUTPUTS, rules/common.smk) to a subject's input scan, in the geometry of
# the ground truth: results/infer/<output>/<subject>_<desc>.nii.gz. The family's inference-only config keys
# (window size, overlap, test-time augmentation) are this rule's params.


rule infer_model:
    input:
        unpack(infer_model_input),
    output:
        "results/infer/{output}/{subject}_{desc}.nii.gz",
    wildcard_constraints:
        output=wf.alternatives(list(OUTPUTS)),
        subject="[^/_]+",
    params:
        model=infer_model_file,
        options=infer_arguments,
    threads: 1
    log:
        "logs/infer_model/{output}/{subject}_{desc}.log",
    benchmark:
        "results/benchmarks/infer_model_{output}/{subject}_{desc}.tsv"
    shell:
        "python -m pipeline infer --model {params.model:q} --input {input.scan:q} --output {output:q}"
        " {params.options} --threads {threads} > {log:q} 2>&1"
