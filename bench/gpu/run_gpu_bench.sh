#!/usr/bin/env bash
# One GPU session: build, GPU tests, compute-sanitizer subset, then the CUDA benchmark next to
# the PyTorch baselines, all on the same card. Logs go to $OUT (or ./gpu-out).
# Usage: bench/gpu/run_gpu_bench.sh [tests|bench|all] [quick]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
what=${1:-all}
quick=${2:-}
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
BUILD=${BUILD:-build-gpu}
cmake -S . -B $BUILD -G Ninja -DCMAKE_BUILD_TYPE=Release -DDILATED_CUDA_ARCHS="90-real" \
  -DCMAKE_PREFIX_PATH="$PWD/.deps" \
  -DDILATED_BUILD_CLI=OFF ${EXTRA_CMAKE:-} >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
start=$(date +%s)
ninja -C $BUILD cuda_tests cuda_backend_timing >"$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - start )) s"

if [[ $what == tests || $what == all ]]; then
  # ctest runs each test in its own process, 8 at a time (the suite takes ~5 min in one).
  ctest --test-dir $BUILD -L '^gpu$' -j 8 --output-on-failure --timeout ${CTEST_TIMEOUT:-900} >"$OUT/cuda_tests.log" 2>&1
  grep -E "tests passed|tests failed|\(Failed\)|Skipped|Not Run" "$OUT/cuda_tests.log" | head -30
  grep -E "Failure|error ratio|device error" "$OUT/cuda_tests.log" | head -30
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 3 ./$BUILD/bin/cuda_tests \
      --gtest_filter='CudaSanitizerSubset.*' >"$OUT/sanitizer_$tool.log" 2>&1
    echo "compute-sanitizer $tool: exit $? ($(grep -cE 'ERROR SUMMARY: 0 errors|RACECHECK SUMMARY: 0 hazards' "$OUT/sanitizer_$tool.log") clean summaries)"
    grep -E "SUMMARY" "$OUT/sanitizer_$tool.log" | head -3
  done
fi

if [[ $what == bench || $what == all ]]; then
  run_case() {  # args for both programs; on Hopper also the portable kernels (same run)
    $limit ./$BUILD/bin/cuda_backend_timing "$@" | tee -a "$OUT/bench.jsonl"
    DILATED_CUDA_HOPPER=0 $limit ./$BUILD/bin/cuda_backend_timing "$@" | tee -a "$OUT/bench.jsonl"
    DILATED_CUDA_TMA=0 $limit ./$BUILD/bin/cuda_backend_timing "$@" | tee -a "$OUT/bench.jsonl"
    python3 bench/gpu/torch_baselines.py "$@" | tee -a "$OUT/bench.jsonl"
  }
  limit="timeout ${BENCH_TIMEOUT:-600}"  # a hung kernel ends its case, not the session
  : >"$OUT/bench.jsonl"
  P="--batch 1 --seq-len 32768 --heads 16 --head-dim 128 --segments 2048,4096,8192 --dilations 1,2,4 --dtype bf16"
  for mode in head_groups longnet; do
    run_case $P --mode $mode
    [[ -n $quick ]] || run_case $P --mode $mode --causal
  done
  if [[ -z $quick ]]; then
    run_case --batch 1 --seq-len 32768 --heads 12 --head-dim 64 --segments 2048,4096,8192 --dilations 1,2,4 --dtype bf16 --mode head_groups
    run_case --batch 1 --seq-len 32768 --heads 12 --head-dim 64 --segments 2048,4096,8192 --dilations 1,2,4 --dtype bf16 --mode longnet
    # Short segments (issue 4: w/r of 512 keeps the machine full), where a CTA's fixed costs are
    # 40% of its time: D = 64 runs persistent CTAs there, D = 128 one tile a CTA.
    for d_h in "64 12" "128 16"; do
      read -r d h <<<"$d_h"
      run_case --batch 1 --seq-len 32768 --heads "$h" --head-dim "$d" --segments 512 --dilations 1 --dtype bf16 --mode head_groups
    done
    L="--batch 1 --seq-len 1048576 --heads 16 --head-dim 128 --segments 2048,4096,8192,16384,32768 --dilations 1,2,4,8,16 --dtype bf16 --repeats 5"
    ./$BUILD/bin/cuda_backend_timing $L --mode head_groups | tee -a "$OUT/bench.jsonl"
    ./$BUILD/bin/cuda_backend_timing $L --mode longnet | tee -a "$OUT/bench.jsonl"
    python3 bench/gpu/torch_baselines.py $L --mode head_groups --skip-dense | tee -a "$OUT/bench.jsonl"
  fi
  python3 bench/gpu/bench_table.py "$OUT/bench.jsonl" | tee "$OUT/bench_table.md"
fi
