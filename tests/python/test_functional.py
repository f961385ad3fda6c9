"""The torch op against the golden vectors and the dense float64 composition, its autograd
(gradcheck, retain_graph), torch.library.opcheck and torch.compile."""

import math
import warnings

import pytest
import torch

from conftest import golden_cases, load_golden, randn, relative_error
from dense_reference import dense_dilated_attention
from dilated_attention import backends
from dilated_attention.functional import dilated_attention, dilated_attention_with_lse

# Every CPU backend that runs here, by name; "auto" is what users get.
CPU_BACKENDS = ["auto"] + [b["name"] for b in backends()
                           if b["device"] == "cpu" and not b["unavailable_reason"]]

# The oracle accumulates in double and rounds each output once: float32 results are within
# half an ulp (6e-8 relative) of the exact value, and the dense composition is exact in
# float64. 1e-5 relative to the largest magnitude leaves a wide margin for the backend's
# float32 inputs and the composition's own float64 rounding, and still catches any wrong
# term (those are O(1)).
FP32_TOL = 1e-5

CASES = [
    # (B, N, H, Hkv, D, segments, dilations, mode, causal, scale, head_offsets)
    (2, 40, 4, 4, 8, (8, 16, 32), (1, 2, 4), "longnet", False, None, "paper"),
    (2, 40, 4, 4, 8, (8, 16, 32), (1, 2, 4), "longnet", True, None, "paper"),
    (1, 23, 3, 3, 8, (6, 10), (4, 3), "longnet", True, 0.5, "paper"),  # w % r != 0, short tail
    (1, 32, 4, 2, 8, (8, 16), (2, 4), "longnet", False, None, "grouped"),  # GQA
    (2, 30, 5, 5, 4, (8, 16), (1, 2), "head_groups", True, None, "paper"),  # uneven groups
    (1, 24, 4, 1, 8, (12, 24), (3, 6), "head_groups", False, 0.3, "paper"),  # MQA
]


def _run(case, dtype=torch.float32, device="cpu"):
    b, n, h, hkv, d, segs, dils, mode, causal, scale, offsets = case
    q = randn(b, n, h, d, dtype=dtype, device=device, requires_grad=True)
    k = randn(b, n, hkv, d, dtype=dtype, device=device, requires_grad=True)
    v = randn(b, n, hkv, d, dtype=dtype, device=device, requires_grad=True)
    kwargs = dict(mode=mode, is_causal=causal, scale=scale, head_offsets=offsets)
    return (q, k, v), segs, dils, kwargs


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[7]}-n{c[1]}-h{c[2]}/{c[3]}-c{int(c[8])}")
def test_forward_backward_match_dense_float64(case, backend, seed):
    (q, k, v), segs, dils, kw = _run(case)
    try:
        out, lse = dilated_attention_with_lse(q, k, v, segs, dils, backend=backend, **kw)
    except RuntimeError as e:
        if "cannot run this problem" in str(e):
            pytest.skip(str(e))
        raise
    dout = torch.randn_like(out)
    (out * dout).sum().backward()

    inputs = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref_out, ref_lse = dense_dilated_attention(*inputs, segs, dils, **kw)
    (ref_out * dout.double()).sum().backward()

    assert out.dtype == torch.float32 and out.shape == ref_out.shape
    assert relative_error(out, ref_out) < FP32_TOL
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite)
    assert relative_error(lse[finite], ref_lse[finite]) < FP32_TOL
    for name, ours, ref in zip("qkv", (q, k, v), inputs):
        assert relative_error(ours.grad, ref.grad) < FP32_TOL, name


@pytest.mark.parametrize("name", golden_cases())
def test_golden_head_groups(name):
    case, a = load_golden(name)
    q, k, v = (a[x].clone().requires_grad_() for x in ("q", "k", "v"))
    out = dilated_attention(q, k, v, case["segs"], case["dils"], mode="head_groups",
                            is_causal=case["causal"])
    out.backward(a["dout"])
    # Golden values are float64 results stored as float32 (README: ~1e-6 relative).
    assert relative_error(out, a["out"]) < FP32_TOL
    for x, g in ((q, "dq"), (k, "dk"), (v, "dv")):
        assert relative_error(x.grad, a[g]) < FP32_TOL, g


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision_matches_dense_on_rounded_inputs(dtype, tol, seed):
    # One rounding of the output to fp16 (2^-11) or bf16 (2^-8) relative; tol is 4x that.
    (q, k, v), segs, dils, kw = _run(CASES[1], dtype=dtype)
    out = dilated_attention(q, k, v, segs, dils, **kw)
    assert out.dtype == dtype
    ref, _ = dense_dilated_attention(q, k, v, segs, dils, **kw)
    assert relative_error(out, ref) < tol
    out.backward(torch.randn_like(out))
    assert all(x.grad.dtype == dtype and torch.isfinite(x.grad).all() for x in (q, k, v))


def _quantized(*shape):
    # Multiples of 2^-12 in (-2, 2): x +- eps with eps = 2^-10 is exact in float32, so the
    # finite differences see exactly the step gradcheck divides by.
    x = (torch.rand(*shape) * 4 - 2).mul(4096).round().div(4096)
    return x.requires_grad_()


@pytest.mark.parametrize("mode,causal", [("longnet", False), ("longnet", True),
                                         ("head_groups", True)])
