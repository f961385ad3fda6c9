"""DESIGN 2.2-2.4 written as dense masked attention in float64 torch, independent of the
C++ code: every (query, key) pair gets its multiplicity (how many of the head's patterns
pair them), and one softmax runs over the keys with weight multiplicity * exp(score)."""

import math

import torch


def head_patterns(head, heads, segments, dilations, mode, head_offsets):
    """(w, r, offset) triples that query head `head` uses."""
    m = len(segments)
    if mode == "head_groups":
        sizes = [heads // m + (1 if i < heads % m else 0) for i in range(m)]
        group = next(i for i in range(m) if head < sum(sizes[: i + 1]))
        w, r = segments[group], dilations[group]
        return [(w, r, group % r)]
    triples = []
    for w, r in zip(segments, dilations):
        offset = head % r if head_offsets == "paper" else head // math.ceil(heads / r)
        triples.append((w, r, offset))
    return triples


def multiplicity(n, heads, segments, dilations, mode, causal, head_offsets):
    """[H, N, N] float64 count of patterns pairing query t with key t'."""
    t = torch.arange(n)
    mult = torch.zeros(heads, n, n, dtype=torch.float64)
    for head in range(heads):
        for w, r, o in head_patterns(head, heads, segments, dilations, mode, head_offsets):
            seg = t // w
            sel = (t - seg * w) % r == o
            pair = sel[:, None] & sel[None, :] & (seg[:, None] == seg[None, :])
            if causal:
                pair &= t[None, :] <= t[:, None]
            mult[head] += pair
    return mult


def dense_dilated_attention(q, k, v, segments, dilations, mode="longnet", is_causal=False,
                            scale=None, head_offsets="paper"):
    """Returns (out [B, N, H, Dv], lse [B, H, N]) in float64; differentiable."""
    b, n, h, d = q.shape
    group = h // k.shape[2]
    q, k, v = (x.to(torch.float64) for x in (q, k, v))
    k = k.repeat_interleave(group, dim=2)
    v = v.repeat_interleave(group, dim=2)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) * scale
    mult = multiplicity(n, h, segments, dilations, mode, is_causal, head_offsets).to(q.device)
    has_key = mult.sum(-1) > 0  # [H, N]
    logits = torch.where(mult > 0, scores + mult.clamp_min(1e-300).log(),
                         torch.full_like(scores, -math.inf))
    logits = torch.where(has_key[..., None], logits, torch.zeros_like(logits))
    lse = torch.logsumexp(logits, dim=-1)
    weights = torch.exp(logits - lse[..., None]) * has_key[..., None]
    out = torch.einsum("bhnm,bmhd->bnhd", weights, v)
    lse = torch.where(has_key, lse, torch.full_like(lse, -math.inf))
    if mode == "head_groups":
        out = out / len(segments)
    return out, lse
