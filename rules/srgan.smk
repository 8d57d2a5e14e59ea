# Stages 4-5 for super-resolution: train SRGAN (phase 1 = SRResNet, phase 2 = adversarial fine-tuning), then
# super-resolve every test subject with both generators. Training resumes from
# results/models/srgan/checkpoints/last.pt after an interruption (same config). No `gpu` resource: the
# training uses CUDA when the machine has it; on a cluster set it in the profile
# (set-resources: train_srgan:gpu=1). Paths and input functions: rules/common.smk.

rule train_srgan:
    input:
        subjects=f"{PREPROCESS_DIR}/subjects.tsv",
    output:
        model=SRGAN_MODEL_FILES["srgan"],
        srresnet=SRGAN_MODEL_FILES["srresnet"],
        history=f"{SRGAN_DIR}/history.csv",
    params:
        cfg=section_json("srgan"),
        seed=config["seed"],
    threads: workflow.cores
    conda:
        "../envs/pipeline.yaml"
    log:
        "logs/train_srgan.log",
    benchmark:
        "results/benchmarks/train_srgan.tsv"
    shell:
        'python -m pipeline train srgan --data "$(dirname {input.subjects:q})"'
        ' --out "$(dirname {output.model:q})" --params {params.cfg:q} --seed {params.seed}'
        " --threads {threads} > {log:q} 2>&1"


rule infer_srgan:
    input:
        model=srgan_model_file,
        scan=srgan_scan,
    output:
        "results/infer/{model}/{subject}_sr.nii.gz",
    wildcard_constraints:
        model="srgan|srresnet",
    threads: 1
    conda:
        "../envs/pipeline.yaml"
    log:
        "logs/infer_srgan/{model}_{subject}.log",
    benchmark:
        "results/benchmarks/infer_srgan/{model}_{subject}.tsv"
    shell:
        "python -m pipeline infer --model {input.model:q} --input {input.scan:q} --output {output:q}"
        " --threads {threads} > {log:q} 2>&1"
