# Stage 6: metrics (PSNR, SSIM, MAE, NRMSE), statistics and figures of every model this workflow can make
# outputs for, against the classical baselines (input functions in common.smk). Included after the model
# rules: a model is evaluated when some rule produces results/infer/<model>/<subject>_<desc>.nii.gz.

EVALUATED_MODELS = evaluated_models()

# Without a model to evaluate there is nothing to do (and no rule).
if EVALUATED_MODELS:

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
                expand("results/metrics/{model}.csv", model=EVALUATED_MODELS),
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
            models=evaluation_arguments(),
        log:
            "logs/evaluate_models.log",
        conda:
            "../envs/pipeline.yaml"
        benchmark:
            "results/benchmarks/evaluate_models.tsv"
        shell:
            "python -m pipeline evaluate --subjects {input.subjects:q} --infer results/infer {params.models}"
            " --histories results/models --metrics $(dirname {output.summary:q}) --figures {output.figures:q}"
            " --params {params.cfg:q} > {log:q} 2>&1"
