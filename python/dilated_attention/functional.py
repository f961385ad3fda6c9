"""dilated_attention(q, k, v, segment_lengths, dilation_rates, ...): exact dilated attention
(LongNet, arXiv 2307.02486) as defined in docs/design.md, section 2.

torch tensors go through the `dilated_attention::forward` custom op (autograd, fake kernel,
torch.compile); NumPy arrays and other DLPack arrays (CuPy, JAX) get the forward pass,
without copies, returned as the same kind of array.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

from ._layer import BlockOptions, make_layer

try:
    import torch
except ImportError:  # NumPy / DLPack use works without torch
    torch = None

__all__ = ["dilated_attention", "dilated_attention_with_lse", "hilbert_order"]


def dilated_attention(
    q,
    k,
    v,
    segment_lengths: Sequence[int] = (),
    dilation_rates: Sequence[int] = (),
    *,
    mode: str = "longnet",
    is_causal: bool = False,
    scale: Optional[float] = None,
    head_offsets: str = "paper",
    backend: str = "auto",
    block_size: int = 64,
    local_blocks: Optional[int] = None,
    global_blocks: Optional[int] = None,
    dilated_blocks: Optional[Tuple[int, int]] = None,
    random_blocks: Optional[int] = None,
    random_seed: int = 0,
    topk_blocks: Optional[int] = None,
    block_mask=None,
    grid: Optional[Tuple[int, int]] = None,
):
    """Dilated attention of q [B, N, H, D] over k [B, N, Hkv, D], v [B, N, Hkv, Dv].

    segment_lengths, dilation_rates: the patterns (w_i, r_i) of the layer.
    mode: "longnet" (one softmax over the union of every pattern's keys, the paper) or
        "head_groups" (dilated-attention-pytorch's split of heads into one group per pattern).
    is_causal: keys only up to the query position. scale: defaults to 1/sqrt(D).
    head_offsets: "paper" (head j uses offset j % r) or "grouped" (torchscale), longnet only.
    backend: "auto" or a backend name of dilated_attention.backends().

    Block-sparse patterns (docs/design.md 1.1) join the same union softmax, each counted once;
    with query block I = t // block_size and key block J = t' // block_size:
    local_blocks=W keeps |I - J| <= W; global_blocks=g keeps I < g or J < g;
    dilated_blocks=(s, c) keeps J = I + k*s for |k| <= c; random_blocks=k keeps k seeded
    random key blocks per head and query block (random_seed); topk_blocks=k keeps the diagonal
    and the k key blocks of largest <mean q_I, mean k_J> (no gradient through the choice);
    block_mask, a bool [1 or H, NB, NB] array on q's device, keeps its true entries. With block
    patterns, segment_lengths and dilation_rates may be empty (longnet mode).
    grid=(H, W): the N = H*W tokens form a row-major grid visited along a generalised Hilbert
    curve; segments and blocks follow the curve, results stay in row-major order.

    Returns out [B, N, H, Dv] in the inputs' dtype. Any strides work for B, N and H; a
    head dimension that is not contiguous is copied first.
    """
    return dilated_attention_with_lse(
        q, k, v, segment_lengths, dilation_rates, mode=mode, is_causal=is_causal, scale=scale,
        head_offsets=head_offsets, backend=backend, block_size=block_size,
        local_blocks=local_blocks, global_blocks=global_blocks, dilated_blocks=dilated_blocks,
        random_blocks=random_blocks, random_seed=random_seed, topk_blocks=topk_blocks,
        block_mask=block_mask, grid=grid,
    )[0]


def dilated_attention_with_lse(
    q,
    k,
    v,
    segment_lengths: Sequence[int] = (),
    dilation_rates: Sequence[int] = (),
    *,
    mode: str = "longnet",
    is_causal: bool = False,
    scale: Optional[float] = None,
    head_offsets: str = "paper",
    backend: str = "auto",
    block_size: int = 64,
    local_blocks: Optional[int] = None,
    global_blocks: Optional[int] = None,
    dilated_blocks: Optional[Tuple[int, int]] = None,
    random_blocks: Optional[int] = None,
    random_seed: int = 0,
    topk_blocks: Optional[int] = None,
    block_mask=None,
    grid: Optional[Tuple[int, int]] = None,
):
    """Like dilated_attention, and also returns lse [B, H, N] (float32, the log of each row's
    softmax denominator; -inf for rows that meet no key). lse is not differentiable."""
    blocks = BlockOptions(block_size, local_blocks, global_blocks, dilated_blocks, random_blocks,
                          random_seed, topk_blocks, block_mask, grid)
    layer = make_layer(segment_lengths, dilation_rates, mode, is_causal, scale, head_offsets, backend,
                       blocks)
    if torch is not None and isinstance(q, torch.Tensor):
        from . import _torch_ops

        return _torch_ops.attention(q, k, v, layer, block_mask)
    from ._arrays import array_attention

    return array_attention(q, k, v, layer, block_mask)


def hilbert_order(height: int, width: int):
    """The generalised Hilbert curve over a height x width grid (what grid=(height, width)
    uses): a list whose element i is the row-major index y * width + x of the i-th cell the
    curve visits. Consecutive cells are grid neighbours."""
    from . import _C

    return _C.hilbert_order(int(height), int(width))
