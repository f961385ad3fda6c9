// Hopper block forward (sm_90a): the block pass's forward (block_sparse_mma.cuh) on warpgroup
// matrix products. A CTA owns 64 query rows inside one query block: one consumer warpgroup
// (one wgmma row of 64) and a producer warpgroup that walks the block's row of the
// multiplicity matrix and streams the kept blocks' keys into a ring of stages, 64 keys at a
// time (the copy engine for whole runs of plain rows, cp.async for the rest). A stage holds
// kParts such runs, not necessarily adjacent (with D = 64, two: the products and the per-tile
// work of 128 keys, like the dense kernel's); a missing last part is zero-filled and masked.
// The producer also writes each stage's parts (keys and multiplicity) beside it, so the consumer
// does not walk the row (two dependent global reads per part), and runs the dense Hopper
// forward's pipeline: the softmax of tile t beside tile t - 1's P V. Two CTAs share an
// SM, so one's products run while the other computes its exponentials (what the dense kernel's
// two warpgroups do by taking turns); blocks of 64 give no two query blocks the same key tiles
// to share (docs/design.md 3d).
#pragma once

#include "cuda/hopper/stage_ring.cuh"
#include "cuda/hopper/warp_roles.cuh"
#include "cuda/hopper/wgmma.cuh"
#include "cuda/kernels/block_pass_common.cuh"
#include "cuda/kernels/forward_rows.cuh"

