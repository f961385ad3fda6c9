// What the block pass's tensor-core kernels share, the mma.sync ones (block_sparse_mma.cuh) and the
// Hopper block forward (hopper/): the walk over the multiplicity matrix (block_plan.hpp), the row
// of a query block (forward, dq) or the column of a key block (dk/dv), kept blocks found 32 at a
// time with warp ballots and the 64-position tiles of each kept block in order; and the
// forward's row epilogue.
#pragma once

#include "core/block_sparse.hpp"
#include "cuda/block_plan.hpp"
#include "cuda/kernels/mma_forward.cuh"

namespace dilated::cuda {

// The query head whose patterns a head class stands for (class 0 stands for every head when
// no pattern depends on the head).
__device__ __forceinline__ int64_t class_of_head(const BlockPass& bp, int64_t head) {
  return bp.head_classes == 1 ? 0 : head;
}

__device__ __forceinline__ int64_t mult_row_index(const BlockPass& bp, int64_t b, int64_t cls,
                                                  int64_t I) {
  return ((b * bp.head_classes + cls) * bp.nb + I) * bp.nb;
}

// Positions idx0 .. of sequence b at `head` of tensor t (rows order[position] with a grid);
// positions at or past `count` read as zero.
template <typename Elem>
__device__ __forceinline__ RowSpan position_span(const Params& p, const BlockPass& bp,
                                                 const Tensor& t, int64_t b, int64_t head, int idx0,
                                                 int count) {
  return {static_cast<const Elem*>(t.data) + batch_head_offset(p, t, b, head),
          t.row_stride,
          0,
          1,
          bp.order,
          idx0,
          count};
}

// A kept block: its index (the bound searched to where there is none) and its multiplicity in
// the row and in a second row (0 where that row drops it, or without one).
struct KeptBlock {
  int64_t J;
  int count;
  int other_count;
};

// The first kept block at or after `from` of row[0], row[stride], ... (count entries); every
// warp finds the same one (warp-uniform ballots over the same bytes). With `other` (a second
// row, stride 1), the first block either row keeps. The multiplicities come from the bytes the
// ballot read (shuffled from the lane that found the block): a second read of them was one more
// dependent global load per block on the walk.
__device__ __forceinline__ KeptBlock next_kept(const uint8_t* row, int64_t from, int64_t count,
                                               int64_t stride = 1, const uint8_t* other = nullptr) {
  const int lane = threadIdx.x % 32;
  for (int64_t J0 = from; J0 < count; J0 += 32) {
    const int64_t J = J0 + lane;
    const int mine = J < count ? row[J * stride] : 0;
    const int theirs = other != nullptr && J < count ? other[J] : 0;
    const unsigned live = __ballot_sync(0xffffffffu, mine != 0 || theirs != 0);
    if (live) {
      const int src = __ffs(static_cast<int>(live)) - 1;
      return {J0 + src, __shfl_sync(0xffffffffu, mine, src), __shfl_sync(0xffffffffu, theirs, src)};
    }
  }
  return {count, 0, 0};
}

// The forward's walk over key tiles: block J (== limit when done), its tile at key0, the end of
// its keys (the causal cut included) and the score bias log2(multiplicity); over two rows
// (next_kept's `other`), other_bias is the second row's (-inf where a row drops the block).
struct KeyTileCursor {
  int64_t J;
  int key0;
  int end;
  float bias;
  float other_bias;
};

__device__ __forceinline__ KeyTileCursor tile_of_block(const Params& p, const BlockPass& bp,
                                                       const KeptBlock& k, int64_t limit, int64_t n,
                                                       int last_row) {
  KeyTileCursor c{k.J, 0, 0, 0.0f, 0.0f};
  if (k.J >= limit) return c;
  c.key0 = static_cast<int>(k.J * bp.block);
  c.end = static_cast<int>(min(k.J * bp.block + bp.block, n));
  if (p.causal) c.end = min(c.end, last_row + 1);
  c.bias = __log2f(static_cast<float>(k.count));
  c.other_bias = __log2f(static_cast<float>(k.other_count));
  return c;
}

// The tile after c; with `other`, over the blocks either row keeps.
__device__ __forceinline__ KeyTileCursor next_tile(const Params& p, const BlockPass& bp,
                                                   const uint8_t* row, KeyTileCursor c,
                                                   int64_t limit, int64_t n, int last_row,
                                                   const uint8_t* other = nullptr) {
  if (c.key0 + kMmaRows < c.end) {
    c.key0 += kMmaRows;
    return c;
  }
  return tile_of_block(p, bp, next_kept(row, c.J + 1, limit, 1, other), limit, n, last_row);
}

// dk/dv's walk over query tiles: query head `head` (== head_end when done), its kept query
// block I (a column entry of the matrix), the tile at query0, the block's end, log2(c).
struct QueryTileCursor {
  int64_t head;
  int64_t I;
  int query0;
  int end;
  float bias;
};

struct QueryWalk {
  const Params& p;
  const BlockPass& bp;
  int64_t b, J, nb, n, head_end;
  int k0;

