"""The drop-in modules: golden vectors, parity with a hand-written composition, init,
shapes, parameter names, causality."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import golden_cases, load_golden, relative_error
from dense_reference import dense_dilated_attention
from dilated_attention import (
    DilatedAttention,
    DilatedTransformerDecoderLayer,
    DilatedTransformerEncoderLayer,
    LongNet,
    LongNetLM,
    MultiheadDilatedAttention,
)
from dilated_attention.functional import dilated_attention

FP32_TOL = 1e-5  # see test_functional.py


@pytest.mark.parametrize("name", golden_cases())
def test_dilated_attention_module_golden(name):
    case, a = load_golden(name)
    # Positional arguments as dilated-attention-pytorch takes them.
    module = DilatedAttention(case["segs"], case["dils"], None, 0.0)
    q, k, v = (a[x].clone().requires_grad_() for x in ("q", "k", "v"))
    out = module(q, k, v, is_causal=case["causal"])
    out.backward(a["dout"])
    assert relative_error(out, a["out"]) < FP32_TOL
    for x, g in ((q, "dq"), (k, "dk"), (v, "dv")):
        assert relative_error(x.grad, a[g]) < FP32_TOL, g


def test_longnet_mode_is_one_argument_away(seed):
    q, k, v = (torch.randn(1, 32, 4, 8) for _ in range(3))
    groups = DilatedAttention((8, 16), (1, 2))(q, k, v)
    longnet = DilatedAttention((8, 16), (1, 2), mode="longnet")(q, k, v)
    assert relative_error(longnet, dilated_attention(q, k, v, (8, 16), (1, 2))) == 0
    assert relative_error(groups, longnet) > 1e-2


def test_softmax_scale_is_honoured(seed):
    q, k, v = (torch.randn(1, 16, 2, 8) for _ in range(3))
    out = DilatedAttention((8,), (2,), softmax_scale=0.9)(q, k, v)
    ref, _ = dense_dilated_attention(q, k, v, (8,), (2,), mode="head_groups", scale=0.9)
    assert relative_error(out, ref) < FP32_TOL


def _composition(params, heads, x, mem, attention):
    """in projections -> attention -> LayerNorm -> out projection, from a parameter dict."""
    embed = x.shape[-1]
    split = lambda t: t.reshape(*t.shape[:2], heads, embed // heads)
    q = split(F.linear(x, params["q_proj.weight"], params["q_proj.bias"]))
    k = split(F.linear(mem, params["k_proj.weight"], params["k_proj.bias"]))
    v = split(F.linear(mem, params["v_proj.weight"], params["v_proj.bias"]))
    y = attention(q, k, v).flatten(-2)
    y = F.layer_norm(y, (embed,), params["norm.weight"], params["norm.bias"], 1e-5)
    return F.linear(y, params["out_proj.weight"], params["out_proj.bias"])


@pytest.mark.parametrize("causal", [False, True])
def test_multihead_matches_hand_composition(causal, seed):
    m = MultiheadDilatedAttention(32, 4, dilation_rates=(1, 2), segment_lengths=(8, 16))
    with torch.no_grad():  # non-trivial biases and norm parameters
        for p in (m.q_proj.bias, m.k_proj.bias, m.v_proj.bias, m.norm.weight, m.norm.bias):
            p.normal_()
    x, mem = torch.randn(2, 24, 32), torch.randn(2, 24, 32)
    out, weights = m(x, mem, mem, is_causal=causal)
    assert weights is None and out.shape == (2, 24, 32)
    params = {n: p.detach() for n, p in m.named_parameters()}

    same_ops = _composition(params, 4, x, mem, lambda q, k, v: dilated_attention(
        q, k, v, (8, 16), (1, 2), mode="head_groups", is_causal=causal))
    assert relative_error(out, same_ops) < 1e-6  # the same float32 operations

    params64 = {n: p.double() for n, p in params.items()}
    ref = _composition(params64, 4, x.double(), mem.double(), lambda q, k, v: dense_dilated_attention(
        q, k, v, (8, 16), (1, 2), mode="head_groups", is_causal=causal)[0])
    # float32 projections and LayerNorm against float64 throughout: a few float32 ulps per
    # stage, amplified by LayerNorm's division by a standard deviation of order 0.1.
    assert relative_error(out, ref) < 1e-4


def test_multihead_initialisation_follows_magneto(seed):
    gamma = 2.0
    m = MultiheadDilatedAttention(256, 8, (1, 2), (16, 32), gamma_init=gamma)
    xavier = math.sqrt(2.0 / (256 + 256))
    for proj, gain in (("q_proj", 1), ("k_proj", 1), ("v_proj", gamma), ("out_proj", gamma)):
        layer = getattr(m, proj)
        # 65536 samples: the sample std is within 1% of the true one with high probability.
        assert abs(layer.weight.std().item() / (gain * xavier) - 1) < 0.03, proj
        assert torch.all(layer.bias == 0)


def test_multihead_errors():
    with pytest.raises(ValueError, match="embed_dim = 30: expected a multiple of num_heads = 4"):
        MultiheadDilatedAttention(30, 4, (1,), (8,))
    with pytest.raises(ValueError, match="dilation_rates: 2 values, expected one per segment"):
        MultiheadDilatedAttention(32, 4, (1, 2), (8,))
    with pytest.raises(ValueError, match=r"dilation_rates\[0\] = 9"):
        DilatedAttention((8,), (9,))


def test_layers_and_models_shapes_backward_and_names(seed):
    enc = DilatedTransformerEncoderLayer(32, 4, (8, 16), (1, 2), dim_feedforward=64, dropout=0.0)
    dec = DilatedTransformerDecoderLayer(32, 4, (8, 16), (1, 2), dim_feedforward=64, dropout=0.0)
    x, mem = torch.randn(2, 20, 32, requires_grad=True), torch.randn(2, 20, 32)
    y = dec(enc(x, is_causal=True), mem, tgt_is_causal=True, memory_is_causal=True)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Parameter names of dilated-attention-pytorch, so that its checkpoints load.
    names = {n for n, _ in enc.named_parameters()}
    assert {"norm1.weight", "self_attn.q_proj.weight", "self_attn.norm.weight",
            "self_attn.out_proj.bias", "norm2.weight", "linear1.weight", "norm3.weight",
            "linear2.bias"} <= names
    assert {"multihead_attn.k_proj.weight", "norm4.bias"} <= {n for n, _ in dec.named_parameters()}

    net = LongNet(32, 4, 1, 1, 64, (8, 16), (1, 2))
    assert net(torch.randn(1, 20, 32)).shape == (1, 20, 32)
    assert "encoder.layers.0.self_attn.v_proj.weight" in dict(net.named_parameters())
    lm = LongNetLM(11, 32, 4, 1, 0, 64, (8, 16), (1, 2), mode="longnet")
    tokens = torch.randint(0, 11, (2, 20))
    assert lm(tokens).shape == (2, 20, 11)


def test_lm_is_causal(seed):
    lm = LongNetLM(13, 32, 4, 1, 1, 64, (8, 16), (1, 2))
    tokens = torch.randint(0, 13, (1, 24))
    changed = tokens.clone()
    changed[0, 15] = (tokens[0, 15] + 1) % 13
    with torch.no_grad():
        a, b = lm(tokens), lm(changed)
    assert torch.equal(a[0, :15], b[0, :15])
    assert not torch.equal(a[0, 15:], b[0, 15:])


def test_lm_compiles_without_graph_breaks(seed):
    # aot_eager traces forward and backward like inductor does, without its C++ compile time.
    lm = LongNetLM(11, 32, 4, 1, 1, 64, (8, 16), (1, 2), mode="longnet")
    tokens = torch.randint(0, 11, (2, 32))
    compiled = torch.compile(lm, fullgraph=True, backend="aot_eager")
    loss = compiled(tokens).logsumexp(-1).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in lm.named_parameters()}
    lm.zero_grad()
    lm(tokens).logsumexp(-1).mean().backward()
    for n, p in lm.named_parameters():
        assert relative_error(grads[n], p.grad) < 1e-5, n
