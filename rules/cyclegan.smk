# Stages 4-5 for modality translation: train CycleGAN on unpaired slices/patches of the training subjects
# (source -> target, config section `cyclegan`), then translate every test subject's source scan. Training
# resumes from results/models/cyclegan/checkpoints/last.pt after an interruption (same config). No `gpu`
# resource: training uses CUDA when the machine has it; on a cluster set it in the profile
# (set-resources: train_cyclegan:gpu=1).

# Input functions (they read the preprocess checkpoint): cyclegan_scan, cyclegan_infer_targets in rules/common.smk.


rule train_cyclegan:
    input:
        subjects=f"{PREPROCESS_DIR}/subjects.tsv",
    output:
        model=f"{CYCLEGAN_DIR}/model.pt",
        history=f"{CYCLEGAN_DIR}/history.csv",
    params:
        cfg=section_json("cyclegan"),
        seed=config["seed"],
    threads: workflow.cores
    log:
        "logs/train_cyclegan.log",
    conda:
        "../envs/pipeline.yaml"
    benchmark:
        "results/benchmarks/train_cyclegan.tsv"
    shell:
        'python -m pipeline train cyclegan --data "$(dirname {input.subjects:q})"'
        ' --out "$(dirname {output.model:q})" --params {params.cfg:q} --seed {params.seed}'
        " --threads {threads} > {log:q} 2>&1"


rule infer_cyclegan:
    input:
        model=f"{CYCLEGAN_DIR}/model.pt",
        scan=cyclegan_scan,
    output:
        f"results/infer/cyclegan/{{subject}}_{CYCLEGAN_TARGET}.nii.gz",
    threads: 1
    log:
        "logs/infer_cyclegan/{subject}.log",
    conda:
        "../envs/pipeline.yaml"
    benchmark:
        "results/benchmarks/infer_cyclegan/{subject}.tsv"
    shell:
        "python -m pipeline infer --model {input.model:q} --input {input.scan:q} --output {output:q}"
        " --direction A2B --threads {threads} > {log:q} 2>&1"
