#!/usr/bin/env bash
# Where the block forward's L2 traffic comes from (issue 7, blocks of 64 at D = 128). Per flop,
# random(77) moved 3.1x the dense forward's L2 throughput in the fourteenth session, of which
# 64-row key tiles explain 2x (bench/NOTES.md, fourteenth session, section 2). This records, for
# one launch each, the L2 throughput breakdown (which unit is the "max") and the sector counts by
# source and operation: random(77), random(256) and local(256) (the same all-ones mask in the
# two-warpgroup shape) from block_sparse_gpu_bench's sweep, and the dense forward of that sweep.
# Expects $BUILD/bin/block_sparse_gpu_bench. Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-$PWD/gpu-out}
BUILD=${BUILD:-build-sparse-gpu}
mkdir -p "$OUT"
BENCH="./$BUILD/bin/block_sparse_gpu_bench --skip-grid --repeats 1 --block 64 --head-dim 128"
# Candidate metrics; those this ncu does not know are dropped (an unknown one fails the run).
wanted="lts__t_sectors_op_read.sum lts__t_sectors_op_write.sum lts__t_sectors_srcunit_tex.sum
  lts__t_sectors_srcunit_ltcfabric.sum lts__t_requests_srcunit_tex.sum lts__t_sector_hit_rate.pct
  lts__throughput.avg.pct_of_peak_sustained_elapsed dram__bytes_read.sum gpu__time_duration.sum
  l1tex__m_xbar2l1tex_read_bytes.sum smsp__inst_executed.sum"
known=$(ncu --query-metrics 2>/dev/null | awk '{print $1}')
metrics=""
for m in $wanted; do
  grep -qx "${m%.*}" <<<"$known" && metrics+="${metrics:+,}$m"
done
echo "metrics: $metrics"
# With --repeats 1 each sweep row launches its forward 6 times; the dense row runs forward_kernel.
for run in "block_forward_kernel 12 random77" "block_forward_kernel 54 random256" \
  "block_forward_kernel 114 local256" "forward_kernel 0 dense"; do
  set -- $run
  ncu --clock-control none --section SpeedOfLight --print-details all ${metrics:+--metrics $metrics} \
    -k "regex:^$1" -s "$2" -c 1 $BENCH >"$OUT/l2_$3.log" 2>&1
  echo "== $3 (exit $?)"
  grep -E "^\s+(lts__|dram__|gpu__|l1tex__|smsp__)|Throughput|Duration|L2 " "$OUT/l2_$3.log" | head -40
done
