// Hopper block forward (sm_90a): the block pass's forward (block_sparse_mma.cuh) on warpgroup
// matrix products. A CTA owns 64 query rows per consumer warpgroup (one wgmma row) and a
// producer warpgroup that walks the multiplicity matrix's row of their query block and streams
// the kept blocks' keys into a ring of stages, 64 keys at a time (the copy engine for
// whole runs of plain rows, cp.async for the rest). A stage holds kParts such runs, not
// necessarily adjacent (two: the products and the per-tile work of 128 keys, like the dense
// kernel's); a missing last part is zero-filled and masked. The producer also writes each
// stage's parts (keys and multiplicity, per warpgroup) beside it, so the consumers do not walk
// the row (two dependent global reads per part). Each consumer runs the dense Hopper forward's
// pipeline: the softmax of tile t beside tile t - 1's P V. Two shapes (BlockShape,
// block_shape.cuh):
// - two warpgroups share every stage and take turns issuing their products, as in the dense
//   kernel: with blocks of a multiple of 128 (both in one query block), or for patterns whose
//   neighbouring query blocks keep nearly the same key blocks (local, global), where the two
//   warpgroups' blocks may differ and the producer streams the blocks either keeps;
// - otherwise one warpgroup per CTA and two CTAs per SM, whose products and exponentials
//   interleave without turns (blocks of 64 give two query blocks of a random or topk pattern
//   no key tiles to share; docs/design.md 3d).
#pragma once

#include <type_traits>

#include "cuda/hopper/block_key_stream.cuh"
#include "cuda/hopper/output_rows.cuh"
#include "cuda/hopper/timeline.cuh"
#include "cuda/hopper/wgmma.cuh"
#include "cuda/kernels/block_pass_common.cuh"
#include "cuda/kernels/forward_rows.cuh"

namespace dilated::cuda::hopper {

static_assert(kBlockKeys == kMmaRows, "the cursors step by kMmaRows");

template <int D, int Groups, int CtasPerSm = BlockShape<Groups>::kCtasPerSm>
struct BlockForwardSmem {
  using Shape = BlockShape<Groups, CtasPerSm>;
  // Parts of 64 keys per tile, and stages in flight: as many as the CTAs of an SM leave room
  // for (228 KiB each SM; two CTAs at D = 128 hold 64-key tiles only, and so do three at D = 64,
  // whose 136 registers a thread could not hold a 128-key tile's scores and probabilities).
  static constexpr int kParts = CtasPerSm == 3 ? 1 : (D == 64 || Groups == 2 ? 2 : 1);
  static constexpr int kStages = CtasPerSm == 3 ? 4 : (Groups == 1 ? 3 : (D == 64 ? 4 : 3));
  static constexpr int kTileKeys = kParts * kBlockKeys;
  using QueryTile = GmmaTile<Shape::kRows, D>;
  using KeyTile = GmmaTile<kTileKeys, D>;
  static constexpr int kTileBytes = (QueryTile::kElements + 2 * kStages * KeyTile::kElements) * 2;
  // A note per stage, part and warpgroup.
  static constexpr int kNoteBytes =
      kStages * kParts * Groups * static_cast<int>(sizeof(StagedPart));
  // The tiles, the stages' parts, the stage barriers, a word per consumer thread
  // (wgmma_wait_after) and the Q tile's barrier. The base is 1024-aligned (the declaration's
  // alignment): the 1024 bytes the other Hopper kernels keep to round it up are a third stage's
  // room at D = 128 (three stages of 64 keys measured 12-20% faster than two under random
  // patterns, bench/NOTES.md).
  static constexpr int kBytes =
      kTileBytes + kNoteBytes + StageRing<kStages>::kBytes + 4 * Shape::kConsumerThreads + 8;
  static_assert(Shape::kCtasPerSm * (kBytes + 1024) <= 228 * 1024, "the CTAs of an SM");
};

// Turns for one warpgroup: none.
struct NoTurns {
  int warpgroup;
  __device__ __forceinline__ void begin() const {}
  __device__ __forceinline__ void wait() const {}
  __device__ __forceinline__ void pass() const {}
  __device__ __forceinline__ void end() const {}
};

template <typename Elem, int D, int Groups, int CtasPerSm>
__global__ void __launch_bounds__(BlockShape<Groups, CtasPerSm>::kThreads, CtasPerSm)
    block_forward_kernel(const Params p, const BlockPass bp,
                         const __grid_constant__ TensorMaps maps,
                         const __grid_constant__ QueryMaps query_maps, const bool heads_fastest) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Shape = BlockShape<Groups, CtasPerSm>;
  using Smem = BlockForwardSmem<D, Groups, CtasPerSm>;
  if (threadIdx.x == 0) stamp(11);  // clock stamps of a diagnosis build only (timeline.cuh)
  constexpr int kStages = Smem::kStages;
  constexpr int kParts = Smem::kParts;
  constexpr int kTileKeys = Smem::kTileKeys;
  using KeyTile = typename Smem::KeyTile;
  constexpr int NT = kTileKeys / 8;   // n8 column tiles of scores
  constexpr int PT = kBlockKeys / 8;  // of a part
  constexpr int DT = D / 8;           // n8 column tiles of output
  constexpr uint32_t kKeyTileBytes = KeyTile::kElements * 2;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  Elem* q_tile = first_tile<Elem>(smem_raw);  // the base itself: it is declared aligned
  Elem* k_tiles = q_tile + Smem::QueryTile::kElements;
  Elem* v_tiles = k_tiles + kStages * KeyTile::kElements;
  StagedPart* notes = reinterpret_cast<StagedPart*>(v_tiles + kStages * KeyTile::kElements);
  const StageRing<kStages> ring{smem_address(notes + kStages * kParts * Groups)};
  const uint32_t scratch = ring.bars + StageRing<kStages>::kBytes + 4 * threadIdx.x;
  const uint32_t q_full = ring.bars + StageRing<kStages>::kBytes + 4 * Shape::kConsumerThreads;

