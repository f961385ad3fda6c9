"""dilated_attention.distributed over a gloo process group of 2 and 4 processes: each rank's
shard of the output and of the gradients equals the single-process op on the whole sequence.

Tolerance (float32): each rank's result merges its shard's own keys and the remote segments'
keys with the lse rule, and gradients sum at most P partial sums; every part carries the
single-call float32 error (~1e-6 relative to the largest element for these sizes), so 2e-5.
"""

import faulthandler
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dilated_attention import distributed
from dilated_attention.functional import dilated_attention

TOLERANCE = 2e-5

# (B, N, H, Hkv, D, segments, dilations, mode, causal): GQA, segments cut by the shard
# boundaries, a segment that is the whole sequence (LongNet's w = N), N not divisible by P.
CASES = [
    (2, 150, 4, 2, 16, [40, 150], [2, 5], "longnet", True),
    (1, 203, 3, 3, 32, [64, 203], [1, 7], "longnet", False),
    (2, 97, 4, 1, 16, [30, 97], [3, 4], "head_groups", True),
    (1, 128, 2, 2, 8, [128], [16], "head_groups", False),
]


def relative_error(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1.0)).item()


def _worker(rank, size, init_file, seed, failures):
    faulthandler.enable()  # a crash in a rank shows its Python stack
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=size)
    try:
        gen = torch.Generator().manual_seed(seed)
        for b, n, h, hkv, d, segments, dilations, mode, causal in CASES:
            q = torch.randn(b, n, h, d, generator=gen, requires_grad=True)
            k = torch.randn(b, n, hkv, d, generator=gen, requires_grad=True)
            v = torch.randn(b, n, hkv, d, generator=gen, requires_grad=True)
            dout = torch.randn(b, n, h, d, generator=gen)
            kwargs = dict(mode=mode, is_causal=causal)
            whole = dilated_attention(q, k, v, segments, dilations, **kwargs)
            whole.backward(dout)

            first, last = distributed.shard_bounds(n, rank, size)
            # Every other case with a small exchange budget: the ring variant, same results.
            budget = 0 if len(segments) % 2 else 1024
            parts = [t.detach()[:, first:last].clone().requires_grad_() for t in (q, k, v)]
            out = distributed.dilated_attention(*parts, segments, dilations, **kwargs,
                                                exchange_budget=budget)
            out.backward(dout[:, first:last])
            case = (f"case {(b, n, h, hkv, d, segments, dilations, mode, causal)}, "
                    f"budget {budget}, rank {rank}")
            for name, got, want in (
                ("out", out, whole[:, first:last]),
                ("dq", parts[0].grad, q.grad[:, first:last]),
                ("dk", parts[1].grad, k.grad[:, first:last]),
                ("dv", parts[2].grad, v.grad[:, first:last]),
            ):
                err = relative_error(got, want)
                if not err <= TOLERANCE:
                    failures.put(f"{case}: {name} error {err:.3g} > {TOLERANCE}")
            # The helpers put the whole result back together on every rank.
            full = distributed.gather_sequence(out.detach())
            if relative_error(full, whole) > TOLERANCE:
                failures.put(f"{case}: gather_sequence differs from the whole output")

        # A bad budget is refused before any exchange.
        try:
            distributed.dilated_attention(q.detach(), k.detach(), v.detach(), [8], [1],
                                          exchange_budget=-1)
            failures.put(f"rank {rank}: exchange_budget=-1 did not raise")
        except ValueError as e:
            if "exchange_budget" not in str(e):
                failures.put(f"rank {rank}: exchange_budget=-1 raised {e!r}")

        # A rank whose layer differs: every rank raises the same ValueError.
        x = torch.randn(1, 8, 2, 8, generator=gen)
        dilations = [2] if rank != size - 1 else [4]
        try:
            distributed.dilated_attention(x, x, x, [8 * size], dilations)
            failures.put(f"rank {rank}: a mismatched layer did not raise")
        except ValueError as e:
            message = str(e)
            messages = [None] * size
            dist.all_gather_object(messages, message)
            if len(set(messages)) != 1 or f"rank {size - 1} has {{" not in message:
                failures.put(f"rank {rank}: mismatch messages differ or do not name the rank: "
                             f"{messages}")
    except Exception as e:  # noqa: BLE001 - reported to the parent
        failures.put(f"rank {rank}: {type(e).__name__}: {e}")
    finally:
        dist.destroy_process_group()
        # Leave without the interpreter's shutdown: a spawned process that ran the torch op
        # with autograd and a gloo group was seen to abort there about one run in ten
        # ("terminate called without an active exception", after all its work, also without
        # this module), which would fail this test for nothing it checks. The failures are
        # flushed first.
        failures.close()
        failures.join_thread()
        os._exit(0)


