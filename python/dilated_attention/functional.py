"""dilated_attention(q, k, v, segment_lengths, dilation_rates, ...): exact dilated attention
(LongNet, arXiv 2307.02486) as defined in docs/design.md, section 2.

torch tensors go through the `dilated_attention::forward` custom op (autograd, fake kernel,
torch.compile); NumPy arrays and other DLPack arrays (CuPy, JAX) get the forward pass,
without copies, returned as the same kind of array.
"""

from __future__ import annotations

from typing import Optional, Sequence

from ._layer import make_layer

try:
    import torch
except ImportError:  # NumPy / DLPack use works without torch
    torch = None

__all__ = ["dilated_attention", "dilated_attention_with_lse"]


def dilated_attention(
    q,
    k,
    v,
    segment_lengths: Sequence[int],
    dilation_rates: Sequence[int],
    *,
    mode: str = "longnet",
    is_causal: bool = False,
    scale: Optional[float] = None,
    head_offsets: str = "paper",
    backend: str = "auto",
):
    """Dilated attention of q [B, N, H, D] over k [B, N, Hkv, D], v [B, N, Hkv, Dv].

    segment_lengths, dilation_rates: the patterns (w_i, r_i) of the layer.
    mode: "longnet" (one softmax over the union of every pattern's keys, the paper) or
        "head_groups" (dilated-attention-pytorch's split of heads into one group per pattern).
    is_causal: keys only up to the query position. scale: defaults to 1/sqrt(D).
    head_offsets: "paper" (head j uses offset j % r) or "grouped" (torchscale), longnet only.
    backend: "auto" or a backend name of dilated_attention.backends().

    Returns out [B, N, H, Dv] in the inputs' dtype. Any strides work for B, N and H; a
    head dimension that is not contiguous is copied first.
    """
    return dilated_attention_with_lse(
        q, k, v, segment_lengths, dilation_rates, mode=mode, is_causal=is_causal, scale=scale,
        head_offsets=head_offsets, backend=backend,
    )[0]


def dilated_attention_with_lse(
    q,
    k,
    v,
    segment_lengths: Sequence[int],
    dilation_rates: Sequence[int],
    *,
    mode: str = "longnet",
    is_causal: bool = False,
    scale: Optional[float] = None,
    head_offsets: str = "paper",
    backend: str = "auto",
):
    """Like dilated_attention, and also returns lse [B, H, N] (float32, the log of each row's
    softmax denominator; -inf for rows no pattern selects). lse is not differentiable."""
    layer = make_layer(segment_lengths, dilation_rates, mode, is_causal, scale, head_offsets, backend)
    if torch is not None and isinstance(q, torch.Tensor):
        from . import _torch_ops

        return _torch_ops.attention(q, k, v, layer)
    from ._arrays import array_attention

    return array_attention(q, k, v, layer)
