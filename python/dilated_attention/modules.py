"""Drop-in modules with dilated-attention-pytorch's signatures (argument names, order and
defaults), computed by this library's exact kernels.

Differences from the original, all deliberate:
- `mode` (keyword-only) picks the computation: "head_groups" (default here, the original's
  function) or "longnet" (the paper's union softmax).
- `softmax_scale` is honoured (the original accepts it but always uses 1/sqrt(D)).
- `attention_dropout` is accepted and, like in the original, not applied to attention
  probabilities; a warning says so once.
- `op` (an xformers operator in the original) is accepted and ignored.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ._layer import make_layer
from .functional import dilated_attention

_warned_dropout = False


def _warn_attention_dropout(p: float) -> None:
    global _warned_dropout
    if p > 0 and not _warned_dropout:
        _warned_dropout = True
        warnings.warn(
            f"attention_dropout = {p}: dropout on attention probabilities is not applied "
            "(dilated-attention-pytorch ignores it as well); dropout on layer outputs is.",
            stacklevel=3,
        )


class DilatedAttention(nn.Module):
    """Dilated scaled-dot-product attention on [B, N, H, D] tensors."""

    def __init__(
        self,
        segment_lengths: Sequence[int],
        dilation_rates: Sequence[int],
        softmax_scale: Optional[float] = None,
        attention_dropout: float = 0.0,
        op: object = None,
        *,
        op_type: object = None,
        mode: str = "head_groups",
        head_offsets: str = "paper",
        backend: str = "auto",
    ):
        super().__init__()
        del op, op_type  # xformers operator choice: meaningless here
        make_layer(segment_lengths, dilation_rates, mode, False, softmax_scale, head_offsets,
                   backend)  # fail at construction, not at the first forward
        self.segment_lengths = tuple(int(w) for w in segment_lengths)
        self.dilation_rates = tuple(int(r) for r in dilation_rates)
        self.softmax_scale = softmax_scale
        self.dropout_p = float(attention_dropout)
        self.mode = mode
        self.head_offsets = head_offsets
        self.backend = backend
        _warn_attention_dropout(self.dropout_p)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, is_causal: bool = False) -> Tensor:
        return dilated_attention(
            query, key, value, self.segment_lengths, self.dilation_rates, mode=self.mode,
            is_causal=is_causal, scale=self.softmax_scale, head_offsets=self.head_offsets,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (f"segment_lengths={self.segment_lengths}, dilation_rates={self.dilation_rates}, "
                f"mode={self.mode!r}")


class MultiheadDilatedAttention(nn.Module):
    """q/k/v projections, dilated attention, the MAGNETO LayerNorm, the output projection.

    forward(query, key, value, is_causal=False) on [B, N, embed_dim] returns (out, None).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dilation_rates: Sequence[int],
        segment_lengths: Sequence[int],
        dropout: float = 0.0,
        bias: bool = True,
        layer_norm: bool = True,
        layer_norm_eps: float = 1e-5,
        gamma_init: float = 1.0,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
        op: object = None,
        *,
        mode: str = "head_groups",
        head_offsets: str = "paper",
        backend: str = "auto",
    ):
        super().__init__()
        if num_heads < 1 or embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim = {embed_dim}: expected a multiple of num_heads = {num_heads}"
            )
        if len(dilation_rates) != len(segment_lengths):
            raise ValueError(
                f"dilation_rates: {len(dilation_rates)} values, expected one per segment length "
                f"({len(segment_lengths)})"
            )
        if mode == "head_groups" and num_heads < len(segment_lengths):
            raise ValueError(
                f"num_heads = {num_heads}: head_groups mode needs at least one head per "
                f"pattern ({len(segment_lengths)} patterns)"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.layer_norm = layer_norm
        self.gamma_init = gamma_init
        factory = {"device": device, "dtype": dtype}
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.attention = DilatedAttention(
            segment_lengths, dilation_rates, attention_dropout=dropout, op=op, mode=mode,
            head_offsets=head_offsets, backend=backend,
        )
        # MAGNETO (Sub-LN): a LayerNorm on the attention output, before the out projection.
        self.norm: Optional[nn.LayerNorm] = (
            nn.LayerNorm(embed_dim, eps=layer_norm_eps, **factory) if layer_norm else None
        )
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Xavier-normal everywhere; MAGNETO scales the value and output projections by
        # gamma_init, which depends on the depth of the whole model.
        for proj, gain in ((self.q_proj, 1.0), (self.k_proj, 1.0),
                           (self.v_proj, self.gamma_init), (self.out_proj, self.gamma_init)):
            nn.init.xavier_normal_(proj.weight, gain=gain)
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, is_causal: bool = False
    ) -> Tuple[Tensor, None]:
        b, n, _ = query.shape
        heads = (self.num_heads, self.embed_dim // self.num_heads)
        q = self.q_proj(query).unflatten(-1, heads)
        k = self.k_proj(key).unflatten(-1, heads)
        v = self.v_proj(value).unflatten(-1, heads)
        x = self.attention(q, k, v, is_causal=is_causal).flatten(-2)
        if self.norm is not None:
            x = self.norm(x)
        return self.out_proj(x), None
