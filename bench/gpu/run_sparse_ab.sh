#!/usr/bin/env bash
# Same-run A/B of the block-sparse bench: the working tree's block_sparse_gpu_bench (in $BUILD,
# built by run_sparse_gpu.sh) against a base commit's, timed in alternation so that every number
# comes from one card in one session. Before the device call, on the development machine:
#   git archive -o bench/gpu/.base.tar <base commit>   (untracked, so it travels with the tree)
# Usage: bench/gpu/run_sparse_ab.sh build        builds the base (may run beside the new build)
#        bench/gpu/run_sparse_ab.sh [rounds]     the density sweeps (BENCH_ARGS: bench options;
#                                                AB_ENV: environment assignments for a third
#                                                variant, the working tree with them)
# Logs under $OUT: ab_sparse_<variant>_<round>.md, and the table of medians on stdout.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
BUILD=${BUILD:-build-sparse-gpu}
BASE=${BASE_DIR:-/tmp/ab-base}
mkdir -p "$OUT" "$BASE"

if [[ ${1:-} == build ]]; then
  tar -xf bench/gpu/.base.tar -C "$BASE" || { echo "no bench/gpu/.base.tar"; exit 1; }
  cmake -S "$BASE" -B "$BASE/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DDILATED_CUDA_ARCHS="90-real" -DCMAKE_PREFIX_PATH="$PWD/.deps" -DDILATED_BUILD_CLI=OFF \
    >"$OUT/ab_base_configure.log" 2>&1 &&
    ninja -C "$BASE/build" ${NINJA_JOBS:+-j $NINJA_JOBS} block_sparse_gpu_bench cuda_backend_timing \
      >"$OUT/ab_base_build.log" 2>&1 || { tail -20 "$OUT/ab_base_build.log"; exit 1; }
  exit 0
fi

rounds=${1:-2}
for ((round = 0; round < rounds; ++round)); do
  # shellcheck disable=SC2086
  "$BASE/build/bin/block_sparse_gpu_bench" --skip-grid ${BENCH_ARGS:-} >"$OUT/ab_sparse_base_$round.md" 2>&1
  # shellcheck disable=SC2086
  ./$BUILD/bin/block_sparse_gpu_bench --skip-grid ${BENCH_ARGS:-} >"$OUT/ab_sparse_new_$round.md" 2>&1
  if [[ -n ${AB_ENV:-} ]]; then
    # shellcheck disable=SC2086
    env $AB_ENV ./$BUILD/bin/block_sparse_gpu_bench --skip-grid ${BENCH_ARGS:-} \
      >"$OUT/ab_sparse_knob_$round.md" 2>&1
  fi
done
# Per pattern: forward and forward+backward TFLOP/s of each variant, median over rounds.
python3 - "$OUT" "$rounds" "${AB_ENV:-}" <<'PY'
import collections, statistics, sys
out, rounds, knob = sys.argv[1], int(sys.argv[2]), sys.argv[3]
variants = ["base", "new"] + (["knob"] if knob else [])
rows = collections.defaultdict(lambda: collections.defaultdict(list))
order = []
for variant in variants:
    for r in range(rounds):
        for line in open(f"{out}/ab_sparse_{variant}_{r}.md"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) != 8 or not cells[1].endswith("%"):
                continue
            if cells[0] not in order:
                order.append(cells[0])
            rows[cells[0]][variant].append((float(cells[3]), float(cells[6])))
names = [v if v != "knob" else f"new {knob}" for v in variants]
print("| pattern | " + " | ".join(f"{v} fwd TFLOP/s" for v in names) + " | "
      + " | ".join(f"{v} fwd+bwd" for v in names) + " |")
print("|---" * (1 + 2 * len(variants)) + "|")
for name in order:
    med = lambda v, i: statistics.median(x[i] for x in rows[name][v]) if rows[name][v] else float("nan")
    print(f"| {name} | " + " | ".join(f"{med(v, 0):.1f}" for v in variants) + " | "
          + " | ".join(f"{med(v, 1):.1f}" for v in variants) + " |")
PY
