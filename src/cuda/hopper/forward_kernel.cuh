// Hopper forward (sm_90a): the portable forward's algorithm on warpgroup matrix products, with
// the portable kernel's launch plan (a tile of selected query rows of one segment of one head
// per CTA: 128, or 192 at D = 64). A producer warpgroup streams K and V tiles of 128 selected keys
// with cp.async (each row at its own address: the dilation and token grids cost nothing) into a
// ring of shared-memory stages in the layout wgmma reads; stages pass to and from the consumer
// warpgroups (64 rows each: two, three at D = 64) through mbarriers. Per tile a consumer computes S
// = Q K^T (both operands in shared memory), the online softmax on the accumulators in registers,
// and O += P V with P from registers; the softmax of tile t runs beside tile t - 1's P V, and the
// warpgroups take turns issuing their products (docs/design.md 3d).
#pragma once

#include "cuda/hopper/grid_dependency.cuh"
#include "cuda/hopper/output_rows.cuh"
#include "cuda/hopper/stage_ring.cuh"
#include "cuda/hopper/timeline.cuh"
#include "cuda/hopper/warp_roles.cuh"
#include "cuda/hopper/wgmma.cuh"
#include "cuda/kernels/forward_rows.cuh"
#include "cuda/kernels/mma_tiles.cuh"

