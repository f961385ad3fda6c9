// Rows of a [B, N, heads, dim] tensor (any strides) moved along a token order: gather (copy row
// order[t] to row t) or scatter (row t to row order[t]); one warp per (b, t, head) row. And the
// same for the fp32 lse [B, H, N].
#pragma once

#include "cuda/kernels/elementwise.cuh"

namespace dilated::cuda {

template <typename Elem>
__global__ void permute_rows_kernel(const Params p, const Tensor src, const Tensor dst,
                                    const int64_t* order, int64_t heads, int64_t dim, bool gather) {
  const int64_t row = global_warp();
  if (row >= p.batch * p.seqlen * heads) return;
  const int64_t head = row % heads;
  const int64_t t = (row / heads) % p.seqlen;
  const int64_t b = row / (heads * p.seqlen);
  const int64_t from = gather ? order[t] : t, to = gather ? t : order[t];
  const Elem* s = static_cast<const Elem*>(src.data) + row_offset(p, src, b, from, head);
  Elem* d = static_cast<Elem*>(dst.data) + row_offset(p, dst, b, to, head);
  for (int64_t i = threadIdx.x % 32; i < dim; i += 32) d[i] = s[i];
}

static __global__ void permute_lse_kernel(const Params p, const float* src, float* dst,
                                          const int64_t* order, bool gather) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.batch * p.heads * p.seqlen) return;
  const int64_t t = i % p.seqlen, base = i - t;
  if (gather) {
    dst[i] = src[base + order[t]];
  } else {
    dst[base + order[t]] = src[i];
  }
}

}  // namespace dilated::cuda
