"""Sequence parallelism over a torch.distributed process group.

The sequence of N tokens is split into contiguous shards, one per rank of the group (rank 0
first); every rank passes its rows of q, k, v ([B, n_rank, H, D]: CPU tensors with a gloo group, CUDA tensors with an NCCL
group, one GPU per rank) and gets its
rows of the single-device result, with autograd. Ranks exchange only the selected k/v rows of
segments that cross a shard boundary (docs/design.md, "Sequence parallelism"):

    import torch.distributed as dist
    from dilated_attention import distributed

    dist.init_process_group("gloo")                      # e.g. under torchrun
    q = distributed.shard_sequence(q_full)               # or each rank's own rows
    out = distributed.dilated_attention(q, k, v, [2048, 8192], [1, 4], is_causal=True)
    full = distributed.gather_sequence(out)              # every rank: the whole result

Every rank must call the op (and, for training, its backward) in the same order: the ranks
check first that they agree on the layer, the sizes and the shard layout, and all raise the
same ValueError when they do not. The process group's timeout
(``init_process_group(timeout=...)``) bounds how long a rank waits for a peer that went away.
"""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from . import _C
from ._layer import make_layer
from ._torch_ops import _last_dim_contiguous, _layer_args, check_tensors

__all__ = ["dilated_attention", "shard_sequence", "gather_sequence", "shard_bounds"]


def _group_rank_size(group) -> Tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "dilated_attention.distributed: torch.distributed is not initialised; call "
            "torch.distributed.init_process_group first"
        )
    return dist.get_rank(group), dist.get_world_size(group)


def shard_bounds(n: int, rank: int, size: int) -> Tuple[int, int]:
    """Rows [first, last) of `rank` in the library's even split of n tokens over `size` ranks
    (contiguous; the first n % size ranks one longer), as dilated::dist::even_shard."""
    base, extra = divmod(n, size)
    first = rank * base + min(rank, extra)
    return first, first + base + (1 if rank < extra else 0)


def shard_sequence(x: Tensor, group=None, dim: int = 1) -> Tensor:
    """This rank's contiguous rows of a full-sequence tensor (even split along `dim`)."""
    rank, size = _group_rank_size(group)
    first, last = shard_bounds(x.shape[dim], rank, size)
    return x.narrow(dim, first, last - first)


def gather_sequence(x: Tensor, group=None, dim: int = 1) -> Tensor:
    """The full sequence from every rank's shard (shards may differ in length), on every rank."""
    _, size = _group_rank_size(group)
    lengths = _all_lengths(x.shape[dim], group, size, x.device)
    x = x.contiguous()
    # all_gather needs equal sizes: pad every shard to the longest, then cut.
    pad = list(x.shape)
    pad[dim] = max(lengths)
    padded = x.new_zeros(pad)
    padded.narrow(dim, 0, x.shape[dim]).copy_(x)
    gathered = [x.new_empty(pad) for _ in range(size)]
    dist.all_gather(gathered, padded, group=group)
    return torch.cat([g.narrow(dim, 0, n) for g, n in zip(gathered, lengths)], dim=dim)


class _Collectives:
    """The library's collectives on a process group (uint8 NumPy views of its buffers)."""

    def __init__(self, group):
        self.group = group

    def all_to_all(self, send, send_counts, recv, recv_counts):
        dist.all_to_all_single(
            torch.from_numpy(recv), torch.from_numpy(send), list(recv_counts),
            list(send_counts), group=self.group,
        )

    def all_gather(self, send, recv):
        chunks = list(torch.from_numpy(recv).chunk(dist.get_world_size(self.group)))
        dist.all_gather(chunks, torch.from_numpy(send), group=self.group)

    def barrier(self):
        dist.barrier(group=self.group)


class _DeviceCollectives:
    """The library's collectives on an NCCL process group for CUDA tensors: uint8 CUDA tensor
    views of its device buffers (None for no bytes). Each runs on a side stream, so that it
    does not wait for the work queued on the compute stream (the library has waited for what
    it sends), and is complete when it returns (the library reads the results next)."""

    _streams: dict = {}  # one side stream per device, made once

    def __init__(self, group, device):
        self.group = group
        self.device = device
        if device not in self._streams:
            self._streams[device] = torch.cuda.Stream(device=device)
        self.stream = self._streams[device]

    def _tensor(self, x):
        return x if x is not None else torch.empty(0, dtype=torch.uint8, device=self.device)

    def all_to_all(self, send, send_counts, recv, recv_counts):
        with torch.cuda.stream(self.stream):
            dist.all_to_all_single(self._tensor(recv), self._tensor(send), list(recv_counts),
                                   list(send_counts), group=self.group)
        self.stream.synchronize()

    def all_gather(self, send, recv):
        with torch.cuda.stream(self.stream):
            dist.all_gather_into_tensor(self._tensor(recv), self._tensor(send), group=self.group)
        self.stream.synchronize()

    def barrier(self):
        dist.barrier(group=self.group)


