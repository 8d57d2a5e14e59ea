# Stage 6: metrics (PSNR, SSIM, MAE, NRMSE), statistics and figures of every exported generator (OUTPUTS) against
# the classical baselines of its task, on the evaluated splits' subjects that have its input and ground truth.


# Without a model there is nothing to do (and no rule); families without per-subject outputs (dcgan) give a summary
# with no task.
if config["models"]:

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
            # the report's slice viewer sprite sheets and the reader study's images and key (not for Snakemake's report)
            viewer=directory("results/viewer"),
        params:
            cfg=section_json("evaluate"),
            outputs=evaluated_outputs,
            skipped=skipped_outputs,
            degradation=wf.sr_degradations(config),
        log:
            "logs/evaluate_models.log",
        benchmark:
            "results/benchmarks/evaluate_models.tsv"
        threads: all_cores
        shell:
            "python -m pipeline evaluate --subjects {input.subjects:q} --infer results/infer"
            " --outputs {params.outputs:q} --skipped {params.skipped:q} --degradation {params.degradation:q}"
            " --histories results/models --metrics $(dirname {output.summary:q}) --figures {output.figures:q}"
            " --viewer {output.viewer:q}"
            " --params {params.cfg:q} --workers {threads} > {log:q} 2>&1"
