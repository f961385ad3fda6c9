#!/usr/bin/env bash
# Time per kernel (Nsight Compute, gpu__time_duration) of one forward + backward of
# configuration P (bf16, D = 128; MODE=head_groups unless set): which kernel the time goes to.
# Expects $BUILD (build-gpu) from run_gpu_bench.sh. Prints one line per kernel name.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
BUILD=${BUILD:-build-gpu}
P="--batch 1 --seq-len 32768 --heads 16 --head-dim ${HEAD_DIM:-128} --segments 2048,4096,8192 --dilations 1,2,4 --dtype bf16 --mode ${MODE:-head_groups} --repeats 1"
ncu --clock-control none --metrics gpu__time_duration.sum --csv -c ${LAUNCHES:-400} \
  ./$BUILD/bin/cuda_backend_timing $P >"$OUT/kernel_times_${MODE:-head_groups}.csv" 2>/dev/null
python3 - "$OUT/kernel_times_${MODE:-head_groups}.csv" <<'PY'
import csv, sys, collections
lines = open(sys.argv[1]).read().splitlines()
rows = list(csv.reader(lines[next(i for i, l in enumerate(lines) if l.startswith('"ID"')):]))
head = rows[0]; name = head.index("Kernel Name"); value = head.index("Metric Value")
total = collections.defaultdict(float); count = collections.Counter()
for r in rows[1:]:
    k = r[name].split("(")[0].split("<")[0].split("::")[-1]
    total[k] += float(r[value].replace(",", "")); count[k] += 1
for k, t in sorted(total.items(), key=lambda x: -x[1]):
    print(f"{k:40s} launches {count[k]:4d}  mean {t / count[k] / 1e3:9.1f} us  total {t / 1e6:8.3f} ms")
PY
