// Tensor-core block pass (fp16/bf16, head dims 32/64/128, block size a multiple of 64): the
// tiles of mma_forward.cuh / mma_backward.cuh over contiguous positions (curve positions with a
// grid: rows order[t]). A CTA owns 64 query rows (forward: 2 warps of 32 rows, or 4 of 16; dq: 4
// warps of 16) or 64 key rows (dk/dv, 4 warps), all inside one block, scans its row (or column)
// of the multiplicity matrix and streams the kept blocks' key (query) tiles through shared
// memory; the multiplicity c enters as the score bias log2(c). The forward walks its kept key
// tiles with a cursor and double-buffers them across blocks, locating the rows of the tile after
// next meanwhile, and so do dq and dk/dv (whose cursor walks the query heads of its kv head,
// their kept query blocks and their tiles).
#pragma once

#include "cuda/kernels/block_pass_common.cuh"
#include "cuda/kernels/block_sparse_attention.cuh"
#include "cuda/kernels/mma_backward.cuh"

namespace dilated::cuda {

template <typename Elem, int D>
struct BlockMmaSmem {
  using Tile = SmemTile<kMmaRows, D>;
  using QueryTile = SmemTile<kDkdvQueryRows<D>, D>;
  static constexpr int kForwardBytes = 5 * Tile::kElements * static_cast<int>(sizeof(Elem));
  static constexpr int kDqBytes = 6 * Tile::kElements * static_cast<int>(sizeof(Elem));
  static constexpr int kDkdvBytes =
      (2 * Tile::kElements + 4 * QueryTile::kElements) * static_cast<int>(sizeof(Elem)) +
      4 * kDkdvQueryRows<D> * static_cast<int>(sizeof(float));
};

// The forward's 64-row CTAs: MT m16 tiles per warp, 4 / MT warps. MT = 2 (2 warps of 32 rows)
// lets every K and V fragment read from shared memory feed two products, as in the dilated
// forward; D = 128 runs MT = 1 only (two m tiles' scores and outputs over 64-key tiles would not
// stay in registers). The launcher picks MT (block_sparse_mma.cu).
template <int MT>
inline constexpr int kBlockForwardThreads = 32 * kMmaRows / (16 * MT);

template <typename Elem, int D, int MT>
__global__ void __launch_bounds__(kBlockForwardThreads<MT>)
    block_mma_forward_kernel(const Params p, const BlockPass bp) {
  using Tile = SmemTile<kMmaRows, D>;
  static_assert(MT == 1 || (MT == 2 && D <= 64), "registers");
  constexpr int kThreads = kBlockForwardThreads<MT>;
  constexpr int NT = kMmaRows / 8;
  constexpr int DT = D / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  Elem* q_tile = reinterpret_cast<Elem*>(smem_raw);
  Elem* k_tiles = q_tile + Tile::kElements;       // two buffers
  Elem* v_tiles = k_tiles + 2 * Tile::kElements;  // two buffers

  const int64_t b = blockIdx.z, head = blockIdx.y;
  const int64_t n = seq_length(p, b);
  const int q0 = static_cast<int>(blockIdx.x) * kMmaRows;
  if (q0 >= n) return;
  const int count = static_cast<int>(n);
  const int64_t kv_head = kv_head_of(p, head);
  const int64_t I = q0 / bp.block;
  const int64_t nb = block_count(n, bp.block);
  const int64_t limit = p.causal ? I + 1 : nb;  // key blocks past it hold no visible key
  const uint8_t* row = bp.mult + mult_row_index(bp, b, class_of_head(bp, head), I);
  const float scale_log2 = p.scale * kLog2e;
  load_tile_async<Elem, kMmaRows, D, kThreads>(q_tile,
                                               position_span<Elem>(p, bp, p.q, b, head, q0, count));
  cp_async_commit();  // waited for with the first key tile

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_row0 = warp * 16 * MT;
  // Position of the thread's rows: m tile, then rows lane/4 and lane/4 + 8.
  int row_idx[MT][2];
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    row_idx[m][0] = q0 + warp_row0 + m * 16 + lane / 4;
    row_idx[m][1] = row_idx[m][0] + 8;
  }
  const int last_row = min(q0 + kMmaRows, count) - 1;
  float o[MT][DT][4] = {};
  float row_max[MT][2], row_sum[MT][2];
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    row_max[m][0] = row_max[m][1] = -INFINITY;
    row_sum[m][0] = row_sum[m][1] = 0.0f;
  }
  RowSpan k_span = position_span<Elem>(p, bp, p.k, b, kv_head, 0, 0);
  const RowSpan v_span = position_span<Elem>(p, bp, p.v, b, kv_head, 0, 0);

  // Kept key tiles in order, double-buffered: tile t + 1 loads while tile t computes, and the
  // rows of tile t + 2 are located meanwhile (order[] reads with a grid). K and V tiles cover
  // the same positions: one set of located rows serves both.
  TileRows<kMmaRows, D, kThreads> next_rows;
  auto locate = [&](const KeyTileCursor& c) {
    k_span.idx0 = c.key0;
    k_span.count = c.end;
    next_rows.locate(k_span);
  };
  auto load_keys = [&](int buf) {
    load_tile_rows_async<Elem, kMmaRows, D, kThreads>(k_tiles + buf * Tile::kElements, k_span,
                                                      next_rows);
    load_tile_rows_async<Elem, kMmaRows, D, kThreads>(v_tiles + buf * Tile::kElements, v_span,
                                                      next_rows);
    cp_async_commit();
  };
  KeyTileCursor cur = tile_of_block(p, bp, next_kept(row, 0, limit), limit, n, last_row);
  KeyTileCursor next = cur;
  if (cur.J < limit) {
    locate(cur);
    load_keys(0);
    next = next_tile(p, bp, row, cur, limit, n, last_row);
    if (next.J < limit) locate(next);
  }
  for (int buf = 0; cur.J < limit; buf = 1 - buf) {
    KeyTileCursor after = next;
    if (next.J < limit) {
      load_keys(1 - buf);
      after = next_tile(p, bp, row, next, limit, n, last_row);
      if (after.J < limit) locate(after);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const Elem* k_tile = k_tiles + buf * Tile::kElements;
    const Elem* v_tile = v_tiles + buf * Tile::kElements;
    const int key0 = cur.key0, end = cur.end;
    const float bias = cur.bias;
    float s[MT][NT][4] = {};
    warp_gemm_smem_nt<Elem, D, MT, NT, Tile, Tile>(s, q_tile, warp_row0, k_tile, 0);
    const bool needs_mask = key0 + kMmaRows > end || (p.causal && key0 + kMmaRows > q0 + warp_row0);
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
      for (int j = 0; j < NT; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float x = s[m][j][e] * scale_log2 + bias;
          if (needs_mask) {
            const int key = key0 + j * 8 + 2 * (lane % 4) + (e % 2);
            if (key >= end || (p.causal && key > row_idx[m][e / 2])) x = -INFINITY;
          }
          s[m][j][e] = x;
        }
      }
    }
    online_softmax_tile<MT, NT, DT>(s, row_max, row_sum, o);
    uint32_t pa[1][MT][NT / 2][4];
    accumulators_to_a<Elem, 1, MT, NT / 2>(pa, s);
    warp_gemm_regs_kn<Elem, 1, MT, NT / 2, DT, Tile>(o, pa, v_tile, 0);
    __syncthreads();  // the tile after next overwrites this buffer
    cur = next;
    next = after;
  }
  cp_async_wait<0>();  // the query tile, when no block was kept

  store_block_forward_rows<Elem>(p, bp, b, head, count, row_idx, o, row_max, row_sum);
}