namespace dilated::cuda::hopper {

inline constexpr int kRows = DenseShape::kRows;  // query rows per CTA of the dq kernel
inline constexpr int kKeys = 128;                // keys per tile

// Consumer warpgroups of the forward's CTA (query rows: 64 each). At D = 64 three: a tile's
// products take half the tensor cycles of D = 128 against the same exponentials, and a third
// warpgroup has softmax work ready while two wait on their products (FlashAttention-3's shape
// there; bench/NOTES.md, seventeenth session). They fit in 160 registers at D = 64 only.
inline constexpr int forward_groups(int head_dim) {
  return head_dim == 64 ? 3 : 2;
}

template <int D, int Groups>
struct ForwardSmem {
  using Shape = CtaShape<Groups>;
  using QueryTile = GmmaTile<Shape::kRows, D>;
  using KeyTile = GmmaTile<kKeys, D>;
  // K/V tiles in flight. A D = 64 tile has half the bytes of a D = 128 one and ~80% of its
  // time for the same copy latency: five fit, and they hide it (bench/NOTES.md, twelfth session).
  static constexpr int kStages = D == 64 ? 5 : 3;
  static constexpr int kTileBytes = (QueryTile::kElements + 2 * kStages * KeyTile::kElements) * 2;
  // The tiles, the row-sum selector (1 KiB, see forward_kernel), the stage barriers, a word per
  // consumer thread (wgmma_wait_after), the Q tile's barrier, and 1 KiB to round the base up to
  // 1024 (first_tile). The selector has no KiB of its own: D = 128's three stages leave none
  // under the 227 KiB a block may have. It lives in the rounding room, which goes unused where
  // the dynamic base is 1024-aligned: after the 1 KiB the driver reserves per block, as on
  // every sm_90 run so far. A base off 1024 would overrun by up to 1 KiB (a known limit).
  static constexpr int kBytes =
      kTileBytes + StageRing<kStages>::kBytes + 4 * Shape::kConsumerThreads + 8 + 1024;
};

// Key tile 0's square cells for stream_key_tiles (Squares instances, whole tiles), read by the
// producer's first thread before the kernel's setup barrier so that the read overlaps it.
template <bool Squares>
__device__ __forceinline__ SquareCells<kKeys> first_key_cells(const TensorMaps& maps,
                                                              const ForwardTile& tile,
                                                              int producer_thread0) {
  SquareCells<kKeys> cells;
  if (Squares && threadIdx.x == producer_thread0 && kKeys <= tile.key_rows.count) {
    cells.find(maps.square_cells, tile.key_rows.first);
  }
  return cells;
}

// The producer warpgroup's side of a query tile's K/V stream: key tile t (kKeys selected keys of
// the tile's kv head) into stage t % Stages once the consumers released that stage's previous
// tile, running ahead as far as the stages allow; then the wait that no copy outlives.
// Squares: the maps are a token grid's squares (TensorMaps::square_width). A kernel of its own:
// as a third path beside the other two, it made the 40-register producer spill on all of them
// (H100: the cp.async curve forward 0.18 -> 0.23 ms, configuration P's forward 3% slower).
// first_cells: first_key_cells.
template <typename Elem, int D, int Stages, bool Squares>
__device__ __forceinline__ void stream_key_tiles(const Params& p, const PassInfo& pass,
                                                 const TensorMaps& maps, const ForwardTile& tile,
                                                 int num_key_tiles, Elem* k_tiles, Elem* v_tiles,
                                                 const StageRing<Stages>& ring,
                                                 const SquareCells<kKeys>& first_cells) {
  constexpr int kTileElements = GmmaTile<kKeys, D>::kElements;
  RowSpan k_span =
      make_span<Elem>(p, p.k, tile.b, tile.kv_head, tile.hp, tile.key_rows, 0, pass.order);
  RowSpan v_span =
      make_span<Elem>(p, p.v, tile.b, tile.kv_head, tile.hp, tile.key_rows, 0, pass.order);
  const auto produce = [&](int t, const ProducerRows<kKeys>& rows) {
    ring.wait_empty(t);
    k_span.idx0 = v_span.idx0 = t * kKeys;
    produce_row_tiles<Elem, kKeys, D>(maps, k_span, v_span, rows, tile.kv_head, tile.b,
                                      k_tiles + (t % Stages) * kTileElements,
                                      v_tiles + (t % Stages) * kTileElements, ring.full(t));
  };
  if constexpr (Squares) {
    // Whole tiles square by square: one thread reads the next tile's square cells while the
    // current one is in flight; the producer's other threads only take part in a partial tile's
    // cp.async (rows located on the spot).
    SquareCells<kKeys> cells = first_cells;
    for (int t = 0; t < num_key_tiles; ++t) {
      ring.wait_empty(t);
      k_span.idx0 = v_span.idx0 = t * kKeys;
      Elem* k_stage = k_tiles + (t % Stages) * kTileElements;
      Elem* v_stage = v_tiles + (t % Stages) * kTileElements;
      if (copy_engine_squares<kKeys>(maps, k_span, k_span.idx0)) {
        if (threadIdx.x % 128 == 0) {
          copy_square_boxes<kKeys, D, GmmaTile<kKeys, D>>(maps, cells.cell, tile.kv_head, tile.b,
                                                          smem_address(k_stage),
                                                          smem_address(v_stage), ring.full(t));
        }
        cp_async_mbarrier_arrive(ring.full(t));
      } else {
        ProducerRows<kKeys> rows;
        rows.locate(maps, k_span, k_span.idx0);
        produce_row_tiles<Elem, kKeys, D>(maps, k_span, v_span, rows, tile.kv_head, tile.b, k_stage,
                                          v_stage, ring.full(t));
      }
      if (threadIdx.x % 128 == 0 && (t + 2) * kKeys <= k_span.count) {
        cells.find(maps.square_cells, k_span.first + (t + 1) * kKeys);
      }
    }
  } else if (maps.enabled) {
    // Whole tiles through the copy engine; only a last partial one needs its rows, located on
    // the spot (a loop holding rows located ahead made the forward 2% slower: H100, config P).
    for (int t = 0; t < num_key_tiles; ++t) {
      ProducerRows<kKeys> rows;
      rows.locate(maps, k_span, t * kKeys);
      produce(t, rows);
    }
  } else {
    ProducerRows<kKeys> rows;  // located one tile ahead
    rows.locate(maps, k_span, 0);
    for (int t = 0; t < num_key_tiles; ++t) {
      produce(t, rows);
      if (t + 1 < num_key_tiles) rows.locate(maps, k_span, (t + 1) * kKeys);
    }
  }
  cp_async_wait<0>();
}

template <typename Elem, int D, int Groups, bool Squares>
__global__ void __launch_bounds__(CtaShape<Groups>::kThreads, 1)
    forward_kernel(const Params p, const PassInfo pass, const __grid_constant__ TensorMaps maps,
                   const __grid_constant__ QueryMaps query_maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Shape = CtaShape<Groups>;
  using QueryTile = GmmaTile<Shape::kRows, D>;
  using KeyTile = GmmaTile<kKeys, D>;
  constexpr int kStages = ForwardSmem<D, Groups>::kStages;
  constexpr int NT = kKeys / 8;  // n8 column tiles of scores
  constexpr int DT = D / 8;      // n8 column tiles of output
  constexpr uint32_t kKeyTileBytes = KeyTile::kElements * 2;
  extern __shared__ unsigned char smem_raw[];
  Elem* q_tile = first_tile<Elem>(smem_raw);
  // B of the row-sum product: an 8 x 16 K-major tile (128-byte swizzle) whose row 0 is ones and
  // rows 1-7 zeros, so that P times it puts each row's sum of P in column 0.
  Elem* sum_selector = q_tile + QueryTile::kElements;
  Elem* k_tiles = sum_selector + 512;
  Elem* v_tiles = k_tiles + kStages * KeyTile::kElements;
  const StageRing<kStages> ring{smem_address(v_tiles + kStages * KeyTile::kElements)};
  const uint32_t scratch =
      ring.bars + StageRing<kStages>::kBytes + 4 * threadIdx.x;  // see wgmma_wait_after
  const uint32_t q_full = ring.bars + StageRing<kStages>::kBytes + 4 * Shape::kConsumerThreads;

  if (threadIdx.x == 0) stamp(11);
  const ForwardTile tile = forward_tile(p, pass, Shape::kRows);
  if (tile.num_keys == 0) return;
  // Plain copies: the lambdas below capture them (C++17 cannot capture structured bindings).
  const int64_t b = tile.b, head = tile.head;
  const HeadPattern hp = tile.hp;
  const SegmentRows rows = tile.rows;
  const int q0 = tile.q0, key_count = tile.key_count, shift = tile.shift;
  const int num_key_tiles = (tile.num_keys + kKeys - 1) / kKeys;
  const int lane = threadIdx.x % 32;
  // A whole query tile of a plain stride comes through the copy engine, issued by the producer
  // before any K/V tile (q_full); otherwise the consumers copy it. Along a curve of squares
  // (Squares instances) only a tile of whole aligned squares (two, three at D = 64), whose rows
  // come in the squares' order and go back the same way.
  const bool q_by_copy_engine =
      query_maps.q_enabled && q0 + Shape::kRows <= rows.count &&
      (Squares ? query_maps.square_width > 0 && ((rows.first + q0) & 63) == 0
               : query_maps.square_width == 0);

  // Along a curve of squares, the cells that place the first copies (the Q tile's and key tile
  // 0's squares, for the producer's first thread) and each warpgroup's output square (for its
  // threads): read here, so that the reads overlap the setup barrier.
  SquareCells<Shape::kRows> query_cells;
  int square_cell = 0;
  if (Squares && q_by_copy_engine) {
    if (threadIdx.x == Shape::kConsumerThreads) {
      query_cells.find(query_maps.square_cells, rows.first + q0);
    } else if (threadIdx.x < Shape::kConsumerThreads) {
      square_cell = square_cell_at(query_maps.square_cells, rows.first + q0, threadIdx.x / 128);
    }
  }
  const SquareCells<kKeys> key_cells =
      first_key_cells<Squares>(maps, tile, Shape::kConsumerThreads);

  if (threadIdx.x == 0) stamp(1);
  let_next_launch_start();
  if (threadIdx.x == 0) {
    ring.init(Shape::kConsumerThreads / 32);
    mbarrier_init(q_full, 1);
  }
  __syncthreads();

  if (threadIdx.x >= Shape::kConsumerThreads) {
    shrink_registers_to<Shape::kProducerRegisters>();
    if (q_by_copy_engine && threadIdx.x == Shape::kConsumerThreads) {
      mbarrier_expect_tx(q_full, QueryTile::kElements * 2);
      if constexpr (Squares) {
#pragma unroll
        for (int square = 0; square < Shape::kRows / 64; ++square) {
          const SquareCorner corner =
              square_corner(query_cells.cell[square], query_maps.square_width);
          load_box<D, QueryTile>(&query_maps.q, smem_address(q_tile) + square * 64 * 128, q_full,
                                 corner.x, corner.y, head, b);
        }
      } else {
        const int64_t position = rows.first + static_cast<int64_t>(q0) * hp.dilation;
        load_box<D, QueryTile>(&query_maps.q, smem_address(q_tile), q_full,
                               static_cast<int>(small_remainder(position, hp.dilation)),
                               static_cast<int>(small_quotient(position, hp.dilation)), head, b);
      }
      mbarrier_arrive(q_full);
    }
    stream_key_tiles<Elem, D, kStages, Squares>(p, pass, maps, tile, num_key_tiles, k_tiles,
                                                v_tiles, ring, key_cells);
    if (threadIdx.x == Shape::kConsumerThreads) stamp(9);
    return;
  }

  grow_registers_to<Shape::kConsumerRegisters>();
  if (!q_by_copy_engine) {
    load_tile_async<Elem, Shape::kRows, D, Shape::kConsumerThreads, QueryTile>(
        q_tile, make_span<Elem>(p, p.q, b, head, hp, rows, q0, pass.order));
    cp_async_commit();
  }
  for (int i = threadIdx.x; i < 512; i += Shape::kConsumerThreads) {
    sum_selector[i] = from_float<Elem>(i < 64 ? 1.0f : 0.0f);  // line 0 (row 0) is unswizzled
  }
  if (q_by_copy_engine) {
    mbarrier_wait(q_full, 0);
  } else {
    cp_async_wait<0>();
  }
  fence_proxy_async();  // the selector's (and cp.async's) writes, for wgmma
  named_barrier_sync(1, Shape::kConsumerThreads);
  if (threadIdx.x == 0) stamp(2);

  const int warpgroup = threadIdx.x / 128;
  const int warp_row0 = warpgroup * 64 + (threadIdx.x % 128) / 32 * 16;
  const float scale_log2 = p.scale * kLog2e;
  int row_idx[1][2];  // selected-row index of the thread's two rows
  row_idx[0][0] = q0 + warp_row0 + lane / 4;
  row_idx[0][1] = row_idx[0][0] + 8;
  float o[1][DT][4] = {};
  float row_max[1][2] = {{-INFINITY, -INFINITY}};
  float row_sum[1][2] = {{0.0f, 0.0f}};  // of the exact probabilities: lse
  // Sums of the rounded probabilities that reach o, by the tensor cores beside P V: column 0
  // of P times sum_selector (an instruction per 16 keys instead of ~16 per thread).
  float norm[1][1][4] = {};
  // Descriptors of this warpgroup's Q rows and of stage 0's K and V; steps are offsets.
  const uint64_t q_desc = k_major_desc(smem_address(q_tile) + warpgroup * 64 * 128);
  const uint64_t k_desc = k_major_desc(smem_address(k_tiles));
  const uint64_t v_desc = n_major_desc<kKeys>(smem_address(v_tiles));
  const uint64_t sum_desc = k_major_desc(smem_address(sum_selector));

  // S = Q K^T of tile t into s (asynchronous; committed as one group).
  auto issue_scores = [&](float(&s)[NT][4], int t) {
    wgmma_ss_over_d<Elem, kKeys, Shape::kRows, D>(s, q_desc,
                                                  desc_plus(k_desc, (t % kStages) * kKeyTileBytes));
    wgmma_commit();
  };
  // O += P V of tile t, P from registers (asynchronous; one group).
  auto issue_values = [&](const uint32_t(&pa)[NT / 2][4], int t) {
    const uint64_t v_stage = desc_plus(v_desc, (t % kStages) * kKeyTileBytes);
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      wgmma_rs<Elem, D>(o[0], pa[kk], desc_plus(v_stage, n_major_step(kk)));
      wgmma_rs_bk<Elem, 8>(norm[0], pa[kk], sum_desc);  // every K step reads the same ones
    }
    wgmma_commit();
  };
  // Scores of tile t -> probabilities in pa; the corrections o needs are returned.
  float s[1][NT][4];
  uint32_t pa[1][1][NT / 2][4];
  float corrections[1][2];
  auto softmax = [&](int t) {
    const int key0 = t * kKeys;
    const bool needs_mask =
        key0 + kKeys > key_count || (p.causal && key0 + kKeys > q0 + warp_row0 + shift);
    if (scale_log2 > 0.0f) {  // the usual case: the scale rides in the exponent's FFMA
      mask_scores(s, needs_mask, key0, key_count, p.causal, row_idx, shift);
      softmax_scores_tile(s, row_max, row_sum, corrections, scale_log2);
    } else {
      scale_and_mask_scores(s, scale_log2, needs_mask, key0, key_count, p.causal, row_idx, shift);
      softmax_scores_tile(s, row_max, row_sum, corrections);
    }
  };
  // The probabilities as the product's 16-bit A fragments.
  auto pack = [&]() { accumulators_to_a<Elem, 1, 1, NT / 2>(pa, s); };
  auto release = [&](int t) { ring.release(t); };

