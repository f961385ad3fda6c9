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

from ._layer import BlockOptions, make_layer
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


# Keyword-only block-sparse and grid options every module takes (see dilated_attention).
_BLOCK_DEFAULTS = {
    "block_size": 64,
    "local_blocks": None,
    "global_blocks": None,
    "dilated_blocks": None,
    "random_blocks": None,
    "random_seed": 0,
    "topk_blocks": None,
    "block_mask": None,
    "grid": None,
}


class DilatedAttention(nn.Module):
    """Dilated scaled-dot-product attention on [B, N, H, D] tensors.

    Keyword-only block_size, local_blocks, global_blocks, dilated_blocks, random_blocks,
    random_seed, topk_blocks, block_mask and grid add block-sparse patterns and Hilbert order
    as in dilated_attention; a block_mask tensor becomes a buffer (it follows .to()).
    """

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
        **block_options,
    ):
        super().__init__()
        del op, op_type  # xformers operator choice: meaningless here
        unknown = sorted(set(block_options) - set(_BLOCK_DEFAULTS))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unexpected keyword arguments {unknown}")
        options = {**_BLOCK_DEFAULTS, **block_options}
        # Fail at construction, not at the first forward.
        make_layer(segment_lengths, dilation_rates, mode, False, softmax_scale, head_offsets,
                   backend, BlockOptions(**options))
        self.segment_lengths = tuple(int(w) for w in segment_lengths)
        self.dilation_rates = tuple(int(r) for r in dilation_rates)
        self.softmax_scale = softmax_scale
        self.dropout_p = float(attention_dropout)
        self.mode = mode
        self.head_offsets = head_offsets
        self.backend = backend
        mask = options.pop("block_mask")
        self.register_buffer("block_mask", None if mask is None else torch.as_tensor(mask),
                             persistent=False)
        self.block_options = options
        _warn_attention_dropout(self.dropout_p)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, is_causal: bool = False) -> Tensor:
        return dilated_attention(
            query, key, value, self.segment_lengths, self.dilation_rates, mode=self.mode,
            is_causal=is_causal, scale=self.softmax_scale, head_offsets=self.head_offsets,
            backend=self.backend, block_mask=self.block_mask, **self.block_options,
        )

    def extra_repr(self) -> str:
        text = (f"segment_lengths={self.segment_lengths}, dilation_rates={self.dilation_rates}, "
                f"mode={self.mode!r}")
        chosen = {k: v for k, v in self.block_options.items() if v != _BLOCK_DEFAULTS[k]}
        if chosen or self.block_mask is not None:
            text += ", " + ", ".join(f"{k}={v!r}" for k, v in chosen.items())
            if self.block_mask is not None:
                text += f", block_mask={tuple(self.block_mask.shape)}"
        return text


class BlockSparseDilatedAttention(DilatedAttention):
    """Block-sparse and dilated patterns in one union softmax (docs/design.md 1.1), on
    [B, N, H, D] tensors; mode "longnet" by default, and the dilated patterns optional.

        attn = BlockSparseDilatedAttention(local_blocks=1, global_blocks=1, random_blocks=2)
        out = attn(q, k, v, is_causal=True)
    """

    def __init__(
        self,
        segment_lengths: Sequence[int] = (),
        dilation_rates: Sequence[int] = (),
        softmax_scale: Optional[float] = None,
        attention_dropout: float = 0.0,
        *,
        mode: str = "longnet",
        head_offsets: str = "paper",
        backend: str = "auto",
        **block_options,
    ):
        super().__init__(segment_lengths, dilation_rates, softmax_scale, attention_dropout,
                         mode=mode, head_offsets=head_offsets, backend=backend, **block_options)


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
        **block_options,
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
            head_offsets=head_offsets, backend=backend, **block_options,
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


class BlockSparseMultiheadDilatedAttention(MultiheadDilatedAttention):
    """MultiheadDilatedAttention whose attention mixes block-sparse and dilated patterns
    (BlockSparseDilatedAttention): mode "longnet" by default, dilated patterns optional.

        mha = BlockSparseMultiheadDilatedAttention(512, 8, local_blocks=1, topk_blocks=2)
        out, _ = mha(x, x, x, is_causal=True)
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dilation_rates: Sequence[int] = (),
        segment_lengths: Sequence[int] = (),
        dropout: float = 0.0,
        bias: bool = True,
        layer_norm: bool = True,
        layer_norm_eps: float = 1e-5,
        gamma_init: float = 1.0,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
        *,
        mode: str = "longnet",
        head_offsets: str = "paper",
        backend: str = "auto",
        **block_options,
    ):
        super().__init__(embed_dim, num_heads, dilation_rates, segment_lengths, dropout, bias,
                         layer_norm, layer_norm_eps, gamma_init, device, dtype, mode=mode,
                         head_offsets=head_offsets, backend=backend, **block_options)
