#!/usr/bin/env bash
# Same-run A/B of experiment patches (bench/experiments/*.patch) against the working tree, in
# one device call: one build folder builds the tree, then the tree with each patch applied (only
# the files a patch touches recompile), copying each variant's binaries aside; then every
# variant is timed in alternating rounds, and its tests run after the timings.
# Usage: bench/gpu/run_patch_ab.sh PATCH... (the variants: "base", then one per patch; a patch
#        named "A+B" is A and B applied together)
# Env: ROUNDS (3); AB_CASES ';'-separated cuda_backend_timing argument lists (default: short
#      segments at D = 64 and 128, configuration P, a longnet layer of short segments);
#      AB_TESTS a gtest filter run on every patched build (default: the forward tests);
#      AB_RACECHECK a gtest filter run under racecheck on every patched build (default: the
#      persistent and stage-ring sanitizer cases; empty: none); AB_ENV environment assignments
#      (e.g. "DILATED_CUDA_HOPPER_PERSISTENT=1") for one more timed variant of every build.
# Logs under $OUT: ab.jsonl, build_<variant>.log, tests_<variant>.log, racecheck_<variant>.log;
# the table of medians on stdout. In a device call, which brings back 8 files of $OUT at most:
#   OUT=$OUT/raw bench/gpu/run_patch_ab.sh ...; tar -czf $OUT/raw.tgz -C $OUT raw
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-$PWD/gpu-out}
BUILD=${BUILD:-build-gpu}
BIN=${BIN_DIR:-/tmp/ab-bin}
mkdir -p "$OUT" "$BIN"
[[ $# -gt 0 ]] || { echo "usage: $0 PATCH..."; exit 2; }
for spec in "$@"; do
  IFS=+ read -ra parts <<<"$spec"
  for patch in "${parts[@]}"; do [[ -f $patch ]] || { echo "no patch file $patch"; exit 2; }; done
done
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDILATED_CUDA_ARCHS="90-real" \
  -DCMAKE_PREFIX_PATH="$PWD/.deps" -DDILATED_BUILD_CLI=OFF >"$OUT/configure.log" 2>&1 ||
  { tail -20 "$OUT/configure.log"; exit 1; }
variant_name() {  # the patches' names without folder and .patch, joined by '.' (names $OUT files)
  local name="" part
  IFS=+ read -ra names <<<"$1"
  for part in "${names[@]}"; do name+="${name:+.}$(basename "$part" .patch)"; done
  echo "$name"
}
build_variant() {  # $1 name
  ninja -C "$BUILD" cuda_tests cuda_backend_timing >"$OUT/build_$1.log" 2>&1 ||
    { grep -E "error" "$OUT/build_$1.log" | head -20; return 1; }
  cp "$BUILD/bin/cuda_tests" "$BIN/$1_tests" && cp "$BUILD/bin/cuda_backend_timing" "$BIN/$1_timing"
}
build_variant base || exit 1
variants=(base)
for spec in "$@"; do
  IFS=+ read -ra parts <<<"$spec"
  name=$(variant_name "$spec")
  applied=0
  for patch in "${parts[@]}"; do
    if ! patch -p1 -s --dry-run <"$patch" >/dev/null; then break; fi
    patch -p1 -s <"$patch" || break
    applied=$((applied + 1))
  done
  if ((applied == ${#parts[@]})); then
    build_variant "$name" && variants+=("$name")
  else
    echo "$spec: ${parts[applied]} does not apply here; variant skipped"
  fi
  for ((i = applied - 1; i >= 0; --i)); do patch -p1 -R -s <"${parts[i]}"; done
done
echo "variants: ${variants[*]}"

S="--batch 1 --seq-len 32768 --dtype bf16 --mode head_groups"
P="--batch 1 --seq-len 32768 --heads 16 --head-dim 128 --segments 2048,4096,8192 --dilations 1,2,4 --dtype bf16 --mode head_groups"
L="--batch 1 --seq-len 32768 --dtype bf16 --mode longnet --heads 16 --head-dim 128 --segments 512,1024,2048 --dilations 1,1,2"
CASES=${AB_CASES:-"$S --heads 12 --head-dim 64 --segments 512 --dilations 1;$S --heads 16 --head-dim 128 --segments 512 --dilations 1;$S --heads 16 --head-dim 128 --segments 1024 --dilations 1;$P;$L"}
IFS=';' read -ra case_list <<<"$CASES"
: >"$OUT/ab.jsonl"
for ((round = 0; round < ${ROUNDS:-3}; ++round)); do
  for c in "${case_list[@]}"; do
    for v in "${variants[@]}"; do
      # shellcheck disable=SC2086
      timeout 120 "$BIN/${v}_timing" $c --repeats 20 |
        sed "s/^{/{\"variant\": \"$v\", \"round\": $round, /" >>"$OUT/ab.jsonl"
      if [[ -n ${AB_ENV:-} ]]; then
        # shellcheck disable=SC2086
        env $AB_ENV timeout 120 "$BIN/${v}_timing" $c --repeats 20 |
          sed "s/^{/{\"variant\": \"$v $AB_ENV\", \"round\": $round, /" >>"$OUT/ab.jsonl"
      fi
    done
  done
done
python3 bench/gpu/ab_summary.py "$OUT/ab.jsonl" | tee "$OUT/ab_summary.txt"

TESTS=${AB_TESTS-"CudaVsReference.Forward*:CudaSanitizerSubset.Persistent*"}
RACE=${AB_RACECHECK-"CudaSanitizerSubset.PersistentForwardTakesSeveralTiles:CudaSanitizerSubset.StageRingsGoRound"}
for v in "${variants[@]:1}"; do
  if [[ -n $TESTS ]]; then
    timeout 600 "$BIN/${v}_tests" --gtest_filter="$TESTS" >"$OUT/tests_$v.log" 2>&1
    echo "$v tests: exit $? $(grep -cE '^\[       OK \]' "$OUT/tests_$v.log") passed, $(grep -cE '^\[  FAILED  \] [A-Z]' "$OUT/tests_$v.log") failed"
  fi
  if [[ -n $RACE ]]; then
    timeout 600 compute-sanitizer --tool racecheck --error-exitcode 3 "$BIN/${v}_tests" \
      --gtest_filter="$RACE" >"$OUT/racecheck_$v.log" 2>&1
    echo "$v racecheck: exit $? $(grep -E 'RACECHECK SUMMARY' "$OUT/racecheck_$v.log")"
  fi
done
