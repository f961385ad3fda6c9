#!/usr/bin/env bash
# The Hopper block forward against its own two ceilings (issue 7; METHOD: measure the ceilings):
# three builds of block_sparse_gpu_bench, the real one, -DDILATED_HOPPER_BLOCK_CEILING=1 (the
# stream alone: the producer walks and copies as always, the consumers wait for each stage and
# release it, no products) and =2 (the products alone: the producer walks and writes its notes
# but copies no K/V, the consumers compute on whatever the stages hold). Only the forward rows
# mean anything in the diagnosis builds (the block dq shares the stream). Each build's density
# sweep for the given shapes, ROUNDS times, alternating builds. Logs under $OUT.
# Usage: bench/gpu/block_forward_ceilings.sh ["BLOCK D" ...]
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-$PWD/gpu-out}
ROUNDS=${ROUNDS:-2}
REPEATS=${REPEATS:-5}
export OUT
declare -A flags=([real]="" [stream]="-DDILATED_HOPPER_BLOCK_CEILING=1" [math]="-DDILATED_HOPPER_BLOCK_CEILING=2")
for v in real stream math; do
  BUILD=build-ceiling-$v bench/gpu/build_diagnosis.sh block_sparse_gpu_bench "ceiling_$v" "${flags[$v]}" &
done
wait
for v in real stream math; do
  [[ -x build-ceiling-$v/bin/block_sparse_gpu_bench ]] || { echo "build $v failed"; exit 1; }
done
shapes=("$@")
[[ ${#shapes[@]} -eq 0 ]] && shapes=("64 128" "64 64" "128 128" "128 64")
for round in $(seq 1 "$ROUNDS"); do
  for s in "${shapes[@]}"; do
    set -- $s
    for v in real stream math; do
      ./build-ceiling-$v/bin/block_sparse_gpu_bench --skip-grid --repeats "$REPEATS" --block "$1" \
        --head-dim "$2" >"$OUT/ceiling_${v}_b$1_d$2_r$round.md" 2>&1 || echo "$v $s: exit $?"
    done
  done
done
# Forward milliseconds per row: real, stream, math (the last round).
for s in "${shapes[@]}"; do
  set -- $s
  echo "== blocks $1, D $2 (fwd ms: real / stream alone / products alone)"
  paste -d'|' <(grep -E "^\| (dense|random|local)" "$OUT/ceiling_real_b$1_d$2_r$ROUNDS.md" | cut -d'|' -f2,4) \
    <(grep -E "^\| (dense|random|local)" "$OUT/ceiling_stream_b$1_d$2_r$ROUNDS.md" | cut -d'|' -f4) \
    <(grep -E "^\| (dense|random|local)" "$OUT/ceiling_math_b$1_d$2_r$ROUNDS.md" | cut -d'|' -f4)
done
