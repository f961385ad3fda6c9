#!/usr/bin/env bash
# Same-run A/B: the working tree against a base commit, both built on the GPU machine and timed
# in alternation, so that every number of the comparison comes from one card in one session.
# Before the device call, on the development machine:
#   git archive -o bench/gpu/.base.tar <base commit>   (untracked, so it travels with the tree)
# Expects the working tree's build in $BUILD (run_gpu_bench.sh builds it). Prints, per case and
# variant, the median over rounds of each timing; the raw lines go to $OUT/ab.jsonl.
# Usage: bench/gpu/run_ab.sh [rounds]
# Env: AB_ENV  environment assignments for one more variant of the working tree (e.g.
#              "DILATED_CUDA_OVERLAP=0"); AB_CASES  ';'-separated argument lists replacing the
#              default cases (configuration P, head_groups and longnet).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-$PWD/gpu-out}
BUILD=${BUILD:-build-gpu}
BASE=${BASE_DIR:-/tmp/ab-base}
rounds=${1:-3}
mkdir -p "$OUT" "$BASE"
tar -xf bench/gpu/.base.tar -C "$BASE" || { echo "no bench/gpu/.base.tar"; exit 1; }
cmake -S "$BASE" -B "$BASE/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DDILATED_CUDA_ARCHS="90-real" -DCMAKE_PREFIX_PATH="$PWD/.deps" -DDILATED_BUILD_CLI=OFF \
  >"$OUT/ab_base_configure.log" 2>&1 &&
  ninja -C "$BASE/build" cuda_backend_timing >"$OUT/ab_base_build.log" 2>&1 ||
  { tail -20 "$OUT/ab_base_build.log"; exit 1; }
P="--batch 1 --seq-len 32768 --heads 16 --head-dim 128 --segments 2048,4096,8192 --dilations 1,2,4 --dtype bf16"
CASES=${AB_CASES:-"$P --mode head_groups;$P --mode longnet;$P --mode longnet --causal"}
: >"$OUT/ab.jsonl"
label() { sed "s/^{/{\"variant\": \"$1\", /" | tee -a "$OUT/ab.jsonl" >/dev/null; }
IFS=';' read -ra case_list <<<"$CASES"
for ((round = 0; round < rounds; ++round)); do
  for c in "${case_list[@]}"; do
    # shellcheck disable=SC2086
    "$BASE/build/bin/cuda_backend_timing" $c | label base
    # shellcheck disable=SC2086
    ./$BUILD/bin/cuda_backend_timing $c | label new
    if [[ -n ${AB_ENV:-} ]]; then
      # shellcheck disable=SC2086
      env $AB_ENV ./$BUILD/bin/cuda_backend_timing $c | label "new $AB_ENV"
    fi
  done
done
python3 bench/gpu/ab_summary.py "$OUT/ab.jsonl"
