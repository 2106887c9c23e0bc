#!/usr/bin/env bash
# Big-learn's mechanisms apart (issue 23, item 5; docs/finetuning.md): lexname fine-tuned on 1,000
# examples at FT's best cell of the data-size sweep (lr 8e-4, 10 epochs, warm-up 30), 3 seeds, one
# group of runs per switch of experiments/finetune_step.py. Then:
#   python -m benchmarks.finetune_mechanisms OUT
# Usage: bash benchmarks/finetune_mechanisms.sh MODEL_DIR OUT   (a finished run is never redone)
set -euo pipefail
model_dir=${1:?give the pretrained model directory (the pretrain recipe writes it to WORKDIR/model)}
out=${2:?give the output folder}
cd "$(dirname "$0")/.."
common=(--config configs/finetune.py:lexname "--config.model_dir=$model_dir"
  --config.plm.batch_size=0 --config.data.train_limit=1000 --config.num_epochs=10
  --config.learning_rate=8e-4 --config.warmup_steps=30)
run() {
  local group=$1 seed=$2
  shift 2
  local dir="$out/$group/runs/seed$seed"
  [ -f "$dir/result.json" ] || python -m experiments.finetune "${common[@]}" \
    "--config.seed=$seed" "--workdir=$dir" "$@"
}
for seed in 0 1 2; do
  run ft "$seed" --config.beta=0.0
  run bl "$seed" --config.beta=0.4
  run ft_body6 "$seed" --config.beta=0.0 --config.body_lr_scale=0.1667
  run bl_separate "$seed" --config.beta=0.4 --config.plm.separate_adam=True
  run bl_label1 "$seed" --config.beta=0.4 --config.plm.label_weight=1.0
  run bl_label_only "$seed" --config.beta=0.4 --config.plm.label_only=True
  # FT for as long in wall time as big-learn's 10 epochs (a big-learn run costs about 2.5x FT's)
  run ft_time "$seed" --config.beta=0.0 --config.num_epochs=25
done
