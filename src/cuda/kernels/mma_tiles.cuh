// Tiles of selected rows for the tensor-core kernels: which tokens a tile covers and the
// asynchronous copy of those rows (any row stride, so dilation costs nothing extra) into a
// swizzled shared-memory tile.
#pragma once

#include "cuda/kernels/attention_common.cuh"

namespace dilated::cuda {

// Rows idx0 .. idx0 + Rows - 1 of a segment's selected positions; rows at or past `count`
// are zero-filled.
struct RowSpan {
  const void* first_row;  // selected row 0 of the segment, at this (batch, head)
  int64_t step;           // elements between consecutive selected rows
  int idx0;               // first selected row of the tile
  int count;              // selected rows in the segment (a segment is shorter than 2^31)
};

// Element offset of (batch, head) in tensor t: positions then add position * row_stride.
__device__ __forceinline__ int64_t batch_head_offset(const Params& p, const Tensor& t, int64_t b,
                                                     int64_t head) {
  return row_offset(p, t, b, 0, head);
}

template <typename Elem>
__device__ __forceinline__ RowSpan make_span(const Params& p, const Tensor& t, int64_t b,
                                             int64_t head, const HeadPattern& hp,
                                             const SegmentRows& rows, int idx0) {
  const Elem* first_row = static_cast<const Elem*>(t.data) + batch_head_offset(p, t, b, head) +
                          rows.first * t.row_stride;
  return {first_row, hp.dilation * t.row_stride, idx0, static_cast<int>(rows.count)};
}

template <typename Elem, int Rows, int D, int Threads>
__device__ __forceinline__ void load_tile_async(Elem* tile, const RowSpan& span) {
  using Tile = SmemTile<Rows, D>;
  constexpr int kChunks = Rows * Tile::kChunks;
  const Elem* base = static_cast<const Elem*>(span.first_row);
#pragma unroll
  for (int c = threadIdx.x; c < kChunks; c += Threads) {
    const int row = c / Tile::kChunks;
    const int chunk = c % Tile::kChunks;
    const int idx = span.idx0 + row;
    const bool valid = idx < span.count;
    const Elem* src = valid ? base + idx * span.step + chunk * 8 : base;
    cp_async_16(tile + Tile::chunk_offset(row, chunk), src, valid);
  }
}

// Fast 2^x (ex2.approx: ~2 ulp, flushes denormals to zero).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

}  // namespace dilated::cuda
