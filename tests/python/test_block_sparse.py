"""Block-sparse patterns and Hilbert order through the Python package: each pattern against
the dense float64 composition (forward and gradients), mixed with dilated patterns, both
modes, causal, GQA; the modules; NumPy inputs; opcheck; errors that name the argument."""

import numpy as np
import pytest
import torch

from conftest import randn, relative_error
from dense_block_sparse import dense_block_sparse_attention
from dilated_attention import (BlockSparseDilatedAttention, BlockSparseMultiheadDilatedAttention,
                               DilatedAttention, backends, hilbert_order)
from dilated_attention.functional import dilated_attention, dilated_attention_with_lse

CPU_BACKENDS = [b["name"] for b in backends()
                if b["device"] == "cpu" and not b["unavailable_reason"]]
# float32 kernels against float64 (as in test_functional).
FP32_TOL = 1e-5

# (name, keyword options, the dense composition's patterns)
PATTERNS = [
    ("local", dict(local_blocks=1), [("local", 1)]),
    ("global", dict(global_blocks=1), [("global", 1)]),
    ("dilated", dict(dilated_blocks=(2, 1)), [("dilated", 2, 1)]),
    ("random", dict(random_blocks=2, random_seed=7), [("random", 2, 7)]),
    ("topk", dict(topk_blocks=2), [("topk", 2)]),
    ("mask", dict(block_mask="mask"), [("mask",)]),
    ("all", dict(local_blocks=0, global_blocks=1, dilated_blocks=(3, 1), random_blocks=1,
                 random_seed=3, topk_blocks=1, block_mask="mask"),
     [("local", 0), ("global", 1), ("dilated", 3, 1), ("random", 1, 3), ("topk", 1), ("mask",)]),
]

LAYERS = [
    # (B, N, H, Hkv, segments, dilations, mode, causal, grid)
    (1, 45, 2, 2, (), (), "longnet", False, None),  # partial last block
    (2, 45, 4, 2, (), (), "longnet", True, None),  # GQA, causal
    (1, 48, 2, 1, (16, 48), (1, 3), "longnet", True, None),  # mixed with dilated, MQA
    (1, 40, 3, 3, (8, 20), (2, 2), "head_groups", False, None),  # blocks on every head
    (1, 42, 2, 2, (14,), (2,), "longnet", True, (6, 7)),  # Hilbert order of a 6 x 7 grid
]


def _problem(layer, options, block_size=8):
    b, n, h, hkv, segs, dils, mode, causal, grid = layer
    q = randn(b, n, h, 8, requires_grad=True)
    k = randn(b, n, hkv, 8, requires_grad=True)
    v = randn(b, n, hkv, 8, requires_grad=True)
    nb = -(-n // block_size)
    mask = torch.rand(h, nb, nb) < 0.3
    options = {key: (mask if value == "mask" else value) for key, value in options.items()}
    kw = dict(mode=mode, is_causal=causal, block_size=block_size, grid=grid, **options)
    return (q, k, v), segs, dils, kw, mask


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("layer", LAYERS, ids=lambda c: f"{c[6]}-n{c[1]}-h{c[2]}/{c[3]}-c{int(c[7])}"
                         f"-w{len(c[4])}{'-grid' if c[8] else ''}")
@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p[0])
def test_each_pattern_matches_dense_float64(pattern, layer, backend, seed):
    _, options, dense_patterns = pattern
    (q, k, v), segs, dils, kw, mask = _problem(layer, options)
    out, lse = dilated_attention_with_lse(q, k, v, segs, dils, backend=backend, **kw)
    dout = torch.randn_like(out)
    (out * dout).sum().backward()

    inputs = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref_out, ref_lse = dense_block_sparse_attention(
        *inputs, segs, dils, mode=kw["mode"], is_causal=kw["is_causal"], block_size=8,
        patterns=dense_patterns, mask=mask, grid=kw["grid"])
    (ref_out * dout.double()).sum().backward()
    assert relative_error(out, ref_out) < FP32_TOL
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite)
    assert relative_error(lse[finite], ref_lse[finite]) < FP32_TOL
    for name, ours, ref in zip("qkv", (q, k, v), inputs):
        assert relative_error(ours.grad, ref.grad) < FP32_TOL, name


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (2, 3), (3, 2), (5, 7), (13, 11),
                                   (16, 16), (17, 31), (64, 48), (31, 1000)])
def test_hilbert_order_is_a_neighbour_walk(shape):
    h, w = shape
    order = np.array(hilbert_order(h, w))
    assert sorted(order.tolist()) == list(range(h * w))
    y, x = order // w, order % w
    assert np.all(np.abs(np.diff(y)) + np.abs(np.diff(x)) == 1)