  // The grid is (query tiles, heads) or, with heads_fastest, (heads, query tiles) (the launcher's
  // order of the CTAs).
  const int64_t b = blockIdx.z, head = heads_fastest ? blockIdx.x : blockIdx.y;
  const int64_t n = seq_length(p, b);
  const int q0 = static_cast<int>(heads_fastest ? blockIdx.y : blockIdx.x) * Shape::kRows;
  if (q0 >= n) return;
  const int count = static_cast<int>(n);
  const int64_t kv_head = kv_head_of(p, head);
  const int64_t I = q0 / bp.block;
  // With blocks of 64 x an odd number, warpgroup 1's rows may lie in the next query block, whose
  // row is `other`: the producer then walks the blocks either row keeps and notes per warpgroup
  // which parts it keeps (the launcher takes this shape only where neighbouring rows nearly
  // agree: shared_stages in block_forward.cu).
  const int64_t I_last = Groups == 2 && q0 + kBlockKeys < count ? (q0 + kBlockKeys) / bp.block : I;
  const int64_t limit = p.causal ? I_last + 1 : block_count(n, bp.block);
  const int64_t cls = class_of_head(bp, head);
  const uint8_t* row = bp.mult + mult_row_index(bp, b, cls, I);
  const uint8_t* other = I_last != I ? bp.mult + mult_row_index(bp, b, cls, I_last) : nullptr;
  const int last_row = min(q0 + Shape::kRows, count) - 1;
  const KeptBlock first = next_kept(row, 0, limit, 1, other);
  // A whole query tile comes through the copy engine, issued by the producer before any K/V
  // tile (q_full); otherwise (a partial tile, a token grid, a CTA that keeps no block and has
  // no producer work to overlap) the consumers copy it.
  const bool q_by_copy_engine =
      query_maps.q_enabled && q0 + Shape::kRows <= count && first.J < limit;

