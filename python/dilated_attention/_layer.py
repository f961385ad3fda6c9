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
# dilated::BlockKind values, in the order the block options are listed.
BLOCK_KINDS = {"local": 0, "global": 1, "dilated": 2, "random": 3, "topk": 4, "mask": 5}


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
    # Block patterns as flat (kind, size, reach, seed) groups (a mask pattern reads the
    # block_mask array given with the call), their block size, and the grid (or ()).
    block_size: int = 64
    block_patterns: Tuple[int, ...] = ()
    grid: Tuple[int, ...] = ()

    @property
    def has_mask(self) -> bool:
        return BLOCK_KINDS["mask"] in self.block_patterns[0::4]


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


def _int_at_least(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} = {value!r}: expected an int") from None
    if value < lo:
        raise ValueError(f"{name} = {value}: expected an int >= {lo}")
    return int(value)


@dataclass(frozen=True)
class BlockOptions:
    """Block-sparse patterns and Hilbert order (docs/design.md 1.1-1.2), as the functional op
    and the modules take them; None leaves a pattern out."""

    block_size: int = 64
    local_blocks: Optional[int] = None  # local(W): |I - J| <= W
    global_blocks: Optional[int] = None  # global(g): I < g or J < g
    dilated_blocks: Optional[Tuple[int, int]] = None  # dilated_blocks(s, c): J = I + k s, |k| <= c
    random_blocks: Optional[int] = None  # random(k): k seeded key blocks per query block
    random_seed: int = 0
    topk_blocks: Optional[int] = None  # topk(k): the diagonal and the k best key blocks
    block_mask: object = None  # a bool [1 or H, NB, NB] array on q's device
    grid: Optional[Tuple[int, int]] = None  # (H, W): tokens of a row-major H x W grid

    def flat_patterns(self) -> Tuple[int, ...]:
        """Checks every option (naming it) and returns the (kind, size, reach, seed) groups."""
        _int_at_least("block_size", self.block_size, 1)
        flat = []
        if self.local_blocks is not None:
            flat += [BLOCK_KINDS["local"], _int_at_least("local_blocks", self.local_blocks, 0), 0, 0]
        if self.global_blocks is not None:
            g = _int_at_least("global_blocks", self.global_blocks, 1)
            flat += [BLOCK_KINDS["global"], g, 0, 0]
        if self.dilated_blocks is not None:
            try:
                s, c = self.dilated_blocks
            except (TypeError, ValueError):
                raise ValueError(
                    f"dilated_blocks = {self.dilated_blocks!r}: expected (stride s, count c)"
                ) from None
            flat += [BLOCK_KINDS["dilated"], _int_at_least("dilated_blocks[0] (stride s)", s, 1),
                     _int_at_least("dilated_blocks[1] (count c)", c, 0), 0]
        seed = _int_at_least("random_seed", self.random_seed, 0)
        if seed >= 2**63:
            raise ValueError(f"random_seed = {seed}: expected < 2**63")
        if self.random_blocks is not None:
            k = _int_at_least("random_blocks", self.random_blocks, 1)
            flat += [BLOCK_KINDS["random"], k, 0, seed]
        elif seed != 0:
            raise ValueError(f"random_seed = {seed}: expected together with random_blocks")
        if self.topk_blocks is not None:
            flat += [BLOCK_KINDS["topk"], _int_at_least("topk_blocks", self.topk_blocks, 0), 0, 0]
        if self.block_mask is not None:
            flat += [BLOCK_KINDS["mask"], 0, 0, 0]
        return tuple(flat)

    def grid_pair(self) -> Tuple[int, ...]:
        if self.grid is None:
            return ()
        try:
            h, w = self.grid
        except (TypeError, ValueError):
            raise ValueError(f"grid = {self.grid!r}: expected (height, width)") from None
        return (_int_at_least("grid[0] (height)", h, 1), _int_at_least("grid[1] (width)", w, 1))


def make_layer(
    segment_lengths: Sequence[int],
    dilation_rates: Sequence[int],
    mode: str = "longnet",
    is_causal: bool = False,
    scale: Optional[float] = None,
    head_offsets: str = "paper",
    backend: str = "auto",
    blocks: Optional[BlockOptions] = None,
) -> Layer:
    blocks = blocks or BlockOptions()
    return make_flat_layer(segment_lengths, dilation_rates, mode, is_causal, scale, head_offsets,
                           backend, blocks.block_size, blocks.flat_patterns(), blocks.grid_pair())


def make_flat_layer(
    segment_lengths: Sequence[int],
    dilation_rates: Sequence[int],
    mode: str,
    is_causal: bool,
    scale: Optional[float],
    head_offsets: str,
    backend: str,
    block_size: int,
    block_patterns: Sequence[int],
    grid: Sequence[int],
) -> Layer:
    """make_layer with the block patterns already flattened (as the custom ops carry them)."""
    block_patterns = _int_list("block_patterns", block_patterns)
    grid = _int_list("grid", grid)
    if len(block_patterns) % 4 or any(k not in BLOCK_KINDS.values() for k in block_patterns[0::4]):
        raise ValueError(f"block_patterns = {block_patterns}: expected (kind, size, reach, seed) "
                         "groups with kinds " + str(BLOCK_KINDS))
    segs = _int_list("segment_lengths", segment_lengths)
    dils = _int_list("dilation_rates", dilation_rates)
    # Block patterns alone make a longnet layer; head_groups needs a dilated pattern per group.
    fewest = 0 if block_patterns and mode == "longnet" else 1
    if not fewest <= len(segs) <= MAX_PATTERNS:
        raise ValueError(
            f"segment_lengths: {len(segs)} values, expected {fewest}..{MAX_PATTERNS} patterns"
            + ("" if fewest == 0 else " (0 only with block patterns in mode 'longnet')")
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
    return Layer(segs, dils, mode, is_causal, scale, head_offsets, backend,
                 _int_at_least("block_size", block_size, 1), block_patterns, grid)


def check_block_mask(mask, q_shape, layer: Layer) -> None:
    """A mask pattern's array: bool [1 or H, NB, NB], NB = ceil(N / block_size)."""
    if mask is None:
        if layer.has_mask:
            raise ValueError("block_mask: None, but the layer has a mask pattern")
        return
    _, n, h, _ = q_shape
    nb = -(-n // layer.block_size)
    shape = tuple(getattr(mask, "shape", ()))
    if len(shape) != 3 or shape[0] not in (1, h) or shape[1:] != (nb, nb):
        raise ValueError(
            f"block_mask: shape {shape}, expected (1 or {h}, {nb}, {nb}): heads, and "
            f"ceil(N / block_size) blocks for N = {n}, block_size = {layer.block_size}"
        )
    dtype = str(getattr(mask, "dtype", ""))
    if dtype not in ("bool", "torch.bool", "uint8", "torch.uint8"):
        raise TypeError(f"block_mask: dtype {dtype}, expected bool")


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
    if layer.grid and layer.grid[0] * layer.grid[1] != n:
        raise ValueError(
            f"grid = {layer.grid}: expected height * width = N = {n} tokens of q {tuple(q_shape)}"
        )
    if layer.mode == "head_groups" and h < len(layer.segment_lengths):
        raise ValueError(
            f"q: {h} heads, expected at least one per pattern in head_groups mode "
            f"({len(layer.segment_lengths)} patterns)"
        )
