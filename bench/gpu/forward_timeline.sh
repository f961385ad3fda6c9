#!/usr/bin/env bash
# Where a Hopper forward CTA's cycles go: builds cuda_backend_timing with the forward's clock
# stamps (-DDILATED_HOPPER_TIMELINE, src/cuda/hopper/timeline.cuh) and summarises one forward
# call of single-pattern problems (one launch each). Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-$PWD/gpu-out}
BUILD=${BUILD:-build-timeline}
export OUT BUILD  # for build_diagnosis.sh
bench/gpu/build_diagnosis.sh cuda_backend_timing timeline -DDILATED_HOPPER_TIMELINE || exit 1
for c in "128 16 2048 16" "64 12 2048 16" "128 16 8192 64" "128 16 32768 256"; do
  set -- $c
  echo "== D $1, H $2, segment $3 (dilation 1), head_groups"
  DILATED_TIMELINE_FILE=/tmp/timeline.bin ./$BUILD/bin/cuda_backend_timing --batch 1 --seq-len 32768 \
    --heads $2 --head-dim $1 --segments $3 --dilations 1 --dtype bf16 --mode head_groups --repeats 5
  python3 bench/gpu/forward_timeline.py /tmp/timeline.bin $4
done
