#!/usr/bin/env bash
# Where a Hopper kernel spends its time: its SASS (instruction mix) and Nsight Compute's
# per-instruction warp-state samples for one launch of configuration P (bf16, D=128 unless
# HEAD_DIM is set, head_groups). KERNEL: forward_kernel (default), backward_dq_kernel or
# backward_dkdv_kernel; SOURCE: its file under src/cuda/hopper (forward.cu or backward.cu).
# Builds what it needs in build-gpu. Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
BUILD=${BUILD:-build-gpu}
cmake -S . -B $BUILD -G Ninja -DCMAKE_BUILD_TYPE=Release -DDILATED_CUDA_ARCHS="90-real" \
  -DCMAKE_PREFIX_PATH="$PWD/.deps" -DDILATED_BUILD_CLI=OFF >"$OUT/configure.log" 2>&1 || exit 1
ninja -C $BUILD cuda_backend_timing >"$OUT/build.log" 2>&1 || { grep error "$OUT/build.log" | head; exit 1; }
cuobjdump -sass $BUILD/src/cuda/CMakeFiles/dilated_hopper.dir/hopper/${SOURCE:-forward.cu}.o >"$OUT/hopper.sass"
python3 bench/gpu/sass_mix.py <"$OUT/hopper.sass"
P="--batch 1 --seq-len 32768 --heads 16 --head-dim ${HEAD_DIM:-128} --segments 2048,4096,8192 --dilations 1,2,4 --dtype bf16 --mode head_groups --repeats 1"
ncu --clock-control none --section SourceCounters --section WarpStateStats --section SpeedOfLight \
  -k ${KERNEL:-forward_kernel} -s 2 -c 1 -o "$OUT/${KERNEL:-forward_kernel}" -f ./$BUILD/bin/cuda_backend_timing $P >"$OUT/ncu.log" 2>&1
ncu -i "$OUT/${KERNEL:-forward_kernel}.ncu-rep" --page source --csv --print-source sass >"$OUT/${KERNEL:-forward_kernel}_source.csv" 2>&1
python3 bench/gpu/stall_regions.py "$OUT/${KERNEL:-forward_kernel}_source.csv"
ncu -i "$OUT/${KERNEL:-forward_kernel}.ncu-rep" --page details 2>&1 | grep -E "Duration|Throughput|Warp Cycles|Issue|Stall|Executed" | head -30
ls -la "$OUT"
