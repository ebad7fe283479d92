#!/usr/bin/env bash
# The streaming check of docs/data.md: a folder of 40,000 JPEGs of 320x240 (9.2 GB if decoded)
# trains 20 SimCLR steps of the ConvNet at 64-px crops; prints the peak memory and the time to
# the first logged step.
#   benches/stream_folder.sh [DIR]   (default: target/photos-40k; written once, ~1 GB)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-target/photos-40k}
cargo build --release --locked -p selfsup-benches --bin make-jpegs
cargo build --release --locked -p selfsup-cli
target/release/make-jpegs "$dir" 40000 320x240 10
run=$(mktemp -d)
start=$(date +%s.%N)
/usr/bin/time -v -o "$run/time.txt" target/release/selfsup pretrain --method simclr \
  --data "folder:$dir" --batch-size 128 --max-steps 20 --no-eval --quiet --out "$run/run" \
  --set data.image_size=64 --set data.channels=3 --set train.log_every=1 \
  --set train.checkpoint_every=0 --set eval.monitor_every=0 &
pid=$!
while [ ! -s "$run/run/metrics.jsonl" ] && kill -0 $pid 2>/dev/null; do sleep 0.05; done
first=$(date +%s.%N)
wait $pid
echo "time to the first logged step: $(echo "$first - $start" | bc) s"
grep -E "Maximum resident|Elapsed \(wall" "$run/time.txt"
rm -rf "$run"