  const IssueTurns<Groups> turns{warpgroup};
  turns.begin();
  // A warpgroup past the segment's last row (a partial last tile: 192-row tiles over segments of
  // 2048 rows leave the third one idle) only takes its turns and releases the stages, each after
  // it has landed (an earlier release would count toward the stage's previous use), so that the
  // other warpgroups' products and exponentials have the SM to themselves.
  if (q0 + warpgroup * 64 >= rows.count) {
    for (int t = 0; t <= num_key_tiles; ++t) {
      if (t < num_key_tiles) ring.wait_full(t);
      turns.wait();
      turns.pass();
      if (t < num_key_tiles) release(t);
    }
    return;
  }

  // Software pipeline (FlashAttention-3's intra-warpgroup overlap): the softmax of tile t runs
  // while the tensor cores compute tile t - 1's P V.
  ring.wait_full(0);
  if (threadIdx.x == 0) stamp(3);
  turns.wait();
  wgmma_fence();
  issue_scores(s[0], 0);
  turns.pass();
  wgmma_wait<0>();
  pin_accumulators(s[0]);
  softmax(0);
  pack();
  if (threadIdx.x == 0) stamp(4);
  for (int t = 1; t < num_key_tiles; ++t) {
    ring.wait_full(t);
    if (threadIdx.x == 0 && t == 2) stamp(12);
    turns.wait();
    wgmma_fence();
    issue_scores(s[0], t);
    issue_values(pa[0][0], t - 1);
    turns.pass();
    wgmma_wait<1>();  // the scores (committed first) are done; P V may still run
    pin_accumulators(s[0]);
    softmax(t);
    // P V of tile t - 1 is done after this: o and pa may change, the stage is free. The
    // softmax (all of it feeds the row sums) stays before the wait, beside the P V.
    wgmma_wait_after<0>(row_sum[0][0] + row_sum[0][1], scratch);
    pin_accumulators(o[0]);
    pin_accumulators(norm[0]);
    pin_fragments(pa[0][0]);
    release(t - 1);
    rescale_outputs(o, corrections);
    rescale_outputs(norm, corrections);
    pack();
  }
  if (threadIdx.x == 0) stamp(5);
  turns.wait();
  wgmma_fence();
  issue_values(pa[0][0], num_key_tiles - 1);
  turns.pass();
  turns.end();
  wgmma_wait<0>();
  pin_accumulators(o[0]);
  pin_accumulators(norm[0]);
  pin_fragments(pa[0][0]);
  release(num_key_tiles - 1);

