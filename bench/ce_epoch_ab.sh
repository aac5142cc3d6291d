#!/bin/bash
# Cross-entropy epochs on the real Flickr8k fp32 cache, an older commit then the working tree (an A/B):
# the shipped recipe, 3 epochs of 150 steps, fp32, 2 threads, seed 28. Compare runs/ab_old/log.csv and
# runs/ab_new/log.csv (captions_per_s, losses, val BLEU-4 / CIDEr). Run it again to resume an interrupted run.
#   bench/ce_epoch_ab.sh c5d319c
set -e
OLD=${1:?usage: bench/ce_epoch_ab.sh OLD_COMMIT}
BASE=flickr8k_5_cap_per_img_5_min_word_freq
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -d /tmp/ab_old ] || git -C "$ROOT" worktree add -f /tmp/ab_old "$OLD"
for WHO in old new; do
  if [ $WHO = old ]; then cd /tmp/ab_old; else cd "$ROOT"; fi
  OUT=$ROOT/runs/ab_$WHO
  [ -f "$OUT/done" ] && continue
  if [ -f "$OUT/train_config.json" ]; then
    python train.py --resume "$OUT"
  else
    python train.py --data-dir "$ROOT/data/flickr8k" --data-name $BASE --cache-dir "$ROOT/cache/flickr8k_lite2_fp32" \
      --output-dir "$OUT" --batch-size 40 --epochs 3 --max-steps-per-epoch 150 \
      --lr-decay-patience 2 --early-stop-patience 4 --threads 2 --seed 28 --no-bf16 --val-max-images 500
  fi
  touch "$OUT/done"
done
