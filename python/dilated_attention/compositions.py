"""The same function composed from PyTorch operators, for benchmarks and cross-checks.

(a) `strided_sdpa`: per pattern and head offset, strided views of q/k/v gathered into
    [B * segments, w / r, heads, D], scaled_dot_product_attention, scattered back; longnet
    mode merges the patterns through their log-sum-exp (so it needs SDPA's lse, taken from
    the private aten kernels).
(b) `prepare_gathered` + `gathered_sdpa`: the same attention calls on inputs gathered
    beforehand, so that only the attention kernels are timed (the floor of any composition).
(c) `dense_sdpa`: scaled_dot_product_attention over all N (no dilation), for scale.
Needs N to be a multiple of every segment length (no short last segment).
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _head_sets(h: int, segments: Sequence[int], dilations: Sequence[int], mode: str):
    """(pattern index, w, r, offset, head indices) for every attention call of the layer."""
    m = len(segments)
    if mode == "head_groups":
        sizes = [h // m + (1 if i < h % m else 0) for i in range(m)]
        start = 0
        for i, (w, r) in enumerate(zip(segments, dilations)):
            yield i, w, r, i % r, list(range(start, start + sizes[i]))
            start += sizes[i]
        return
    for i, (w, r) in enumerate(zip(segments, dilations)):
        for o in range(min(r, h)):
            yield i, w, r, o, [j for j in range(h) if j % r == o]


def _gather(x: Tensor, w: int, r: int, o: int, heads: List[int]) -> Tensor:
    """[B, N, H, D] -> [B * N/w, H_sel, L, D] (SDPA layout) of the selected rows and heads."""
    b, n, _, d = x.shape
    x = x[:, :, heads] if len(heads) != x.shape[2] else x
    x = x.reshape(b, n // w, w, len(heads), d)[:, :, o::r]
    return x.reshape(b * (n // w), -1, len(heads), d).transpose(1, 2)


def sdpa_with_lse(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float):
    """SDPA on [B, H, L, D] that also returns the log-sum-exp [B, H, L] (private aten ops)."""
    if q.is_cuda:
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, None, True, 0.0, causal, scale=scale)[:2]
        return out, lse[..., : q.shape[2]]
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, causal, scale=scale)
    return out, lse


def _check(n: int, segments: Sequence[int]) -> None:
    for w in segments:
        if n % w:
            raise ValueError(f"N = {n}: the compositions need a multiple of every segment ({w})")


def _merge(parts, shape, like: Tensor) -> Tensor:
    """Union softmax of the patterns: weights exp(lse_i - lse) (DESIGN 2.3)."""
    lse = torch.logsumexp(torch.stack([p[1] for p in parts]), dim=0)
    lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    out = like.new_zeros(shape, dtype=torch.float32)
    for o, l in parts:
        out = out + o.float() * torch.exp(l - lse)[..., None]
    return out.to(like.dtype)


def strided_sdpa(q: Tensor, k: Tensor, v: Tensor, segments, dilations, mode="longnet",
                 is_causal=False, scale=None) -> Tensor:
    """(a): gather, SDPA, scatter back; differentiable through PyTorch autograd."""
    b, n, h, d = q.shape
    _check(n, segments)
    scale = 1 / math.sqrt(d) if scale is None else scale
    m = len(segments)
    if mode == "head_groups":
        out = torch.zeros_like(q)
        for i, w, r, o, heads in _head_sets(h, segments, dilations, mode):
            y = F.scaled_dot_product_attention(*(_gather(x, w, r, o, heads) for x in (q, k, v)),
                                               is_causal=is_causal, scale=scale)
            out = out.index_put(_index(b, n, w, r, o, heads, q.device), _rows(y, b, n, w, heads) / m)
        return out
    parts = []
    for i in range(m):
        out_i = torch.zeros_like(q)
        lse_i = q.new_full((b, n, h), -math.inf, dtype=torch.float32)
        for _, w, r, o, heads in (s for s in _head_sets(h, segments, dilations, mode) if s[0] == i):
            y, lse = sdpa_with_lse(*(_gather(x, w, r, o, heads) for x in (q, k, v)),
                                   causal=is_causal, scale=scale)
            index = _index(b, n, w, r, o, heads, q.device)
            out_i = out_i.index_put(index, _rows(y, b, n, w, heads))
            lse_i = lse_i.index_put(index, _rows(lse[..., None], b, n, w, heads)[..., 0].float())
        parts.append((out_i, lse_i))
    return _merge(parts, q.shape, q)


def _index(b, n, w, r, o, heads, device) -> Tuple[Tensor, ...]:
    """Advanced index (batch, position, head) of the rows a gathered call produced."""
    positions = (torch.arange(n // w, device=device)[:, None] * w
                 + torch.arange(o, w, r, device=device)[None, :]).reshape(-1)
    bi = torch.arange(b, device=device)[:, None, None]
    ti = positions[None, :, None]
    hi = torch.tensor(heads, device=device)[None, None, :]
    return bi, ti, hi


def _rows(y: Tensor, b: int, n: int, w: int, heads) -> Tensor:
    """[B * N/w, H_sel, L, D] -> [B, N/w * L, H_sel, D] matching _index."""
    return y.transpose(1, 2).reshape(b, -1, len(heads), y.shape[-1])


def prepare_gathered(q, k, v, segments, dilations, mode="longnet"):
    """(b), untimed part: every call's inputs, gathered and contiguous."""
    _check(q.shape[1], segments)
    return [tuple(_gather(x, w, r, o, heads).contiguous() for x in (q, k, v))
            for _, w, r, o, heads in _head_sets(q.shape[2], segments, dilations, mode)]


def gathered_sdpa(calls, is_causal=False, scale=None, with_lse=False):
    """(b), timed part: only the attention kernels."""
    scale = 1 / math.sqrt(calls[0][0].shape[-1]) if scale is None else scale
    if with_lse:
        return [sdpa_with_lse(q, k, v, is_causal, scale) for q, k, v in calls]
    return [F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)
            for q, k, v in calls]


def dense_sdpa(q, k, v, is_causal=False, scale=None):
    """(c): SDPA over the whole sequence, [B, N, H, D] in and out."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=is_causal, scale=scale).transpose(1, 2)
