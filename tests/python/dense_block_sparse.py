"""Block-sparse patterns and Hilbert order (docs/design.md 1.1-1.2) written as dense masked
attention in float64 torch, independent of the C++ code (the grid's curve comes from
dilated_attention.hilbert_order, whose properties test_block_sparse checks)."""

import math

import torch

from dense_reference import multiplicity
from dilated_attention import hilbert_order

MASK64 = (1 << 64) - 1


def _mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def random_blocks(seed, head, block, candidates, k):
    """The documented generator: Floyd's sampling from words of a splitmix64-mixed stream."""
    count = min(k, candidates)
    stream = _mix((_mix((_mix(seed) + head) & MASK64) + block) & MASK64)
    chosen = []
    for i in range(count):
        j = candidates - count + i
        word = _mix((stream + (i + 1) * 0x9E3779B97F4A7C15) & MASK64)
        t = (word * (j + 1)) >> 64
        chosen.append(j if t in chosen else t)
    return chosen


def block_multiplicity(q, k, block_size, patterns, causal, mask=None):
    """[B, H, N, N]: how many block patterns pair query t with key t' (curve positions).

    patterns: ("local", W), ("global", g), ("dilated", s, c), ("random", k, seed), ("topk", k),
    ("mask",) with mask [1 or H, NB, NB]."""
    b_size, n, h, _ = q.shape
    group = h // k.shape[2]
    nb = -(-n // block_size)
    blk = torch.arange(n) // block_size
    I, J = torch.meshgrid(torch.arange(nb), torch.arange(nb), indexing="ij")
    mult = torch.zeros(b_size, h, n, n, dtype=torch.float64)
    for pattern in patterns:
        kind = pattern[0]
        kept = torch.zeros(b_size, h, nb, nb, dtype=torch.bool)
        if kind == "local":
            kept[:] = (I - J).abs() <= pattern[1]
        elif kind == "global":
            kept[:] = (I < pattern[1]) | (J < pattern[1])
        elif kind == "dilated":
            s, c = pattern[1], pattern[2]
            kept[:] = ((J - I) % s == 0) & ((J - I).abs() // s <= c)
        elif kind == "random":
            for head in range(h):
                for i in range(nb):
                    cands = i + 1 if causal else nb
                    kept[:, head, i, random_blocks(pattern[2], head, i, cands, pattern[1])] = True
        elif kind == "topk":
            for b in range(b_size):
                for head in range(h):
                    means = [(x[b, i * block_size:(i + 1) * block_size].double().mean(0))
                             for x in (q[:, :, head], k[:, :, head // group]) for i in range(nb)]
                    q_means, k_means = means[:nb], means[nb:]
                    for i in range(nb):
                        cands = [j for j in range(i if causal else nb) if j != i]
                        score = {j: float(q_means[i] @ k_means[j]) for j in cands}
                        best = sorted(cands, key=lambda j: (-score[j], j))[: pattern[1]]
                        kept[b, head, i, best + [i]] = True
        elif kind == "mask":
            kept[:] = mask.bool().expand(h, nb, nb)
        mult += kept[:, :, blk][:, :, :, blk].double()
    if causal:
        mult *= torch.tril(torch.ones(n, n, dtype=torch.float64))
    return mult


def dense_block_sparse_attention(q, k, v, segments=(), dilations=(), mode="longnet",
                                 is_causal=False, scale=None, head_offsets="paper",
                                 block_size=64, patterns=(), mask=None, grid=None):
    """Returns (out [B, N, H, Dv], lse [B, H, N]) in float64, in row-major token order;
    differentiable in q, k, v (not through topk's choice)."""
    b, n, h, d = q.shape
    order = torch.tensor(hilbert_order(*grid)) if grid else torch.arange(n)
    q, k, v = (x.to(torch.float64)[:, order] for x in (q, k, v))
    mult = block_multiplicity(q.detach(), k.detach(), block_size, patterns, is_causal, mask)
    if segments:
        mult = mult + multiplicity(n, h, segments, dilations, mode, is_causal, head_offsets)
    group = h // k.shape[2]
    k = k.repeat_interleave(group, dim=2)
    v = v.repeat_interleave(group, dim=2)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) * scale
    has_key = mult.sum(-1) > 0
    logits = torch.where(mult > 0, scores + mult.clamp_min(1e-300).log(),
                         torch.full_like(scores, -math.inf))
    logits = torch.where(has_key[..., None], logits, torch.zeros_like(logits))
    lse = torch.logsumexp(logits, dim=-1)
    weights = torch.exp(logits - lse[..., None]) * has_key[..., None]
    out = torch.einsum("bhnm,bmhd->bnhd", weights, v)
    lse = torch.where(has_key, lse, torch.full_like(lse, -math.inf))
    if mode == "head_groups":
        out = out / len(segments)
    # Back to row-major order: curve position i holds token order[i].
    position_of = torch.argsort(order)
    return out[:, position_of], lse[..., position_of]
