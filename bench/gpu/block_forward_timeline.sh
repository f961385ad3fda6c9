#!/usr/bin/env bash
# Where a Hopper block forward CTA's cycles go: builds block_sparse_gpu_bench with the kernels'
# clock stamps (-DDILATED_HOPPER_TIMELINE, src/cuda/hopper/timeline.cuh) and summarises one
# forward of a few sweep rows (N = 16384, H = 8, bf16) with forward_timeline.py. With one
# warpgroup per CTA two CTAs share an SM, so the script's "gap between CTAs" line does not apply
# there. Logs under $OUT.
# Usage: bench/gpu/block_forward_timeline.sh ["BLOCK D ROW TILES" ...]
#   TILES: key tiles per CTA (random(k): k / 2 rounded up at blocks of 64 and D = 64, k at
#   D = 128 with blocks of 64 (64-key tiles), k with blocks of 128).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-$PWD/gpu-out}
BUILD=${BUILD:-build-timeline}
export OUT BUILD  # for build_diagnosis.sh
bench/gpu/build_diagnosis.sh block_sparse_gpu_bench block_timeline -DDILATED_HOPPER_TIMELINE || exit 1
cases=("$@")
[[ ${#cases[@]} -eq 0 ]] && cases=("64 64 random(77) 39" "64 128 random(77) 77" "128 64 random(38) 38" "128 128 random(38) 38")
for c in "${cases[@]}"; do
  set -- $c
  echo "== blocks $1, D $2, $3"
  DILATED_TIMELINE_ROW="$3" DILATED_TIMELINE_FILE=/tmp/block_timeline.bin \
    ./$BUILD/bin/block_sparse_gpu_bench --skip-grid --repeats 2 --block $1 --head-dim $2 \
    >"$OUT/block_timeline_bench_$1_$2.md" 2>&1
  python3 bench/gpu/forward_timeline.py /tmp/block_timeline.bin $4
done
