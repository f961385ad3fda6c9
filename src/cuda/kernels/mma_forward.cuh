// Tensor-core forward (FlashAttention-2 structure): a CTA of 4 warps takes 128 selected query
// rows of one segment of one head, 32 rows (two m16 tiles) per warp so that every K and V
// fragment read from shared memory feeds two matrix products. K and V tiles of selected keys
// stream through shared memory, double-buffered with cp.async; each warp keeps its rows'
// running max, sum and output in registers.
#pragma once

#include "cuda/kernels/forward_rows.cuh"
#include "cuda/kernels/mma_tiles.cuh"

namespace dilated::cuda {

inline constexpr int kMmaThreads = 128;
inline constexpr int kMmaRows = 64;  // rows per CTA tile of the backward kernels

// m16 row tiles per warp (a benchmark knob: -DDILATED_FORWARD_M_TILES=1 for 16 rows a warp).
#ifndef DILATED_FORWARD_M_TILES
#define DILATED_FORWARD_M_TILES 2
#endif
inline constexpr int kForwardMTiles = DILATED_FORWARD_M_TILES;               // per warp
inline constexpr int kForwardRows = 16 * kForwardMTiles * kMmaThreads / 32;  // 128 per CTA
// Keys per tile: fewer for wide heads, so that scores and outputs stay in registers.
template <int D>
inline constexpr int kForwardKeys = D > 64 ? 32 : 64;

template <typename Elem, int D>
struct ForwardSmem {
  using QueryTile = SmemTile<kForwardRows, D>;
  using KeyTile = SmemTile<kForwardKeys<D>, D>;
  static constexpr int kBytes =
      (QueryTile::kElements + 4 * KeyTile::kElements) * static_cast<int>(sizeof(Elem));
};

template <typename Elem, int D>
__global__ void __launch_bounds__(kMmaThreads)
    mma_forward_kernel(const Params p, const PassInfo pass) {
  using QueryTile = SmemTile<kForwardRows, D>;
  constexpr int BN = kForwardKeys<D>;
  using KeyTile = SmemTile<BN, D>;
  constexpr int MT = kForwardMTiles;
  constexpr int NT = BN / 8;  // n8 tiles of scores
  constexpr int DT = D / 8;   // n8 tiles of output
  extern __shared__ __align__(128) unsigned char smem_raw[];
  Elem* q_tile = reinterpret_cast<Elem*>(smem_raw);
  Elem* k_tiles = q_tile + QueryTile::kElements;
  Elem* v_tiles = k_tiles + 2 * KeyTile::kElements;

  const auto [b, head, kv_head, hp, rows, key_rows, q0, key_count, shift, num_keys] =
      forward_tile(p, pass, kForwardRows);
  if (num_keys == 0) return;
  const int num_key_tiles = static_cast<int>((num_keys + BN - 1) / BN);
  const float scale = p.scale;  // resolved by the launcher
  const float scale_log2 = scale * kLog2e;

  RowSpan k_span = make_span<Elem>(p, p.k, b, kv_head, hp, key_rows, 0, pass.order);
  RowSpan v_span = make_span<Elem>(p, p.v, b, kv_head, hp, key_rows, 0, pass.order);
  load_tile_async<Elem, kForwardRows, D, kMmaThreads>(
      q_tile, make_span<Elem>(p, p.q, b, head, hp, rows, q0, pass.order));
  // K and V tiles cover the same positions: one set of located rows serves both.
  TileRows<BN, D, kMmaThreads> key_rows_next;
  key_rows_next.locate(k_span);
  load_tile_rows_async<Elem, BN, D, kMmaThreads>(k_tiles, k_span, key_rows_next);
  load_tile_rows_async<Elem, BN, D, kMmaThreads>(v_tiles, v_span, key_rows_next);
  cp_async_commit();
  k_span.idx0 = v_span.idx0 = BN;
  key_rows_next.locate(k_span);  // tile 1, one iteration ahead

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_row0 = warp * 16 * MT;
  // Selected-row index of the thread's rows: m tile, then rows lane/4 and lane/4 + 8.
  int row_idx[MT][2];
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    row_idx[m][0] = q0 + warp_row0 + m * 16 + lane / 4;
    row_idx[m][1] = row_idx[m][0] + 8;
  }
  float o[MT][DT][4] = {};
  float row_max[MT][2], row_sum[MT][2];
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    row_max[m][0] = row_max[m][1] = -INFINITY;
    row_sum[m][0] = row_sum[m][1] = 0.0f;
  }

  for (int kt = 0; kt < num_key_tiles; ++kt) {
    const int buf = kt % 2;
    if (kt + 1 < num_key_tiles) {
      load_tile_rows_async<Elem, BN, D, kMmaThreads>(k_tiles + (1 - buf) * KeyTile::kElements,
                                                     k_span, key_rows_next);
      load_tile_rows_async<Elem, BN, D, kMmaThreads>(v_tiles + (1 - buf) * KeyTile::kElements,
                                                     v_span, key_rows_next);
      cp_async_commit();
      k_span.idx0 = v_span.idx0 = (kt + 2) * BN;
      key_rows_next.locate(k_span);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    float s[MT][NT][4] = {};
    warp_gemm_smem_nt<Elem, D, MT, NT, QueryTile, KeyTile>(s, q_tile, warp_row0,
                                                           k_tiles + buf * KeyTile::kElements, 0);
    const int key0 = kt * BN;
    const bool needs_mask =
        key0 + BN > key_count || (p.causal && key0 + BN > q0 + warp_row0 + shift);
    scale_and_mask_scores(s, scale_log2, needs_mask, key0, key_count, p.causal, row_idx, shift);
    online_softmax_tile<MT, NT, DT>(s, row_max, row_sum, o);
    uint32_t pa[1][MT][NT / 2][4];
    accumulators_to_a<Elem, 1, MT, NT / 2>(pa, s);
    warp_gemm_regs_kn<Elem, 1, MT, NT / 2, DT, KeyTile>(o, pa, v_tiles + buf * KeyTile::kElements,
                                                        0);
    __syncthreads();  // the next iteration's prefetch overwrites this buffer
  }

  store_forward_rows<Elem>(p, pass, hp, rows, key_count, shift, b, head, row_idx, o, row_max,
                           row_sum, row_sum);
}

}  // namespace dilated::cuda
