"""Medians over rounds of cuda_backend_timing lines labelled with a "variant" (run_ab.sh,
run_patch_ab.sh): one row per case (mode, causal, grid, N, H, D, segments, dilations) and variant.
Usage: ab_summary.py FILE.jsonl"""
import collections
import json
import statistics
import sys

runs = collections.defaultdict(list)
gpu = ""
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("status") != "ok":
        print(f'{r.get("variant", "?")}: {r.get("status")}')
        continue
    gpu = r["gpu"]
    grid = f' grid {r["grid"]}' if r.get("grid") else ""
    case = (f'{r["mode"]}{" causal" if r["causal"] else ""}{grid} N={r["n"]} H={r["h"]} '
            f'D={r["d"]} w={r["segments"]} r={r["dilations"]}')
    runs[(case, r["variant"])].append(r)
print(f'{"case":60s} {"variant":28s} {"fwd ms":>8s} {"bwd ms":>8s} {"f+b ms":>8s}'
      f'  (median of rounds; {gpu})')
for (case, variant), rs in runs.items():
    def med(key):
        return statistics.median(x[key] for x in rs)
    print(f'{case:60s} {variant:28s} {med("fwd_ms"):8.4f} {med("bwd_ms"):8.4f} '
          f'{med("fwdbwd_ms"):8.4f}')
