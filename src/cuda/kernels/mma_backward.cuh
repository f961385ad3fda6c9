// Tensor-core backward (FlashAttention-2 algebra with the final union lse):
//   P = exp(s - lse), dP = dout' v^T, dS = P (dP - delta), dv = P^T dout', dk = scale dS^T q,
//   dq = scale dS k, where dout' = dout * output_scale.
// dS sums to zero over each row's keys, so dq and dk cancel heavily: dS (and P, for dv) enter
// their products split into two 16-bit parts (about 16 significant bits), which keeps the
// gradients within the error that rounding the result to 16 bits makes anyway.
// dq comes from a query-outer kernel and dk/dv from a key-outer kernel, so every gradient row is
// owned by one CTA per pass: no atomics, bitwise-reproducible results.
#pragma once

#include "cuda/kernels/mma_forward.cuh"

namespace dilated::cuda {

// 16-bit parts of P and dS in the backward products (a benchmark knob: 1 trades accuracy for
// speed, see bench/NOTES.md).
#ifndef DILATED_BACKWARD_PARTS
#define DILATED_BACKWARD_PARTS 2
#endif
inline constexpr int kBackwardParts = DILATED_BACKWARD_PARTS;
// 16-bit parts of P^T in the Hopper dk/dv kernels' dv += P^T dO (a benchmark knob; dS^T always
// takes kBackwardParts).
#ifndef DILATED_HOPPER_VALUE_PARTS
#define DILATED_HOPPER_VALUE_PARTS 2
#endif
inline constexpr int kValueParts = DILATED_HOPPER_VALUE_PARTS;

// Query rows per inner tile of the key-outer kernel: fewer for wide heads, to keep the dk and
// dv accumulators (2 x 16 x D floats per warp) in registers.
template <int D>
inline constexpr int kDkdvQueryRows = D > 64 ? 32 : 64;

template <typename Elem, int D>
struct DqSmem {
  using Tile = SmemTile<kMmaRows, D>;
  static constexpr int kBytes = 6 * Tile::kElements * static_cast<int>(sizeof(Elem));  // Q dO 2K 2V
};

template <typename Elem, int D>
struct DkdvSmem {
  using KeyTile = SmemTile<kMmaRows, D>;
  using QueryTile = SmemTile<kDkdvQueryRows<D>, D>;
  static constexpr int kBytes =
      (2 * KeyTile::kElements + 4 * QueryTile::kElements) * static_cast<int>(sizeof(Elem)) +
      4 * kDkdvQueryRows<D> * static_cast<int>(sizeof(float));  // 2 x (lse, delta)
};

// Stores or accumulates the thread's part of a warp's 16 x D fp32 tile (m16n8 layout) into
// gradient rows row[0], row[1] of sequence b. `rows_ok[r]` says whether row r is a real row,
// `holds[r]` whether the accumulator holds row r (accumulator_holds; if not, it is stored, not
// added to). `converts` (PassInfo::converts): the accumulator's sum plus the tile, written to
// grad.
template <typename Elem, int D>
__device__ __forceinline__ void store_gradient_tile(
    const Params& p, const Tensor& grad, const Tensor& acc, int64_t b, const int64_t (&row)[2],
    const bool (&rows_ok)[2], const bool (&holds)[2], int64_t head, const float (&x)[D / 8][4],
    float factor, bool converts) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (!rows_ok[r]) continue;
    if (acc.data) {
      float* a = static_cast<float*>(acc.data) + row_offset(p, acc, b, row[r], head);
      // Every load before any store: in the converting pass grad could alias acc as far as the
      // compiler knows, so interleaved, each load would wait for the store before it (measured:
      // +19% on the pass).
      float2 sum[D / 8];
#pragma unroll
      for (int d = 0; d < D / 8; ++d) {
        const float2 old = holds[r] ? *reinterpret_cast<const float2*>(a + d * 8 + 2 * (lane % 4))
                                    : make_float2(0.0f, 0.0f);
        sum[d] = make_float2(old.x + factor * x[d][2 * r], old.y + factor * x[d][2 * r + 1]);
      }
      if (converts) {
        Elem* g = static_cast<Elem*>(grad.data) + row_offset(p, grad, b, row[r], head);
#pragma unroll
        for (int d = 0; d < D / 8; ++d) {
          *reinterpret_cast<uint32_t*>(g + d * 8 + 2 * (lane % 4)) =
              pack2<Elem>(sum[d].x, sum[d].y);
        }
      } else {
#pragma unroll
        for (int d = 0; d < D / 8; ++d) {
          *reinterpret_cast<float2*>(a + d * 8 + 2 * (lane % 4)) = sum[d];
        }
      }
    } else {
      Elem* g = static_cast<Elem*>(grad.data) + row_offset(p, grad, b, row[r], head);
#pragma unroll
      for (int d = 0; d < D / 8; ++d) {
        *reinterpret_cast<uint32_t*>(g + d * 8 + 2 * (lane % 4)) =
            pack2<Elem>(factor * x[d][2 * r], factor * x[d][2 * r + 1]);
      }
    }
  }
}

