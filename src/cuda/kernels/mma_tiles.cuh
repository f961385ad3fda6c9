// Tiles of selected rows for the tensor-core kernels: which tokens a tile covers and the
// asynchronous copy of those rows (any row stride, so dilation costs nothing extra) into a
// swizzled shared-memory tile.
#pragma once

#include "cuda/kernels/attention_common.cuh"

namespace dilated::cuda {

// Rows idx0 .. idx0 + Rows - 1 of a run of selected positions (first, first + step, ...);
// rows at or past `count` are zero-filled. Position t is tensor row grid_row(order, t).
struct RowSpan {
  const void* base;      // tensor row 0 at this (batch, head)
  int64_t row_stride;    // elements between tensor rows
  int64_t first;         // position of selected row 0
  int64_t step;          // positions between consecutive selected rows (the dilation)
  const int64_t* order;  // token grid: position -> tensor row; null: identity
  int idx0;              // first selected row of the tile
  int count;             // selected rows in the run (a segment is shorter than 2^31)
};

// Element offset of (batch, head) in tensor t: positions then add position * row_stride.
__device__ __forceinline__ int64_t batch_head_offset(const Params& p, const Tensor& t, int64_t b,
                                                     int64_t head) {
  return row_offset(p, t, b, 0, head);
}

// A segment's selected rows of a head pattern.
template <typename Elem>
__device__ __forceinline__ RowSpan make_span(const Params& p, const Tensor& t, int64_t b,
                                             int64_t head, const HeadPattern& hp,
                                             const SegmentRows& rows, int idx0,
                                             const int64_t* order) {
  return {static_cast<const Elem*>(t.data) + batch_head_offset(p, t, b, head),
          t.row_stride,
          rows.first,
          hp.dilation,
          order,
          idx0,
          static_cast<int>(rows.count)};
}

// The tensor rows of the tile rows one thread copies (-1: past the run). With a grid these are
// order[] reads: kernels that stream tiles locate the next tile's rows one iteration ahead, so
// that the reads are in flight while the current tile computes. TileLayout: SmemTile, or any
// layout with kChunks, chunk_offset and kRowBytes (bytes between rows in one chunk column).
template <int Rows, int D, int Threads, class TileLayout = SmemTile<Rows, D>>
struct TileRows {
  using Tile = TileLayout;
  // Each thread copies one fixed chunk column of every kRowStep-th row; kRowStep is a
  // multiple of 8, so the destination swizzle stays the same for all of them.
  static_assert(Threads % Tile::kChunks == 0 && (Threads / Tile::kChunks) % 8 == 0, "layout");
  static constexpr int kRowStep = Threads / Tile::kChunks;
  static constexpr int kLoads = (Rows + kRowStep - 1) / kRowStep;
  int64_t row[kLoads];

