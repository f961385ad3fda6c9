"""PyTorch baselines for the CUDA benchmark (DESIGN 6), timed with CUDA events.

(a) composition: strided views of each pattern (and, in longnet, each head offset class),
    scaled_dot_product_attention per piece, results scattered back (longnet mixes pieces by
    their log-sum-exp; PyTorch's flash op returns it without a gradient, so the mixing weights
    are detached in backward as in torchscale: timing only, not exact gradients);
(b) the same SDPA calls on inputs gathered beforehand (the gather is not timed): the
    attention-kernel floor;
(c) dense SDPA over all N.
Prints one JSON object per (config, baseline). Needs N divisible by every segment length and
every segment length by its dilation (the views require it).
"""

import argparse
import json
import math
import sys

import torch
import torch.nn.functional as F


def median_ms(fn, repeats):
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def pieces(heads, segs, dils, mode):
    """(w, r, offset, head slice, output scale) of every SDPA call of the composition."""
    m = len(segs)
    if mode == "head_groups":
        out, h0 = [], 0
        for i, (w, r) in enumerate(zip(segs, dils)):
            size = heads // m + (1 if i < heads % m else 0)
            out.append((w, r, i % r, slice(h0, h0 + size), 1.0 / m))
            h0 += size
        return out
    return [(w, r, o, slice(o, heads, r), 1.0) for w, r in zip(segs, dils) for o in range(min(r, heads))]


def piece_view(x, w, r, o, hs):
    b, n, h, d = x.shape
    return x.view(b, n // w, w, h, d)[:, :, o::r, hs]


def to_sdpa(view):
    b, s, l, h, d = view.shape
    return view.reshape(b * s, l, h, d).transpose(1, 2)


def composition(q, k, v, segs, dils, mode, causal):
    b, n, h, d = q.shape
    if mode == "head_groups":
        out = torch.zeros_like(q)
        for w, r, o, hs, scale in pieces(h, segs, dils, mode):
            x = F.scaled_dot_product_attention(*(to_sdpa(piece_view(t, w, r, o, hs)) for t in (q, k, v)), is_causal=causal)
            target = piece_view(out, w, r, o, hs)
            target.copy_(x.transpose(1, 2).reshape(target.shape) * scale)
        return out
    outs, lses = [], []
    for w, r, o, hs, _ in pieces(h, segs, dils, mode):
        qs, ks, vs = (to_sdpa(piece_view(t, w, r, o, hs)) for t in (q, k, v))
        x, lse = torch.ops.aten._scaled_dot_product_flash_attention(qs, ks, vs, 0.0, causal)[:2]
        full = torch.zeros_like(q)
        target = piece_view(full, w, r, o, hs)
        target.copy_(x.transpose(1, 2).reshape(target.shape))
        full_lse = torch.full((b, n, h), -math.inf, device=q.device)
        piece_view(full_lse.unsqueeze(-1), w, r, o, hs).copy_(
            lse.transpose(1, 2).reshape(target.shape[:-1]).unsqueeze(-1))
        outs.append(full)
        lses.append(full_lse)
    lse_all = torch.stack(lses)
    total = torch.logsumexp(lse_all, dim=0)
    weights = torch.nan_to_num(torch.exp(lse_all - total), nan=0.0).unsqueeze(-1)
    return (torch.stack(outs).float() * weights).sum(0).to(q.dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=32768)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--segments", default="2048,4096,8192")
    ap.add_argument("--dilations", default="1,2,4")
    ap.add_argument("--mode", default="longnet")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--skip-dense", action="store_true")
    args = ap.parse_args()
    segs = [int(s) for s in args.segments.split(",")]
    dils = [int(s) for s in args.dilations.split(",")]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    b, n, h, d = args.batch, args.seq_len, args.heads, args.head_dim
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, dout = (torch.randn(b, n, h, d, device="cuda", dtype=dtype, generator=gen) for _ in range(4))
    common = {"gpu": torch.cuda.get_device_name(), "mode": args.mode, "b": b, "n": n, "h": h, "d": d,
              "segments": args.segments, "dilations": args.dilations, "dtype": args.dtype,
              "causal": args.causal, "torch": torch.__version__}

    def report(impl, fwd_ms, fwdbwd_ms):
        print(json.dumps({"impl": impl, **common, "fwd_ms": fwd_ms, "fwdbwd_ms": fwdbwd_ms}), flush=True)

    # (a) the composition, forward and forward + backward through autograd.
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
    with torch.no_grad():
        fwd = median_ms(lambda: composition(q, k, v, segs, dils, args.mode, args.causal), args.repeats)

    def fwdbwd_a():
        out = composition(qg, kg, vg, segs, dils, args.mode, args.causal)
        out.backward(dout)
    report("torch-composition(a)", fwd, median_ms(fwdbwd_a, args.repeats))
    del qg, kg, vg
    torch.cuda.empty_cache()

    # (b) SDPA on pre-gathered contiguous pieces.
    gathered = []
    for w, r, o, hs, _ in pieces(h, segs, dils, args.mode):
        parts = [to_sdpa(piece_view(t, w, r, o, hs)).contiguous().requires_grad_() for t in (q, k, v)]
        grad = torch.randn_like(parts[0])
        gathered.append((parts, grad))

    def fwd_b():
        with torch.no_grad():
            for parts, _ in gathered:
                F.scaled_dot_product_attention(*parts, is_causal=args.causal)

    def fwdbwd_b():
        for parts, grad in gathered:
            F.scaled_dot_product_attention(*parts, is_causal=args.causal).backward(grad)
    report("sdpa-pregathered(b)", median_ms(fwd_b, args.repeats), median_ms(fwdbwd_b, args.repeats))
    del gathered
    torch.cuda.empty_cache()

    # (c) dense SDPA over the whole sequence.
    if not args.skip_dense:
        qd, kd, vd = (t.transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
        dd = dout.transpose(1, 2).contiguous()

        def fwd_c():
            with torch.no_grad():
                F.scaled_dot_product_attention(qd, kd, vd, is_causal=args.causal)
        report("sdpa-dense(c)", median_ms(fwd_c, max(3, args.repeats // 4)),
               median_ms(lambda: F.scaled_dot_product_attention(qd, kd, vd, is_causal=args.causal).backward(dd),
                         max(3, args.repeats // 4)))


if __name__ == "__main__":
    sys.exit(main())
