"""python -m dilated_attention.bench: this library against PyTorch compositions of the same
function, in one run on one device.

Methods: `dilated` (this library), (a) `strided_sdpa` (strided views + SDPA per pattern,
scattered back), (b) `gathered_sdpa` (SDPA on inputs gathered beforehand, gather not timed),
(c) `dense_sdpa` (SDPA over all N, no dilation) and, when importable,
`dilated_attention_pytorch` (its DilatedAttention, head_groups mode). Each method is first
checked against this library's output, then timed: warm-up, then the median of --repeats
runs (CUDA events on a GPU, perf_counter on the CPU). Prints a table, writes --json, and
--plot draws time against sequence length.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from . import backends
from .compositions import dense_sdpa, gathered_sdpa, prepare_gathered, strided_sdpa
from .functional import dilated_attention


def _ints(text: str):
    return [int(x) for x in text.split(",") if x]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m dilated_attention.bench", description=__doc__)
    cuda = torch.cuda.is_available()
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--seq-lens", type=_ints, default=[8192, 16384, 32768] if cuda else [1024, 2048, 4096])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=12 if cuda else 4)
    p.add_argument("--head-dim", type=int, default=64 if cuda else 32)
    p.add_argument("--segments", type=_ints, default=[512, 1024, 2048] if cuda else [256, 512, 1024])
    p.add_argument("--dilations", type=_ints, default=[1, 2, 4])
    p.add_argument("--mode", default="longnet", choices=["longnet", "head_groups"])
    p.add_argument("--causal", action="store_true")
    p.add_argument("--dtype", default="bf16" if cuda else "fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--backward", action="store_true", help="time forward + backward")
    p.add_argument("--dense-max", type=int, default=65536 if cuda else 8192,
                   help="skip dense SDPA above this N (quadratic)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10 if cuda else 3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--plot", help="draw time against N into this PNG (needs matplotlib)")
    return p.parse_args(argv)


def _time(fn, device, warmup, repeats):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            samples.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples), min(samples), max(samples)


def _methods(args, q, k, v):
    """name -> (callable computing the output, callable to time)."""
    kw = dict(is_causal=args.causal)
    layer = (args.segments, args.dilations)
    ours = lambda: dilated_attention(q, k, v, *layer, mode=args.mode, **kw)
    a = lambda: strided_sdpa(q, k, v, *layer, mode=args.mode, **kw)
    methods = {"dilated": (ours, ours), "strided_sdpa (a)": (a, a)}
    if not args.backward:  # (b) has no backward of its own: it is the forward floor
        calls = prepare_gathered(q.detach(), k.detach(), v.detach(), *layer, mode=args.mode)
        run_b = lambda: gathered_sdpa(calls, with_lse=args.mode == "longnet", **kw)
        methods["gathered_sdpa (b)"] = (None, run_b)
    if q.shape[1] <= args.dense_max:
        dense = lambda: dense_sdpa(q, k, v, **kw)
        methods["dense_sdpa (c)"] = (None, dense)
    try:
        from dilated_attention_pytorch import DilatedAttention as Original
    except Exception:  # not installed (it needs xformers and a GPU)
        Original = None
    if Original is not None and args.mode == "head_groups":
        original = Original(args.segments, args.dilations)
        run = lambda: original(q, k, v, is_causal=args.causal)
        methods["dilated_attention_pytorch"] = (run, run)
    return methods


def _with_backward(fn, inputs):
    def run():
        out = fn()
        torch.autograd.grad(out, inputs, torch.ones_like(out))
    return run


def _flops(args, n):
    """DESIGN 2.6 for segments and dilations dividing N: (query, key) pairs times 4 D."""
    m = len(args.segments)
    pairs = 0.0
    for i, (w, r) in enumerate(zip(args.segments, args.dilations)):
        heads = args.heads // m + (i < args.heads % m) if args.mode == "head_groups" else args.heads
        keys = w // r  # per selected query: the segment's selected rows
        per_segment = keys * (keys + 1) / 2 if args.causal else keys * keys
        pairs += heads * (n // w) * per_segment
    return 4 * args.batch * args.head_dim * pairs * (3.5 if args.backward else 1.0)


def run(args):
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    names = [b["name"] for b in backends() if b["device"] == device.type and not b["unavailable_reason"]]
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else "CPU", "torch": torch.__version__, "backends_available": names,
            "threads": torch.get_num_threads(),
            "config": {k: v for k, v in vars(args).items() if k not in ("json", "plot")}}
    results = []
    for n in args.seq_lens:
        shape = (args.batch, n, args.heads, args.head_dim)
        q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=args.backward)
                   for _ in range(3))
        methods = _methods(args, q, k, v)
        with torch.no_grad():
            expected = methods["dilated"][0]()
        for name, (compute, timed) in methods.items():
            row = {"method": name, "seq_len": n}
            try:
                if compute is not None:
                    with torch.no_grad():
                        got = compute()
                    err = ((got.float() - expected.float()).abs().max()
                           / expected.float().abs().max()).item()
                    row["max_rel_diff_vs_dilated"] = err
                fn = _with_backward(timed, (q, k, v)) if args.backward else timed
                median, low, high = _time(fn, device, args.warmup, args.repeats)
                row.update(ms=median, ms_min=low, ms_max=high)
                if name != "dense_sdpa (c)":
                    row["tflops"] = _flops(args, n) / (median * 1e-3) / 1e12
            except Exception as e:  # a baseline that cannot run this size: say why
                row["error"] = f"{type(e).__name__}: {e}"[:200]
            results.append(row)
            _print_row(row)
    return {"info": info, "results": results}


def _print_row(row):
    if "error" in row:
        print(f"{row['seq_len']:>9} {row['method']:<26} {'-':>10} {'-':>9} {'-':>9}  {row['error']}")
        return
    diff = row.get("max_rel_diff_vs_dilated")
    print(f"{row['seq_len']:>9} {row['method']:<26} {row['ms']:>10.3f} "
          f"{row.get('tflops', float('nan')):>9.4f} {'' if diff is None else f'{diff:9.1e}'}",
          flush=True)


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = dict.fromkeys(r["method"] for r in report["results"])
    for method in methods:
        rows = [r for r in report["results"] if r["method"] == method and "ms" in r]
        ax.plot([r["seq_len"] for r in rows], [r["ms"] for r in rows], marker="o", label=method)
    cfg = report["info"]["config"]
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("ms (median)" + (" forward+backward" if cfg["backward"] else " forward"))
    ax.set_title(f"{report['info']['device']}: {cfg['mode']}, {cfg['dtype']}, B={cfg['batch']} "
                 f"H={cfg['heads']} D={cfg['head_dim']}{' causal' if cfg['causal'] else ''}",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    args = parse_args(argv)
    print(f"device {args.device}, mode {args.mode}, dtype {args.dtype}, "
          f"{'forward+backward' if args.backward else 'forward'}, segments {args.segments}, "
          f"dilations {args.dilations}")
    print(f"{'N':>9} {'method':<26} {'ms':>10} {'TFLOP/s':>9} {'rel diff':>9}")
    report = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.plot:
        plot(report, args.plot)
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
