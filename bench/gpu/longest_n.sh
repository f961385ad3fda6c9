#!/usr/bin/env bash
# The longest N whose forward+backward runs on one GPU (issue 4's memory target): configuration
# P's heads and patterns (H=16, D=128, bf16; MODE=head_groups unless set), N stepped by STEP from
# START until cuda_backend_timing cannot allocate or a call fails. The bound is what q, k, v,
# out, dout, dq, dk, dv (16-bit) and lse (fp32) alone take of the card's total memory.
# Expects $BUILD (build-gpu) from run_gpu_bench.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-gpu}
MODE=${MODE:-head_groups}
H=16 D=128
total_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
bound=$(( total_mib * 1024 * 1024 / (8 * H * D * 2 + 4 * H) ))
best=0
for (( n = ${START:-2097152}; ; n += ${STEP:-65536} )); do
  if ./$BUILD/bin/cuda_backend_timing --batch 1 --seq-len $n --heads $H --head-dim $D \
      --segments 2048,4096,8192 --dilations 1,2,4 --dtype bf16 --mode $MODE --repeats 1 \
      >/dev/null 2>"/tmp/longest_n.err"; then
    best=$n
  else
    echo "N=$n: $(head -c 200 /tmp/longest_n.err)"
    break
  fi
done
echo "{\"mode\": \"$MODE\", \"longest_n\": $best, \"bound_n\": $bound, \"fraction\": $(python3 -c "print(round($best / $bound, 3))"), \"card_mib\": $total_mib}"
