#!/usr/bin/env bash
# Nsight Compute's view of one Hopper block forward launch (random(128): 50% of the blocks kept)
# and of the dense Hopper forward on the same problem (N 16384, H 8, D 64, bf16, blocks of 64),
# both from block_sparse_gpu_bench's density sweep. Expects $BUILD/bin/block_sparse_gpu_bench.
# Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
BUILD=${BUILD:-build-sparse-gpu}
mkdir -p "$OUT"
SECTIONS="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats
  --section SchedulerStats --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis"
# With --repeats 1 each sweep row launches its forward 6 times (2 + 1 forward, 2 + 1 forward
# and backward): launch 24 of the block forward is the fifth row's first, random(128).
# shellcheck disable=SC2086
for k in "block_forward_kernel 24" "forward_kernel 0"; do
  set -- $k
  ncu --clock-control none $SECTIONS -k regex:"^$1" -s "$2" -c 1 \
    ./$BUILD/bin/block_sparse_gpu_bench --skip-grid --repeats 1 >"$OUT/ncu_$1.log" 2>&1
  grep -vE "^\| |^#|^$" "$OUT/ncu_$1.log" | grep -vE "^==PROF==" | head -150 >"$OUT/ncu_$1_details.txt"
done
