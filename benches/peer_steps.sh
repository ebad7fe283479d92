#!/usr/bin/env bash
# Every row of the side-by-side table in docs/benchmarks.md, ours then PyTorch + lightly, back
# to back on this machine (each row its own pair of processes, so peak memory is per row).
#
#   cargo build --release -p selfsup-cli
#   PYTHON=/path/to/venv/bin/python benches/peer_steps.sh [ROW ...] > steps.jsonl
#
# ROW: simclr-resnet18 simclr-convnet mae-vit dino-resnet18 dino-resnet18-locals rotnet-resnet18
# (default: all). Each line printed is a JSON object: the row, "side" (selfsup or pytorch) and
# the `selfsup bench step` fields. THREADS (default: every core) goes to both sides.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SELFSUP:-target/release/selfsup}
PY=${PYTHON:-python3}
THREADS=${THREADS:-$(nproc)}
STEPS=${STEPS:-5}

row_args() {
  case "$1" in
    simclr-resnet18) echo "--method simclr --encoder resnet18 --batch 128 --head-hidden 2048 --optimizer sgd" ;;
    simclr-convnet) echo "--method simclr --encoder convnet --width 32 --image-size 28 --channels 1 --batch 128 --head-hidden 512 --optimizer sgd" ;;
    mae-vit) echo "--method mae --encoder vit --vit-dim 192 --vit-depth 6 --vit-heads 3 --patch-size 4 --decoder-dim 128 --decoder-depth 2 --set mae.decoder_heads=4 --batch 128" ;;
    dino-resnet18) echo "--method dino --encoder resnet18 --batch 64 --local-crops 0 --set dino.head.hidden_dim=2048 --set dino.head.bottleneck_dim=256 --dino-out 4096 --optimizer adamw --set train.optimizer.lr=0.0005 --set train.optimizer.weight_decay=0.04" ;;
    dino-resnet18-locals) echo "--method dino --encoder resnet18 --batch 64 --local-crops 4 --local-size 16 --set dino.head.hidden_dim=2048 --set dino.head.bottleneck_dim=256 --dino-out 4096 --optimizer adamw --set train.optimizer.lr=0.0005 --set train.optimizer.weight_decay=0.04" ;;
    rotnet-resnet18) echo "--method rotnet --encoder resnet18 --batch 128 --optimizer sgd" ;;
    *) echo "unknown row $1" >&2; exit 2 ;;
  esac
}

rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(simclr-resnet18 simclr-convnet mae-vit dino-resnet18 dino-resnet18-locals rotnet-resnet18)
for row in "${rows[@]}"; do
  # shellcheck disable=SC2046
  ours=$(RAYON_NUM_THREADS=$THREADS "$BIN" bench step $(row_args "$row") --steps "$STEPS" --fixed-batch | tail -1)
  echo "{\"row\":\"$row\",\"side\":\"selfsup\",${ours#\{}"
  # shellcheck disable=SC2046
  peer=$("$PY" benches/pytorch_step.py --selfsup "$BIN" $(row_args "$row") --steps "$STEPS" --threads "$THREADS" | tail -1)
  echo "{\"row\":\"$row\",\"side\":\"pytorch\",${peer#\{}"
done
