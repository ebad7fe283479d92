#!/usr/bin/env bash
# The CUDA check, in two halves: `pack` builds here (a machine with Rust, no GPU needed) the
# `cuda` binary and the test binaries that take a GPU, into .cuda/ (38 MB of xz); `run` runs them on a machine with an NVIDIA GPU and the CUDA driver + NVRTC (no Rust
# there), writing what it measured to $OUT (or ./cuda-out).
#
#   benches/cuda_check.sh pack       # here: needs llvm-22-dev + libpolly-22-dev (docs/backends.md)
#   benches/cuda_check.sh run        # there, from the repository root, with .cuda/ beside it
#   benches/cuda_check.sh run tests  # there: tests/gpu.rs alone
#
# What `run` checks: every method's training step on cuda:0 against flex, and data-parallel
# training over two copies of cuda:0 against cuda:0 alone with the whole batch (both in
# crates/selfsup-cli/tests/gpu.rs), 20 steps of every
# method's preset through `selfsup pretrain` on cuda:0, a data-parallel pretrain over
# cuda:0,cuda:0, and `selfsup bench step` on cuda:0 against flex on the GPU machine's cores.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}

if [ "$mode" = pack ]; then
    set -e
    D=${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4
    mkdir -p "$D/bin"
    # Debian's llvm-config names system libraries by path (.../libz3.so), which the
    # bundler passes on as -llibz3: answer -lz3.
    printf '#!/bin/sh\n/usr/lib/llvm-22/bin/llvm-config "$@" | sed "s#/usr/lib/[^ ]*/lib\\([A-Za-z0-9_+-]*\\)\\.so#-l\\1#g"\n' >"$D/bin/llvm-config"
    chmod +x "$D/bin/llvm-config"
    touch "$D/.tracel-llvm-installed"
    rm -rf .cuda && mkdir -p .cuda
    grep -qx '/.cuda/' .git/info/exclude 2>/dev/null || echo '/.cuda/' >>.git/info/exclude
    cargo build --release --locked -p selfsup-cli --features cuda
    cp target/release/selfsup .cuda/selfsup
    # The test binary: the artifact of kind "test" (cargo also builds the CLI beside it).
    exe() { cargo test --release --locked --no-run --message-format=json "$@" 2>/dev/null |
        grep '"kind":\["test"\]' | grep -o '"executable":"[^"]*"' |
        sed 's/"executable":"\(.*\)"/\1/'; }
    cp "$(exe -p selfsup-cli --features cuda --test gpu | tail -1)" .cuda/gpu-test
    # Each binary links LLVM statically (cubecl-cuda needs it): ~150 MB stripped, ~30 MB in
    # xz alone. Compressed together with a dictionary larger than one binary, the second costs
    # little (what they share is found): 38 MB for both, under the device tool's 64 MiB.
    strip .cuda/selfsup .cuda/gpu-test
    (cd .cuda && tar cf - selfsup gpu-test | xz -T1 --x86 --lzma2=preset=6,dict=256MiB >bins.tar.xz)
    rm .cuda/selfsup .cuda/gpu-test
    ls -la .cuda
    exit 0
fi

if [ "$mode" != run ]; then
    echo "usage: $0 pack|run" >&2
    exit 2
fi

OUT=${OUT:-cuda-out}
mkdir -p "$OUT" /tmp/cuda-bin
log="$OUT/cuda-check.log"
exec > >(tee "$log") 2>&1
xz -dc .cuda/bins.tar.xz | tar xf - -C /tmp/cuda-bin
B=/tmp/cuda-bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
lscpu | grep -m1 'Model name'
# NVRTC: the CUDA toolkit's, wherever this image keeps it.
nvrtc=$(find / -xdev -name 'libnvrtc.so*' 2>/dev/null | head -1)
echo "nvrtc: ${nvrtc:-not found}"
[ -n "$nvrtc" ] && export LD_LIBRARY_PATH="$(dirname "$nvrtc"):${LD_LIBRARY_PATH:-}"
ldd $B/selfsup | grep 'not found' && echo "missing libraries above"
export CUBECL_AUTOTUNE_LEVEL=minimal RUST_BACKTRACE=1
status=0
step() { # name, command...
    local name=$1
    shift
    local t0=$SECONDS
    if "$@"; then echo "== $name: ok ($((SECONDS - t0)) s)"; else
        echo "== $name: FAILED ($((SECONDS - t0)) s)"
        status=1
    fi
}
step "tests/gpu.rs: every method's step against flex, data parallel against one device" $B/gpu-test --test-threads 1 --nocapture
if [ "${2:-}" = tests ]; then # `run tests`: the test binary alone
    echo "status $status"
    exit $status
fi
for m in simclr mae dino clip rotnet jigsaw gan; do
    step "pretrain $m on cuda:0" $B/selfsup pretrain --method $m --device cuda:0 \
        --max-steps 20 --no-eval --quiet --out /tmp/runs/$m
    tail -n 1 /tmp/runs/$m/metrics.jsonl
done
step "pretrain simclr over cuda:0,cuda:0 (data parallel), scored" $B/selfsup pretrain \
    --method simclr --devices cuda:0,cuda:0 --max-steps 40 --quiet --out /tmp/runs/dp
for d in cuda:0 flex; do
    step "bench step simclr resnet18 b256 32px on $d" $B/selfsup bench step --method simclr \
        --encoder resnet18 --batch 256 --image-size 32 --steps 5 --warmup 2 --device $d
done
step "bench step mae vit b256 32px on cuda:0" $B/selfsup bench step --method mae \
    --encoder vit --batch 256 --image-size 32 --steps 5 --warmup 2 --device cuda:0
echo "status $status"
exit $status
