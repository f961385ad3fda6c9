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
  // Each thread copies one fixed chunk column of every kRowStep-th row; kRowStep is a
  // multiple of 8, so the destination swizzle stays the same for all of them.
  static_assert(Threads % Tile::kChunks == 0 && (Threads / Tile::kChunks) % 8 == 0, "layout");
  constexpr int kRowStep = Threads / Tile::kChunks;
  const int chunk = threadIdx.x % Tile::kChunks;
  const int row0 = threadIdx.x / Tile::kChunks;
  const uint32_t dst = smem_address(tile) + Tile::chunk_offset(row0, chunk) * 2;
  const Elem* src = static_cast<const Elem*>(span.first_row) +
                    static_cast<int64_t>(span.idx0 + row0) * span.step + chunk * 8;
#pragma unroll
  for (int j = 0; j < (Rows + kRowStep - 1) / kRowStep; ++j) {
    const int row = row0 + j * kRowStep;
    if (Rows % kRowStep != 0 && row >= Rows) break;
    const bool valid = span.idx0 + row < span.count;
    cp_async_16(dst + j * kRowStep * Tile::kRowBytes,
                valid ? src + j * kRowStep * span.step : span.first_row, valid);
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
