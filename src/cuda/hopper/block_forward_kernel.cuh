// Hopper block forward (sm_90a): the block pass's forward (block_sparse_mma.cuh) on warpgroup
// matrix products. A CTA owns 64 query rows inside one query block: one consumer warpgroup
// (one wgmma row of 64) and a producer warpgroup that walks the block's row of the
// multiplicity matrix and streams the kept blocks' K and V tiles of 64 keys into a ring of
// stages (the copy engine for whole tiles of plain rows, cp.async for the rest). The consumer
// walks the same row to know each tile's keys and multiplicity, and runs the dense Hopper
// forward's pipeline: the softmax of tile t beside tile t - 1's P V. Two CTAs share an SM, so
// one's products run while the other computes its exponentials (what the dense kernel's two
// warpgroups do by taking turns); blocks of 64 give no two query blocks the same key tiles to
// share (docs/design.md 3d).
#pragma once

#include "cuda/hopper/stage_ring.cuh"
#include "cuda/hopper/warp_roles.cuh"
#include "cuda/hopper/wgmma.cuh"
#include "cuda/kernels/block_pass_common.cuh"
#include "cuda/kernels/forward_rows.cuh"

namespace dilated::cuda::hopper {

inline constexpr int kBlockRows = 64;  // query rows per CTA: one warpgroup's wgmma rows
inline constexpr int kBlockKeys = 64;  // keys per tile, the cursors' step
inline constexpr int kBlockConsumerThreads = 128;
inline constexpr int kBlockThreads = kBlockConsumerThreads + 128;  // and the producer warpgroup
inline constexpr int kBlockCtasPerSm = 2;
// 65536 registers / (2 CTAs x 256 threads) = 128 each at launch; the producer gives 88 of its
// 128 to the consumers.
inline constexpr int kBlockProducerRegisters = 40;
inline constexpr int kBlockConsumerRegisters = 216;
static_assert(kBlockKeys == kMmaRows, "the cursors step by kMmaRows");

template <int D>
struct BlockForwardSmem {
  // Stages in flight: as many as two CTAs per SM leave room for (227 KiB each SM).
  static constexpr int kStages = D == 64 ? 4 : 2;
  using QueryTile = GmmaTile<kBlockRows, D>;
  using KeyTile = GmmaTile<kBlockKeys, D>;
  static constexpr int kTileBytes = (QueryTile::kElements + 2 * kStages * KeyTile::kElements) * 2;
  // The tiles, the stage barriers, a word per consumer thread (wgmma_wait_after), and room to
  // round the base up to 1024.
  static constexpr int kBytes =
      kTileBytes + StageRing<kStages>::kBytes + 4 * kBlockConsumerThreads + 1024;
  static_assert(kBlockCtasPerSm * (kBytes + 1024) <= 228 * 1024, "two CTAs per SM");
};

template <typename Elem, int D>
__global__ void __launch_bounds__(kBlockThreads, kBlockCtasPerSm)
    block_forward_kernel(const Params p, const BlockPass bp,
                         const __grid_constant__ TensorMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Smem = BlockForwardSmem<D>;
  constexpr int kStages = Smem::kStages;
  using KeyTile = typename Smem::KeyTile;
  constexpr int NT = kBlockKeys / 8;  // n8 column tiles of scores
  constexpr int DT = D / 8;           // n8 column tiles of output
  constexpr uint32_t kKeyTileBytes = KeyTile::kElements * 2;
  extern __shared__ unsigned char smem_raw[];
  Elem* q_tile = first_tile<Elem>(smem_raw);
  Elem* k_tiles = q_tile + Smem::QueryTile::kElements;
  Elem* v_tiles = k_tiles + kStages * KeyTile::kElements;
  const StageRing<kStages> ring{smem_address(v_tiles + kStages * KeyTile::kElements)};
  const uint32_t scratch = ring.bars + StageRing<kStages>::kBytes + 4 * threadIdx.x;

  const int64_t b = blockIdx.z, head = blockIdx.y;
  const int64_t n = seq_length(p, b);
  const int q0 = static_cast<int>(blockIdx.x) * kBlockRows;
  if (q0 >= n) return;
  const int count = static_cast<int>(n);
  const int64_t kv_head = kv_head_of(p, head);
  const int64_t I = q0 / bp.block;
  const int64_t limit = p.causal ? I + 1 : block_count(n, bp.block);
  const uint8_t* row = bp.mult + mult_row_index(bp, b, class_of_head(bp, head), I);
  const int last_row = min(q0 + kBlockRows, count) - 1;
  // Both sides walk the row: the producer to fetch, the consumer to mask and weigh.
  auto next = [&](const KeyTileCursor& c) { return next_tile(p, bp, row, c, limit, n, last_row); };
  const KeyTileCursor first =
      tile_of_block(p, bp, row, next_kept_block(row, 0, limit), limit, n, last_row);

  if (threadIdx.x == 0) ring.init(kBlockConsumerThreads / 32);
  __syncthreads();

  if (threadIdx.x >= kBlockConsumerThreads) {
    shrink_registers_to<kBlockProducerRegisters>();
    RowSpan k_span = position_span<Elem>(p, bp, p.k, b, kv_head, 0, 0);
    RowSpan v_span = position_span<Elem>(p, bp, p.v, b, kv_head, 0, 0);
    int t = 0;
    for (KeyTileCursor c = first; c.J < limit; c = next(c), ++t) {
      k_span.idx0 = v_span.idx0 = c.key0;
      k_span.count = v_span.count = c.end;  // keys past the block (or the causal cut) read 0
      ProducerRows<kBlockKeys> rows;
      rows.locate(maps, k_span, c.key0);
      ring.wait_empty(t);
      produce_row_tiles<Elem, kBlockKeys, D>(
          maps, k_span, v_span, rows, kv_head, b, k_tiles + (t % kStages) * KeyTile::kElements,
          v_tiles + (t % kStages) * KeyTile::kElements, ring.full(t));
    }
    cp_async_wait<0>();
    return;
  }

  grow_registers_to<kBlockConsumerRegisters>();
  load_tile_async<Elem, kBlockRows, D, kBlockConsumerThreads, typename Smem::QueryTile>(
      q_tile, position_span<Elem>(p, bp, p.q, b, head, q0, count));
  cp_async_commit();
  cp_async_wait<0>();
  fence_proxy_async();
  named_barrier_sync(1, kBlockConsumerThreads);

  const int lane = threadIdx.x % 32;
  const int warp_row0 = threadIdx.x / 32 * 16;
  const float scale_log2 = p.scale * kLog2e;
  int row_idx[1][2];  // positions of the thread's two rows
  row_idx[0][0] = q0 + warp_row0 + lane / 4;
  row_idx[0][1] = row_idx[0][0] + 8;
  float o[1][DT][4] = {};
  float row_max[1][2] = {{-INFINITY, -INFINITY}};
  float row_sum[1][2] = {{0.0f, 0.0f}};
  const uint64_t q_desc = k_major_desc(smem_address(q_tile));
  const uint64_t k_desc = k_major_desc(smem_address(k_tiles));
  const uint64_t v_desc = n_major_desc<kBlockKeys>(smem_address(v_tiles));

  auto issue_scores = [&](float(&s)[NT][4], int t) {
    const uint64_t k_stage = desc_plus(k_desc, (t % kStages) * kKeyTileBytes);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      wgmma_ss<Elem, kBlockKeys>(s, desc_plus(q_desc, k_major_step<kBlockRows>(kk)),
                                 desc_plus(k_stage, k_major_step<kBlockKeys>(kk)), kk > 0);
    }
    wgmma_commit();
  };
  auto issue_values = [&](const uint32_t(&pa)[NT / 2][4], int t) {
    const uint64_t v_stage = desc_plus(v_desc, (t % kStages) * kKeyTileBytes);
#pragma unroll
    for (int kk = 0; kk < kBlockKeys / 16; ++kk) {
      wgmma_rs<Elem, D>(o[0], pa[kk], desc_plus(v_stage, n_major_step(kk)));
    }
    wgmma_commit();
  };
  float s[1][NT][4];
  uint32_t pa[1][1][NT / 2][4];
  float corrections[1][2];
  // Scores of the tile at c -> probabilities; the multiplicity m enters as log2(m) (bias).
  auto softmax = [&](const KeyTileCursor& c) {
    const bool needs_mask =
        c.key0 + kBlockKeys > c.end || (p.causal && c.key0 + kBlockKeys > q0 + warp_row0);
    if (scale_log2 > 0.0f) {  // the usual case: the scale rides in the exponent's FFMA
      if (c.bias != 0.0f) {
        const float shift = c.bias / scale_log2;
#pragma unroll
        for (int j = 0; j < NT; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) s[0][j][e] += shift;
        }
      }
      mask_scores(s, needs_mask, c.key0, c.end, p.causal, row_idx, 0);
      softmax_scores_tile(s, row_max, row_sum, corrections, scale_log2);
    } else {
      scale_and_mask_scores(s, scale_log2, needs_mask, c.key0, c.end, p.causal, row_idx, 0);
#pragma unroll
      for (int j = 0; j < NT; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[0][j][e] += c.bias;
      }
      softmax_scores_tile(s, row_max, row_sum, corrections);
    }
  };
  auto pack = [&]() { accumulators_to_a<Elem, 1, 1, NT / 2>(pa, s); };

  if (first.J < limit) {
    ring.wait_full(0);
    wgmma_fence();
    issue_scores(s[0], 0);
    wgmma_wait<0>();
    pin_accumulators(s[0]);
    softmax(first);
    pack();
    int t = 1;
    for (KeyTileCursor c = next(first); c.J < limit; c = next(c), ++t) {
      ring.wait_full(t);
      wgmma_fence();
      issue_scores(s[0], t);
      issue_values(pa[0][0], t - 1);
      wgmma_wait<1>();  // the scores (committed first) are done; P V may still run
      pin_accumulators(s[0]);
      softmax(c);
      wgmma_wait_after<0>(row_sum[0][0] + row_sum[0][1], scratch);
      pin_accumulators(o[0]);
      pin_fragments(pa[0][0]);
      ring.release(t - 1);
      rescale_outputs(o, corrections);
      pack();
    }
    wgmma_fence();
    issue_values(pa[0][0], t - 1);
    wgmma_wait<0>();
    pin_accumulators(o[0]);
    pin_fragments(pa[0][0]);
  }

  store_block_forward_rows<Elem>(p, bp, b, head, count, row_idx, o, row_max, row_sum);
#endif
}

}  // namespace dilated::cuda::hopper
