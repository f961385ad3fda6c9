// The per-row steps every tensor-core forward shares, whatever issues its matrix products
// (mma.sync here, wgmma on Hopper): scores scaled and masked on m16n8 accumulator tiles, and
// the finished rows written out (or merged into the pass's fp32 accumulators) with their lse.
#pragma once

#include "cuda/kernels/attention_common.cuh"
#include "cuda/kernels/mma_tiles.cuh"

namespace dilated::cuda {

// A query tile of a pass (x = segment and tile, y = head in the pass, z = batch entry: a CTA's
// blockIdx where each CTA takes one), tile_rows selected rows from q0, and the keys its rows see.
struct ForwardTile {
  int64_t b, head, kv_head;
  HeadPattern hp;
  SegmentRows rows, key_rows;
  int q0, key_count, shift;
  // Keys the tile's last row sees; 0: nothing to do (rows past the slice, or a window without
  // keys for them: the rows keep out 0, lse -inf).
  int num_keys;
};
__device__ __forceinline__ ForwardTile forward_tile(const Params& p, const PassInfo& pass,
                                                    int tile_rows, uint32_t x = blockIdx.x,
                                                    uint32_t y = blockIdx.y,
                                                    uint32_t z = blockIdx.z) {
  ForwardTile t;
  t.b = z;
  t.head = pass.head_begin + y;
  t.kv_head = kv_head_of(p, t.head);
  t.hp = pass_pattern(p, pass, t.head);
  const TileCoord tc = tile_coord(pass, x);
  const SliceRows tr = slice_rows(p, t.hp, tc.segment, t.b);
  t.rows = tr.queries;
  t.key_rows = tr.keys;
  t.q0 = static_cast<int>(tc.tile) * tile_rows;
  t.key_count = static_cast<int>(tr.keys.count);
  t.shift = static_cast<int>(tr.shift);
  t.num_keys =
      t.q0 >= t.rows.count
          ? 0
          : static_cast<int>(visible_keys(p.causal, t.key_count, t.q0 + tile_rows - 1, t.shift));
  return t;
}

// Keys past the slice or, causal, after the row (+ shift) get -inf in s[m][n], the scores of
// rows row_idx[m][0..1] (selected-row indices) and keys key0 + 8n + ... Most tiles need no
// mask: they return at once, without a branch per element.
template <int MT, int NT>
__device__ __forceinline__ void mask_scores(float (&s)[MT][NT][4], bool needs_mask, int key0,
                                            int key_count, bool causal, const int (&row_idx)[MT][2],
                                            int shift) {
  if (!needs_mask) return;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < MT; ++m) {
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + n * 8 + 2 * (lane % 4) + (e % 2);
        const bool masked = key >= key_count || (causal && key > row_idx[m][e / 2] + shift);
        s[m][n][e] = masked ? -INFINITY : s[m][n][e];
      }
    }
  }
}

// The same, with the scores first scaled into log2 units (where softmax_scores_tile does not
// apply the scale itself).
template <int MT, int NT>
__device__ __forceinline__ void scale_and_mask_scores(float (&s)[MT][NT][4], float scale_log2,
                                                      bool needs_mask, int key0, int key_count,
                                                      bool causal, const int (&row_idx)[MT][2],
                                                      int shift) {
#pragma unroll
  for (int m = 0; m < MT; ++m) {
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[m][n][e] *= scale_log2;
    }
  }
  mask_scores(s, needs_mask, key0, key_count, causal, row_idx, shift);
}

