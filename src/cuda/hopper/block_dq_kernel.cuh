// Hopper block dq (sm_90a): the block pass's dq (block_sparse_mma.cuh) on warpgroup products,
// with the Hopper block forward's CTA and key stream (block_key_stream.cuh): 64 query rows per
// consumer warpgroup, all in one query block, and a producer warpgroup that streams the kept
// key blocks' K and V. Per tile a consumer warpgroup computes S = Q K^T and dP = dO V^T
// (operands in shared memory), dS = P (dP - delta) on the accumulators, with the multiplicity c
// as the score bias log2(c), and dq += dS K with dS from registers in two 16-bit parts (the
// cancellation argument of mma_backward.cuh) and K read N-major, as the dense Hopper dq does.
#pragma once

#include "cuda/hopper/backward_products.cuh"
#include "cuda/hopper/block_key_stream.cuh"
#include "cuda/hopper/wgmma.cuh"
#include "cuda/kernels/mma_backward.cuh"

namespace dilated::cuda::hopper {

template <int D, int Groups>
struct BlockDqSmem {
  using Shape = BlockShape<Groups>;
  // 128-key tiles (two parts) where the CTAs of an SM leave room for two stages of them.
  static constexpr int kParts = D == 64 || Groups == 2 ? 2 : 1;
  static constexpr int kStages = Groups == 2 && D == 64 ? 3 : 2;
  static constexpr int kTileKeys = kParts * kBlockKeys;
  using QueryTile = GmmaTile<Shape::kRows, D>;
  using KeyTile = GmmaTile<kTileKeys, D>;
  static constexpr int kTileBytes =
      (2 * QueryTile::kElements + 2 * kStages * KeyTile::kElements) * 2;  // Q, dO; K, V stages
  static constexpr int kNoteBytes =
      kStages * kParts * Groups * static_cast<int>(sizeof(StagedPart));
  static constexpr int kBytes = kTileBytes + kNoteBytes + StageRing<kStages>::kBytes + 1024;
  static_assert(Shape::kCtasPerSm * (kBytes + 1024) <= 228 * 1024, "the CTAs of an SM");
};

template <typename Elem, int D, int Groups>
__global__ void __launch_bounds__(BlockShape<Groups>::kThreads, BlockShape<Groups>::kCtasPerSm)
    block_dq_kernel(const Params p, const BlockPass bp, const __grid_constant__ TensorMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Shape = BlockShape<Groups>;
  using Smem = BlockDqSmem<D, Groups>;
  using QueryTile = typename Smem::QueryTile;
  using KeyTile = typename Smem::KeyTile;
  constexpr int kStages = Smem::kStages;
  constexpr int kParts = Smem::kParts;
  constexpr int kTileKeys = Smem::kTileKeys;
  constexpr int NT = kTileKeys / 8;   // n8 column tiles of scores
  constexpr int PT = kBlockKeys / 8;  // of a part
  constexpr int DT = D / 8;           // n8 column tiles of dq
  constexpr uint32_t kKeyTileBytes = KeyTile::kElements * 2;
  extern __shared__ unsigned char smem_raw[];
  Elem* q_tile = first_tile<Elem>(smem_raw);
  Elem* do_tile = q_tile + QueryTile::kElements;
  Elem* k_tiles = do_tile + QueryTile::kElements;
  Elem* v_tiles = k_tiles + kStages * KeyTile::kElements;
  StagedPart* notes = reinterpret_cast<StagedPart*>(v_tiles + kStages * KeyTile::kElements);
  const StageRing<kStages> ring{smem_address(notes + kStages * kParts * Groups)};

  const int64_t b = blockIdx.z, head = blockIdx.y;
  const int64_t n = seq_length(p, b);
  const int q0 = static_cast<int>(blockIdx.x) * Shape::kRows;
  if (q0 >= n) return;
  const int count = static_cast<int>(n);
  const int64_t kv_head = kv_head_of(p, head);
  const int64_t I = q0 / bp.block;  // the CTA's rows lie in one block (the launcher's shape)
  const int64_t limit = p.causal ? I + 1 : block_count(n, bp.block);
  const uint8_t* row = bp.mult + mult_row_index(bp, b, class_of_head(bp, head), I);
  const int last_row = min(q0 + Shape::kRows, count) - 1;
  const KeptBlock first = next_kept(row, 0, limit);

  if (threadIdx.x == 0) {
    ring.init(Shape::kConsumerThreads / 32, producer_parts_arriving(maps, kParts), 1);
  }
  __syncthreads();

  if (threadIdx.x >= Shape::kConsumerThreads) {
    shrink_registers_to<Shape::kProducerRegisters>();
    produce_kept_keys<Elem, D, Groups, kParts, kStages, KeyTile>(
        p, bp, maps, b, kv_head, {row, nullptr, limit, n, last_row}, first, k_tiles, v_tiles, notes,
        ring);
    return;
  }

  grow_registers_to<Shape::kConsumerRegisters>();
  load_tile_async<Elem, Shape::kRows, D, Shape::kConsumerThreads, QueryTile>(
      q_tile, position_span<Elem>(p, bp, p.q, b, head, q0, count));
  load_tile_async<Elem, Shape::kRows, D, Shape::kConsumerThreads, QueryTile>(
      do_tile, position_span<Elem>(p, bp, p.dout, b, head, q0, count));
  cp_async_commit();

  const int group = threadIdx.x / 128;
  const int lane = threadIdx.x % 32;
  const int warp_row0 = threadIdx.x / 32 * 16;  // of the CTA's rows
  const float scale_log2 = p.scale * kLog2e;
  const float dout_scale = output_scale(p);
  const int row_idx[2] = {q0 + warp_row0 + lane / 4, q0 + warp_row0 + lane / 4 + 8};
  const bool row_ok[2] = {row_idx[0] < count, row_idx[1] < count};
  int64_t query_row[2];
  float lse_log2[2], delta[2];
  load_block_row_stats(p, bp, b, head, row_idx, row_ok, query_row, lse_log2, delta);
  cp_async_wait<0>();
  fence_proxy_async();
  named_barrier_sync(1, Shape::kConsumerThreads);

  const uint64_t q_desc = k_major_desc(smem_address(q_tile) + group * 64 * 128);
  const uint64_t do_desc = k_major_desc(smem_address(do_tile) + group * 64 * 128);
  const uint64_t k_desc = k_major_desc(smem_address(k_tiles));              // S = Q K^T
  const uint64_t v_desc = k_major_desc(smem_address(v_tiles));              // dP = dO V^T
  const uint64_t kn_desc = n_major_desc<kTileKeys>(smem_address(k_tiles));  // dq += dS K
  float dq[DT][4] = {};
  StagedPart staged[kParts];
  bool more = first.J < limit;
  for (int t = 0; more; ++t) {
    const uint32_t stage = (t % kStages) * kKeyTileBytes;
    ring.wait_full(t);
    read_staged_parts(notes + (t % kStages) * kParts * Groups + group, Groups, staged);
    more = !staged[0].last;
    float s[1][NT][4], dp[1][NT][4];
    wgmma_fence();
    wgmma_ss_over_d<Elem, kTileKeys, Shape::kRows, D>(s[0], q_desc, k_desc, stage);
    wgmma_ss_over_d<Elem, kTileKeys, Shape::kRows, D>(dp[0], do_desc, v_desc, stage);
    wgmma_commit();
    wgmma_wait<0>();
    pin_accumulators(s[0]);
    pin_accumulators(dp[0]);

    // P part by part (bias log2(c)); keys past the part's end or after the row (causal), and a
    // missing part, get P = 0. The mask is a second loop over the tiles that need it (inside
    // the exponential's loop, ptxas branched around every exponential).
#pragma unroll
    for (int part = 0; part < kParts; ++part) {
      const StagedPart& c = staged[part];
#pragma unroll
      for (int j = part * PT; j < (part + 1) * PT; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[0][j][e] = fast_exp2(s[0][j][e] * scale_log2 + (c.bias - lse_log2[e / 2]));
        }
      }
      const bool needs_mask =
          c.first + kBlockKeys > c.end || (p.causal && c.first + kBlockKeys > q0 + warp_row0);
      if (needs_mask) {
#pragma unroll
        for (int j = part * PT; j < (part + 1) * PT; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = c.first + (j - part * PT) * 8 + 2 * (lane % 4) + (e % 2);
            const bool masked = key >= c.end || (p.causal && key > row_idx[e / 2]);
            s[0][j][e] = masked ? 0.0f : s[0][j][e];
          }
        }
      }
    }
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[0][j][e] *= dp[0][j][e] * dout_scale - delta[e / 2];  // dS
    }
    accumulate_dq<Elem, D, NT>(dq, s, kn_desc, stage);
    ring.release(t);
  }
  store_gradient_tile<Elem, D>(p, p.dq, bp.dq_acc, b, query_row, row_ok, {true, true}, head, dq,
                               p.scale, false);
#endif
}

}  // namespace dilated::cuda::hopper
