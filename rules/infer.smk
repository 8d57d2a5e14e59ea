# Stage 5: apply each exported generator (OUTPUTS, rules/common.smk) to a subject's input scan, in the geometry of
# the ground truth: results/infer/<output>/<subject>_<desc>.nii.gz. The family's inference-only config keys
# (window size, overlap, test-time augmentation) are this rule's params.


def infer_model_input(wildcards):
    """The family's model.pt (the training job's marker) and the subject's input scan."""
    output = OUTPUTS[wildcards.output]
    rows = [r for r in preprocessed_rows() if r["subject"] == wildcards.subject and r.get(output.input)]
    if not rows or wildcards.desc != output.desc:
        raise ValueError(f"{wildcards.subject}: no {output.input} in {PREPROCESS_DIR}/subjects.tsv for "
                         f"{output.name} (or its outputs end in _{output.desc})")
    return {"model": f"results/models/{output.family}/model.pt", "scan": str(rows[0][output.input])}


def infer_model_file(wildcards):
    output = OUTPUTS[wildcards.output]
    return f"results/models/{output.family}/{output.model_file}"


def infer_arguments(wildcards):
    return wf.infer_arguments(config, OUTPUTS[wildcards.output])


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