  // Column 0 holds the sums (thread lane % 4 == 0: registers 0 and 2, rows lane / 4 and + 8);
  // the other columns are 0, so the epilogue's sum over a row's four threads is exact.
  const float row_norm[1][2] = {{norm[0][0][0], norm[0][0][2]}};

  if (threadIdx.x == 0) stamp(6);
  wait_for_previous_launches();
  if (threadIdx.x == 0) stamp(10);
  if (Squares && q_by_copy_engine) {  // rows in the squares' order (above)
    const OutputBox box = square_output_box(square_cell, query_maps.square_width);
    store_rows_through_copy_engine<Elem, QueryTile>(p, pass.lse, query_maps, q_tile, warpgroup, box,
                                                    b, head, o, row_max, row_sum, row_norm);
  } else if (!Squares &&
             rows_through_copy_engine(p, query_maps, rows, key_count, shift, q0 + warpgroup * 64)) {
    const OutputBox box = strided_output_box(hp, rows, q0 + warpgroup * 64, row_idx);
    store_rows_through_copy_engine<Elem, QueryTile>(p, pass.lse, query_maps, q_tile, warpgroup, box,
                                                    b, head, o, row_max, row_sum, row_norm);
  } else {
    store_forward_rows<Elem>(p, pass, hp, rows, key_count, shift, b, head, row_idx, o, row_max,
                             row_sum, row_norm);
  }
  if (threadIdx.x == 0) stamp(7);
  if (threadIdx.x == Shape::kConsumerThreads - 128) stamp(8);  // the last warpgroup
  if (threadIdx.x == 0) stamp(0);
#endif
}

}  // namespace dilated::cuda::hopper
