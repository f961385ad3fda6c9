"""LongNet (encoder-decoder over embeddings) and LongNetLM (tokens in, logits out), with
dilated-attention-pytorch's signatures and defaults (the paper's base configuration).

Differences from the original: residual connections in every block (see transformer.py), a
sinusoidal position embedding instead of torchscale's XPOS (which overflows float32 at long
lengths when added to the input), num_encoder_layers or num_decoder_layers may be 0
(LongNetLM(num_decoder_layers=0) is a decoder-only, GPT-style stack when is_causal=True), and
the keyword-only `mode`.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .transformer import DilatedTransformerDecoderLayer, DilatedTransformerEncoderLayer

_SEGMENTS = (2048, 4096, 8192, 16384, 32768, 32768)
_DILATIONS = (1, 2, 4, 6, 12, 12)


class _Stack(nn.Module):
    """Holds `layers` like nn.TransformerEncoder, so that parameter names match the original."""

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = None


def _gammas(num_encoder_layers: int, num_decoder_layers: int):
    # MAGNETO's depth-dependent gains (Wang et al. 2022, Fig. 2); a missing stack drops its term.
    if num_decoder_layers == 0:
        return math.sqrt(math.log(2 * max(num_encoder_layers, 1))), 1.0
    decoder = math.sqrt(math.log(3 * num_decoder_layers))
    if num_encoder_layers == 0:
        return 1.0, decoder
    encoder = math.sqrt(math.log(3 * num_decoder_layers) * math.log(2 * num_encoder_layers) / 3)
    return encoder, decoder


class LongNet(nn.Module):
    def __init__(
        self,
        d_model: int = 768,
        nhead: int = 12,
        num_encoder_layers: int = 12,
        num_decoder_layers: int = 12,
        dim_feedforward: int = 3072,
        segment_lengths: Sequence[int] = _SEGMENTS,
        dilation_rates: Sequence[int] = _DILATIONS,
        dropout: float = 0.0,
        activation: Union[str, Callable[[Tensor], Tensor]] = F.relu,
        layer_norm_eps: float = 1e-5,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        *,
        mode: str = "head_groups",
        backend: str = "auto",
    ):
        super().__init__()
        encoder_gamma, decoder_gamma = _gammas(num_encoder_layers, num_decoder_layers)
        common = dict(d_model=d_model, nhead=nhead, segment_lengths=segment_lengths,
                      dilation_rates=dilation_rates, dim_feedforward=dim_feedforward,
                      dropout=dropout, activation=activation, layer_norm_eps=layer_norm_eps,
                      device=device, dtype=dtype, mode=mode, backend=backend)
        self.encoder = _Stack(DilatedTransformerEncoderLayer(gamma_init=encoder_gamma, **common)
                              for _ in range(num_encoder_layers))
        self.decoder = _Stack(DilatedTransformerDecoderLayer(gamma_init=decoder_gamma, **common)
                              for _ in range(num_decoder_layers))

    def forward(self, x: Tensor, is_causal: bool = True) -> Tensor:
        """[B, N, d_model] -> [B, N, d_model]; is_causal applies to every attention."""
        tgt = x
        for layer in self.encoder.layers:
            x = layer(x, is_causal=is_causal)
        if not self.decoder.layers:
            return x
        for layer in self.decoder.layers:
            tgt = layer(tgt, x, tgt_is_causal=is_causal, memory_is_causal=is_causal)
        return tgt


class SinusoidalPosition(nn.Module):
    """Fixed sin/cos position embedding (Vaswani et al. 2017), computed for any length."""

    def __init__(self, d_model: int, base: float = 10000.0):
        super().__init__()
        self.d_model = d_model
        self.base = base

    def forward(self, x: Tensor) -> Tensor:
        n, d = x.shape[-2], self.d_model
        position = torch.arange(n, device=x.device, dtype=torch.float32)[:, None]
        frequency = self.base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
        angle = position * frequency
        table = torch.zeros(n, d, device=x.device, dtype=torch.float32)
        table[:, 0::2] = torch.sin(angle)
        table[:, 1::2] = torch.cos(angle[:, : d // 2])
        return table.to(x.dtype)


class LongNetLM(nn.Module):
    """Token embedding + position, LongNet, a final LayerNorm and the vocabulary projection."""

    def __init__(
        self,
        num_tokens: int,
        d_model: int = 768,
        nhead: int = 12,
        num_encoder_layers: int = 12,
        num_decoder_layers: int = 12,
        dim_feedforward: int = 3072,
        segment_lengths: Sequence[int] = _SEGMENTS,
        dilation_rates: Sequence[int] = _DILATIONS,
        dropout: float = 0.0,
        activation: Union[str, Callable[[Tensor], Tensor]] = F.relu,
        layer_norm_eps: float = 1e-5,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        *,
        mode: str = "head_groups",
        backend: str = "auto",
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.token_embedding = nn.Embedding(num_tokens, d_model, **factory)
        self.pos_embedding = SinusoidalPosition(d_model)
        self.long_net = LongNet(
            d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward,
            segment_lengths, dilation_rates, dropout, activation, layer_norm_eps, mode=mode,
            backend=backend, **factory,
        )
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory)
        self.out = nn.Linear(d_model, num_tokens, **factory)
        nn.init.kaiming_normal_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, is_causal: bool = True) -> Tensor:
        """Token ids [B, N] -> logits [B, N, num_tokens]."""
        h = self.token_embedding(x)
        h = h + self.pos_embedding(h)
        return self.out(self.norm(self.long_net(h, is_causal=is_causal)))
