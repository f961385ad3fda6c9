#!/usr/bin/env bash
# The diagnosis build of the Hopper kernels' clock stamps (-DDILATED_HOPPER_TIMELINE,
# src/cuda/hopper/timeline.cuh) in $BUILD (default build-timeline), for the timeline scripts.
# Usage: bench/gpu/build_timeline.sh TARGET LOG_PREFIX   (logs $OUT/LOG_PREFIX_{configure,build}.log)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-$PWD/gpu-out}
BUILD=${BUILD:-build-timeline}
mkdir -p "$OUT"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDILATED_CUDA_ARCHS="90-real" \
  -DCMAKE_PREFIX_PATH="$PWD/.deps" -DDILATED_BUILD_CLI=OFF \
  -DCMAKE_CUDA_FLAGS=-DDILATED_HOPPER_TIMELINE >"$OUT/$2_configure.log" 2>&1 || exit 1
ninja -C "$BUILD" "$1" >"$OUT/$2_build.log" 2>&1 || { grep error "$OUT/$2_build.log" | head; exit 1; }
