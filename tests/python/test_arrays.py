"""Forward on NumPy arrays and other DLPack producers, returned as the caller's array kind."""

import numpy as np
import pytest
import torch

from conftest import relative_error
from dense_reference import dense_dilated_attention
from dilated_attention.functional import dilated_attention, dilated_attention_with_lse

FP32_TOL = 1e-5  # see test_functional.py


def _arrays(b=2, n=24, h=4, d=8, dtype=np.float32):
    rng = np.random.default_rng()
    return [rng.standard_normal((b, n, h, d)).astype(dtype) for _ in range(3)]


def test_numpy_forward_matches_dense(seed):
    q, k, v = _arrays()
    for a in (q, k, v):
        a.flags.writeable = False  # inputs are only read
    out, lse = dilated_attention_with_lse(q, k, v, (8, 24), (1, 3), is_causal=True)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == q.shape
    assert lse.shape == (2, 4, 24) and lse.dtype == np.float32
    ref, ref_lse = dense_dilated_attention(*(torch.from_numpy(a.copy()) for a in (q, k, v)),
                                           (8, 24), (1, 3), is_causal=True)
    assert relative_error(torch.from_numpy(out), ref) < FP32_TOL
    assert relative_error(torch.from_numpy(lse), ref_lse) < FP32_TOL


def test_numpy_strided_views_and_float16(seed):
    q, k, v = _arrays(n=48)
    views = [a[:, ::2] for a in (q, k, v)]  # row stride doubled: passed as is
    assert not views[0].flags.c_contiguous
    out = dilated_attention(*views, (8,), (2,), mode="head_groups")
    dense = dilated_attention(*(np.ascontiguousarray(a) for a in views), (8,), (2,),
                              mode="head_groups")
    assert np.array_equal(out, dense)
    half = dilated_attention(*(a.astype(np.float16) for a in views), (8,), (2,))
    assert half.dtype == np.float16


def test_numpy_agrees_with_torch(seed):
    q, k, v = _arrays()
    out = dilated_attention(q, k, v, (8, 16), (2, 4), head_offsets="grouped")
    ref = dilated_attention(*(torch.from_numpy(a) for a in (q, k, v)), (8, 16), (2, 4),
                            head_offsets="grouped")
    assert np.array_equal(out, ref.numpy())


class _Foreign:
    """An array type that only speaks DLPack (as CuPy or JAX arrays do)."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()

    def __array_namespace__(self):
        return _ForeignNamespace


class _ForeignNamespace:
    @staticmethod
    def from_dlpack(x):
        return _Foreign(np.from_dlpack(x))


def test_other_dlpack_arrays_come_back_as_their_kind(seed):
    q, k, v = _arrays()
    out = dilated_attention(*(_Foreign(a) for a in (q, k, v)), (8, 16), (1, 2))
    assert isinstance(out, _Foreign)
    assert np.array_equal(out.array, dilated_attention(q, k, v, (8, 16), (1, 2)))


def test_jax_arrays_if_installed(seed):
    jnp = pytest.importorskip("jax.numpy")
    q, k, v = _arrays()
    out = dilated_attention(*(jnp.asarray(a) for a in (q, k, v)), (8, 16), (1, 2))
    assert type(out).__module__.startswith("jax")
    # JAX may place the arrays on a GPU: then the CUDA backend computes them, in float32 with
    # another summation order than the host backend (agreement to ~1e-7 relative).
    np.testing.assert_allclose(np.asarray(out), dilated_attention(q, k, v, (8, 16), (1, 2)),
                               rtol=1e-5, atol=1e-6)
    half = dilated_attention(*(jnp.asarray(a, dtype=jnp.bfloat16) for a in (q, k, v)), (8,), (2,))
    assert half.dtype == jnp.bfloat16 and half.shape == q.shape