// One finished row of a forward pass, row `row` of sequence b, the thread's part of it
// (columns 8 d + 2 (lane % 4) and the one after, from o[d][2 r], o[d][2 r + 1]): with out_acc
// null written to out (and lse, if any); otherwise merged into the running fp32 (out_acc, lse)
// with the lse rule, and, in the converting pass (PassInfo::converts), the merged row written
// to out instead. `write`: a real row that saw a key; every lane of the quad calls this (the
// merge reads the old lse before lane 0 replaces it). `holds`: the accumulators hold the row
// (accumulator_holds); if not, the merge starts from nothing. lse in natural log units,
// inv = 1 / the sum o is normalised by. Rows are addressed as (b, row), never through a token
// index: undoing b * N + row takes two 64-bit divisions (bench/NOTES.md, tenth session).
template <typename Elem, int DT>
__device__ __forceinline__ void write_forward_row(const Params& p, const Tensor& out_acc,
                                                  float* lse_rows, bool converts, bool write,
                                                  bool holds, int64_t b, int64_t row, int64_t head,
                                                  const float (&o)[DT][4], int r, float lse,
                                                  float inv) {
  const int lane = threadIdx.x % 32;
  const int64_t lse_at = write ? lse_index(p, b, head, row) : 0;
  const int column = 2 * (lane % 4);
  if (!out_acc.data) {
    if (!write) return;
    Elem* out = static_cast<Elem*>(p.out.data) + row_offset(p, p.out, b, row, head);
    const float f = inv * output_scale(p);
#pragma unroll
    for (int d = 0; d < DT; ++d) {
      *reinterpret_cast<uint32_t*>(out + d * 8 + column) =
          pack2<Elem>(o[d][2 * r] * f, o[d][2 * r + 1] * f);
    }
    if (lse_rows && lane % 4 == 0) lse_rows[lse_at] = lse;
    return;
  }
  const bool read = write && holds;
  const MergeWeights mw = merge_weights(read ? lse_rows[lse_at] : -INFINITY, lse);
  __syncwarp();
  if (!write) return;
  float* acc = static_cast<float*>(out_acc.data) + row_offset(p, out_acc, b, row, head);
  const float f = mw.new_weight * inv;
  // Every load before any store: out could alias acc as far as the compiler knows, so
  // interleaved, each load would wait for the store before it.
  float2 merged[DT];
#pragma unroll
  for (int d = 0; d < DT; ++d) {
    const float2 old =
        read ? *reinterpret_cast<const float2*>(acc + d * 8 + column) : make_float2(0.0f, 0.0f);
    merged[d] = make_float2(mw.old_weight * old.x + f * o[d][2 * r],
                            mw.old_weight * old.y + f * o[d][2 * r + 1]);
  }
  if (converts) {
    Elem* out = static_cast<Elem*>(p.out.data) + row_offset(p, p.out, b, row, head);
    const float s = output_scale(p);
#pragma unroll
    for (int d = 0; d < DT; ++d) {
      *reinterpret_cast<uint32_t*>(out + d * 8 + column) =
          pack2<Elem>(s * merged[d].x, s * merged[d].y);
    }
  } else {
#pragma unroll
    for (int d = 0; d < DT; ++d) *reinterpret_cast<float2*>(acc + d * 8 + column) = merged[d];
  }
  if (lane % 4 == 0) lse_rows[lse_at] = mw.lse;
}

// Row (b, row) of out as a row that sees no key: zeros, and lse -inf (the thread's columns, as
// write_forward_row's).
template <typename Elem, int DT>
__device__ __forceinline__ void write_blank_row(const Params& p, float* lse_rows, int64_t b,
                                                int64_t row, int64_t head) {
  const int lane = threadIdx.x % 32;
  Elem* out = static_cast<Elem*>(p.out.data) + row_offset(p, p.out, b, row, head);
#pragma unroll
  for (int d = 0; d < DT; ++d) {
    *reinterpret_cast<uint32_t*>(out + d * 8 + 2 * (lane % 4)) = pack2<Elem>(0.0f, 0.0f);
  }
  if (lse_rows && lane % 4 == 0) lse_rows[lse_index(p, b, head, row)] = -INFINITY;
}

// The sum of x over the quad of lanes that holds a row of an m16n8 accumulator tile.
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// A finished row's lse (natural log units) from the quad's running max and partial sums of the
// exact probabilities, and 1 / the sum its output accumulators hold (partial per thread).
struct FinishedRow {
  float lse, inv_norm;
};
__device__ __forceinline__ FinishedRow finish_row(float row_max, float row_sum, float row_norm) {
  return {(row_max + __log2f(quad_sum(row_sum))) * kLn2, 1.0f / quad_sum(row_norm)};
}

// Epilogue of a forward pass for the thread's rows: out (or the running fp32 merge) and lse.
// row_sum: the rows' (per-thread partial) softmax sums, for lse; row_norm: the sums of the
// weights the output accumulators hold (the same, or those weights as rounded for the product).
template <typename Elem, int MT, int DT>
__device__ __forceinline__ void store_forward_rows(
    const Params& p, const PassInfo& pass, const HeadPattern& hp, const SegmentRows& rows,
    int key_count, int shift, int64_t b, int64_t head, const int (&row_idx)[MT][2],
    const float (&o)[MT][DT][4], const float (&row_max)[MT][2], const float (&row_sum)[MT][2],
    const float (&row_norm)[MT][2]) {
#pragma unroll
  for (int m = 0; m < MT; ++m) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const FinishedRow f = finish_row(row_max[m][r], row_sum[m][r], row_norm[m][r]);
      // Rows past the slice, and rows that see no key (their sum is 0), are not written.
      const bool valid =
          row_idx[m][r] < rows.count && visible_keys(p.causal, key_count, row_idx[m][r], shift) > 0;
      const int64_t position = rows.first + row_idx[m][r] * hp.dilation;
      const int64_t row = valid ? grid_row(pass.order, position) : 0;
      const bool holds = valid && accumulator_holds(p, pass, head, position);
      write_forward_row<Elem, DT>(p, pass.out_acc, pass.lse, pass.converts, valid, holds, b, row,
                                  head, o[m], r, f.lse, f.inv_norm);
    }
  }
}

}  // namespace dilated::cuda
