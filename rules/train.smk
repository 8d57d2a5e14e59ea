# Stage 4: train each GAN family of `models:` (config section of the family's name) on the training subjects.
# Training resumes from results/models/<family>/checkpoints/last.pt after an interruption (same config). The job
# writes every model file the family exports (SRGAN: srresnet.pt and model.pt); model.pt, written last, stands
# for them. Keys that only inference reads are not passed (changing them does not retrain). No `gpu` resource:
# training uses CUDA when the machine has it; on a cluster set it in the profile (set-resources: train_model:gpu=1).


rule train_model:
    input:
        subjects=f"{PREPROCESS_DIR}/subjects.tsv",
    output:
        model="results/models/{family}/model.pt",
        history="results/models/{family}/history.csv",
    wildcard_constraints:
        family=wf.alternatives(config["models"]),
    params:
        cfg=train_params,
        seed=config["seed"],
    threads: all_cores
    log:
        "logs/train_model/{family}.log",
    benchmark:
        "results/benchmarks/train_model_{family}.tsv"
    shell:
        'python -m pipeline train {wildcards.family} --data "$(dirname {input.subjects:q})"'
        ' --out "$(dirname {output.model:q})" --params {params.cfg:q} --seed {params.seed}'
        " --threads {threads} > {log:q} 2>&1"
