#!/usr/bin/env bash
# Thread scaling of the training step: `selfsup bench step` of the peer rows with 1, 2, 4, ...
# threads (RAYON_NUM_THREADS) up to the machine's cores, one JSON line each, after the CPU's
# model and vector flags.
#
#   cargo build --release -p selfsup-cli && benches/thread_scaling.sh [MAX_THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SELFSUP:-target/release/selfsup}
MAX=${1:-$(nproc)}
STEPS=${STEPS:-3}
lscpu | grep -E "Model name|^CPU\(s\)|Thread\(s\) per core" || true
grep -o -w -E "avx2|fma|avx512f|avx512bw|avx512vl|avx512_bf16" /proc/cpuinfo | sort -u | tr '\n' ' '
echo
rows=(
  "--method simclr --encoder convnet --width 32 --image-size 28 --channels 1 --batch 128 --head-hidden 512 --optimizer sgd"
  "--method mae --encoder vit --vit-dim 192 --vit-depth 6 --vit-heads 3 --patch-size 4 --decoder-dim 128 --decoder-depth 2 --set mae.decoder_heads=4 --batch 128"
  "--method simclr --encoder resnet18 --batch 128 --head-hidden 2048 --optimizer sgd"
  "--method dino --encoder resnet18 --batch 64 --local-crops 4 --local-size 16 --set dino.head.hidden_dim=2048 --set dino.head.bottleneck_dim=256 --dino-out 4096 --optimizer adamw"
  "--method gan --encoder dcgan --width 64 --batch 128 --image-size 28 --channels 1"
)
for row in "${rows[@]}"; do
  t=1
  while [ "$t" -le "$MAX" ]; do
    # shellcheck disable=SC2086
    RAYON_NUM_THREADS=$t "$BIN" bench step $row --steps "$STEPS" --warmup 1 --fixed-batch | tail -1
    t=$((t * 2))
  done
done
