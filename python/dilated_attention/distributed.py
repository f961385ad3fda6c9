"""Sequence parallelism over a torch.distributed process group.

The sequence of N tokens is split into contiguous shards, one per rank of the group (rank 0
first); every rank passes its rows of q, k, v ([B, n_rank, H, D], CPU tensors) and gets its
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
    lengths = [torch.zeros(1, dtype=torch.int64) for _ in range(size)]
    dist.all_gather(lengths, torch.tensor([x.shape[dim]], dtype=torch.int64), group=group)
    x = x.contiguous()
    parts = []
    for n in lengths:
        shape = list(x.shape)
        shape[dim] = int(n.item())
        parts.append(x.new_empty(shape))
    # all_gather needs equal sizes: pad every shard to the longest, then cut.
    longest = max(p.shape[dim] for p in parts)
    pad = list(x.shape)
    pad[dim] = longest
    padded = x.new_zeros(pad)
    padded.narrow(dim, 0, x.shape[dim]).copy_(x)
    gathered = [x.new_empty(pad) for _ in range(size)]
    dist.all_gather(gathered, padded, group=group)
    return torch.cat([g.narrow(dim, 0, p.shape[dim]) for g, p in zip(gathered, parts)], dim=dim)


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


def _shard_layout(n_local: int, group, rank: int, size: int) -> Tuple[int, int]:
    """(global length, offset) from every rank's row count, contiguous in rank order."""
    lengths = [torch.zeros(1, dtype=torch.int64) for _ in range(size)]
    dist.all_gather(lengths, torch.tensor([n_local], dtype=torch.int64), group=group)
    lengths = [int(t.item()) for t in lengths]
    return sum(lengths), sum(lengths[:rank])


def _dilated_layer_args(layer) -> dict:
    """The layer's arguments for the sequence-parallel binding: dilated patterns only (block
    patterns and grids are not sequence-parallel; make_layer's defaults leave them empty)."""
    args = _layer_args(layer, None)
    for name in ("block_size", "block_patterns", "block_mask", "grid"):
        del args[name]
    return args


def _call_args(layer, group, rank, size, shard, budget):
    c = _Collectives(group)
    return dict(
        exchange_budget=budget,
        **_dilated_layer_args(layer), num_threads=torch.get_num_threads(), global_seqlen=shard[0],
        offset=shard[1], rank=rank, size=size, all_to_all=c.all_to_all,
        all_gather=c.all_gather, barrier=c.barrier,
    )


class _ShardedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, layer, group, rank, size, shard, budget):
        qc, kc, vc = (_last_dim_contiguous(t) for t in (q, k, v))
        b, n, h, _ = q.shape
        out = q.new_empty((b, n, h, v.shape[3]))
        lse = q.new_empty((b, h, n), dtype=torch.float32)
        _C.dist_forward(qc, kc, vc, out, lse, **_call_args(layer, group, rank, size, shard, budget))
        ctx.save_for_backward(qc, kc, vc, out, lse)
        ctx.args = (layer, group, rank, size, shard, budget)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        layer, group, rank, size, shard, budget = ctx.args
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        _C.dist_backward(_last_dim_contiguous(dout), q, k, v, out, lse, dq, dk, dv,
                         **_call_args(layer, group, rank, size, shard, budget))
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

    q [B, n, H, D], k and v [B, n, Hkv, D(v)]: this rank's rows (CPU tensors; float32, float16,
    bfloat16 or float64 with backend="reference"). Returns this rank's rows of out, exactly the
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
    if q.device.type != "cpu":
        raise ValueError(
            f"q: device {q.device}, expected CPU tensors (sequence parallelism runs on the host "
            "backends for now)"
        )
    rank, size = _group_rank_size(group)
    if shard is None:
        shard = _shard_layout(q.shape[1], group, rank, size)
    return _ShardedAttention.apply(q, k, v, layer, group, rank, size, tuple(shard),
                                   exchange_budget)
