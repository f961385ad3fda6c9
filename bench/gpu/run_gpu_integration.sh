#!/usr/bin/env bash
# The whole project on a GPU machine: every C++ test this machine can run (GPU ones included),
# the CLI driving the CUDA backend, and the Python package built with CUDA and its tests.
# Needs .deps from scripts/pack_gpu_deps.sh. Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CMAKE_PREFIX_PATH="$PWD/.deps"
cmake -S . -B build-int -G Ninja -DCMAKE_BUILD_TYPE=Release -DDILATED_CUDA_ARCHS="90-real" \
  >"$OUT/int_configure.log" 2>&1 || { tail -20 "$OUT/int_configure.log"; exit 1; }
ninja -C build-int >"$OUT/int_build.log" 2>&1 || { grep -E "error" "$OUT/int_build.log" | head -20; exit 1; }
echo "== ctest (all labels)"
ctest --test-dir build-int -j 8 --output-on-failure >"$OUT/int_ctest.log" 2>&1
grep -E "tests passed|tests failed|\(Failed\)|Skipped" "$OUT/int_ctest.log" | head -20
echo "== dilated list / check / bench on the GPU"
./build-int/bin/dilated list
./build-int/bin/dilated check --backend cuda 2>&1 | tail -8
./build-int/bin/dilated bench --suite seed --backend cuda --format table 2>"$OUT/int_bench_progress.log" | tee "$OUT/int_bench_seed.txt" | tail -12
echo "== Python with CUDA"
bench/gpu/run_python_gpu.sh install test
