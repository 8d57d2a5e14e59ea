# Exports of the outputs of the test subjects (config `export:`): each output as a new derived DICOM series for
# PACS, results/export/dicom/<output>/<subject>/ (export.dicom), and all of them as a BIDS derivatives dataset,
# results/derivatives/medgan/ (export.bids). final_targets (common.smk) asks for them when enabled.
# Their input functions are in common.smk.


rule export_dicom:
    input:
        unpack(export_dicom_input),
    output:
        directory("results/export/dicom/{output}/{subject}"),
    wildcard_constraints:
        output=wf.alternatives(list(OUTPUTS)),
        subject="sub-[^/_]+",
    params:
        image=export_dicom_image,
        model=infer_model_file,
        options=export_dicom_options,
    log:
        "logs/export_dicom/{output}/{subject}.log",
    shell:
        "python -m pipeline export-dicom --output {params.image:q} --model {params.model:q} --out {output:q}"
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
