# Stage 5: apply each exported generator (OUTPUTS, rules/common.smk) to the input scan of every subject it runs on
# (the test subjects and the evaluated splits'), in the geometry of the ground truth:
# results/infer/<output>/<subject>_<desc>.nii.gz. One job per output loads the model once for all its subjects (a
# small scan's inference costs less than starting Python and importing torch); results/infer/<output>/outputs.tsv,
# written when every subject succeeded, lists them. The family's inference-only config keys (window size, overlap,
# test-time augmentation) are this rule's params.


rule infer_model:
    input:
        unpack(infer_model_input),
    output:
        "results/infer/{output}/outputs.tsv",
    wildcard_constraints:
        output=wf.alternatives(list(OUTPUTS)),
    params:
        model=infer_model_file,
        scans=infer_scan_arguments,
        options=infer_arguments,
    threads: all_cores
    log:
        "logs/infer_model/{output}.log",
    benchmark:
        "results/benchmarks/infer_model_{output}.tsv"
    shell:
        "python -m pipeline infer --model {params.model:q} {params.scans} --listing {output:q}"
        " {params.options} --threads {threads} > {log:q} 2>&1"