template <typename Elem, int D>
__global__ void __launch_bounds__(kMmaThreads)
    block_mma_dq_kernel(const Params p, const BlockPass bp) {
  using Tile = SmemTile<kMmaRows, D>;
  constexpr int NT = kMmaRows / 8;
  constexpr int DT = D / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  Elem* q_tile = reinterpret_cast<Elem*>(smem_raw);
  Elem* do_tile = q_tile + Tile::kElements;
  Elem* k_tiles = do_tile + Tile::kElements;      // two buffers
  Elem* v_tiles = k_tiles + 2 * Tile::kElements;  // two buffers

  const int64_t b = blockIdx.z, head = blockIdx.y;
  const int64_t n = seq_length(p, b);
  const int q0 = static_cast<int>(blockIdx.x) * kMmaRows;
  if (q0 >= n) return;
  const int count = static_cast<int>(n);
  const int64_t kv_head = kv_head_of(p, head);
  const int64_t I = q0 / bp.block;
  const int64_t nb = block_count(n, bp.block);
  const uint8_t* row = bp.mult + mult_row_index(bp, b, class_of_head(bp, head), I);
  const float scale = p.scale;
  const float scale_log2 = scale * kLog2e;
  const float dout_scale = output_scale(p);
  load_tile_async<Elem, kMmaRows, D, kMmaThreads>(
      q_tile, position_span<Elem>(p, bp, p.q, b, head, q0, count));
  load_tile_async<Elem, kMmaRows, D, kMmaThreads>(
      do_tile, position_span<Elem>(p, bp, p.dout, b, head, q0, count));
  cp_async_commit();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row_idx[2] = {q0 + warp * 16 + lane / 4, q0 + warp * 16 + lane / 4 + 8};
  const bool row_ok[2] = {row_idx[0] < count, row_idx[1] < count};
  const int last_row = min(q0 + kMmaRows, count) - 1;
  int64_t query_row[2];
  float lse_log2[2], delta[2];
  load_block_row_stats(p, bp, b, head, row_idx, row_ok, query_row, lse_log2, delta);
  float dq[1][DT][4] = {};
  RowSpan k_span = position_span<Elem>(p, bp, p.k, b, kv_head, 0, 0);
  const RowSpan v_span = position_span<Elem>(p, bp, p.v, b, kv_head, 0, 0);

  // Kept key tiles in order, double-buffered, rows located a tile ahead, as in the forward.
  TileRows<kMmaRows, D, kMmaThreads> next_rows;
  auto locate = [&](const KeyTileCursor& c) {
    k_span.idx0 = c.key0;
    k_span.count = c.end;
    next_rows.locate(k_span);
  };
  auto load_keys = [&](int buf) {
    load_tile_rows_async<Elem, kMmaRows, D, kMmaThreads>(k_tiles + buf * Tile::kElements, k_span,
                                                         next_rows);
    load_tile_rows_async<Elem, kMmaRows, D, kMmaThreads>(v_tiles + buf * Tile::kElements, v_span,
                                                         next_rows);
    cp_async_commit();
  };
  const int64_t limit = p.causal ? I + 1 : nb;
  KeyTileCursor cur = tile_of_block(p, bp, next_kept(row, 0, limit), limit, n, last_row);
  KeyTileCursor next = cur;
  if (cur.J < limit) {
    locate(cur);
    load_keys(0);
    next = next_tile(p, bp, row, cur, limit, n, last_row);
    if (next.J < limit) locate(next);
  }
  for (int buf = 0; cur.J < limit; buf = 1 - buf) {
    KeyTileCursor after = next;
    if (next.J < limit) {
      load_keys(1 - buf);
      after = next_tile(p, bp, row, next, limit, n, last_row);
      if (after.J < limit) locate(after);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const Elem* k_tile = k_tiles + buf * Tile::kElements;
    const Elem* v_tile = v_tiles + buf * Tile::kElements;
    const int key0 = cur.key0, end = cur.end;
    float s[1][NT][4] = {};
    warp_gemm_smem_nt<Elem, D, 1, NT, Tile, Tile>(s, q_tile, warp * 16, k_tile, 0);
    float dp[1][NT][4] = {};
    warp_gemm_smem_nt<Elem, D, 1, NT, Tile, Tile>(dp, do_tile, warp * 16, v_tile, 0);
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const int key = key0 + j * 8 + 2 * (lane % 4) + (e % 2);
        const bool visible = row_ok[r] && key < end && !(p.causal && key > row_idx[r]);
        const float prob =
            visible ? fast_exp2(s[0][j][e] * scale_log2 + cur.bias - lse_log2[r]) : 0.0f;
        s[0][j][e] = prob * (dp[0][j][e] * dout_scale - delta[r]);  // dS
      }
    }
    uint32_t ds[kBackwardParts][1][NT / 2][4];
    accumulators_to_a<Elem, kBackwardParts, 1, NT / 2>(ds, s);
    warp_gemm_regs_kn<Elem, kBackwardParts, 1, NT / 2, DT, Tile>(dq, ds, k_tile, 0);
    __syncthreads();  // the tile after next overwrites this buffer
    cur = next;
    next = after;
  }
  cp_async_wait<0>();
  store_gradient_tile<Elem, D>(p, p.dq, bp.dq_acc, b, query_row, row_ok, {true, true}, head, dq[0],
                               scale, false);
}