def _all_lengths(n_local: int, group, size: int, device) -> list:
    """Every rank's n_local, in rank order (on `device`: NCCL groups exchange CUDA tensors)."""
    lengths = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(size)]
    dist.all_gather(lengths, torch.tensor([n_local], dtype=torch.int64, device=device),
                    group=group)
    return [int(t.item()) for t in lengths]


def _shard_layout(n_local: int, group, rank: int, size: int, device) -> Tuple[int, int]:
    """(global length, offset) from every rank's row count, contiguous in rank order."""
    lengths = _all_lengths(n_local, group, size, device)
    return sum(lengths), sum(lengths[:rank])


def _dilated_layer_args(layer) -> dict:
    """The layer's arguments for the sequence-parallel binding: dilated patterns only (block
    patterns and grids are not sequence-parallel; make_layer's defaults leave them empty)."""
    args = _layer_args(layer, None)
    for name in ("block_size", "block_patterns", "block_mask", "grid"):
        del args[name]
    return args


def _call_args(layer, group, rank, size, shard, budget, device):
    extra = {}
    if device.type == "cuda":
        c = _DeviceCollectives(group, device)
        extra = dict(stream=torch.cuda.current_stream(device).cuda_stream, device_id=device.index)
    else:
        c = _Collectives(group)
    return dict(
        **extra,
        exchange_budget=budget,
        **_dilated_layer_args(layer), num_threads=torch.get_num_threads(), global_seqlen=shard[0],
        offset=shard[1], rank=rank, size=size, all_to_all=c.all_to_all,
        all_gather=c.all_gather, barrier=c.barrier,
    )


def _on_device(device):
    """CUDA tensors: their device is the current one while the library runs (it uses it)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


class _ShardedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, layer, group, rank, size, shard, budget):
        qc, kc, vc = (_last_dim_contiguous(t) for t in (q, k, v))
        b, n, h, _ = q.shape
        out = q.new_empty((b, n, h, v.shape[3]))
        lse = q.new_empty((b, h, n), dtype=torch.float32)
        with _on_device(q.device):
            _C.dist_forward(qc, kc, vc, out, lse,
                            **_call_args(layer, group, rank, size, shard, budget, q.device))
        ctx.save_for_backward(qc, kc, vc, out, lse)
        ctx.args = (layer, group, rank, size, shard, budget)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        layer, group, rank, size, shard, budget = ctx.args
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        with _on_device(q.device):
            _C.dist_backward(_last_dim_contiguous(dout), q, k, v, out, lse, dq, dk, dv,
                             **_call_args(layer, group, rank, size, shard, budget,
                                           q.device))
        return dq, dk, dv, None, None, None, None, None, None


def dilated_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    segment_lengths: Sequence[int],
    dilation_rates: Sequence[int],
    *,
    group=None,
    shard: Optional[Tuple[int, int]] = None,
    mode: str = "longnet",
    is_causal: bool = False,
    scale: Optional[float] = None,
    head_offsets: str = "paper",
    backend: str = "auto",
    exchange_budget: int = 0,
) -> Tensor:
    """Dilated attention of the whole sequence, computed across the ranks of `group`.

    q [B, n, H, D], k and v [B, n, Hkv, D(v)]: this rank's rows: CPU tensors with a gloo group
    (float32, float16, bfloat16, or float64 with backend="reference"), or CUDA tensors with an
    NCCL group (float16, bfloat16, float32; one GPU per rank). Returns this rank's rows of out, exactly the
    rows the single-process ``functional.dilated_attention`` gives for the whole sequence (up to
    rounding), with gradients for q, k and v.

    shard: (global length N, this rank's offset); by default every rank's row count is
    gathered and shards follow each other in rank order. The other arguments are those of
    ``functional.dilated_attention``; segments and causal masking use global positions.

    exchange_budget: the most k/v bytes a rank may receive in one exchange (0: no limit);
    beyond it the exchange runs as a ring of P - 1 one-peer steps, with the same results up to
    the order of floating-point sums.
    """
    if isinstance(exchange_budget, bool) or not isinstance(exchange_budget, int) \
            or exchange_budget < 0:
        raise ValueError(
            f"exchange_budget: {exchange_budget!r}, expected an int >= 0 (bytes; 0: no limit)"
        )
    layer = make_layer(segment_lengths, dilation_rates, mode, is_causal, scale, head_offsets,
                       backend)
    check_tensors(q, k, v, layer)
    rank, size = _group_rank_size(group)
    if q.device.type == "cuda" and dist.get_backend(group) != "nccl":
        raise ValueError(
            f"group: backend {dist.get_backend(group)}, expected nccl for CUDA tensors "
            f"(q is on {q.device})"
        )
    if q.device.type not in ("cpu", "cuda"):
        raise ValueError(f"q: device {q.device}, expected CPU or CUDA tensors")
    if shard is None:
        shard = _shard_layout(q.shape[1], group, rank, size, q.device)
    return _ShardedAttention.apply(q, k, v, layer, group, rank, size, tuple(shard),
                                   exchange_budget)
