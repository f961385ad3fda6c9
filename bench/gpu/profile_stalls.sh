#!/usr/bin/env bash
# Why a kernel waits: Nsight Compute stall reasons per issued instruction, tensor-pipe use and
# shared-memory bank conflicts for one launch of each tensor-core kernel (configuration P).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
BUILD=${BUILD:-build-gpu}
P="--batch 1 --seq-len 32768 --heads 16 --head-dim ${HEAD_DIM:-128} --segments 2048,4096,8192 --dilations 1,2,4 --dtype bf16 --mode head_groups --repeats 1"
stalls=""
for r in barrier membar sleeping long_scoreboard short_scoreboard mio_throttle math_pipe_throttle wait not_selected selected dispatch_stall lg_throttle no_instruction branch_resolving; do
  stalls+="smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio,"
done
metrics="${stalls}sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active,lts__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum,smsp__inst_executed.sum,gpu__time_duration.sum"
for kernel in ${KERNELS:-mma_forward_kernel mma_backward_dq_kernel mma_backward_dkdv_kernel}; do
  echo "== $kernel"
  ncu --clock-control none -k "regex:$kernel" -s 2 -c 1 --metrics "$metrics" \
      ./$BUILD/bin/cuda_backend_timing $P 2>&1 | grep -E "^\s+(smsp|sm__|l1tex|gpu__)" | sed -E 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//; s/ +/ /g'
done