template <typename Elem, int D>
__global__ void __launch_bounds__(kMmaThreads)
    block_mma_dkdv_kernel(const Params p, const BlockPass bp) {
  constexpr int BQ = kDkdvQueryRows<D>;
  using KeyTile = SmemTile<kMmaRows, D>;
  using QueryTile = SmemTile<BQ, D>;
  constexpr int QT = BQ / 8;
  constexpr int DT = D / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  Elem* k_tile = reinterpret_cast<Elem*>(smem_raw);
  Elem* v_tile = k_tile + KeyTile::kElements;
  Elem* q_tiles = v_tile + KeyTile::kElements;                                      // two buffers
  Elem* do_tiles = q_tiles + 2 * QueryTile::kElements;                              // two buffers
  float* lse_rows = reinterpret_cast<float*>(do_tiles + 2 * QueryTile::kElements);  // [2][BQ]
  float* delta_rows = lse_rows + 2 * BQ;                                            // [2][BQ]

  const int64_t b = blockIdx.z, kv_head = blockIdx.y;
  const int64_t n = seq_length(p, b);
  const int k0 = static_cast<int>(blockIdx.x) * kMmaRows;
  if (k0 >= n) return;
  const int count = static_cast<int>(n);
  const int64_t J = k0 / bp.block;
  const int64_t nb = block_count(n, bp.block);
  const int64_t group = p.heads / p.heads_kv;
  const float scale = p.scale;
  const float scale_log2 = scale * kLog2e;
  const float dout_scale = output_scale(p);
  load_tile_async<Elem, kMmaRows, D, kMmaThreads>(
      k_tile, position_span<Elem>(p, bp, p.k, b, kv_head, k0, count));
  load_tile_async<Elem, kMmaRows, D, kMmaThreads>(
      v_tile, position_span<Elem>(p, bp, p.v, b, kv_head, k0, count));
  cp_async_commit();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int key_idx[2] = {k0 + warp * 16 + lane / 4, k0 + warp * 16 + lane / 4 + 8};
  const bool key_ok[2] = {key_idx[0] < count, key_idx[1] < count};
  float dk[1][DT][4] = {}, dv[1][DT][4] = {};

  // Query tiles of every kept query block of every query head of this kv head, in order,
  // double-buffered (tiles, lse and delta rows).
  const QueryWalk walk{p, bp, b, J, nb, n, (kv_head + 1) * group, k0};
  // Rows of the next query tile, located one tile ahead (order[] reads with a grid): the tile
  // rows this thread copies (q and dout cover the same positions) and its lse/delta row.
  static_assert(BQ <= kMmaThreads, "one lse/delta row per thread");
  TileRows<BQ, D, kMmaThreads> next_rows;
  int64_t next_stat_row = -1;
  auto locate = [&](const QueryTileCursor& c) {
    const RowSpan positions = position_span<Elem>(p, bp, p.q, b, c.head, c.query0, c.end);
    next_rows.locate(positions);
    const int query = c.query0 + static_cast<int>(threadIdx.x);
    next_stat_row = threadIdx.x < BQ && query < c.end ? grid_row(bp.order, query) : -1;
  };
  auto load_queries = [&](const QueryTileCursor& c, int buf) {
    const RowSpan q_span = position_span<Elem>(p, bp, p.q, b, c.head, c.query0, c.end);
    const RowSpan do_span = position_span<Elem>(p, bp, p.dout, b, c.head, c.query0, c.end);
    load_tile_rows_async<Elem, BQ, D, kMmaThreads>(q_tiles + buf * QueryTile::kElements, q_span,
                                                   next_rows);
    load_tile_rows_async<Elem, BQ, D, kMmaThreads>(do_tiles + buf * QueryTile::kElements, do_span,
                                                   next_rows);
    cp_async_commit();
    // Plain loads; the barrier before use orders them.
    if (threadIdx.x < BQ) {
      float l = 0.0f, d = 0.0f;
      if (next_stat_row >= 0) {
        const int64_t at = lse_index(p, b, c.head, next_stat_row);
        l = p.lse[at] * kLog2e;
        d = bp.delta[at];
      }
      lse_rows[buf * BQ + threadIdx.x] = l;
      delta_rows[buf * BQ + threadIdx.x] = d;
    }
  };
  QueryTileCursor cur = walk.find(kv_head * group, p.causal ? J : 0);
  QueryTileCursor next = cur;
  if (cur.head < walk.head_end) {
    locate(cur);
    load_queries(cur, 0);
    next = walk.next<BQ>(cur);
    if (next.head < walk.head_end) locate(next);
  }
  for (int buf = 0; cur.head < walk.head_end; buf = 1 - buf) {
    QueryTileCursor after = next;
    if (next.head < walk.head_end) {
      load_queries(next, 1 - buf);
      after = walk.next<BQ>(next);
      if (after.head < walk.head_end) locate(after);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const Elem* q_tile = q_tiles + buf * QueryTile::kElements;
    const Elem* do_tile = do_tiles + buf * QueryTile::kElements;
    const int query0 = cur.query0, end = cur.end;
    float st[1][QT][4] = {};  // S^T: this warp's 16 keys x BQ queries
    warp_gemm_smem_nt<Elem, D, 1, QT, KeyTile, QueryTile>(st, k_tile, warp * 16, q_tile, 0);
    float dpt[1][QT][4] = {};  // dP^T = v dout^T
    warp_gemm_smem_nt<Elem, D, 1, QT, KeyTile, QueryTile>(dpt, v_tile, warp * 16, do_tile, 0);
#pragma unroll
    for (int j = 0; j < QT; ++j) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int col = j * 8 + 2 * (lane % 4) + c;
        const int query = query0 + col;
        const float lse_col = lse_rows[buf * BQ + col];
        const float delta_col = delta_rows[buf * BQ + col];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int e = 2 * r + c;
          const bool visible = key_ok[r] && query < end && !(p.causal && key_idx[r] > query);
          const float prob =
              visible ? fast_exp2(st[0][j][e] * scale_log2 + cur.bias - lse_col) : 0.0f;
          st[0][j][e] = prob;                                             // P^T
          dpt[0][j][e] = prob * (dpt[0][j][e] * dout_scale - delta_col);  // dS^T
        }
      }
    }
    uint32_t pa[kBackwardParts][1][QT / 2][4], dsa[kBackwardParts][1][QT / 2][4];
    accumulators_to_a<Elem, kBackwardParts, 1, QT / 2>(pa, st);
    accumulators_to_a<Elem, kBackwardParts, 1, QT / 2>(dsa, dpt);
    warp_gemm_regs_kn<Elem, kBackwardParts, 1, QT / 2, DT, QueryTile>(dv, pa, do_tile, 0);
    warp_gemm_regs_kn<Elem, kBackwardParts, 1, QT / 2, DT, QueryTile>(dk, dsa, q_tile, 0);
    __syncthreads();  // the tile after next overwrites this buffer and its row stats
    cur = next;
    next = after;
  }
  cp_async_wait<0>();
  int64_t key_row[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) key_row[r] = key_ok[r] ? grid_row(bp.order, key_idx[r]) : 0;
  store_gradient_tile<Elem, D>(p, p.dk, bp.dk_acc, b, key_row, key_ok, {true, true}, kv_head, dk[0],
                               scale, false);
  store_gradient_tile<Elem, D>(p, p.dv, bp.dv_acc, b, key_row, key_ok, {true, true}, kv_head, dv[0],
                               dout_scale, false);
}

}  // namespace dilated::cuda
