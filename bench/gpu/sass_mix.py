"""Instruction mix per kernel from `cuobjdump -sass` output on stdin: total, HMMA (tensor),
LDSM (ldmatrix), MUFU (exp) and the most common others. Instructions per HMMA is the number
to watch: FlashAttention-class kernels issue a few per matrix instruction."""

import re
import sys
from collections import Counter

text = sys.stdin.read()
for chunk in re.split(r"\n\s+Function : ", text)[1:]:
    name = re.sub(r"_ZN7dilated4cuda\d+", "", chunk.split("\n")[0])[:48]
    ops = [op.split(".")[0] for op in re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)", chunk)]
    mix = Counter(ops)
    hmma = (mix["HMMA"] + mix["HGMMA"]) or 1
    print(f"{name:48s} instr {len(ops):6d} HMMA {mix['HMMA']:5d} HGMMA {mix['HGMMA']:4d} per-HMMA {len(ops) / hmma:5.2f} "
          f"LDSM {mix['LDSM']:4d} MUFU {mix['MUFU']:4d} top {mix.most_common(6)}")