def test_gradcheck_float32(mode, causal, seed):
    """gradcheck in float32, which runs the fast CPU backend (float64 runs the oracle).

    Central differences with eps = 2^-10 on exactly representable inputs: the only noise is
    the rounding of each float32 output (<= 2^-24 * |out| <= 2e-7 here), giving derivative
    errors <= 2 * 2e-7 / (2 * eps) ~ 2e-4; truncation is eps^2 / 6 * |f'''| ~ 1e-6. atol 1e-3
    is 5x the noise; a wrong gradient term is off by O(0.1..1).
    """
    q, k, v = (_quantized(1, 12, 2, 4) for _ in range(3))
    fn = lambda q, k, v: dilated_attention(q, k, v, (4, 8), (1, 2), mode=mode, is_causal=causal)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*double precision.*")
        assert torch.autograd.gradcheck(fn, (q, k, v), eps=2.0**-10, atol=1e-3, rtol=1e-3,
                                        nondet_tol=0.0)


@pytest.mark.parametrize("mode,causal", [("longnet", False), ("longnet", True),
                                         ("head_groups", False), ("head_groups", True)])
def test_gradcheck_float64(mode, causal, seed):
    """gradcheck in float64 on the CPU (the reference backend, double accumulation), with
    gradcheck's own tolerances; GQA, a partial last segment and w % r != 0 included."""
    q = torch.randn(2, 11, 4, 3, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 11, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    fn = lambda q, k, v: dilated_attention(q, k, v, (4, 7), (1, 2), mode=mode, is_causal=causal)
    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_retain_graph_twice_gives_identical_gradients(seed):
    (q, k, v), segs, dils, kw = _run(CASES[1])
    loss = (dilated_attention(q, k, v, segs, dils, **kw) ** 2).sum()
    loss.backward(retain_graph=True)
    first = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    loss.backward()
    for a, b in zip(first, (q.grad, k.grad, v.grad)):
        assert torch.equal(a, b)


def test_opcheck(seed):
    (q, k, v), segs, dils, kw = _run(CASES[3])
    args = (q, k, v, list(segs), list(dils), kw["mode"], kw["is_causal"], kw["scale"],
            kw["head_offsets"], "auto", 64, [], None, [])  # no block patterns, no grid
    torch.library.opcheck(torch.ops.dilated_attention.forward.default, args)
    out, lse = torch.ops.dilated_attention.forward(*args)
    bwd = (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(), lse) + args[3:]
    torch.library.opcheck(torch.ops.dilated_attention.backward.default, bwd)


def test_torch_compile_fullgraph(seed):
    (q, k, v), segs, dils, kw = _run(CASES[1])

    def block(q, k, v):
        return torch.tanh(dilated_attention(q * 2, k, v, segs, dils, **kw)).sum(-1)

    compiled = torch.compile(block, fullgraph=True)
    out = compiled(q, k, v)
    out.sum().backward()
    grads = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    eager = block(q, k, v)
    eager.sum().backward()
    assert relative_error(out, eager) < FP32_TOL
    for a, b in zip(grads, (q.grad, k.grad, v.grad)):
        assert relative_error(a, b) < FP32_TOL


def test_non_contiguous_inputs_match_contiguous(seed):
    b, n, h, d = 2, 24, 4, 8
    base = torch.randn(b, h, n, 2 * d)
    q = base[..., :d].transpose(1, 2)  # head stride n * 2d, row stride 2d
    k = torch.randn(b, 2 * n, h, d)[:, ::2]  # every other row
    v = torch.randn(b, n, h, 2 * d)[..., ::2]  # head_dim not contiguous: copied
    assert not q.is_contiguous() and not k.is_contiguous() and v.stride(-1) == 2
    ins = [x.clone().requires_grad_() for x in (q, k, v)]  # clone keeps strides
    ref_ins = [x.contiguous().requires_grad_() for x in (q, k, v)]
    out = dilated_attention(*ins, (8, 24), (1, 3), is_causal=True)
    ref = dilated_attention(*ref_ins, (8, 24), (1, 3), is_causal=True)
    assert torch.equal(out, ref)
    dout = torch.randn_like(out).transpose(0, 1).contiguous().transpose(0, 1)  # strided dout
    out.backward(dout)
    ref.backward(dout.contiguous())
    for a, r in zip(ins, ref_ins):
        assert torch.equal(a.grad, r.grad)


def test_expanded_grad_output(seed):
    # out.sum().backward() hands the op an expanded dout with all strides 0.
    (q, k, v), segs, dils, kw = _run(CASES[0])
    dilated_attention(q, k, v, segs, dils, **kw).sum().backward()
    grads = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    out = dilated_attention(q, k, v, segs, dils, **kw)
    out.backward(torch.ones_like(out))
    for a, x in zip(grads, (q, k, v)):
        assert torch.equal(a, x.grad)


def test_rows_without_keys_give_zero_and_minus_inf(seed):
    # One pattern (4, 2) in head_groups: odd in-segment positions of head 0 are unselected.
    q, k, v = (randn(1, 8, 1, 4) for _ in range(3))
    out, lse = dilated_attention_with_lse(q, k, v, (4,), (2,), mode="head_groups")
    assert torch.all(out[0, 1::2] == 0) and torch.all(torch.isneginf(lse[0, 0, 1::2]))
    assert torch.all(out[0, 0::2] != 0) and torch.isfinite(lse[0, 0, 0::2]).all()


def test_scale_argument_changes_result_as_dense(seed):
    (q, k, v), segs, dils, kw = _run(CASES[0])
    kw["scale"] = 1.7
    out = dilated_attention(q, k, v, segs, dils, **kw)
    ref, _ = dense_dilated_attention(q, k, v, segs, dils, **kw)
    assert relative_error(out, ref) < FP32_TOL
    default = dilated_attention(q, k, v, segs, dils, **{**kw, "scale": None})
    assert relative_error(default, out) > 1e-3
    assert math.isclose(1 / math.sqrt(q.shape[-1]), 1 / math.sqrt(8))
