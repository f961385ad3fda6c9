"""Bad input raises ValueError / TypeError naming the argument and what was expected."""

import math

import numpy as np
import pytest
import torch

from dilated_attention import _C
from dilated_attention.functional import dilated_attention


def qkv(b=1, n=16, h=4, d=8, dtype=torch.float32):
    return [torch.randn(b, n, h, d).to(dtype) for _ in range(3)]


CASES = [
    # (description, change to (q, k, v, kwargs), exception, message pattern)
    ("q rank 3", lambda q, k, v, kw: (q[0], k, v, kw), ValueError,
     r"q: shape \(16, 4, 8\), expected rank 4 \[B, N, H, D\]"),
    ("k length", lambda q, k, v, kw: (q, k[:, :8], v, kw), ValueError,
     r"k: shape \(1, 8, 4, 8\), expected B = 1 and N = 16"),
    ("k head dim", lambda q, k, v, kw: (q, k[..., :4], v, kw), ValueError,
     r"k: shape \(1, 16, 4, 4\), expected D = 8"),
    ("heads not divisible", lambda q, k, v, kw: (q, k[:, :, :3], v[:, :, :3], kw), ValueError,
     r"k: 3 heads, expected a divisor of the 4 heads of q"),
    ("dtype mix", lambda q, k, v, kw: (q, k.half(), v, kw), TypeError,
     r"k: dtype torch.float16, expected torch.float32 like q"),
    ("complex", lambda q, k, v, kw: (q.cfloat(), k.cfloat(), v.cfloat(), kw), TypeError,
     r"q: dtype torch.complex64, expected torch.float32, torch.float16, torch.bfloat16 or "
     r"torch.float64"),
    ("integer", lambda q, k, v, kw: (q.int(), k.int(), v.int(), kw), TypeError,
     r"q: dtype torch.int32"),
    ("device mix", lambda q, k, v, kw: (q, k, v.to("meta"), kw), ValueError,
     r"v: device meta, expected cpu like q"),
    ("numpy with torch", lambda q, k, v, kw: (q.numpy(), k, v, kw), TypeError,
     r"k: Tensor, expected a numpy.ndarray like q"),
    ("not an array", lambda q, k, v, kw: ([1.0], k, v, kw), TypeError,
     r"q: list, expected a torch.Tensor, numpy.ndarray or an array with __dlpack__"),
    ("numpy int32", lambda q, k, v, kw: (q.int().numpy(), k.int().numpy(),
                                         v.int().numpy(), kw), TypeError,
     r"q: dtype int32, expected float32, float16 or float64"),
    ("pattern count", lambda q, k, v, kw: (q, k, v, {**kw, "dilation_rates": (1,)}), ValueError,
     r"dilation_rates: 1 values, expected one per segment length \(2\)"),
    ("dilation too big", lambda q, k, v, kw: (q, k, v, {**kw, "dilation_rates": (1, 9)}),
     ValueError, r"dilation_rates\[1\] = 9: expected 1 <= dilation <= segment_lengths\[1\] = 8"),
    ("segment zero", lambda q, k, v, kw: (q, k, v, {**kw, "segment_lengths": (0, 8)}),
     ValueError, r"segment_lengths\[0\] = 0: expected a segment length >= 1"),
    ("segment not int", lambda q, k, v, kw: (q, k, v, {**kw, "segment_lengths": (4.5, 8)}),
     TypeError, r"segment_lengths\[0\] = 4.5: expected an int"),
    ("mode", lambda q, k, v, kw: (q, k, v, {**kw, "mode": "dense"}), ValueError,
     r"mode = 'dense': expected one of \('longnet', 'head_groups'\)"),
    ("offsets in head_groups", lambda q, k, v, kw: (q, k, v, {**kw, "mode": "head_groups",
                                                               "head_offsets": "grouped"}),
     ValueError, r"head_offsets = 'grouped': applies to mode 'longnet' only"),
    ("scale", lambda q, k, v, kw: (q, k, v, {**kw, "scale": math.inf}), ValueError,
     r"scale = inf: expected a finite number"),
    ("too few heads for groups", lambda q, k, v, kw: (q[:, :, :1], k[:, :, :1], v[:, :, :1],
                                                      {**kw, "mode": "head_groups"}),
     ValueError, r"q: 1 heads, expected at least one per pattern in head_groups mode"),
    ("unknown backend", lambda q, k, v, kw: (q, k, v, {**kw, "backend": "tpu"}), ValueError,
     r"backend = tpu: expected auto or one of .*reference"),
]


@pytest.mark.parametrize("change,exc,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_names_argument(change, exc, pattern):
    q, k, v = qkv()
    kw = {"segment_lengths": (4, 8), "dilation_rates": (1, 2)}
    q, k, v, kw = change(q, k, v, kw)
    with pytest.raises(exc, match=pattern):
        dilated_attention(q, k, v, **kw)


def _binding_args(q, k, v, out, lse):
    return dict(q=q, k=k, v=v, out=out, lse=lse, segment_lengths=[4], dilation_rates=[1],
                mode="longnet", is_causal=False, scale=None, head_offsets="paper")


def test_binding_checks_outputs_too():
    # The C++ layer checks what Python hands it, so that no shape mix reaches the kernels.
    q, k, v = (np.ones((1, 8, 2, 4), np.float32) for _ in range(3))
    lse = np.empty((1, 2, 8), np.float32)
    with pytest.raises(TypeError, match="out: dtype float16, expected float32 like q"):
        _C.forward(**_binding_args(q, k, v, np.empty((1, 8, 2, 4), np.float16), lse))
    with pytest.raises(ValueError, match=r"out: shape \[1, 8, 3, 4\], expected H = 2"):
        _C.forward(**_binding_args(q, k, v, np.empty((1, 8, 3, 4), np.float32), lse))
    with pytest.raises(ValueError, match=r"lse: shape \[1, 8, 2\], expected a contiguous"):
        _C.forward(**_binding_args(q, k, v, np.empty_like(q), np.empty((1, 8, 2), np.float32)))
    with pytest.raises(ValueError, match="q: stride 2 in the last dimension, expected 1"):
        wide = np.ones((1, 8, 2, 8), np.float32)[..., ::2]
        _C.forward(**_binding_args(wide, k, v, np.empty_like(q), lse))
