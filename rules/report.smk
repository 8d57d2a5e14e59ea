# Stage 7: the HTML report, assembled from what evaluation wrote (computes nothing).

if config["models"]:

    rule build_report:
        input:
            summary="results/metrics/summary.json",
            metrics=expand("results/metrics/{output}.csv", output=list(OUTPUTS)),
            figures="results/figures",
            viewer="results/viewer",
            subjects=f"{PREPROCESS_DIR}/subjects.tsv",
            manifest="results/ingest/manifest.tsv",
            # the families' training jobs (a synthesis family's results: results/models/<family>/synthesis.json)
            models=trained_models,
        output:
            index="reports/index.html",
            subjects=directory("reports/subjects"),
            assets=directory("reports/assets"),
        params:
            cfg=section_json("report"),
            workflow=json.dumps(config),
        log:
            "logs/build_report.log",
        shell:
            "python -m pipeline report --summary {input.summary:q} --out $(dirname {output.index:q})"
            " --subjects {input.subjects:q} --manifest {input.manifest:q} --benchmarks results/benchmarks"
            " --models results/models --workflow-config {params.workflow:q} --params {params.cfg:q} > {log:q} 2>&1"