@pytest.mark.parametrize("size", [2, 4])
def test_shards_equal_the_single_process_op(size, seed):
    ctx = mp.get_context("spawn")
    failures = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        mp.start_processes(_worker, args=(size, init_file, seed, failures), nprocs=size,
                           join=True, start_method="spawn")
    messages = []
    while not failures.empty():
        messages.append(failures.get())
    assert not messages, "\n".join(messages)


def test_needs_an_initialised_process_group():
    if dist.is_initialized():
        pytest.skip("a process group exists in this process")
    x = torch.randn(1, 8, 2, 8)
    with pytest.raises(RuntimeError, match="init_process_group"):
        distributed.dilated_attention(x, x, x, [8], [1])


# ---- CUDA tensors over an NCCL group (skipped without 2 GPUs) -----------------------------------
# Tolerances: float32 as above; bfloat16 against the single-GPU op in bfloat16: the merges of
# the shard's own and the remote keys round each output once more (8 mantissa bits: 2^-8
# relative to the largest element), gradients sum up to P partial sums: 2e-2.
GPU_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


def _gpu_worker(rank, size, init_file, seed, failures):
    faulthandler.enable()
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank,
                            world_size=size, device_id=torch.device("cuda", rank))
    try:
        gen = torch.Generator().manual_seed(seed)
        device = torch.device("cuda", rank)
        for dtype in (torch.float32, torch.bfloat16):
            for b, n, h, hkv, d, segments, dilations, mode, causal in CASES:
                d = max(d, 32)  # tensor-core head dims for bfloat16
                full = [torch.randn(b, n, x, d, generator=gen) for x in (h, hkv, hkv)]
                q, k, v = (t.to(device, dtype).requires_grad_() for t in full)
                dout = torch.randn(b, n, h, d, generator=gen).to(device, dtype)
                kwargs = dict(mode=mode, is_causal=causal)
                whole = dilated_attention(q, k, v, segments, dilations, **kwargs)
                whole.backward(dout)
                first, last = distributed.shard_bounds(n, rank, size)
                parts = [t.detach()[:, first:last].clone().requires_grad_() for t in (q, k, v)]
                out = distributed.dilated_attention(*parts, segments, dilations, **kwargs)
                out.backward(dout[:, first:last])
                case = f"{dtype} case {(b, n, h, hkv, d, segments, dilations, mode, causal)}"
                for name, got, want in (
                    ("out", out, whole[:, first:last]),
                    ("dq", parts[0].grad, q.grad[:, first:last]),
                    ("dk", parts[1].grad, k.grad[:, first:last]),
                    ("dv", parts[2].grad, v.grad[:, first:last]),
                ):
                    err = relative_error(got, want)
                    if not err <= GPU_TOLERANCE[dtype]:
                        failures.put(f"rank {rank}, {case}: {name} error {err:.3g}")
                full_out = distributed.gather_sequence(out.detach())
                if relative_error(full_out, whole) > GPU_TOLERANCE[dtype]:
                    failures.put(f"rank {rank}, {case}: gather_sequence differs")
    except Exception as e:  # reported through the queue, like the CPU workers
        failures.put(f"rank {rank}: {type(e).__name__}: {e}")
    finally:
        dist.destroy_process_group()
        failures.close()
        failures.join_thread()
        os._exit(0)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs 2 CUDA GPUs")
def test_cuda_shards_over_nccl_equal_the_single_gpu_op(seed):
    ctx = mp.get_context("spawn")
    failures = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        mp.start_processes(_gpu_worker, args=(2, init_file, seed, failures), nprocs=2,
                           join=True, start_method="spawn")
    messages = []
    while not failures.empty():
        messages.append(failures.get())
    assert not messages, "\n".join(messages)