def test_grid_segments_are_compact():
    # A 64 x 64 grid in segments of 256 tokens: along the curve each segment is a 16 x 16
    # square, row-major it is 4 rows of 64.
    order = np.array(hilbert_order(64, 64)).reshape(-1, 256)
    spans = (order // 64).max(1) - (order // 64).min(1) + 1, (order % 64).max(1) - (order % 64).min(1) + 1
    assert np.all(spans[0] == 16) and np.all(spans[1] == 16)


def test_modules_match_the_functional_op(seed):
    (q, k, v), _, _, kw, mask = _problem(LAYERS[1], dict(local_blocks=1, random_blocks=1,
                                                         block_mask="mask"))
    kw.pop("mode")
    causal = kw.pop("is_causal")
    module = BlockSparseDilatedAttention(**kw)
    assert module.mode == "longnet" and torch.equal(module.block_mask, mask)
    expected = dilated_attention(q, k, v, is_causal=causal, **kw)
    assert torch.equal(module(q, k, v, is_causal=causal), expected)
    # The drop-in module takes the same keywords (head_groups by default: needs patterns).
    plain = DilatedAttention((16,), (1,), **kw)
    assert torch.equal(plain(q, k, v, is_causal=causal),
                       dilated_attention(q, k, v, (16,), (1,), mode="head_groups",
                                         is_causal=causal, **kw))
    assert "local_blocks=1" in repr(module)


def test_multihead_module_trains(seed):
    mha = BlockSparseMultiheadDilatedAttention(32, 4, (1,), (32,), local_blocks=1, topk_blocks=1,
                                               block_size=16, grid=(8, 8))
    x = torch.randn(2, 64, 32)
    out, weights = mha(x, x, x, is_causal=True)
    assert weights is None and out.shape == x.shape
    out.square().mean().backward()
    for name, p in mha.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert mha.q_proj.weight.grad.abs().sum() > 0


def test_mask_buffer_follows_the_module():
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    module = BlockSparseDilatedAttention(block_mask=mask, block_size=8)
    assert dict(module.named_buffers())["block_mask"].dtype == torch.bool
    assert "block_mask" not in module.state_dict()  # configuration, not a learned state


def test_numpy_inputs_match_torch(seed):
    (q, k, v), segs, dils, kw, mask = _problem(LAYERS[2], dict(topk_blocks=1, block_mask="mask"))
    expected = dilated_attention(q, k, v, segs, dils, **kw)
    kw["block_mask"] = mask.numpy()
    got = dilated_attention(*(x.detach().numpy() for x in (q, k, v)), segs, dils, **kw)
    assert isinstance(got, np.ndarray)
    assert np.abs(got - expected.detach().numpy()).max() == 0


def test_opcheck_with_block_patterns_and_mask(seed):
    (q, k, v), segs, dils, kw, mask = _problem(LAYERS[4], dict(local_blocks=1, block_mask="mask"))
    args = (q, k, v, list(segs), list(dils), kw["mode"], kw["is_causal"], None, "paper", "auto",
            8, [0, 1, 0, 0, 5, 0, 0, 0], mask, [6, 7])
    torch.library.opcheck(torch.ops.dilated_attention.forward.default, args)
    out, lse = torch.ops.dilated_attention.forward(*args)
    bwd = (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(), lse) + args[3:]
    torch.library.opcheck(torch.ops.dilated_attention.backward.default, bwd)


@pytest.mark.parametrize("options, error, named", [
    (dict(local_blocks=-1), ValueError, "local_blocks = -1"),
    (dict(global_blocks=0), ValueError, "global_blocks = 0"),
    (dict(dilated_blocks=(0, 1)), ValueError, "dilated_blocks[0] (stride s) = 0"),
    (dict(dilated_blocks=3), ValueError, "dilated_blocks = 3"),
    (dict(random_blocks=0), ValueError, "random_blocks = 0"),
    (dict(random_seed=4), ValueError, "random_seed = 4"),
    (dict(topk_blocks=1.5), TypeError, "topk_blocks = 1.5"),
    (dict(block_size=0, local_blocks=1), ValueError, "block_size = 0"),
    (dict(grid=(5, 5)), ValueError, "grid = (5, 5)"),
    (dict(block_mask=torch.ones(2, 3, 3, dtype=torch.bool)), ValueError, "block_mask: shape"),
    (dict(block_mask=torch.ones(2, 2, 2)), TypeError, "block_mask: dtype"),
])
def test_bad_options_name_the_argument(options, error, named):
    q = k = v = torch.randn(1, 16, 2, 4)
    with pytest.raises(error, match=None) as info:
        dilated_attention(q, k, v, (8,), (1,), block_size=options.pop("block_size", 8), **options)
    assert named in str(info.value)


def test_block_patterns_alone_need_longnet():
    q = k = v = torch.randn(1, 16, 2, 4)
    with pytest.raises(ValueError, match="segment_lengths: 0 values"):
        dilated_attention(q, k, v, mode="head_groups", local_blocks=1)
    with pytest.raises(ValueError, match="segment_lengths: 0 values"):
        dilated_attention(q, k, v)  # no pattern at all
