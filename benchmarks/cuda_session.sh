#!/usr/bin/env bash
# What a lent CUDA machine measures, in one go (numbers in the closing notes of #5 and #7):
#   train  the CycleGAN `full` config (config/cyclegan_full.yaml) on a demo run's preprocessed subjects, translate
#          the test subjects' T1w and evaluate against their T2w (the workflow's own train/infer/evaluate commands);
#   bench  training steps and whole-volume inference, plain fp32 against the bf16 fast path, with cuDNN
#          autotuning off (training's default `deterministic: true`) and on.
# Run from the repository root of a finished demo run (results/preprocess), or with its preprocess folder copied
# in there:
#   benchmarks/cuda_session.sh OUT_DIR [train|bench|all] [TRAIN_TIMEOUT_S]
# Training resumes from OUT_DIR/models/cyclegan_full/ when a checkpoint is there; with a timeout it stops and
# can be continued by the same command.
set -uo pipefail
out=${1:?usage: benchmarks/cuda_session.sh OUT_DIR [train|bench|all] [TRAIN_TIMEOUT_S]}
what=${2:-all}
limit=${3:-0}
params=${CYCLEGAN_PARAMS:-config/cyclegan_full.yaml}
model=${CYCLEGAN_NAME:-cyclegan_full}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

if [[ $what == train || $what == all ]]; then
    cmd=(python -m pipeline train cyclegan --data results/preprocess --out "$out/models/$model" --params "$params"
         --seed 42 --threads 8)
    start=$(date +%s)
    if [[ $limit -gt 0 ]]; then timeout --signal=INT "$limit" "${cmd[@]}"; else "${cmd[@]}"; fi
    rc=$?
    echo "train rc=$rc wall=$(( $(date +%s) - start )) s"
    if [[ -f $out/models/$model/model.pt ]]; then
        mkdir -p "$out/infer/$model"
        for s in $(awk -F'\t' '$2 == "test" {print $1}' results/preprocess/subjects.tsv); do
            t0=$(date +%s.%N)
            python -m pipeline infer --model "$out/models/$model/model.pt" --input "results/preprocess/$s/T1w.nii.gz" \
                --output "$out/infer/$model/${s}_T2w.nii.gz" --direction A2B --threads 8
            echo "infer $s: $(python -c "print(round($(date +%s.%N) - $t0, 1))") s"
        done
        python -m pipeline evaluate --subjects results/preprocess/subjects.tsv --infer "$out/infer" \
            --translation "$model" --source T1w --target T2w --histories "$out/models" --metrics "$out/metrics" \
            --figures "$out/figures"
        python - "$out/metrics/$model.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for r in rows:
    print({k: r[k] for k in r if k in ("subject", "method", "psnr", "ssim", "mae", "nrmse")})
EOF
    fi
fi

if [[ $what == bench || $what == all ]]; then
    python benchmarks/run_all.py --only peak,train,infer --device cuda --precisions fp32,bf16 --repeats 20 \
        --warmup 3 --threads 8 --out "$out/bench_deterministic"
    python benchmarks/run_all.py --only peak,train --device cuda --precisions fp32,bf16 --repeats 20 \
        --warmup 3 --threads 8 --cudnn-benchmark --out "$out/bench_autotune"
fi
