"""Transformer layers around MultiheadDilatedAttention, with dilated-attention-pytorch's
signatures and parameter names (norm1, self_attn, ..., linear2), MAGNETO's Sub-LN layout and
initialisation.

Unlike the original, each block adds its input back (x + f(x)): the original layers return
f(x) without residual connections, which prevents deep stacks from training. Parameter names
are the same, so the original's checkpoints load.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .modules import MultiheadDilatedAttention

Activation = Union[str, Callable[[Tensor], Tensor]]
_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _activation(activation: Activation) -> Callable[[Tensor], Tensor]:
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation = {activation!r}: expected one of {list(_ACTIVATIONS)}"
                             " or a callable")
        return _ACTIVATIONS[activation]
    return activation


def _init_feedforward(layer: nn.Module, gamma_init: float) -> None:
    for linear in (layer.linear1, layer.linear2):
        nn.init.xavier_normal_(linear.weight, gain=gamma_init)
        nn.init.zeros_(linear.bias)


class DilatedTransformerEncoderLayer(nn.Module):
    def __init__(
        self,
        d_model: int,
        nhead: int,
        segment_lengths: Sequence[int],
        dilation_rates: Sequence[int],
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = F.relu,
        layer_norm_eps: float = 1e-5,
        gamma_init: float = 1.0,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
        *,
        mode: str = "head_groups",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.activation = _activation(activation)
        self.gamma_init = gamma_init
        self.dropout = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory)
        self.self_attn = MultiheadDilatedAttention(
            d_model, nhead, dilation_rates, segment_lengths, dropout=dropout,
            layer_norm_eps=layer_norm_eps, gamma_init=gamma_init, mode=mode, backend=backend,
            **factory,
        )
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory)
        self.linear1 = nn.Linear(d_model, dim_feedforward, **factory)
        self.norm3 = nn.LayerNorm(dim_feedforward, eps=layer_norm_eps, **factory)
        self.linear2 = nn.Linear(dim_feedforward, d_model, **factory)
        _init_feedforward(self, gamma_init)

    def _feedforward(self, x: Tensor) -> Tensor:
        x = self.dropout(self.activation(self.linear1(self.norm2(x))))
        return self.dropout(self.linear2(self.norm3(x)))

    def forward(self, src: Tensor, is_causal: bool = False) -> Tensor:
        x = self.norm1(src)
        x = src + self.dropout(self.self_attn(x, x, x, is_causal=is_causal)[0])
        return x + self._feedforward(x)


class DilatedTransformerDecoderLayer(nn.Module):
    def __init__(
        self,
        d_model: int,
        nhead: int,
        segment_lengths: Sequence[int],
        dilation_rates: Sequence[int],
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = F.relu,
        layer_norm_eps: float = 1e-5,
        gamma_init: float = 1.0,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
        *,
        mode: str = "head_groups",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        attention = {"dropout": dropout, "layer_norm_eps": layer_norm_eps,
                     "gamma_init": gamma_init, "mode": mode, "backend": backend, **factory}
        self.activation = _activation(activation)
        self.gamma_init = gamma_init
        self.dropout = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory)
        self.self_attn = MultiheadDilatedAttention(
            d_model, nhead, dilation_rates, segment_lengths, **attention)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory)
        self.multihead_attn = MultiheadDilatedAttention(
            d_model, nhead, dilation_rates, segment_lengths, **attention)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory)
        self.linear1 = nn.Linear(d_model, dim_feedforward, **factory)
        self.norm4 = nn.LayerNorm(dim_feedforward, eps=layer_norm_eps, **factory)
        self.linear2 = nn.Linear(dim_feedforward, d_model, **factory)
        _init_feedforward(self, gamma_init)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> Tensor:
        x = self.norm1(tgt)
        x = tgt + self.dropout(self.self_attn(x, x, x, is_causal=tgt_is_causal)[0])
        y = self.norm2(x)
        x = x + self.dropout(self.multihead_attn(y, memory, memory, is_causal=memory_is_causal)[0])
        y = self.dropout(self.activation(self.linear1(self.norm3(x))))
        return x + self.dropout(self.linear2(self.norm4(y)))
