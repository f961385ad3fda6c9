#!/usr/bin/env bash
# Nsight Compute on one launch of each tensor-core kernel for configuration P (bf16, D=128,
# head_groups): throughput, occupancy, stall reasons. Expects build-gpu from run_gpu_bench.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
P="--batch 1 --seq-len 32768 --heads 16 --head-dim ${HEAD_DIM:-128} --segments 2048,4096,8192 --dilations 1,2,4 --dtype bf16 --mode head_groups --repeats 1"
for kernel in mma_forward_kernel mma_backward_dq_kernel mma_backward_dkdv_kernel; do
  ncu --clock-control none -k "regex:$kernel" -s 2 -c 1 --section SpeedOfLight --section Occupancy \
      --section LaunchStats --section WarpStateStats --section ComputeWorkloadAnalysis \
      --section MemoryWorkloadAnalysis ./build-gpu/bin/cuda_backend_timing $P >"$OUT/ncu_$kernel.txt" 2>&1
  echo "== $kernel"
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Warp Cycles Per Issued|Issue Slots Busy|Executed Ipc A|Shared Memory Configuration Size|Bank Confl|Stall|L1/TEX Hit" "$OUT/ncu_$kernel.txt" | head -30
done
