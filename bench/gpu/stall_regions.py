"""Where a Hopper kernel's warps wait, by region of its SASS: Nsight Compute's per-instruction
warp-state samples (`ncu -i REP --page source --csv --print-source sass`) summed over the CTA
setup before the register split, the producer, the consumers before their first product, their
product loop, and what follows their last product (the row epilogue). Usage: stall_regions.py CSV"""

import csv
import sys
from collections import defaultdict

rows = list(csv.reader(open(sys.argv[1])))
start = next(i for i, r in enumerate(rows) if r and "Source" in r)
head, body = rows[start], [r for r in rows[start + 1:] if len(r) == len(rows[start])]
src = head.index("Source")
samples = next((i for i, h in enumerate(head) if h.startswith("Warp Stall Sampling (All")), None)
if samples is None:
    sys.exit(f"no sampling column; header: {head}")
reasons = [i for i, h in enumerate(head) if "stall" in h.lower() and i != samples and "Not-issued" not in h]
print("columns:", [head[i] for i in reasons][:30])


def number(cell):
    try:
        return float(cell.replace(",", ""))
    except ValueError:
        return 0.0


# The register split's two instructions mark where the producer's and the consumers' code begin;
# the compiler may place either first (SETMAXREG, or USETMAXREG in newer SASS).
dealloc = next((i for i, r in enumerate(body) if "SETMAXREG.DEALLOC" in r[src]), None)
alloc = next((i for i, r in enumerate(body) if "SETMAXREG.TRY_ALLOC" in r[src]), None)
starts = sorted(i for i in (dealloc, alloc) if i is not None)
# The consumers' code runs from their split to the producer's, where that comes later.
consumer_end = dealloc if None not in (dealloc, alloc) and dealloc > alloc else len(body)
hgmma = [i for i, r in enumerate(body)
         if "HGMMA" in r[src] and (alloc is None or alloc <= i < consumer_end)]
first_mma, last_mma = (hgmma[0], hgmma[-1]) if hgmma else (alloc or 0, alloc or 0)


def region(i):
    if not starts or i < starts[0]:
        return "1 setup (all warps)"
    owner = max(s for s in starts if s <= i)
    if owner == dealloc:
        return "2 producer"
    if i < first_mma:
        return "3 consumer prologue"
    if i <= last_mma:
        return "4 consumer loop"
    return "5 consumer epilogue"


total = defaultdict(float)
by_reason = defaultdict(lambda: defaultdict(float))
count = defaultdict(int)
for i, r in enumerate(body):
    g = region(i)
    total[g] += number(r[samples])
    count[g] += 1
    for j in reasons:
        by_reason[g][head[j]] += number(r[j])
grand = sum(total.values()) or 1
for g in sorted(total):
    top = sorted(by_reason[g].items(), key=lambda x: -x[1])[:6]
    print(f"{g:22s} {count[g]:6d} instrs {total[g]:9.0f} samples ({total[g] / grand:5.1%}); top: "
          + ", ".join(f"{k} {v:.0f}" for k, v in top if v > 0))
print("top instructions by samples:")
for i in sorted(range(len(body)), key=lambda i: -number(body[i][samples]))[:25]:
    r = body[i]
    top = sorted(((head[j], number(r[j])) for j in reasons), key=lambda x: -x[1])[:2]
    print(f"  {region(i)[:12]:12s} {number(r[samples]):7.0f} {r[src][:60]:60s} {top}")
