"""The op tests on CUDA: skipped without a GPU or without a CUDA build of the extension."""

import pytest
import torch

from conftest import randn, relative_error
from dense_reference import dense_dilated_attention
from dilated_attention import _C
from dilated_attention.functional import dilated_attention, dilated_attention_with_lse

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(not _C.cuda_compiled, reason="extension built without the CUDA backend"),
]

CASES = [
    ((2, 256, 4, 4, 64), (64, 128, 256), (1, 2, 4), "longnet", True),
    ((1, 300, 6, 2, 64), (64, 128), (2, 4), "longnet", False),  # GQA, short last segment
    ((2, 256, 6, 6, 64), (64, 128, 256), (1, 2, 4), "head_groups", True),
]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2),
                                       (torch.float16, 4e-3)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[3]}-n{c[0][1]}")
def test_cuda_matches_dense(case, dtype, tol, seed):
    (b, n, h, hkv, d), segs, dils, mode, causal = case
    q = randn(b, n, h, d, dtype=dtype, device="cuda", requires_grad=True)
    k = randn(b, n, hkv, d, dtype=dtype, device="cuda", requires_grad=True)
    v = randn(b, n, hkv, d, dtype=dtype, device="cuda", requires_grad=True)
    out, lse = dilated_attention_with_lse(q, k, v, segs, dils, mode=mode, is_causal=causal)
    dout = torch.randn_like(out)
    out.backward(dout)
    ref_in = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref, _ = dense_dilated_attention(*ref_in, segs, dils, mode=mode, is_causal=causal)
    ref.backward(dout.double())
    assert relative_error(out, ref) < tol
    for ours, r in zip((q, k, v), ref_in):
        assert relative_error(ours.grad, r.grad) < 4 * tol


def test_cuda_side_stream_compile_and_retain_graph(seed):
    q, k, v = (randn(1, 256, 4, 64, device="cuda", requires_grad=True) for _ in range(3))
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = dilated_attention(q, k, v, (64, 256), (1, 4), is_causal=True)
    stream.synchronize()
    ref = dilated_attention(q, k, v, (64, 256), (1, 4), is_causal=True)
    assert torch.equal(out, ref)
    compiled = torch.compile(lambda q, k, v: dilated_attention(q, k, v, (64, 256), (1, 4)),
                             fullgraph=True)
    loss = compiled(q, k, v).square().sum()
    loss.backward(retain_graph=True)
    first = q.grad.clone()
    q.grad = None
    loss.backward()
    assert torch.equal(first, q.grad)
    torch.library.opcheck(torch.ops.dilated_attention.forward.default,
                          (q, k, v, [64, 256], [1, 4], "longnet", True, None, "paper", "auto",
                           64, [], None, []))


def test_cuda_errors_name_device(seed):
    q = randn(1, 64, 2, 16, device="cuda")
    with pytest.raises(ValueError, match="k: device cpu, expected cuda:0 like q"):
        dilated_attention(q, q.cpu(), q, (16,), (1,))
