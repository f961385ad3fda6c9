"""Checks of the layer options and input shapes, shared by every entry point.

Each check raises ValueError or TypeError naming the argument, its value and what was
expected, before any work; the C++ core validates again, so these only have to be early and
clear, not the last line of defence.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

MODES = ("longnet", "head_groups")
HEAD_OFFSETS = ("paper", "grouped")
MAX_PATTERNS = 16  # dilated::kMaxPatterns


@dataclass(frozen=True)
class Layer:
    """The options of one dilated-attention call, in the form the custom ops take."""

    segment_lengths: Tuple[int, ...]
    dilation_rates: Tuple[int, ...]
    mode: str
    is_causal: bool
    scale: Optional[float]
    head_offsets: str
    backend: str


def _int_list(name: str, values) -> Tuple[int, ...]:
    if isinstance(values, int) or values is None:
        raise TypeError(f"{name}: {values!r}, expected a sequence of ints")
    out = []
    for i, x in enumerate(values):
        if isinstance(x, bool) or not isinstance(x, int):
            try:
                x = operator.index(x)
            except TypeError:
                raise TypeError(f"{name}[{i}] = {x!r}: expected an int") from None
        out.append(int(x))
    return tuple(out)


def make_layer(
    segment_lengths: Sequence[int],
    dilation_rates: Sequence[int],
    mode: str = "longnet",
    is_causal: bool = False,
    scale: Optional[float] = None,
    head_offsets: str = "paper",
    backend: str = "auto",
) -> Layer:
    segs = _int_list("segment_lengths", segment_lengths)
    dils = _int_list("dilation_rates", dilation_rates)
    if not 1 <= len(segs) <= MAX_PATTERNS:
        raise ValueError(
            f"segment_lengths: {len(segs)} values, expected 1..{MAX_PATTERNS} patterns"
        )
    if len(dils) != len(segs):
        raise ValueError(
            f"dilation_rates: {len(dils)} values, expected one per segment length ({len(segs)})"
        )
    for i, (w, r) in enumerate(zip(segs, dils)):
        if w < 1:
            raise ValueError(f"segment_lengths[{i}] = {w}: expected a segment length >= 1")
        if not 1 <= r <= w:
            raise ValueError(
                f"dilation_rates[{i}] = {r}: expected 1 <= dilation <= segment_lengths[{i}] = {w}"
            )
    if mode not in MODES:
        raise ValueError(f"mode = {mode!r}: expected one of {MODES}")
    if head_offsets not in HEAD_OFFSETS:
        raise ValueError(f"head_offsets = {head_offsets!r}: expected one of {HEAD_OFFSETS}")
    if mode == "head_groups" and head_offsets != "paper":
        raise ValueError(
            f"head_offsets = {head_offsets!r}: applies to mode 'longnet' only "
            "(head_groups fixes the offset of group i to i % r_i)"
        )
    if not isinstance(is_causal, bool):
        raise TypeError(f"is_causal = {is_causal!r}: expected a bool")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale = {scale!r}: expected a float or None")
        scale = float(scale)
        if not math.isfinite(scale):
            raise ValueError(f"scale = {scale}: expected a finite number or None (1/sqrt(D))")
    if not isinstance(backend, str):
        raise TypeError(f"backend = {backend!r}: expected a backend name or 'auto'")
    return Layer(segs, dils, mode, is_causal, scale, head_offsets, backend)


def check_shapes(q_shape, k_shape, v_shape, layer: Layer) -> None:
    """q [B, N, H, D], k [B, N, Hkv, D], v [B, N, Hkv, Dv] with H % Hkv == 0."""
    for name, shape, heads in (("q", q_shape, "H"), ("k", k_shape, "Hkv"), ("v", v_shape, "Hkv")):
        if len(shape) != 4:
            raise ValueError(
                f"{name}: shape {tuple(shape)}, expected rank 4 [B, N, {heads}, D]"
            )
    b, n, h, d = q_shape
    for name, shape in (("k", k_shape), ("v", v_shape)):
        if shape[0] != b or shape[1] != n:
            raise ValueError(
                f"{name}: shape {tuple(shape)}, expected B = {b} and N = {n} like q {tuple(q_shape)}"
            )
    if k_shape[3] != d:
        raise ValueError(f"k: shape {tuple(k_shape)}, expected D = {d} like q in dimension 3")
    if v_shape[2] != k_shape[2]:
        raise ValueError(
            f"v: shape {tuple(v_shape)}, expected Hkv = {k_shape[2]} heads like k in dimension 2"
        )
    hkv = k_shape[2]
    if hkv < 1 or h % hkv != 0:
        raise ValueError(f"k: {hkv} heads, expected a divisor of the {h} heads of q")
    if d < 1 or v_shape[3] < 1:
        raise ValueError(f"q: shape {tuple(q_shape)}, expected a head dimension >= 1")
    if layer.mode == "head_groups" and h < len(layer.segment_lengths):
        raise ValueError(
            f"q: {h} heads, expected at least one per pattern in head_groups mode "
            f"({len(layer.segment_lengths)} patterns)"
        )
