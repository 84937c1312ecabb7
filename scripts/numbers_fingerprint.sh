#!/usr/bin/env bash
# The numbers a user sees, written by the current tree: Table 2, the diagonal table, a small sparse-coding
# table, and small LoRA and attention runs (about 3 minutes on 2 cores). Run it before and after a change
# that must not change results, then compare the tables and metrics:
#
#   bash scripts/numbers_fingerprint.sh /tmp/before      # on the old commit
#   bash scripts/numbers_fingerprint.sh /tmp/after       # on the new one
#   diff -r --exclude='*.png' --exclude='*.json' --exclude='*.yaml' --exclude='*.log' /tmp/before /tmp/after
#
# (summary.json holds wall times and config.yaml the key names, so they are left out of the comparison.)
set -euo pipefail
OUT=${1:?usage: scripts/numbers_fingerprint.sh OUT_DIR}
PY=${PYTHON:-.venv/bin/python}
MF="$PY -m mirrorflow.cli"
mkdir -p "$OUT"
TINY="hidden=32 layers=2 mlp=64 heads=4 lr=3e-3 warmup_epochs=0"
$MF reproduce matrix-sensing --out "$OUT/ms" > "$OUT/ms.log" 2>&1
$MF reproduce diagonal --out "$OUT/diag" > "$OUT/diag.log" 2>&1
$MF reproduce sparse-coding image_size=16 iterations=40 n_images=100 batch_size=50 --out "$OUT/sc" > "$OUT/sc.log" 2>&1
$MF reproduce lora task=lm model=tiny-gpt2 steps=12 off_at=6 eval_every=3 batch_size=4 block_size=16 \
    val_windows=8 lr=0.1 weight_decays=0.5 seeds=0,1 baseline=true auto_off=true workers=1 \
    --out "$OUT/lora" > "$OUT/lora.log" 2>&1
$MF reproduce attention $TINY epochs=3 sweep_weight_decays=0,1 ablation_weight_decay=3 ablation_off_epochs=1,2 \
    seeds=0,1 finetune_steps=4 finetune_off_at=2 finetune_eval_every=2 finetune_batch_size=4 \
    finetune_weight_decays=1 val_size=8 lrs_adamw_weight_decays=1 lrs_sgd_weight_decays=0.01 restart_epochs=1 \
    --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "tables and metrics in $OUT"
