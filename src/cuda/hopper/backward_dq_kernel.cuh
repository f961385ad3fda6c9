// Hopper dq (sm_90a): the portable dq kernel's algebra (kernels/mma_backward.cuh) on warpgroup
// products, with the Hopper forward's CTA: 128 selected query rows of one segment of one head,
// K and V tiles of 128 keys streamed by the producer warpgroup through the stage ring. Per tile
// a consumer warpgroup (64 rows) computes S = Q K^T and dP = dO V^T (operands in shared
// memory), dS = P (dP - delta) on the accumulators, and dq += dS K with dS from registers in
// two 16-bit parts (the cancellation argument of mma_backward.cuh) and K read N-major. Each
// dq row is owned by one CTA per pass: no atomics, bitwise-reproducible results.
#pragma once

#include "cuda/hopper/backward_products.cuh"
#include "cuda/hopper/forward_kernel.cuh"
#include "cuda/hopper/stage_ring.cuh"
#include "cuda/hopper/warp_roles.cuh"
#include "cuda/hopper/wgmma.cuh"
#include "cuda/kernels/forward_rows.cuh"
#include "cuda/kernels/mma_backward.cuh"

namespace dilated::cuda::hopper {

inline constexpr int kDqStages = 2;  // K/V tiles in flight (Q and dO take the rest of the space)

template <int D>
struct DqSmem {
  using QueryTile = GmmaTile<kRows, D>;
  using KeyTile = GmmaTile<kKeys, D>;
  static constexpr int kBytes =
      (2 * QueryTile::kElements + 2 * kDqStages * KeyTile::kElements) * 2 +
      StageRing<kDqStages>::kBytes + 1024;
};

template <typename Elem, int D, bool Squares>
__global__ void __launch_bounds__(kThreads, 1)
    backward_dq_kernel(const Params p, const PassInfo pass,
                       const __grid_constant__ TensorMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using QueryTile = GmmaTile<kRows, D>;
  using KeyTile = GmmaTile<kKeys, D>;
  constexpr int NT = kKeys / 8;  // n8 column tiles of scores
  constexpr int DT = D / 8;      // n8 column tiles of dq
  constexpr uint32_t kKeyTileBytes = KeyTile::kElements * 2;
  extern __shared__ unsigned char smem_raw[];
  Elem* q_tile = first_tile<Elem>(smem_raw);
  Elem* do_tile = q_tile + QueryTile::kElements;
  Elem* k_tiles = do_tile + QueryTile::kElements;
  Elem* v_tiles = k_tiles + kDqStages * KeyTile::kElements;
  const StageRing<kDqStages> ring{smem_address(v_tiles + kDqStages * KeyTile::kElements)};

  const ForwardTile tile = forward_tile(p, pass, kRows);
  // No key for any row (Params::window): dq keeps its zeros or accumulation.
  if (tile.num_keys == 0) return;
  const int64_t b = tile.b, head = tile.head;
  const HeadPattern hp = tile.hp;
  const SegmentRows rows = tile.rows;
  const int q0 = tile.q0, key_count = tile.key_count, shift = tile.shift;
  const int num_key_tiles = (tile.num_keys + kKeys - 1) / kKeys;

  const SquareCells<kKeys> key_cells = first_key_cells<Squares>(maps, tile, kConsumerThreads);
  let_next_launch_start();
  if (threadIdx.x == 0) ring.init();
  __syncthreads();

  if (is_producer()) {
    become_producer();
    stream_key_tiles<Elem, D, kDqStages, Squares>(p, pass, maps, tile, 0, num_key_tiles, k_tiles,
                                                  v_tiles, ring, 0, key_cells);
    return;
  }

  become_consumer();
  load_tile_async<Elem, kRows, D, kConsumerThreads, QueryTile>(
      q_tile, make_span<Elem>(p, p.q, b, head, hp, rows, q0, pass.order));
  load_tile_async<Elem, kRows, D, kConsumerThreads, QueryTile>(
      do_tile, make_span<Elem>(p, p.dout, b, head, hp, rows, q0, pass.order));
  cp_async_commit();

  const int lane = threadIdx.x % 32;
  const int warpgroup = threadIdx.x / 128;
  const int warp_row0 = warpgroup * 64 + (threadIdx.x % 128) / 32 * 16;
  const float scale_log2 = p.scale * kLog2e;
  const float dout_scale = output_scale(p);
  const int count = static_cast<int>(rows.count);
  const int row_idx[2] = {q0 + warp_row0 + lane / 4, q0 + warp_row0 + lane / 4 + 8};
  const bool row_ok[2] = {row_idx[0] < count, row_idx[1] < count};
  const int last_key[2] = {row_idx[0] + shift, row_idx[1] + shift};  // causal: last key seen
  int64_t query_row[2];
  float lse_log2[2], delta[2];
  load_row_stats(p, pass, hp, rows, b, head, row_idx, row_ok, query_row, lse_log2, delta);
  // The warp's rows are inside the slice: only key tiles at its end or, causal, past the
  // warp's first row need the per-element test.
  const bool warp_rows_inside = q0 + warp_row0 + 16 <= count;

  cp_async_wait<0>();
  fence_proxy_async();
  named_barrier_sync(1, kConsumerThreads);

  const uint64_t q_desc = k_major_desc(smem_address(q_tile) + warpgroup * 64 * 128);
  const uint64_t do_desc = k_major_desc(smem_address(do_tile) + warpgroup * 64 * 128);
  const uint64_t k_desc = k_major_desc(smem_address(k_tiles));          // S = Q K^T
  const uint64_t v_desc = k_major_desc(smem_address(v_tiles));          // dP = dO V^T
  const uint64_t kn_desc = n_major_desc<kKeys>(smem_address(k_tiles));  // dq += dS K
  float dq[DT][4] = {};

  for (int t = 0; t < num_key_tiles; ++t) {
    const uint32_t stage = (t % kDqStages) * kKeyTileBytes;
    ring.wait_full(t);
    float s[1][NT][4], dp[1][NT][4];
    wgmma_fence();
    wgmma_ss_over_d<Elem, kKeys, kRows, D>(s[0], q_desc, k_desc, stage);
    wgmma_ss_over_d<Elem, kKeys, kRows, D>(dp[0], do_desc, v_desc, stage);
    wgmma_commit();
    wgmma_wait<0>();
    pin_accumulators(s[0]);
    pin_accumulators(dp[0]);

    const int key0 = t * kKeys;
    const bool needs_mask = !warp_rows_inside || key0 + kKeys > key_count ||
                            (p.causal && key0 + kKeys > q0 + warp_row0 + shift);
    scores_to_ds(s[0], dp[0], scale_log2, dout_scale, lse_log2, delta, needs_mask, key0, key_count,
                 p.causal, row_ok, last_key);
    accumulate_dq<Elem, D, NT>(dq, s, kn_desc, stage);
    ring.release(t);
  }
  bool holds[2];
  rows_held(p, pass, head, rows.first, hp.dilation, row_idx, row_ok, holds);
  wait_for_previous_launches();
  store_gradient_tile<Elem, D>(p, p.dq, pass.dq_acc, b, query_row, row_ok, holds, head, dq, p.scale,
                               pass.converts);
#endif
}

}  // namespace dilated::cuda::hopper
