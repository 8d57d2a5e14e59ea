# Exports of the outputs of the test subjects (config `export:`): each output as a new derived DICOM series for
# PACS, results/export/dicom/<output>/<subject>/ (export.dicom), and all of them as a BIDS derivatives dataset,
# results/derivatives/medgan/ (export.bids). final_targets (common.smk) asks for them when enabled.
import shlex


def export_dicom_targets(wildcards):
    """A DICOM series folder per output (not skipped) and test subject: the infer rule's results, exported."""
    _, skipped = output_plan()
    return [f"results/export/dicom/{o.name}/{r['subject']}" for o in OUTPUTS.values() if o.name not in skipped
            for r in subjects_with(["test"], o.input)]


def export_dicom_input(wildcards):
    """The output's image, its family's model.pt (the training job's marker) and ingest's key and tables."""
    output = OUTPUTS[wildcards.output]
    return {"image": inference_path(output, wildcards.subject), "model": f"results/models/{output.family}/model.pt",
            "key": "results/ingest/pseudonym_key.tsv", "manifest": "results/ingest/manifest.tsv",
            "files": "results/ingest/files.tsv"}


def export_dicom_options(wildcards):
    """The generator (--direction), a series number per output, and re-identification with the source lookup."""
    output = OUTPUTS[wildcards.output]
    args = list(output.infer_args[:2]) if output.infer_args[:1] == ("--direction",) else []
    args += ["--series-number", str(1001 + list(OUTPUTS).index(output.name))]
    if config["export"]["reidentify"]:
        args += ["--reidentify", "--ingest", "results/ingest", "--input-dir", INPUT_DIR]
    return " ".join(shlex.quote(a) for a in args)


def export_bids_models(wildcards):
    _, skipped = output_plan()
    return sorted({f"results/models/{o.family}/model.pt" for o in OUTPUTS.values() if o.name not in skipped})


def export_bids_outputs(wildcards):
    _, skipped = output_plan()
    return json.dumps([o.as_dict() for o in OUTPUTS.values() if o.name not in skipped])


rule export_dicom:
    input:
        unpack(export_dicom_input),
    output:
        directory("results/export/dicom/{output}/{subject}"),
    wildcard_constraints:
        output=wf.alternatives(list(OUTPUTS)),
        subject="sub-[^/_]+",
    params:
        model=infer_model_file,
        options=export_dicom_options,
    log:
        "logs/export_dicom/{output}/{subject}.log",
    shell:
        "python -m pipeline export-dicom --output {input.image:q} --model {params.model:q} --out {output:q}"
        " --key {input.key:q} {params.options} > {log:q} 2>&1"


rule export_bids:
    input:
        images=test_inference_targets,
        models=export_bids_models,
        subjects=f"{PREPROCESS_DIR}/subjects.tsv",
    output:
        directory("results/derivatives/medgan"),
    params:
        outputs=export_bids_outputs,
    log:
        "logs/export_bids.log",
    shell:
        "python -m pipeline export-bids --outputs {params.outputs:q} --subjects {input.subjects:q}"
        " --infer results/infer --models results/models --out {output:q} > {log:q} 2>&1"
