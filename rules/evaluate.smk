# Stage 6: metrics (PSNR, SSIM, MAE, NRMSE), statistics and figures of every exported generator (OUTPUTS) against
# the classical baselines of its task, on the evaluated splits' subjects that have its input and ground truth.


def evaluation_inputs(wildcards):
    """Each output's result for each subject of the evaluated splits that has its input and ground truth."""
    splits = config["evaluate"]["splits"]
    return [inference_path(o, r["subject"]) for o in OUTPUTS.values() for r in subjects_with(splits, o.input, o.truth)]


# Without a model to evaluate there is nothing to do (and no rule).
if OUTPUTS:

    rule evaluate_models:
        input:
            subjects=f"{PREPROCESS_DIR}/subjects.tsv",
            outputs=evaluation_inputs,
        output:
            summary=report(
                "results/metrics/summary.json",
                caption="captions/summary.rst",
                category="Evaluation",
            ),
            metrics=report(
                expand("results/metrics/{output}.csv", output=list(OUTPUTS)),
                caption="captions/metrics.rst",
                category="Evaluation",
            ),
            figures=report(
                directory("results/figures"),
                patterns=["{name}.png"],
                caption="captions/figures.rst",
                category="Figures",
            ),
        params:
            cfg=section_json("evaluate"),
            outputs=json.dumps([o.as_dict() for o in OUTPUTS.values()]),
            degradation=json.dumps(config["preprocess"]["sr"]),
        log:
            "logs/evaluate_models.log",
        conda:
            "../envs/pipeline.yaml"
        benchmark:
            "results/benchmarks/evaluate_models.tsv"
        shell:
            "python -m pipeline evaluate --subjects {input.subjects:q} --infer results/infer"
            " --outputs {params.outputs:q} --degradation {params.degradation:q}"
            " --histories results/models --metrics $(dirname {output.summary:q}) --figures {output.figures:q}"
            " --params {params.cfg:q} > {log:q} 2>&1"
