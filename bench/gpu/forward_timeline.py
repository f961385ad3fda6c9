"""Summary of the Hopper forwards' per-CTA clock stamps (timeline.cuh; forward_timeline.sh for the
dense forward, block_forward_timeline.sh for the block forward): where each CTA's cycles go, and
the gap between consecutive CTAs on an SM. Usage: forward_timeline.py FILE TILES"""
import statistics
import struct
import sys
from collections import defaultdict

SLOTS = 14
data = open(sys.argv[1], "rb").read()
tiles = int(sys.argv[2])
n = len(data) // (8 * SLOTS)
ctas = [struct.unpack_from(f"{SLOTS}Q", data, i * 8 * SLOTS) for i in range(n)]
ctas = [c for c in ctas if c[1] and c[7] and c[8]]
parts = {
    "entry -> Q landed": lambda c: c[2] - c[1],
    "entry -> stage 0 full": lambda c: c[3] - c[1],
    "entry -> stage 2 full (wg0)": lambda c: c[12] - c[1] if c[12] else 0,
    "first S + softmax (wg0)": lambda c: c[4] - c[3],
    "loop, all tiles after the first": lambda c: c[5] - c[4],
    "  of which waits for full stages (block)": lambda c: c[13],
    "last P V": lambda c: c[6] - c[5],
    "griddepcontrol.wait": lambda c: c[10] - c[6],
    "store (wg0)": lambda c: c[7] - c[10],
    "start -> entry (forward_tile)": lambda c: c[1] - c[11],
    "wg1 end - wg0 end": lambda c: c[8] - c[7],
    "producer end - entry": lambda c: c[9] - c[1],
    "persistent: last tile start -> Q ready": lambda c: c[2] - c[13] if c[13] > c[1] else 0,
    "persistent: last tile start -> end": lambda c: max(c[7], c[8]) - c[13] if c[13] > c[1] else 0,
    "total (entry -> last consumer end)": lambda c: max(c[7], c[8]) - c[1],
}
print(f"{len(ctas)} CTAs, {tiles} key tiles each; cycles: median / mean")
for name, fn in parts.items():
    v = [fn(c) for c in ctas]
    print(f"  {name:38s} {statistics.median(v):10.0f} {statistics.mean(v):10.0f}")
loop = statistics.median([(c[5] - c[4]) / max(tiles - 1, 1) for c in ctas])
total = statistics.median([max(c[7], c[8]) - c[1] for c in ctas])
print(f"  per tile in the loop {loop:.0f}; total - {tiles} x per tile = {total - tiles * loop:.0f}"
      f" ({(total - tiles * loop) / total:.1%} of a CTA)")
by_sm = defaultdict(list)
for c in ctas:
    by_sm[c[0]].append(c)
gaps = []
for sm, cs in by_sm.items():
    cs.sort(key=lambda c: c[1])
    for a, b in zip(cs, cs[1:]):
        gaps.append(b[11] - max(a[7], a[8]))
if gaps:
    print(f"  gap between CTAs on an SM (previous consumer end -> next kernel start): median "
          f"{statistics.median(gaps):.0f}, mean {statistics.mean(gaps):.0f} over {len(gaps)}")