  __device__ __forceinline__ const uint8_t* column(int64_t head) const {
    return bp.mult + mult_row_index(bp, b, class_of_head(bp, head), 0) + J;
  }
  // The first kept query block at or after (head, from), heads in order.
  __device__ __forceinline__ QueryTileCursor find(int64_t head, int64_t from) const {
    for (; head < head_end; ++head, from = p.causal ? J : 0) {
      const KeptBlock k = next_kept(column(head), from, nb, bp.nb);
      if (k.J < nb) {
        QueryTileCursor c{head, k.J, static_cast<int>(k.J * bp.block),
                          static_cast<int>(min(k.J * bp.block + bp.block, n)), 0.0f};
        if (p.causal && c.query0 < k0) c.query0 = k0;  // earlier queries see none of the keys
        c.bias = __log2f(static_cast<float>(k.count));
        return c;
      }
    }
    return {head_end, 0, 0, 0, 0.0f};
  }
  template <int BQ>
  __device__ __forceinline__ QueryTileCursor next(QueryTileCursor c) const {
    if (c.query0 + BQ < c.end) {
      c.query0 += BQ;
      return c;
    }
    return find(c.head, c.I + 1);
  }
};

// The backward's view of a thread's two query rows (positions row_idx of sequence b, row_ok
// where inside it): their tensor rows (through the order), lse in log2 units and delta; zeros
// for rows past the sequence.
__device__ __forceinline__ void load_block_row_stats(
    const Params& p, const BlockPass& bp, int64_t b, int64_t head, const int (&row_idx)[2],
    const bool (&row_ok)[2], int64_t (&query_row)[2], float (&lse_log2)[2], float (&delta)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    query_row[r] = row_ok[r] ? grid_row(bp.order, row_idx[r]) : 0;
    const int64_t at = row_ok[r] ? lse_index(p, b, head, query_row[r]) : 0;
    lse_log2[r] = row_ok[r] ? p.lse[at] * kLog2e : 0.0f;
    delta[r] = row_ok[r] ? bp.delta[at] : 0.0f;
  }
}

// The forward's finished rows (positions row_idx of sequence b, the thread's part of each):
// merged into the running (out_acc, lse) or written out, like a dilated pass's. Rows past the
// sequence are not written, nor rows that saw no key (their sum is 0) unless the pass writes
// every row (BlockPass::writes_every_row): then as zeros and lse -inf, what a clear would leave.
template <typename Elem, int MT, int DT>
__device__ __forceinline__ void store_block_forward_rows(const Params& p, const BlockPass& bp,
                                                         int64_t b, int64_t head, int count,
                                                         const int (&row_idx)[MT][2],
                                                         const float (&o)[MT][DT][4],
                                                         const float (&row_max)[MT][2],
                                                         const float (&row_sum)[MT][2]) {
#pragma unroll
  for (int m = 0; m < MT; ++m) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float sum = quad_sum(row_sum[m][r]);
      const bool valid = row_idx[m][r] < count;
      const bool any_key = sum != 0.0f;  // NaN sums propagate
      const float lse = (row_max[m][r] + __log2f(sum)) * kLn2;
      const int64_t row = valid ? grid_row(bp.order, row_idx[m][r]) : 0;
      if (valid && !any_key && bp.writes_every_row) {
        write_blank_row<Elem, DT>(p, bp.lse, b, row, head);
        continue;
      }
      write_forward_row<Elem, DT>(p, bp.out_acc, bp.lse, false, valid && any_key, true, b, row,
                                  head, o[m], r, lse, 1.0f / sum);
    }
  }
}

}  // namespace dilated::cuda
