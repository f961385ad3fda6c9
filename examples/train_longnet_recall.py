#!/usr/bin/env python3
"""Train a small LongNet LM to recall a token placed thousands of positions earlier.

Each sequence is --seq-len random "noise" tokens with one "needle" token placed in the first
half and --queries QUERY tokens at least seq_len / 2 positions after it (the last token is
always one); the model must name the needle at every QUERY. With the default 16K context
the needle sits 8K..16K positions before each QUERY. Several queries per sequence give the
model several examples of the same long-range lookup per step at no extra attention cost. Every layer has two patterns: a
local one (dilation 1) and a long one (w = seq_len + 1, dilation r). Needles sit at
multiples of r, as do the QUERY tokens, so head 0 of the long pattern (offset 0) sees both: one
attention hop over seq_len / r keys retrieves the needle.
Chance loss is ln(vocab); the loss falls well below it once the model retrieves the needle.

    python examples/train_longnet_recall.py                    # 16K tokens, 2 minutes
    python examples/train_longnet_recall.py --seq-len 2048 --max-seconds 60
    python examples/train_longnet_recall.py --device cuda --dtype bf16
"""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

import dilated_attention
from dilated_attention import LongNetLM


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq-len", type=int, default=16384, help="tokens before the QUERY")
    # 16 keys per head in the long pattern at 16K: the needle stands out early in training
    # (at 64, 256 keys, 200 steps on 2 cores were not enough to find it).
    p.add_argument("--long-dilation", type=int, default=1024,
                   help="dilation of the sequence-long pattern; the local segment has this length")
    p.add_argument("--local-segment", type=int, default=16,
                   help="segment length of the local (dilation 1) pattern")
    p.add_argument("--vocab", type=int, default=16, help="needle values (and noise tokens)")
    p.add_argument("--queries", type=int, default=16,
                   help="QUERY tokens per sequence, each >= seq_len / 2 after the needle")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--steps", type=int, default=1000000, help="stop after this many steps")
    p.add_argument("--max-seconds", type=float, default=120.0, help="stop after this long")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the loss curve and a summary to this file")
    return p.parse_args(argv)


def make_batch(args, generator, device):
    """tokens [B, n], the needle of each sequence [B], QUERY positions [B, Q], mean distance."""
    n, r, v = args.seq_len + 1, args.long_dilation, args.vocab
    tokens = torch.randint(0, v, (args.batch, n), generator=generator)  # noise: 0..v-1
    needle = torch.randint(0, v, (args.batch,), generator=generator)
    slots = max(1, (n // 2) // r)  # needle positions: multiples of r in the first half
    position = torch.randint(0, slots, (args.batch,), generator=generator) * r
    tokens[torch.arange(args.batch), position] = v + needle  # needles: v..2v-1
    queries = []
    for b in range(args.batch):
        # Multiples of r at least seq_len / 2 after the needle; the last token is always one.
        first = (int(position[b]) + args.seq_len // 2 + r - 1) // r * r
        candidates = torch.arange(first, n - 1, r)
        pick = torch.randperm(len(candidates), generator=generator)[: args.queries - 1]
        queries.append(torch.cat([candidates[pick], torch.tensor([n - 1])]))
    count = min(len(q) for q in queries)
    query_positions = torch.stack([q[-count:] for q in queries])  # [B, Q], last column n - 1
    tokens[torch.arange(args.batch).unsqueeze(1), query_positions] = 2 * v  # QUERY
    distance = (query_positions - position.unsqueeze(1)).float().mean().item()
    return tokens.to(device), needle.to(device), query_positions.to(device), distance


def main(argv=None):
    args = parse_args(argv)
    n, r = args.seq_len + 1, args.long_dilation
    if args.seq_len % r != 0 or args.seq_len < 2 * r:
        raise SystemExit(f"--seq-len {args.seq_len}: expected a multiple of --long-dilation {r},"
                         f" >= {2 * r}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = LongNetLM(
        2 * args.vocab + 1, d_model=args.d_model, nhead=args.heads, num_encoder_layers=args.layers,
        num_decoder_layers=0, dim_feedforward=2 * args.d_model, segment_lengths=(args.local_segment, n),
        dilation_rates=(1, r), mode="longnet", device=device, dtype=dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    usable = [b["name"] for b in dilated_attention.backends()
              if b["device"] == device.type and not b["unavailable_reason"]]
    print(f"device {device}, backends {usable}, N = {n}, patterns (w, r) = ({args.local_segment}, 1), ({n}, {r}); "
          f"chance loss ln({args.vocab}) = {math.log(args.vocab):.3f}", flush=True)

    curve, start = [], time.perf_counter()
    step = 0
    while step < args.steps and time.perf_counter() - start < args.max_seconds:
        tokens, needle, query_positions, distance = make_batch(args, generator, device)
        hidden = model(tokens, is_causal=True)
        rows = torch.arange(args.batch, device=device).unsqueeze(1)
        logits = hidden[rows, query_positions, : args.vocab]  # [B, Q, vocab]
        targets = needle.unsqueeze(1).expand_as(query_positions)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        accuracy = (logits.argmax(-1) == targets).float().mean().item()
        curve.append({"step": step, "seconds": time.perf_counter() - start,
                      "loss": loss.item(), "accuracy": accuracy})
        if step % args.log_every == 0 or step == 1:
            print(f"step {step:5d}  {curve[-1]['seconds']:7.1f} s  loss {loss.item():.3f}  "
                  f"acc {accuracy:.2f}  mean needle distance {distance:.0f}", flush=True)

    window = max(1, min(10, len(curve) // 4))
    first = sum(c["loss"] for c in curve[:window]) / window
    last = sum(c["loss"] for c in curve[-window:]) / window
    summary = {"steps": step, "seconds": time.perf_counter() - start, "first_loss": first,
               "last_loss": last, "chance_loss": math.log(args.vocab), "seq_len": n,
               "device": str(device), "backends": usable}
    print(f"done: {step} steps in {summary['seconds']:.1f} s, loss {first:.3f} -> {last:.3f} "
          f"(mean of the first / last {window} steps)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "summary": summary, "curve": curve}, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
