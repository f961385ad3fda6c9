"""The torch custom ops: dilated_attention::forward and ::backward, with fake kernels and
autograd, so that the op works under torch.compile(fullgraph=True) and torch.library.opcheck.
"""

import contextlib
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import _C
from ._layer import Layer, check_block_mask, check_shapes, make_flat_layer

# float64 runs on the CPU reference backend only: for numerical checks such as gradcheck.
_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_tensors(q: Tensor, k: Tensor, v: Tensor, layer: Layer,
                  block_mask: Optional[Tensor] = None) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {type(t).__name__}, expected a torch.Tensor")
    check_shapes(q.shape, k.shape, v.shape, layer)
    if block_mask is not None and not isinstance(block_mask, Tensor):
        raise TypeError(f"block_mask: {type(block_mask).__name__}, expected a torch.Tensor like q")
    check_block_mask(block_mask, q.shape, layer)
    if block_mask is not None and block_mask.device != q.device:
        raise ValueError(f"block_mask: device {block_mask.device}, expected {q.device} like q")
    if q.dtype not in _DTYPES:
        raise TypeError(
            f"q: dtype {q.dtype}, expected torch.float32, torch.float16, torch.bfloat16 or "
            "torch.float64"
        )
    if q.dtype == torch.float64 and q.device.type == "cuda":
        raise TypeError("q: dtype torch.float64 on CUDA, expected a CPU tensor (float64 runs "
                        "on the CPU reference backend only, for numerical checks)")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: dtype {t.dtype}, expected {q.dtype} like q")
        if t.device != q.device:
            raise ValueError(f"{name}: device {t.device}, expected {q.device} like q")
    if q.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"q: device {q.device}, expected a CPU or CUDA tensor")


def _last_dim_contiguous(t: Tensor) -> Tensor:
    # The core takes any strides for B, N and H but a contiguous head_dim (DESIGN 2.1);
    # anything else is copied, and detached so that DLPack export accepts it.
    t = t.detach()
    if t.size(-1) > 1 and t.stride(-1) != 1:
        t = t.contiguous()
    return t


def _device_args(t: Tensor) -> dict:
    if t.device.type == "cuda":
        device = t.device
        return {
            "stream": torch.cuda.current_stream(device).cuda_stream,
            "workspace_allocator": lambda n: torch.empty(n, dtype=torch.uint8, device=device),
        }
    return {"num_threads": torch.get_num_threads()}


def _on_device(t: Tensor):
    # CUDA launches go to the current device; make it the tensors' device.
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _layer_args(layer: Layer, block_mask: Optional[Tensor]) -> dict:
    return {
        "segment_lengths": list(layer.segment_lengths),
        "dilation_rates": list(layer.dilation_rates),
        "mode": layer.mode,
        "is_causal": layer.is_causal,
        "scale": layer.scale,
        "head_offsets": layer.head_offsets,
        "backend": layer.backend,
        "block_size": layer.block_size,
        "block_patterns": list(layer.block_patterns),
        "block_mask": None if block_mask is None else block_mask.detach().contiguous(),
        "grid": list(layer.grid),
    }


def _layer_of(segment_lengths, dilation_rates, mode, is_causal, scale, head_offsets, backend,
              block_size, block_patterns, grid):
    return make_flat_layer(segment_lengths, dilation_rates, mode, is_causal, scale, head_offsets,
                           backend, block_size, block_patterns, grid)


def _empty_outputs(q: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
    b, n, h, _ = q.shape
    out = q.new_empty((b, n, h, v.shape[3]))
    lse = q.new_empty((b, h, n), dtype=torch.float32)
    return out, lse


@torch.library.custom_op("dilated_attention::forward", mutates_args=())
def forward_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    segment_lengths: List[int],
    dilation_rates: List[int],
    mode: str,
    is_causal: bool,
    scale: Optional[float],
    head_offsets: str,
    backend: str,
    block_size: int,
    block_patterns: List[int],
    block_mask: Optional[Tensor],
    grid: List[int],
) -> Tuple[Tensor, Tensor]:
    layer = _layer_of(segment_lengths, dilation_rates, mode, is_causal, scale, head_offsets, backend,
                      block_size, block_patterns, grid)
    check_tensors(q, k, v, layer, block_mask)
    out, lse = _empty_outputs(q, v)
    if out.numel() == 0:
        lse.fill_(float("-inf"))
        return out.zero_(), lse
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    with _on_device(q):
        _C.forward(q, k, v, out, lse, **_layer_args(layer, block_mask), **_device_args(q))
    return out, lse


@forward_op.register_fake
def _forward_fake(q, k, v, segment_lengths, dilation_rates, mode, is_causal, scale,
                  head_offsets, backend, block_size, block_patterns, block_mask, grid):
    layer = _layer_of(segment_lengths, dilation_rates, mode, is_causal, scale, head_offsets, backend,
                      block_size, block_patterns, grid)
    check_tensors(q, k, v, layer, block_mask)
    return _empty_outputs(q, v)


@torch.library.custom_op("dilated_attention::backward", mutates_args=())
def backward_op(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    segment_lengths: List[int],
    dilation_rates: List[int],
    mode: str,
    is_causal: bool,
    scale: Optional[float],
    head_offsets: str,
    backend: str,
    block_size: int,
    block_patterns: List[int],
    block_mask: Optional[Tensor],
    grid: List[int],
) -> Tuple[Tensor, Tensor, Tensor]:
    layer = _layer_of(segment_lengths, dilation_rates, mode, is_causal, scale, head_offsets, backend,
                      block_size, block_patterns, grid)
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    if q.numel() == 0 or k.numel() == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    dout, q, k, v, out = (_last_dim_contiguous(t) for t in (dout, q, k, v, out))
    deterministic = torch.are_deterministic_algorithms_enabled()
    with _on_device(q):
        _C.backward(dout, q, k, v, out, lse.detach().contiguous(), dq, dk, dv,
                    **_layer_args(layer, block_mask), deterministic=deterministic,
                    **_device_args(q))
    return dq, dk, dv


@backward_op.register_fake
def _backward_fake(dout, q, k, v, out, lse, segment_lengths, dilation_rates, mode, is_causal,
                   scale, head_offsets, backend, block_size, block_patterns, block_mask, grid):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape))


_MASK_AT = 12  # block_mask's index among forward_op's inputs


def _setup_context(ctx, inputs, output):
    q, k, v, *layer = inputs
    out, lse = output
    # The block mask (a tensor among the layer's options) is saved like the other tensors.
    mask = inputs[_MASK_AT]
    ctx.save_for_backward(q, k, v, out, lse, mask)
    ctx.layer = layer
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, _dlse):
    # lse is marked non-differentiable: the core's backward takes no gradient for it; neither
    # do the block mask nor topk's choice of blocks (docs/design.md 1.1).
    q, k, v, out, lse, mask = ctx.saved_tensors
    layer = list(ctx.layer)
    layer[_MASK_AT - 3] = mask
    dq, dk, dv = backward_op(dout, q, k, v, out, lse, *layer)
    return (dq, dk, dv) + (None,) * len(ctx.layer)


forward_op.register_autograd(_backward, setup_context=_setup_context)


def attention(q: Tensor, k: Tensor, v: Tensor, layer: Layer,
              block_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    check_tensors(q, k, v, layer, block_mask)
    return forward_op(q, k, v, list(layer.segment_lengths), list(layer.dilation_rates),
                      layer.mode, layer.is_causal, layer.scale, layer.head_offsets, layer.backend,
                      layer.block_size, list(layer.block_patterns), block_mask, list(layer.grid))
