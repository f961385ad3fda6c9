// Row-wise helpers around the attention passes: initial values, delta = rowsum(dout * out),
// and the final conversion of fp32 accumulators to the output dtype. One warp per (token, head)
// row so that lanes read consecutive elements.
#pragma once

#include "cuda/kernels/attention_common.cuh"

namespace dilated::cuda {

__device__ __forceinline__ int64_t global_warp() {
  return (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
}

template <typename Elem>
__global__ void fill_rows_kernel(const Params p, const Tensor t, int64_t tokens, int64_t heads,
                                 int64_t dim, float value) {
  const int64_t row = global_warp();
  if (row >= tokens * heads) return;
  Elem* base = static_cast<Elem*>(t.data) + token_offset(p, t, row / heads, row % heads);
  for (int64_t d = threadIdx.x % 32; d < dim; d += 32) base[d] = from_float<Elem>(value);
}

// static: this header is included by several launch files.
static __global__ void fill_values_kernel(float* x, int64_t count, float value) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) x[i] = value;
}

template <typename Elem>
__global__ void delta_kernel(const Params p, float* delta, int64_t tokens) {
  const int64_t row = global_warp();
  if (row >= tokens * p.heads) return;
  const int64_t token = row / p.heads, head = row % p.heads;
  const int64_t out_at = token_offset(p, p.out, token, head);
  const int64_t dout_at = token_offset(p, p.dout, token, head);
  float s = 0;
  for (int64_t d = threadIdx.x % 32; d < p.head_dim_v; d += 32) {
    s += load_as_float<Elem>(p.out, out_at + d) * load_as_float<Elem>(p.dout, dout_at + d);
  }
  s = warp_sum(s);
  if (threadIdx.x % 32 == 0) delta[token_lse_index(p, token, head)] = s;
}

template <typename Elem>
__global__ void convert_rows_kernel(const Params p, const Tensor acc, const Tensor out,
                                    int64_t tokens, int64_t heads, int64_t dim, float factor) {
  const int64_t row = global_warp();
  if (row >= tokens * heads) return;
  const float* a =
      static_cast<const float*>(acc.data) + token_offset(p, acc, row / heads, row % heads);
  Elem* o = static_cast<Elem*>(out.data) + token_offset(p, out, row / heads, row % heads);
  for (int64_t d = threadIdx.x % 32; d < dim; d += 32) o[d] = from_float<Elem>(factor * a[d]);
}

}  // namespace dilated::cuda