// accumulator_holds for a thread's two gradient rows at curve positions first + index[r] *
// dilation (real where ok).
__device__ __forceinline__ void rows_held(const Params& p, const PassInfo& pass, int64_t head,
                                          int64_t first, int64_t dilation, const int (&index)[2],
                                          const bool (&ok)[2], bool (&holds)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    holds[r] = ok[r] && accumulator_holds(p, pass, head, first + index[r] * dilation);
  }
}

// A query-outer backward thread's two rows (selected-row indices row_idx, real where row_ok):
// their tensor rows, lse in log2 units and delta (0 for rows past the slice).
__device__ __forceinline__ void load_row_stats(const Params& p, const PassInfo& pass,
                                               const HeadPattern& hp, const SegmentRows& rows,
                                               int64_t b, int64_t head, const int (&row_idx)[2],
                                               const bool (&row_ok)[2], int64_t (&query_row)[2],
                                               float (&lse_log2)[2], float (&delta)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    query_row[r] = row_ok[r] ? grid_row(pass.order, rows.first + row_idx[r] * hp.dilation) : 0;
    const int64_t at = row_ok[r] ? lse_index(p, b, head, query_row[r]) : 0;
    lse_log2[r] = row_ok[r] ? p.lse[at] * kLog2e : 0.0f;
    delta[r] = row_ok[r] ? pass.delta[at] : 0.0f;
  }
}

// dS = P (dP dout_scale - delta) in place of the scores s of the thread's two rows (lse_log2,
// delta; real where row_ok) and keys key0 + 8n + ..., P = exp2(s scale_log2 - lse_log2). Where
// the tile needs a mask, entries past key_count, of rows past the slice or, causal, after
// last_key[r] become 0 afterwards, in a loop of their own: a conditional exponential had become
// a branch per element (bench/NOTES.md, Hopper backward b3).
template <int NT>
__device__ __forceinline__ void scores_to_ds(float (&s)[NT][4], const float (&dp)[NT][4],
                                             float scale_log2, float dout_scale,
                                             const float (&lse_log2)[2], const float (&delta)[2],
                                             bool needs_mask, int key0, int key_count, bool causal,
                                             const bool (&row_ok)[2], const int (&last_key)[2]) {
#pragma unroll
  for (int n = 0; n < NT; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = e / 2;
      const float prob = fast_exp2(s[n][e] * scale_log2 - lse_log2[r]);
      s[n][e] = prob * (dp[n][e] * dout_scale - delta[r]);
    }
  }
  if (!needs_mask) return;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int n = 0; n < NT; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = e / 2;
      const int key = key0 + n * 8 + 2 * (lane % 4) + (e % 2);
      const bool visible = row_ok[r] && key < key_count && !(causal && key > last_key[r]);
      s[n][e] = visible ? s[n][e] : 0.0f;
    }
  }
}