namespace dilated::cuda::hopper {

inline constexpr int kBlockRows = 64;  // query rows per CTA: one warpgroup's wgmma rows
inline constexpr int kBlockKeys = 64;  // keys per part of a tile, the cursors' step
inline constexpr int kBlockConsumerThreads = 128;
inline constexpr int kBlockThreads = kBlockConsumerThreads + 128;  // and the producer warpgroup
inline constexpr int kBlockCtasPerSm = 2;
// 65536 registers / (2 CTAs x 256 threads) = 128 each at launch; the producer gives 88 of its
// 128 to the consumers.
inline constexpr int kBlockProducerRegisters = 40;
inline constexpr int kBlockConsumerRegisters = 216;
static_assert(kBlockKeys == kMmaRows, "the cursors step by kMmaRows");

// A part of a stage as the producer saw it: keys key0 .. end - 1 of one kept block (end == 0:
// no part; every key is masked) and its score bias log2(multiplicity); `last` (part 0 only):
// no stage follows.
struct StagedPart {
  int key0;
  int end;
  float bias;
  int last;
};

template <int D>
struct BlockForwardSmem {
  // Parts of 64 keys per tile, and stages in flight: as many as two CTAs per SM leave room for
  // (228 KiB each SM).
  static constexpr int kParts = D == 64 ? 2 : 1;
  static constexpr int kStages = D == 64 ? 3 : 2;
  static constexpr int kTileKeys = kParts * kBlockKeys;
  using QueryTile = GmmaTile<kBlockRows, D>;
  using KeyTile = GmmaTile<kTileKeys, D>;
  static constexpr int kTileBytes = (QueryTile::kElements + 2 * kStages * KeyTile::kElements) * 2;
  static constexpr int kNoteBytes = kStages * kParts * static_cast<int>(sizeof(StagedPart));
  // The tiles, the stages' parts, the stage barriers, a word per consumer thread
  // (wgmma_wait_after), and room to round the base up to 1024.
  static constexpr int kBytes =
      kTileBytes + kNoteBytes + StageRing<kStages>::kBytes + 4 * kBlockConsumerThreads + 1024;
  static_assert(kBlockCtasPerSm * (kBytes + 1024) <= 228 * 1024, "two CTAs per SM");
};

template <typename Elem, int D>
__global__ void __launch_bounds__(kBlockThreads, kBlockCtasPerSm)
    block_forward_kernel(const Params p, const BlockPass bp,
                         const __grid_constant__ TensorMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Smem = BlockForwardSmem<D>;
  constexpr int kStages = Smem::kStages;
  constexpr int kParts = Smem::kParts;
  constexpr int kTileKeys = Smem::kTileKeys;
  using KeyTile = typename Smem::KeyTile;
  constexpr int NT = kTileKeys / 8;   // n8 column tiles of scores
  constexpr int PT = kBlockKeys / 8;  // of a part
  constexpr int DT = D / 8;           // n8 column tiles of output
  constexpr uint32_t kKeyTileBytes = KeyTile::kElements * 2;
  extern __shared__ unsigned char smem_raw[];
  Elem* q_tile = first_tile<Elem>(smem_raw);
  Elem* k_tiles = q_tile + Smem::QueryTile::kElements;
  Elem* v_tiles = k_tiles + kStages * KeyTile::kElements;
  StagedPart* notes = reinterpret_cast<StagedPart*>(v_tiles + kStages * KeyTile::kElements);
  const StageRing<kStages> ring{smem_address(notes + kStages * kParts)};
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
  // The producer walks the row; a tile is kParts cursors, parts past the last kept tile have
  // J == limit.
  using TileCursors = KeyTileCursor[kParts];
  auto next = [&](const KeyTileCursor& c) {
    return c.J < limit ? next_tile(p, bp, row, c, limit, n, last_row) : c;
  };
  auto tile_from = [&](TileCursors& tile, const KeyTileCursor& c) {
    tile[0] = c;
#pragma unroll
    for (int part = 1; part < kParts; ++part) tile[part] = next(tile[part - 1]);
  };
  const int64_t first_block = next_kept_block(row, 0, limit);

  if (threadIdx.x == 0) ring.init(kBlockConsumerThreads / 32, kParts, 1);
  __syncthreads();

  if (threadIdx.x >= kBlockConsumerThreads) {
    shrink_registers_to<kBlockProducerRegisters>();
    TileCursors tile;
    tile_from(tile, tile_of_block(p, bp, row, first_block, limit, n, last_row));
    const bool writer = threadIdx.x % 128 == 0;
    RowSpan k_span = position_span<Elem>(p, bp, p.k, b, kv_head, 0, 0);
    RowSpan v_span = position_span<Elem>(p, bp, p.v, b, kv_head, 0, 0);
    for (int t = 0; tile[0].J < limit; ++t) {
      ring.wait_empty(t);
      StagedPart* note = notes + (t % kStages) * kParts;
#pragma unroll
      for (int part = 0; part < kParts; ++part) {
        // Keys past the block (or the causal cut), and a missing part, read as zeros.
        const bool kept = tile[part].J < limit;
        k_span.idx0 = v_span.idx0 = kept ? tile[part].key0 : 0;
        k_span.count = v_span.count = kept ? tile[part].end : 0;
        if (writer) note[part] = {k_span.idx0, k_span.count, kept ? tile[part].bias : 0.0f, 0};
        ProducerRows<kBlockKeys> rows;
        rows.locate(maps, k_span, k_span.idx0);
        // Part p is rows 64 p.. of the tile: an offset of 64 lines in each 64-column half.
        const int offset = (t % kStages) * KeyTile::kElements + part * kBlockKeys * 64;
        if (maps.square_width > 0) {
          produce_square_tiles<Elem, kBlockKeys, D, KeyTile>(maps, k_span, v_span, rows, kv_head, b,
                                                             k_tiles + offset, v_tiles + offset,
                                                             ring.full(t));
        } else {
          produce_row_tiles<Elem, kBlockKeys, D, KeyTile>(maps, k_span, v_span, rows, kv_head, b,
                                                          k_tiles + offset, v_tiles + offset,
                                                          ring.full(t));
        }
      }
      // The next tile is found while this one's copies are in flight.
      tile_from(tile, next(tile[kParts - 1]));
      if (writer) {
        note[0].last = tile[0].J >= limit;
        mbarrier_arrive(ring.full(t));
      }
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
  const uint64_t v_desc = n_major_desc<kTileKeys>(smem_address(v_tiles));

  auto issue_scores = [&](float(&s)[NT][4], int t) {
    const uint64_t k_stage = desc_plus(k_desc, (t % kStages) * kKeyTileBytes);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      wgmma_ss<Elem, kTileKeys>(s, desc_plus(q_desc, k_major_step<kBlockRows>(kk)),
                                desc_plus(k_stage, k_major_step<kTileKeys>(kk)), kk > 0);
    }
    wgmma_commit();
  };
  auto issue_values = [&](const uint32_t(&pa)[NT / 2][4], int t) {
    const uint64_t v_stage = desc_plus(v_desc, (t % kStages) * kKeyTileBytes);
#pragma unroll
    for (int kk = 0; kk < kTileKeys / 16; ++kk) {
      wgmma_rs<Elem, D>(o[0], pa[kk], desc_plus(v_stage, n_major_step(kk)));
    }
    wgmma_commit();
  };
  float s[1][NT][4];
  uint32_t pa[1][1][NT / 2][4];
  float corrections[1][2];
  StagedPart staged[kParts];
  auto read_parts = [&](int t) {
#pragma unroll
    for (int part = 0; part < kParts; ++part) staged[part] = notes[(t % kStages) * kParts + part];
  };
  // Scores of the tile -> probabilities. Part by part: the multiplicity m enters as log2(m)
  // (bias), keys past the part's end or after the row (causal) and a missing part get -inf.
  // Scores are in units of `unit`: the scale rides in the exponent's FFMA where it is positive.
  const float unit = scale_log2 > 0.0f ? scale_log2 : 1.0f;
  auto softmax = [&]() {
    if (scale_log2 <= 0.0f) {
#pragma unroll
      for (int j = 0; j < NT; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[0][j][e] *= scale_log2;
      }
    }
#pragma unroll
    for (int part = 0; part < kParts; ++part) {
      const StagedPart& c = staged[part];
      const bool needs_mask =
          c.key0 + kBlockKeys > c.end || (p.causal && c.key0 + kBlockKeys > q0 + warp_row0);
      if (c.bias != 0.0f) {
        const float shift = c.bias / unit;
#pragma unroll
        for (int j = part * PT; j < (part + 1) * PT; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) s[0][j][e] += shift;
        }
      }
      if (needs_mask) {
#pragma unroll
        for (int j = part * PT; j < (part + 1) * PT; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = c.key0 + (j - part * PT) * 8 + 2 * (lane % 4) + (e % 2);
            const bool masked = key >= c.end || (p.causal && key > row_idx[0][e / 2]);
            s[0][j][e] = masked ? -INFINITY : s[0][j][e];
          }
        }
      }
    }
    softmax_scores_tile(s, row_max, row_sum, corrections, unit);
  };
  auto pack = [&]() { accumulators_to_a<Elem, 1, 1, NT / 2>(pa, s); };

  if (first_block < limit) {
    ring.wait_full(0);
    read_parts(0);
    wgmma_fence();
    issue_scores(s[0], 0);
    wgmma_wait<0>();
    pin_accumulators(s[0]);
    softmax();
    pack();
    int t = 1;
    for (bool more = !staged[0].last; more; ++t) {
      ring.wait_full(t);
      read_parts(t);
      more = !staged[0].last;
      wgmma_fence();
      issue_scores(s[0], t);
      issue_values(pa[0][0], t - 1);
      wgmma_wait<1>();  // the scores (committed first) are done; P V may still run
      pin_accumulators(s[0]);
      softmax();
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
