#!/usr/bin/env bash
# A diagnosis build of the Hopper kernels in $BUILD: TARGET built with CUDA_FLAGS (defines such as
# -DDILATED_HOPPER_TIMELINE, the clock stamps of src/cuda/hopper/timeline.cuh, or
# -DDILATED_HOPPER_BLOCK_CEILING=1|2, block_forward_ceilings.sh), for the diagnosis scripts.
# Usage: bench/gpu/build_diagnosis.sh TARGET LOG_PREFIX CUDA_FLAGS
#   (logs $OUT/LOG_PREFIX_{configure,build}.log)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-$PWD/gpu-out}
BUILD=${BUILD:?which build folder}
mkdir -p "$OUT"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDILATED_CUDA_ARCHS="90-real" \
  -DCMAKE_PREFIX_PATH="$PWD/.deps" -DDILATED_BUILD_CLI=OFF \
  "-DCMAKE_CUDA_FLAGS=$3" >"$OUT/$2_configure.log" 2>&1 || exit 1
ninja -C "$BUILD" "$1" >"$OUT/$2_build.log" 2>&1 || { grep error "$OUT/$2_build.log" | head; exit 1; }
