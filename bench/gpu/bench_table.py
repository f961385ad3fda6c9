"""Markdown table of a run_gpu_bench.sh log: our kernels next to the PyTorch baselines of the
same configuration, effective TFLOP/s (DESIGN 2.6, from our exact work count) and speedups."""

import json
import sys

KEY = ("mode", "b", "n", "h", "d", "segments", "dilations", "dtype", "causal")


def main(path):
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    ours = [r for r in rows if r.get("impl", "").startswith("dilated-cuda")]
    print("| impl | mode | causal | N | H | D | ours fwd ms | bwd ms | fwd+bwd ms | fwd TFLOP/s | fwd+bwd TFLOP/s "
          "| (a) fwd / fwd+bwd ms | (b) fwd / fwd+bwd ms | (c) fwd / fwd+bwd ms | (a)/ours fwd | (a)/ours fwd+bwd "
          "| ours/(b) fwd | ours/(b) fwd+bwd |")
    print("|" + "---|" * 18)
    for r in ours:
        key = tuple(r[k] for k in KEY)
        base = {b["impl"][-2]: b for b in rows if not b.get("impl", "").startswith("dilated") and tuple(b.get(k) for k in KEY) == key}

        def pair(tag):
            b = base.get(tag)
            return f"{b['fwd_ms']:.3f} / {b['fwdbwd_ms']:.3f}" if b else "-"

        def ratio(tag, field, invert=False):
            b = base.get(tag)
            if not b:
                return "-"
            return f"{(r[field] / b[field]) if invert else (b[field] / r[field]):.2f}"
        print(f"| {r['impl'].removeprefix('dilated-')} | {r['mode']} | {r['causal']} | {r['n']} | {r['h']} | {r['d']} | {r['fwd_ms']:.3f} | {r['bwd_ms']:.3f} "
              f"| {r['fwdbwd_ms']:.3f} | {r['fwd_tflops']:.0f} | {r['fwdbwd_tflops']:.0f} | {pair('a')} | {pair('b')} "
              f"| {pair('c')} | {ratio('a', 'fwd_ms')} | {ratio('a', 'fwdbwd_ms')} | {ratio('b', 'fwd_ms', True)} "
              f"| {ratio('b', 'fwdbwd_ms', True)} |")
    print(f"\nGPU: {ours[0]['gpu'] if ours else '?'}")


if __name__ == "__main__":
    main(sys.argv[1])
