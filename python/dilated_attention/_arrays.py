"""Forward on DLPack arrays other than torch tensors: NumPy directly, and any framework that
speaks DLPack (CuPy, JAX, ...) through torch.from_dlpack (NumPy without torch), without
copies. Results come back as the caller's array kind.
"""

from __future__ import annotations

import sys
from typing import Tuple

import numpy as np

from . import _C
from ._layer import Layer, check_block_mask, check_shapes

_CPU, _CUDA = 1, 2  # DLPack device types


def _numpy_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, layer: Layer, block_mask=None):
    check_shapes(q.shape, k.shape, v.shape, layer)
    if block_mask is not None:
        if not isinstance(block_mask, np.ndarray):
            raise TypeError(f"block_mask: {type(block_mask).__name__}, expected a numpy.ndarray "
                            "like q")
        block_mask = np.ascontiguousarray(block_mask)
    check_block_mask(block_mask, q.shape, layer)
    if q.dtype not in (np.float32, np.float16, np.float64):
        raise TypeError(f"q: dtype {q.dtype}, expected float32, float16 or float64")
    for name, a in (("k", k), ("v", v)):
        if a.dtype != q.dtype:
            raise TypeError(f"{name}: dtype {a.dtype}, expected {q.dtype} like q")
    # The core takes any non-negative strides for B, N and H and a contiguous head_dim;
    # other layouts are copied.
    q, k, v = (_head_dim_contiguous(a) for a in (q, k, v))
    b, n, h, _ = q.shape
    out = np.empty((b, n, h, v.shape[3]), dtype=q.dtype)
    lse = np.empty((b, h, n), dtype=np.float32)
    if out.size == 0:
        out.fill(0)
        lse.fill(-np.inf)
        return out, lse
    _C.forward(q, k, v, out, lse, segment_lengths=list(layer.segment_lengths),
               dilation_rates=list(layer.dilation_rates), mode=layer.mode,
               is_causal=layer.is_causal, scale=layer.scale, head_offsets=layer.head_offsets,
               backend=layer.backend, block_size=layer.block_size,
               block_patterns=list(layer.block_patterns), block_mask=block_mask,
               grid=list(layer.grid))
    return out, lse


def _head_dim_contiguous(a: np.ndarray) -> np.ndarray:
    if any(s < 0 for s in a.strides) or (a.shape[-1] > 1 and a.strides[-1] != a.itemsize):
        return np.ascontiguousarray(a)
    return a


def _dlpack_device(x) -> Tuple[int, int]:
    return tuple(int(i) for i in x.__dlpack_device__())


def _from_dlpack_like(like, array):
    """Wraps `array` (NumPy or torch) as the kind of array `like` is, through DLPack."""
    if hasattr(like, "__array_namespace__"):
        xp = like.__array_namespace__()
        if hasattr(xp, "from_dlpack"):
            return xp.from_dlpack(array)
    root = sys.modules.get(type(like).__module__.split(".")[0])
    for holder in (root, getattr(root, "numpy", None), getattr(root, "dlpack", None)):
        if holder is not None and hasattr(holder, "from_dlpack"):
            return holder.from_dlpack(array)
    raise TypeError(f"q: {type(like).__name__} has no from_dlpack to return the result with")


def array_attention(q, k, v, layer: Layer, block_mask=None):
    """Forward only, for NumPy arrays and other DLPack producers."""
    if isinstance(q, np.ndarray):
        for name, a in (("k", k), ("v", v)):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{name}: {type(a).__name__}, expected a numpy.ndarray like q")
        return _numpy_forward(q, k, v, layer, block_mask)
    for name, a in (("q", q), ("k", k), ("v", v)):
        if not hasattr(a, "__dlpack__"):
            raise TypeError(
                f"{name}: {type(a).__name__}, expected a torch.Tensor, numpy.ndarray or an "
                "array with __dlpack__ (CuPy, JAX, ...)"
            )
    device = _dlpack_device(q)
    for name, a in (("k", k), ("v", v)):
        if _dlpack_device(a) != device:
            raise ValueError(
                f"{name}: DLPack device {_dlpack_device(a)}, expected {device} like q"
            )
    if device[0] not in (_CPU, _CUDA):
        raise ValueError(f"q: DLPack device {device}, expected CPU or CUDA memory")
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        # torch imports any DLPack array without a copy (bfloat16 included) and, for CUDA
        # arrays, orders the producer's stream before its own current stream, where the op
        # then runs.
        from . import _torch_ops

        mask = None if block_mask is None else torch.from_dlpack(block_mask)
        with torch.no_grad():
            out, lse = _torch_ops.attention(*(torch.from_dlpack(a) for a in (q, k, v)), layer,
                                            mask)
    elif device[0] == _CPU:
        mask = None if block_mask is None else np.from_dlpack(block_mask)
        out, lse = _numpy_forward(*(np.from_dlpack(a) for a in (q, k, v)), layer, mask)
    else:
        raise TypeError("q: CUDA arrays other than torch tensors need torch installed")
    return _from_dlpack_like(q, out), _from_dlpack_like(q, lse)