  if (threadIdx.x == 0) {
    ring.init(Shape::kConsumerThreads / 32, producer_parts_arriving(maps, kParts), 1);
    mbarrier_init(q_full, 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) stamp(1);

  if (threadIdx.x >= Shape::kConsumerThreads) {
    shrink_registers_to<Shape::kProducerRegisters>();
    if (q_by_copy_engine && threadIdx.x == Shape::kConsumerThreads) {
      using QueryTile = typename Smem::QueryTile;
      mbarrier_expect_tx(q_full, QueryTile::kElements * 2);
      load_box<D, QueryTile>(&query_maps.q, smem_address(q_tile), q_full, 0, q0, head, b);
      mbarrier_arrive(q_full);
    }
    produce_kept_keys<Elem, D, Groups, kParts, kStages, KeyTile>(
        p, bp, maps, b, kv_head, {row, other, limit, n, last_row}, first, k_tiles, v_tiles, notes,
        ring);
    if (threadIdx.x == Shape::kConsumerThreads) stamp(9);
    return;
  }

  grow_registers_to<Shape::kConsumerRegisters>();
  if (q_by_copy_engine) {
    mbarrier_wait(q_full, 0);
  } else {
    load_tile_async<Elem, Shape::kRows, D, Shape::kConsumerThreads, typename Smem::QueryTile>(
        q_tile, position_span<Elem>(p, bp, p.q, b, head, q0, count));
    cp_async_commit();
    cp_async_wait<0>();
    fence_proxy_async();
    named_barrier_sync(1, Shape::kConsumerThreads);
  }
  if (threadIdx.x == 0) stamp(2);

  const int group = threadIdx.x / 128;
  const int lane = threadIdx.x % 32;
  const int warp_row0 = threadIdx.x / 32 * 16;  // of the CTA's rows
  const float scale_log2 = p.scale * kLog2e;
  int row_idx[1][2];  // positions of the thread's two rows
  row_idx[0][0] = q0 + warp_row0 + lane / 4;
  row_idx[0][1] = row_idx[0][0] + 8;
  float o[1][DT][4] = {};
  float row_max[1][2] = {{-INFINITY, -INFINITY}};
  float row_sum[1][2] = {{0.0f, 0.0f}};
  const uint64_t q_desc = k_major_desc(smem_address(q_tile) + group * 64 * 128);
  const uint64_t k_desc = k_major_desc(smem_address(k_tiles));
  const uint64_t v_desc = n_major_desc<kTileKeys>(smem_address(v_tiles));

  // One warpgroup keeps Q in registers, so that S reads only K from shared memory (with both
  // operands there, S alone asks for all of the SM's shared-memory bandwidth at 64-key tiles):
  // forward +5-7% at D = 128 and +3-5% at D = 64 at random(77) over blocks of 64 (H200). With two
  // warpgroups, and in the dense forward, it measured within noise (bench/NOTES.md, sixteenth
  // session; bench/experiments/q-registers-knobs.patch).
  constexpr bool kQInRegisters = Groups == 1;
  uint32_t qa[kQInRegisters ? D / 16 : 1][4];
  if constexpr (kQInRegisters) {
    load_a_fragments<typename Smem::QueryTile, D>(qa, smem_address(q_tile), warp_row0, lane);
  }
  auto issue_scores = [&](float(&s)[NT][4], int t) {
    if constexpr (kQInRegisters) {
      wgmma_rs_over_d<Elem, kTileKeys, D>(s, qa, desc_plus(k_desc, (t % kStages) * kKeyTileBytes));
    } else {
      wgmma_ss_over_d<Elem, kTileKeys, Shape::kRows, D>(
          s, q_desc, desc_plus(k_desc, (t % kStages) * kKeyTileBytes));
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
    read_staged_parts(notes + (t % kStages) * kParts * Groups + group, Groups, staged);
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
          c.first + kBlockKeys > c.end || (p.causal && c.first + kBlockKeys > q0 + warp_row0);
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
            const int key = c.first + (j - part * PT) * 8 + 2 * (lane % 4) + (e % 2);
            const bool masked = key >= c.end || (p.causal && key > row_idx[0][e / 2]);
            s[0][j][e] = masked ? -INFINITY : s[0][j][e];
          }
        }
      }
    }
    softmax_scores_tile(s, row_max, row_sum, corrections, unit);
  };
  auto pack = [&]() { accumulators_to_a<Elem, 1, 1, NT / 2>(pa, s); };

  using Turns = std::conditional_t<Groups == 2, IssueTurns<2>, NoTurns>;
  const Turns turns{group};