  __device__ __forceinline__ void locate(const RowSpan& span) {
    const int row0 = threadIdx.x / Tile::kChunks;
#pragma unroll
    for (int j = 0; j < kLoads; ++j) {
      const int r = row0 + j * kRowStep;
      const bool valid = (Rows % kRowStep == 0 || r < Rows) && span.idx0 + r < span.count;
      const int64_t position = span.first + static_cast<int64_t>(span.idx0 + r) * span.step;
      row[j] = valid ? grid_row(span.order, position) : -1;
    }
  }
};

// Copies the rows located in `rows` of span's tensor into a swizzled tile (zeros past the run).
template <typename Elem, int Rows, int D, int Threads, class TileLayout>
__device__ __forceinline__ void load_tile_rows_async(
    Elem* tile, const RowSpan& span, const TileRows<Rows, D, Threads, TileLayout>& rows) {
  using Located = TileRows<Rows, D, Threads, TileLayout>;
  using Tile = typename Located::Tile;
  const int chunk = threadIdx.x % Tile::kChunks;
  const int row0 = threadIdx.x / Tile::kChunks;
  const uint32_t dst = smem_address(tile) + Tile::chunk_offset(row0, chunk) * 2;
  const Elem* base = static_cast<const Elem*>(span.base) + chunk * 8;
#pragma unroll
  for (int j = 0; j < Located::kLoads; ++j) {
    if (Rows % Located::kRowStep != 0 && row0 + j * Located::kRowStep >= Rows) break;
    const bool valid = rows.row[j] >= 0;
    cp_async_16(dst + j * Located::kRowStep * Tile::kRowBytes,
                base + (valid ? rows.row[j] * span.row_stride : 0), valid);
  }
}

template <typename Elem, int Rows, int D, int Threads, class TileLayout = SmemTile<Rows, D>>
__device__ __forceinline__ void load_tile_async(Elem* tile, const RowSpan& span) {
  TileRows<Rows, D, Threads, TileLayout> rows;
  rows.locate(span);
  load_tile_rows_async<Elem, Rows, D, Threads>(tile, span, rows);
}

// Fast 2^x (ex2.approx: ~2 ulp, flushes denormals to zero).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// One tile of an online softmax for the thread's MT x 2 rows (a row is spread over a quad of
// lanes): the scores s times `scale` (> 0; log2 units, -inf where masked) become
// exp2(scale * s - running max), and the running maxima (scaled) and sums advance. Returns in
// `corrections` the factor the rows' output accumulators must be multiplied by (1 where the
// maximum did not move). Taking the scale here folds it into one FFMA per score.
template <int MT, int NT>
__device__ __forceinline__ void softmax_scores_tile(float (&s)[MT][NT][4], float (&row_max)[MT][2],
                                                    float (&row_sum)[MT][2],
                                                    float (&corrections)[MT][2],
                                                    float scale = 1.0f) {
#pragma unroll
  for (int m = 0; m < MT; ++m) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      // Four partial maxima and sums: short dependency chains for wide tiles.
      float part[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        part[n % 4] = fmaxf(part[n % 4], fmaxf(s[m][n][2 * r], s[m][n][2 * r + 1]));
      }
      float mx = fmaxf(fmaxf(part[0], part[1]), fmaxf(part[2], part[3]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      mx = fmaxf(row_max[m][r], mx * scale);
      const float ref = mx == -INFINITY ? 0.0f : mx;  // a row with every key masked so far
      const float correction = fast_exp2(row_max[m][r] - ref);
      row_max[m][r] = mx;
      part[0] = part[1] = part[2] = part[3] = 0.0f;
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        s[m][n][2 * r] = fast_exp2(fmaf(s[m][n][2 * r], scale, -ref));
        s[m][n][2 * r + 1] = fast_exp2(fmaf(s[m][n][2 * r + 1], scale, -ref));
        part[n % 4] += s[m][n][2 * r] + s[m][n][2 * r + 1];
      }
      const float sum = (part[0] + part[1]) + (part[2] + part[3]);
      row_sum[m][r] = row_sum[m][r] * correction + sum;
      corrections[m][r] = correction;
    }
  }
}

// o *= corrections row by row; skipped when no row of the warp needs it (once the maxima
// settle, most tiles move none).
template <int MT, int DT>
__device__ __forceinline__ void rescale_outputs(float (&o)[MT][DT][4],
                                                const float (&corrections)[MT][2]) {
  bool rescale = false;
#pragma unroll
  for (int m = 0; m < MT; ++m) rescale |= corrections[m][0] != 1.0f || corrections[m][1] != 1.0f;
  if (__any_sync(0xffffffffu, rescale)) {
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
      for (int d = 0; d < DT; ++d) {
        o[m][d][0] *= corrections[m][0];
        o[m][d][1] *= corrections[m][0];
        o[m][d][2] *= corrections[m][1];
        o[m][d][3] *= corrections[m][1];
      }
    }
  }
}

template <int MT, int NT, int DT>
__device__ __forceinline__ void online_softmax_tile(float (&s)[MT][NT][4], float (&row_max)[MT][2],
                                                    float (&row_sum)[MT][2],
                                                    float (&o)[MT][DT][4]) {
  float corrections[MT][2];
  softmax_scores_tile(s, row_max, row_sum, corrections);
  rescale_outputs(o, corrections);
}

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

}  // namespace dilated::cuda
