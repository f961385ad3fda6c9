#!/usr/bin/env bash
# Sequence parallelism on one multi-GPU machine: build (Release, sm_90), the gpu and multigpu
# ctest labels, then the weak-scaling benchmark (P = 1, 2, 4 (8) at 262,144 tokens per GPU, issue 6's
# layer) and the longest N that runs forward+backward on the GPUs. Logs under $OUT.
# Needs .deps from scripts/pack_gpu_deps.sh (Highway, GoogleTest, nlohmann-json, nccl.h).
# Usage: bench/gpu/run_dist_gpu.sh [STAGE...]   stages build, tests, bench, serial, max, run in the
#        order given; none or `all` = build tests bench max. Later stages reuse build-dist, so
#        `build bench max tests` gets the numbers first when time is short. A first run of all
#        on 4 x H100 should take 6-9 minutes: build 2-4, tests 2-4, bench and max ~1 each.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
stages="$*"
[[ -z $stages || $stages == all ]] && stages="build tests bench max"
BUILD=${BUILD:-build-dist}
# NVLink multicast stays off (KINDS.md: it can take the host's GPUs out of service).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export CMAKE_PREFIX_PATH="$PWD/.deps"

# NCCL: the CUDA toolkit's when it has header and library, else PyTorch's pip package
# (nvidia-nccl-cu13, header and library together), else .deps/nccl.
if [[ -z ${NCCL_HOME:-} ]] && ! { [[ -e /usr/local/cuda/include/nccl.h ]] &&
    ls /usr/local/cuda/lib64/libnccl.so* >/dev/null 2>&1; }; then
  pip_nccl=$(python3 -c "import nvidia.nccl as m; print(list(m.__path__)[0])" 2>/dev/null || true)
  if [[ -n $pip_nccl && -e $pip_nccl/include/nccl.h ]]; then
    export NCCL_HOME=$pip_nccl
  elif [[ -e .deps/nccl/include/nccl.h ]]; then
    export NCCL_HOME=$PWD/.deps/nccl
  fi
fi
[[ -n ${NCCL_HOME:-} ]] && export LD_LIBRARY_PATH="$NCCL_HOME/lib:${LD_LIBRARY_PATH:-}"
echo "NCCL_HOME=${NCCL_HOME:-<CUDA toolkit>}" | tee "$OUT/dist_env.txt"
# Weak scaling over 1, 2, 4 (and 8) GPUs, as many as the machine has; RANKS overrides.
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
if [[ -z ${RANKS:-} ]]; then
  RANKS=1
  for p in 2 4 8; do ((p <= gpus)) && RANKS="$RANKS,$p"; done
fi
MAX_RANKS=${RANKS##*,}
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv | tee -a "$OUT/dist_env.txt"

stage_build() {
  start=$(date +%s)
  cmake -S . -B $BUILD -G Ninja -DCMAKE_BUILD_TYPE=Release -DDILATED_CUDA=ON \
    -DDILATED_CUDA_ARCHS=90-real -DCMAKE_CUDA_ARCHITECTURES=90-real -DDILATED_NCCL=ON \
    -DDILATED_BUILD_PYTHON=OFF >"$OUT/dist_configure.log" 2>&1 ||
    { tail -30 "$OUT/dist_configure.log"; exit 1; }
  grep -E "dilated:" "$OUT/dist_configure.log"
  # Only what the gpu and multigpu labels and the benchmark need (the CLI and the CPU suites
  # are not built here; ctest's -L filters leave them out).
  targets="cuda_tests dist_nccl_device_tests dist_weak_scaling"
  # (grep reads all of ninja's output: with -q it may exit first, and pipefail then fails.)
  ninja -C $BUILD -t targets all | grep -E "(^|/)dist_nccl_tests:" >/dev/null &&
    targets="$targets dist_nccl_tests"
  ninja -C $BUILD $targets >"$OUT/dist_build.log" 2>&1 ||
    { grep -E "error" "$OUT/dist_build.log" | head -30; exit 1; }
  echo "build: $(( $(date +%s) - start )) s"
}

stage_tests() {
  echo "== ctest -L gpu (CUDA backend, windows included)"
  ctest --test-dir $BUILD -L gpu -j 8 --output-on-failure --timeout 900 >"$OUT/dist_ctest_gpu.log" 2>&1
  grep -E "tests passed|tests failed|\(Failed\)|Skipped|Not Run" "$OUT/dist_ctest_gpu.log" | head -30
  echo "== ctest -L multigpu (dist over NCCL, one thread per GPU)"
  ctest --test-dir $BUILD -L multigpu --output-on-failure --timeout 900 >"$OUT/dist_ctest_multigpu.log" 2>&1
  grep -E "tests passed|tests failed|\(Failed\)|Skipped|Not Run|rank .*: " "$OUT/dist_ctest_multigpu.log" | head -40
}

stage_bench() {
  echo "== weak scaling (262,144 tokens per GPU, H=16, D=128, bf16, LongNet patterns + (N, N/4096))"
  : >"$OUT/dist_weak_scaling.jsonl"
  timeout 900 ./$BUILD/bin/dist_weak_scaling --ranks $RANKS --tokens-per-gpu 262144 --heads 16 \
    --head-dim 128 --dtype bf16 --repeats 5 --json "$OUT/dist_weak_scaling.jsonl" 2>&1 |
    tee "$OUT/dist_weak_scaling.txt"
}

# The same with the remote units after the local part on the compute stream (as before they
# ran beside it): the A/B of that change in one run.
stage_serial() {
  echo "== weak scaling, remote units serial (DILATED_DIST_SERIAL_REMOTE=1)"
  DILATED_DIST_SERIAL_REMOTE=1 timeout 900 ./$BUILD/bin/dist_weak_scaling --ranks $RANKS \
    --tokens-per-gpu 262144 --heads 16 --head-dim 128 --dtype bf16 --repeats 5 \
    --json "$OUT/dist_weak_scaling_serial.jsonl" 2>&1 | tee "$OUT/dist_weak_scaling_serial.txt"
}

stage_max() {
  echo "== longest N that runs forward+backward on the GPUs (tokens per GPU stepped by 262,144)"
  timeout 900 ./$BUILD/bin/dist_weak_scaling --find-max --max-ranks $MAX_RANKS --tokens-per-gpu 262144 \
    --step 262144 --heads 16 --head-dim 128 --dtype bf16 --json "$OUT/dist_find_max.jsonl" 2>&1 |
    tee "$OUT/dist_find_max.txt"
}

for stage in $stages; do
  case $stage in
    build | tests | bench | serial | max) stage_$stage || exit 1 ;;
    *) echo "unknown stage $stage (build, tests, bench, max, all)"; exit 2 ;;
  esac
done