#if DILATED_HOPPER_BLOCK_CEILING == 1
  // Diagnosis build (bench/gpu/block_forward_ceilings.sh): the stream alone, no products.
  for (int t = 0, more = first.J < limit; more; ++t) {
    ring.wait_full(t);
    read_parts(t);
    more = !staged[0].last;
    ring.release(t);
  }
  if (false) {
#else
  if (first.J < limit) {
#endif
    turns.begin();
    ring.wait_full(0);
    if (threadIdx.x == 0) stamp(3);
    read_parts(0);
    turns.wait();
    wgmma_fence();
    issue_scores(s[0], 0);
    turns.pass();
    wgmma_wait<0>();
    pin_accumulators(s[0]);
    softmax();
    pack();
    if (threadIdx.x == 0) stamp(4);
    int t = 1;
    SpanClock stage_waits;  // diagnosis builds only (timeline.cuh)
    for (bool more = !staged[0].last; more; ++t) {
      stage_waits.begin();
      ring.wait_full(t);
      stage_waits.end();
      if (threadIdx.x == 0 && t == 2) stamp(12);
      read_parts(t);
      more = !staged[0].last;
      turns.wait();
      wgmma_fence();
      issue_scores(s[0], t);
      issue_values(pa[0][0], t - 1);
      turns.pass();
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
    if (threadIdx.x == 0) {
      stamp(5);
      stage_waits.record(13);
    }
    turns.wait();
    wgmma_fence();
    issue_values(pa[0][0], t - 1);
    turns.pass();
    turns.end();
    wgmma_wait<0>();
    pin_accumulators(o[0]);
    pin_fragments(pa[0][0]);
  }
  if (threadIdx.x == 0) {
    stamp(6);
    stamp(10);  // the dense forward's wait for the launch before; none here
  }

  // The warpgroup's rows through the copy engine where all 64 are written (inside the sequence,
  // each seeing a key: a vote, as blocks decide that), else row by row.
  // Both sums before the test: a quad_sum behind `&&` is a shuffle that only some lanes reach
  // where rows of one warp differ in whether they saw a key (infinite inputs can zero a row's
  // sum), and the warp then waits for the others forever (NonFiniteInputsFinish).
  const float sums[2] = {quad_sum(row_sum[0][0]), quad_sum(row_sum[0][1])};
  const bool rows_written = q0 + group * 64 + 64 <= count && sums[0] != 0.0f && sums[1] != 0.0f;
  if (query_maps.out_enabled && named_barrier_all(kOutputBarrier + group, 128, rows_written)) {
    const OutputBox box{0, q0 + group * 64, {row_idx[0][0], row_idx[0][1]}};
    store_rows_through_copy_engine<Elem, typename Smem::QueryTile>(
        p, bp.lse, query_maps, q_tile, group, box, b, head, o, row_max, row_sum, row_sum);
  } else {
    store_block_forward_rows<Elem>(p, bp, b, head, count, row_idx, o, row_max, row_sum);
  }
  // Slot 8: the last warpgroup's end (the first's where there is one).
  if (threadIdx.x == 0) stamp(7);
  if (threadIdx.x == Shape::kConsumerThreads - 128) stamp(8);
  if (threadIdx.x == 0) stamp(0);
#endif
}

}  // namespace dilated::cuda::hopper
