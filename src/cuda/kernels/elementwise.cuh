// Row-wise helpers around the attention passes: initial values, delta = rowsum(dout * out),
// and the final conversion of fp32 accumulators to the output dtype. One warp per (token, head)
// row so that lanes read consecutive elements; each warp walks rows through a grid of bounded
// size (row_blocks), since a block per 8 rows spent more time launching blocks than moving
// bytes (bench/NOTES.md). The conversion moves a 16-byte chunk per lane
// access where rows are whole aligned chunks (24% faster on an H100; the same change made the
// fill no faster and delta 12% slower, bench/NOTES.md).
#pragma once

#include "cuda/kernel_launch.hpp"
#include "cuda/kernels/attention_common.cuh"

namespace dilated::cuda {

__device__ __forceinline__ int64_t global_warp() {
  return (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
}
__device__ __forceinline__ int64_t warps_in_grid() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
}

template <typename Elem>
inline constexpr int kChunkElems = 16 / static_cast<int>(sizeof(Elem));

// Whether a row of `dim` elements at `row` is whole aligned 16-byte chunks.
template <typename Elem>
__device__ __forceinline__ bool chunked_row(const void* row, int64_t dim) {
  return dim % kChunkElems<Elem> == 0 && reinterpret_cast<uintptr_t>(row) % 16 == 0;
}

template <typename Elem>
__global__ void fill_rows_kernel(const Params p, const Tensor t, int64_t tokens, int64_t heads,
                                 int64_t dim, float value) {
  for (int64_t row = global_warp(); row < tokens * heads; row += warps_in_grid()) {
    Elem* base = static_cast<Elem*>(t.data) + token_offset(p, t, row / heads, row % heads);
    for (int64_t d = threadIdx.x % 32; d < dim; d += 32) base[d] = from_float<Elem>(value);
  }
}

// static: this header is included by several launch files.
static __global__ void fill_values_kernel(float* x, int64_t count, float value) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) x[i] = value;
}

template <typename Elem>
__global__ void delta_kernel(const Params p, float* delta, int64_t tokens) {
  for (int64_t row = global_warp(); row < tokens * p.heads; row += warps_in_grid()) {
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
}

template <typename Elem>
__global__ void convert_rows_kernel(const Params p, const Tensor acc, const Tensor out,
                                    int64_t tokens, int64_t heads, int64_t dim, float factor) {
  for (int64_t row = global_warp(); row < tokens * heads; row += warps_in_grid()) {
    const float* a =
        static_cast<const float*>(acc.data) + token_offset(p, acc, row / heads, row % heads);
    Elem* o = static_cast<Elem*>(out.data) + token_offset(p, out, row / heads, row % heads);
    const int lane = threadIdx.x % 32;
    if (chunked_row<Elem>(o, dim) && reinterpret_cast<uintptr_t>(a) % 16 == 0) {
      constexpr int kQuads = kChunkElems<Elem> / 4;  // float4 loads per output chunk
      for (int64_t c = lane; c < dim / kChunkElems<Elem>; c += 32) {
        uint4 chunk;
        Elem* elems = reinterpret_cast<Elem*>(&chunk);
        for (int q = 0; q < kQuads; ++q) {
          const float4 x = reinterpret_cast<const float4*>(a)[kQuads * c + q];
          elems[4 * q] = from_float<Elem>(factor * x.x);
          elems[4 * q + 1] = from_float<Elem>(factor * x.y);
          elems[4 * q + 2] = from_float<Elem>(factor * x.z);
          elems[4 * q + 3] = from_float<Elem>(factor * x.w);
        }
        reinterpret_cast<uint4*>(o)[c] = chunk;
      }
      continue;
    }
    for (int64_t d = lane; d < dim; d += 32) o[d] = from_float<Elem>(factor * a[d]);
  }
}

// Host: whether t's (token, head) rows of `dim` elements are one dense block of memory.
inline bool dense_rows(const Params& p, const Tensor& t, int64_t heads, int64_t dim) {
  const bool rows_dense = t.head_stride == dim && t.row_stride == heads * dim;
  return rows_dense && (p.cu_seqlens || p.batch == 1 || t.batch_stride == p.seqlen * t.row_stride);
}

// Host: sets t's rows to zero. A dense tensor is cleared by cudaMemsetAsync, at about twice the
// bandwidth of the row kernel's stores (bench/NOTES.md).
template <typename Elem>
void zero_rows(const Params& p, const Tensor& t, int64_t tokens, int64_t heads, int64_t dim,
               cudaStream_t stream) {
  if (dense_rows(p, t, heads, dim)) {
    const int64_t bytes = tokens * heads * dim * static_cast<int64_t>(sizeof(Elem));
    cudaMemsetAsync(t.data, 0, static_cast<size_t>(bytes), stream);
    return;
  }
  fill_rows_kernel<Elem>
      <<<row_blocks(tokens * heads), 256, 0, stream>>>(p, t, tokens, heads, dim, 0.0f);
}

}  // namespace dilated::cuda
