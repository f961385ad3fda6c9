// Row-wise helpers around the attention passes: initial values, delta = rowsum(dout * out),
// and the final conversion of fp32 accumulators to the output dtype. One warp per (token, head)
// row so that lanes read consecutive elements; each warp walks rows through a grid of bounded
// size (row_blocks), since a block per 8 rows spent more time launching blocks than moving
// bytes (bench/NOTES.md). The conversion moves a 16-byte chunk per lane
// access where rows are whole aligned chunks (24% faster on an H100; the fill was no faster).
// delta gives each row a group of lanes with one 16-byte load of out and of dout apiece, so a
// lane has both in flight (H100, configuration P: 137 -> 112 us; a warp walking a row in 2-byte
// steps had one load in flight per lane).
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

// delta of a (token, head) row; where rows are whole 16-byte chunks and a row's chunks fit a
// warp, each lane group (lanes_per_row lanes) takes one row a step, so that every lane has
// both 16-byte loads in flight at once; otherwise a warp walks one row.
template <typename Elem>
__global__ void delta_kernel(const Params p, float* delta, int64_t tokens) {
  const int lane = threadIdx.x % 32;
  const int64_t rows = tokens * p.heads;
  const int64_t chunks = p.head_dim_v / kChunkElems<Elem>;
  const bool chunked =
      p.head_dim_v % kChunkElems<Elem> == 0 && chunks <= 32 && (chunks & (chunks - 1)) == 0 &&
      p.out.row_stride % kChunkElems<Elem> == 0 && p.out.head_stride % kChunkElems<Elem> == 0 &&
      p.dout.row_stride % kChunkElems<Elem> == 0 && p.dout.head_stride % kChunkElems<Elem> == 0 &&
      (p.cu_seqlens || p.batch == 1 ||
       (p.out.batch_stride % kChunkElems<Elem> == 0 &&
        p.dout.batch_stride % kChunkElems<Elem> == 0)) &&
      reinterpret_cast<uintptr_t>(p.out.data) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(p.dout.data) % 16 == 0;
  if (chunked) {
    const int lanes_per_row = static_cast<int>(chunks);
    const int rows_per_warp = 32 / lanes_per_row;
    const int chunk = lane % lanes_per_row;
    for (int64_t first = global_warp() * rows_per_warp; first < rows;
         first += warps_in_grid() * rows_per_warp) {
      const int64_t row = first + lane / lanes_per_row;
      float s = 0;
      if (row < rows) {
        const int64_t token = row / p.heads, head = row % p.heads;
        const uint4 o = reinterpret_cast<const uint4*>(static_cast<const Elem*>(p.out.data) +
                                                       token_offset(p, p.out, token, head))[chunk];
        const uint4 g = reinterpret_cast<const uint4*>(static_cast<const Elem*>(p.dout.data) +
                                                       token_offset(p, p.dout, token, head))[chunk];
        const Elem* oe = reinterpret_cast<const Elem*>(&o);
        const Elem* ge = reinterpret_cast<const Elem*>(&g);
#pragma unroll
        for (int e = 0; e < kChunkElems<Elem>; ++e) s += to_float(oe[e]) * to_float(ge[e]);
      }
      for (int width = lanes_per_row / 2; width > 0; width /= 2) {
        s += __shfl_xor_sync(0xffffffffu, s, width);
      }
      if (chunk == 0 && row < rows) delta[token_lse_index(p, row / p.heads, row % p.heads)] = s;
    }
    return;
  }
  for (int64_t row = global_warp(); row < rows; row += warps_in_grid()) {
    const int64_t token = row / p.heads, head = row % p.heads;
    const int64_t out_at = token_offset(p, p.out, token, head);
    const int64_t dout_at = token_offset(p, p.dout, token, head);
    float s = 0;
    for (int64_t d = lane; d < p.head_dim_v; d += 32) {
      s += load_as_float<Elem>(p.out, out_at + d) * load_as_float<Elem>(p.dout, dout_at + d);
    }
    s = warp_sum(s);
    if (lane == 0) delta[token_lse_index(p, token, head)] = s;
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