template <typename Elem, int D>
__global__ void __launch_bounds__(kMmaThreads)
    mma_backward_dq_kernel(const Params p, const PassInfo pass) {
  using Tile = SmemTile<kMmaRows, D>;
  constexpr int NT = kMmaRows / 8;
  constexpr int DT = D / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  Elem* q_tile = reinterpret_cast<Elem*>(smem_raw);
  Elem* do_tile = q_tile + Tile::kElements;
  Elem* k_tiles = do_tile + Tile::kElements;
  Elem* v_tiles = k_tiles + 2 * Tile::kElements;

  const int64_t b = blockIdx.z;
  const int64_t head = pass.head_begin + blockIdx.y;
  const HeadPattern hp = pass_pattern(p, pass, head);
  const TileCoord tc = tile_coord(pass);
  const SliceRows tr = slice_rows(p, hp, tc.segment, b);
  const SegmentRows rows = tr.queries, key_rows = tr.keys;
  const int64_t q0 = tc.tile * kMmaRows;
  if (q0 >= rows.count) return;
  const int64_t kv_head = kv_head_of(p, head);
  const int key_count = static_cast<int>(key_rows.count);
  const int shift = static_cast<int>(tr.shift);
  // Keys the tile's last row sees; none (Params::window): dq keeps its zeros or accumulation.
  const int64_t num_keys = visible_keys(p.causal, key_count, q0 + kMmaRows - 1, shift);
  if (num_keys == 0) return;
  const int num_key_tiles = static_cast<int>((num_keys + kMmaRows - 1) / kMmaRows);
  const float scale = p.scale;  // resolved by the launcher
  const float scale_log2 = scale * kLog2e;
  const float dout_scale = output_scale(p);

  load_tile_async<Elem, kMmaRows, D, kMmaThreads>(
      q_tile, make_span<Elem>(p, p.q, b, head, hp, rows, static_cast<int>(q0), pass.order));
  load_tile_async<Elem, kMmaRows, D, kMmaThreads>(
      do_tile, make_span<Elem>(p, p.dout, b, head, hp, rows, static_cast<int>(q0), pass.order));
  RowSpan k_span = make_span<Elem>(p, p.k, b, kv_head, hp, key_rows, 0, pass.order);
  RowSpan v_span = make_span<Elem>(p, p.v, b, kv_head, hp, key_rows, 0, pass.order);
  TileRows<kMmaRows, D, kMmaThreads> key_rows_next;  // K and V: the same positions
  key_rows_next.locate(k_span);
  load_tile_rows_async<Elem, kMmaRows, D, kMmaThreads>(k_tiles, k_span, key_rows_next);
  load_tile_rows_async<Elem, kMmaRows, D, kMmaThreads>(v_tiles, v_span, key_rows_next);
  cp_async_commit();
  k_span.idx0 = v_span.idx0 = kMmaRows;
  key_rows_next.locate(k_span);  // tile 1, one iteration ahead

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int count = static_cast<int>(rows.count);
  const int row_idx[2] = {static_cast<int>(q0) + warp * 16 + lane / 4,
                          static_cast<int>(q0) + warp * 16 + lane / 4 + 8};
  const bool row_ok[2] = {row_idx[0] < count, row_idx[1] < count};
  // Tiles inside the segment and below the diagonal need no per-element visibility test.
  const bool rows_inside = q0 + kMmaRows <= count;
  int64_t query_row[2];
  float lse_log2[2], delta[2];
  load_row_stats(p, pass, hp, rows, b, head, row_idx, row_ok, query_row, lse_log2, delta);
  float dq[1][DT][4] = {};
  // Causal: the last key each of the thread's rows sees, and the key tiles from which on some
  // row of this CTA sees not every key (precomputed: the loop holds no more registers than
  // without windows).
  const int last_key[2] = {row_idx[0] + shift, row_idx[1] + shift};
  const int masked_after = static_cast<int>(q0) + shift - kMmaRows;

  for (int kt = 0; kt < num_key_tiles; ++kt) {
    const int buf = kt % 2;
    if (kt + 1 < num_key_tiles) {
      load_tile_rows_async<Elem, kMmaRows, D, kMmaThreads>(k_tiles + (1 - buf) * Tile::kElements,
                                                           k_span, key_rows_next);
      load_tile_rows_async<Elem, kMmaRows, D, kMmaThreads>(v_tiles + (1 - buf) * Tile::kElements,
                                                           v_span, key_rows_next);
      cp_async_commit();
      k_span.idx0 = v_span.idx0 = (kt + 2) * kMmaRows;
      key_rows_next.locate(k_span);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const Elem* k_tile = k_tiles + buf * Tile::kElements;
    float s[1][NT][4] = {};
    warp_gemm_smem_nt<Elem, D, 1, NT, Tile, Tile>(s, q_tile, warp * 16, k_tile, 0);
    float dp[1][NT][4] = {};
    warp_gemm_smem_nt<Elem, D, 1, NT, Tile, Tile>(dp, do_tile, warp * 16,
                                                  v_tiles + buf * Tile::kElements, 0);
    const int key0 = kt * kMmaRows;
    const bool needs_mask =
        !rows_inside || key0 + kMmaRows > key_count || (p.causal && key0 > masked_after);
    scores_to_ds(s[0], dp[0], scale_log2, dout_scale, lse_log2, delta, needs_mask, key0, key_count,
                 p.causal, row_ok, last_key);
    uint32_t ds[kBackwardParts][1][NT / 2][4];
    accumulators_to_a<Elem, kBackwardParts, 1, NT / 2>(ds, s);
    warp_gemm_regs_kn<Elem, kBackwardParts, 1, NT / 2, DT, Tile>(dq, ds, k_tile, 0);
    __syncthreads();
  }
  bool holds[2];
  rows_held(p, pass, head, rows.first, hp.dilation, row_idx, row_ok, holds);
  store_gradient_tile<Elem, D>(p, p.dq, pass.dq_acc, b, query_row, row_ok, holds, head, dq[0],
                               scale, pass.converts);
}

template <typename Elem, int D>
__global__ void __launch_bounds__(kMmaThreads)
    mma_backward_dkdv_kernel(const Params p, const PassInfo pass) {
  constexpr int BQ = kDkdvQueryRows<D>;
  using KeyTile = SmemTile<kMmaRows, D>;
  using QueryTile = SmemTile<BQ, D>;
  constexpr int QT = BQ / 8;  // n8 tiles of queries
  constexpr int DT = D / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  Elem* k_tile = reinterpret_cast<Elem*>(smem_raw);
  Elem* v_tile = k_tile + KeyTile::kElements;
  Elem* q_tiles = v_tile + KeyTile::kElements;
  Elem* do_tiles = q_tiles + 2 * QueryTile::kElements;
  float* lse_rows = reinterpret_cast<float*>(do_tiles + 2 * QueryTile::kElements);  // [2][BQ]
  float* delta_rows = lse_rows + 2 * BQ;                                            // [2][BQ]

  const int64_t b = blockIdx.z;
  const int64_t kv_head = blockIdx.y;
  const TileCoord tc = key_tile_coord(pass);
  const int64_t k0 = tc.tile * kMmaRows;
  const int64_t group = p.heads / p.heads_kv;
  const float scale = p.scale;  // resolved by the launcher
  const float scale_log2 = scale * kLog2e;
  const float dout_scale = output_scale(p);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t head_end = pass.head_begin + pass.head_count;

  for (int64_t head = kv_head * group; head < (kv_head + 1) * group; ++head) {
    if (head < pass.head_begin || head >= head_end) continue;
    const HeadPattern hp = pass_pattern(p, pass, head);
    const SliceRows tr = slice_rows(p, hp, tc.segment, b);
    const SegmentRows rows = tr.queries, key_rows = tr.keys;
    if (k0 >= key_rows.count) continue;
    const int shift = static_cast<int>(tr.shift);
    // Causal: query slice row i sees key row j iff i >= j - shift.
    const int64_t first_q = p.causal ? max(k0 - shift, int64_t{0}) / BQ * BQ : 0;
    // No query sees these keys (Params::window): dk, dv keep their zeros or accumulation.
    if (first_q >= rows.count) continue;
    const int num_query_tiles = static_cast<int>((rows.count - first_q + BQ - 1) / BQ);
    __syncthreads();  // the previous head's tiles are no longer read
    // Needed again only by the epilogue; 32 bits (a key window's rows per sequence fit) to
    // hold one register through the loop (this kernel is at the register limit at D = 128).
    const int key_first_row = static_cast<int>(key_rows.first);
    load_tile_async<Elem, kMmaRows, D, kMmaThreads>(
        k_tile,
        make_span<Elem>(p, p.k, b, kv_head, hp, key_rows, static_cast<int>(k0), pass.order));
    load_tile_async<Elem, kMmaRows, D, kMmaThreads>(
        v_tile,
        make_span<Elem>(p, p.v, b, kv_head, hp, key_rows, static_cast<int>(k0), pass.order));
    RowSpan q_span =
        make_span<Elem>(p, p.q, b, head, hp, rows, static_cast<int>(first_q), pass.order);
    RowSpan do_span =
        make_span<Elem>(p, p.dout, b, head, hp, rows, static_cast<int>(first_q), pass.order);

    // The next query tile's rows, located one tile ahead (order[] reads with a grid): the tile
    // rows this thread copies (q and dout cover the same positions) and its lse/delta row.
    static_assert(BQ <= kMmaThreads, "one lse/delta row per thread");
    TileRows<BQ, D, kMmaThreads> query_rows_next;
    int64_t stat_row_next = -1;
    auto locate = [&](int qt) {
      q_span.idx0 = do_span.idx0 = static_cast<int>(first_q) + qt * BQ;
      query_rows_next.locate(q_span);
      const int64_t idx = first_q + static_cast<int64_t>(qt) * BQ + threadIdx.x;
      stat_row_next = threadIdx.x < BQ && idx < rows.count
                          ? grid_row(pass.order, rows.first + idx * hp.dilation)
                          : -1;
    };
    // Query tile (located) into buffer `buf`, with its lse (log2 units) and delta rows (plain
    // loads; the barrier before use orders them).
    auto load_queries = [&](int buf) {
      load_tile_rows_async<Elem, BQ, D, kMmaThreads>(q_tiles + buf * QueryTile::kElements, q_span,
                                                     query_rows_next);
      load_tile_rows_async<Elem, BQ, D, kMmaThreads>(do_tiles + buf * QueryTile::kElements, do_span,
                                                     query_rows_next);
      if (threadIdx.x < BQ) {
        float l = 0.0f, d = 0.0f;
        if (stat_row_next >= 0) {
          const int64_t at = lse_index(p, b, head, stat_row_next);
          l = p.lse[at] * kLog2e;
          d = pass.delta[at];
        }
        lse_rows[buf * BQ + threadIdx.x] = l;
        delta_rows[buf * BQ + threadIdx.x] = d;
      }
      cp_async_commit();
    };
    locate(0);
    load_queries(0);
    locate(1);  // one iteration ahead

    const int count = static_cast<int>(rows.count);
    const int key_count = static_cast<int>(key_rows.count);
    const bool keys_inside = k0 + kMmaRows <= key_count;
    // The thread's keys r = 0, 1: inside the slice, and the first query that sees each (causal);
    // query tiles from `unmasked_from` on see every key of this tile. Kept as these few values
    // so that the loop holds no more registers than without windows.
    const int key_base = static_cast<int>(k0) + warp * 16 + lane / 4;
    const bool key_real[2] = {key_base < key_count, key_base + 8 < key_count};
    const int first_seeing[2] = {key_base - shift, key_base + 8 - shift};
    const int unmasked_from = static_cast<int>(k0) + kMmaRows - shift;
    float dk[1][DT][4] = {}, dv[1][DT][4] = {};
    for (int qt = 0; qt < num_query_tiles; ++qt) {
      const int buf = qt % 2;
      if (qt + 1 < num_query_tiles) {
        load_queries(1 - buf);
        locate(qt + 2);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      const Elem* q_tile = q_tiles + buf * QueryTile::kElements;
      const Elem* do_tile = do_tiles + buf * QueryTile::kElements;
      float st[1][QT][4] = {};  // S^T: this warp's 16 keys x BQ queries
      warp_gemm_smem_nt<Elem, D, 1, QT, KeyTile, QueryTile>(st, k_tile, warp * 16, q_tile, 0);
      float dpt[1][QT][4] = {};  // dP^T = v dout^T
      warp_gemm_smem_nt<Elem, D, 1, QT, KeyTile, QueryTile>(dpt, v_tile, warp * 16, do_tile, 0);
      const int query0 = static_cast<int>(first_q) + qt * BQ;
      const bool needs_mask =
          query0 + BQ > count || !keys_inside || (p.causal && query0 < unmasked_from);
#pragma unroll
      for (int j = 0; j < QT; ++j) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int col = j * 8 + 2 * (lane % 4) + c;
          const float lse_col = lse_rows[buf * BQ + col];
          const float delta_col = delta_rows[buf * BQ + col];
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int e = 2 * r + c;
            const int query = query0 + col;
            const bool visible = !needs_mask || (query < count && key_real[r] &&
                                                 !(p.causal && query < first_seeing[r]));
            const float prob = visible ? fast_exp2(st[0][j][e] * scale_log2 - lse_col) : 0.0f;
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
      __syncthreads();
    }
    const int64_t key_row[2] = {
        key_real[0] ? grid_row(pass.order, key_first_row + key_base * hp.dilation) : 0,
        key_real[1] ? grid_row(pass.order, key_first_row + (key_base + 8) * hp.dilation) : 0};
    bool holds[2];
    rows_held(p, pass, head, key_first_row, hp.dilation, {key_base, key_base + 8}, key_real, holds);
    store_gradient_tile<Elem, D>(p, p.dk, pass.dk_acc, b, key_row, key_real, holds, kv_head, dk[0],
                                 scale, pass.converts);
    store_gradient_tile<Elem, D>(p, p.dv, pass.dv_acc, b, key_row, key_real, holds, kv_head, dv[0],
                                 dout_scale, pass.converts);
  }
}

}  // namespace dilated::cuda
