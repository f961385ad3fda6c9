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

// Persistent: the CTA takes several query tiles (forward_kernel). At D = 64 it holds two Q tiles,
// so that the producer loads the next tile's Q while the consumers work on the current one. At
// D = 128 a second Q tile would take the room of the third K/V stage, and two stages starve the
// key-tile loop (segments of 1024 31% slower; bench/NOTES.md, twentieth session): one Q tile,
// loaded once the consumers' epilogue is done with it, after the next tile's first K/V tiles.
// EarlyQueryRelease: see forward_kernel.
template <int D, int Groups, bool Persistent = false, bool EarlyQueryRelease = false>
struct ForwardSmem {
  using Shape = CtaShape<Groups>;
  using QueryTile = GmmaTile<Shape::kRows, D>;
  using KeyTile = GmmaTile<kKeys, D>;
  // K/V tiles in flight. A D = 64 tile has half the bytes of a D = 128 one and ~80% of its
  // time for the same copy latency: five fit, and they hide it (bench/NOTES.md, twelfth session).
  static constexpr int kStages = D == 64 ? 5 : 3;
  static constexpr int kQueryTiles = Persistent && D == 64 ? 2 : 1;
  static_assert(!EarlyQueryRelease || (Persistent && kQueryTiles == 1), "one Q tile only");
  static constexpr int kTileBytes =
      (kQueryTiles * QueryTile::kElements + 2 * kStages * KeyTile::kElements) * 2;
  // A full barrier per Q tile, and where the producer loads them, an empty one.
  static constexpr int kQueryBarrierBytes = Persistent ? 8 * 2 * kQueryTiles : 8;
  // Persistent: the tile each Q tile holds, as the producer found it (forward_kernel).
  // Tile n's note is note n % kNotes: one per Q tile, and two where the Q tile is released early
  // (the epilogue still reads tile n's note while the producer publishes tile n + 1's).
  static constexpr int kNotes = EarlyQueryRelease ? 2 : kQueryTiles;
  static constexpr int kTileNoteBytes = Persistent ? kNotes * sizeof(ForwardTile) : 0;
  // The tiles, the row-sum selector (1 KiB, see forward_kernel), the stage barriers, a word per
  // consumer thread (wgmma_wait_after), the Q tiles' barriers, and 1 KiB to round the base up to
  // 1024 (first_tile). The selector has no KiB of its own: D = 128's three stages leave none
  // under the 227 KiB a block may have. It lives in the rounding room, which goes unused where
  // the dynamic base is 1024-aligned: after the 1 KiB the driver reserves per block, as on
  // every sm_90 run so far. A base off 1024 would overrun by up to 1 KiB (a known limit).
  static constexpr int kBytes = kTileBytes + StageRing<kStages>::kBytes +
                                4 * Shape::kConsumerThreads + kQueryBarrierBytes + kTileNoteBytes +
                                1024;
  static_assert(kBytes <= 227 * 1024, "a block's shared memory");
};

// Whether a pass's forward runs persistent CTAs (ForwardSmem): rows of a plain stride, and no
// causal mask, whose tiles differ in length (a fixed share of the tiles per CTA would leave the
// machine unbalanced).
template <int Groups, bool Squares>
inline constexpr bool kPersistentForward = !Squares;

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
// the tile's kv head) as the ring's item ring_base + t once the consumers released that stage's
// previous item, running ahead as far as the stages allow; then the wait that no copy outlives.
// Squares: the maps are a token grid's squares (TensorMaps::square_width). A kernel of its own:
// as a third path beside the other two, it made the 40-register producer spill on all of them
// (H100: the cp.async curve forward 0.18 -> 0.23 ms, configuration P's forward 3% slower).
// first_cells: first_key_cells.
// ring_base: the key tiles of the CTA's earlier query tiles. Key tiles first .. end - 1 (first
// is 0 along squares).
template <typename Elem, int D, int Stages, bool Squares>
__device__ __forceinline__ void stream_key_tiles(const Params& p, const PassInfo& pass,
                                                 const TensorMaps& maps, const ForwardTile& tile,
                                                 int first, int end, Elem* k_tiles, Elem* v_tiles,
                                                 const StageRing<Stages>& ring, int ring_base,
                                                 const SquareCells<kKeys>& first_cells) {
  constexpr int kTileElements = GmmaTile<kKeys, D>::kElements;
  RowSpan k_span =
      make_span<Elem>(p, p.k, tile.b, tile.kv_head, tile.hp, tile.key_rows, 0, pass.order);
  RowSpan v_span =
      make_span<Elem>(p, p.v, tile.b, tile.kv_head, tile.hp, tile.key_rows, 0, pass.order);
  const auto produce = [&](int t, const ProducerRows<kKeys>& rows) {
    const int item = ring_base + t;
    ring.wait_empty(item);
    k_span.idx0 = v_span.idx0 = t * kKeys;
    produce_row_tiles<Elem, kKeys, D>(maps, k_span, v_span, rows, tile.kv_head, tile.b,
                                      k_tiles + (item % Stages) * kTileElements,
                                      v_tiles + (item % Stages) * kTileElements, ring.full(item));
  };
  if constexpr (Squares) {
    // Whole tiles square by square: one thread reads the next tile's square cells while the
    // current one is in flight; the producer's other threads only take part in a partial tile's
    // cp.async (rows located on the spot).
    SquareCells<kKeys> cells = first_cells;
    for (int t = 0; t < end; ++t) {
      const int item = ring_base + t;
      ring.wait_empty(item);
      k_span.idx0 = v_span.idx0 = t * kKeys;
      Elem* k_stage = k_tiles + (item % Stages) * kTileElements;
      Elem* v_stage = v_tiles + (item % Stages) * kTileElements;
      if (copy_engine_squares<kKeys>(maps, k_span, k_span.idx0)) {
        if (threadIdx.x % 128 == 0) {
          copy_square_boxes<kKeys, D, GmmaTile<kKeys, D>>(maps, cells.cell, tile.kv_head, tile.b,
                                                          smem_address(k_stage),
                                                          smem_address(v_stage), ring.full(item));
        }
        cp_async_mbarrier_arrive(ring.full(item));
      } else {
        ProducerRows<kKeys> rows;
        rows.locate(maps, k_span, k_span.idx0);
        produce_row_tiles<Elem, kKeys, D>(maps, k_span, v_span, rows, tile.kv_head, tile.b, k_stage,
                                          v_stage, ring.full(item));
      }
      if (threadIdx.x % 128 == 0 && (t + 2) * kKeys <= k_span.count) {
        cells.find(maps.square_cells, k_span.first + (t + 1) * kKeys);
      }
    }
  } else if (maps.enabled) {
    // Whole tiles through the copy engine; only a last partial one needs its rows, located on
    // the spot (a loop holding rows located ahead made the forward 2% slower: H100, config P).
    for (int t = first; t < end; ++t) {
      ProducerRows<kKeys> rows;
      rows.locate(maps, k_span, t * kKeys);
      produce(t, rows);
    }
  } else {
    ProducerRows<kKeys> rows;  // located one tile ahead
    rows.locate(maps, k_span, first * kKeys);
    for (int t = first; t < end; ++t) {
      produce(t, rows);
      if (t + 1 < end) rows.locate(maps, k_span, (t + 1) * kKeys);
    }
  }
  cp_async_wait<0>();
}

// The query tiles a forward CTA takes: its blockIdx's one; or, in a persistent launch (a grid of
// fewer CTAs than the pass has tiles, in x only), every gridDim.x-th of the pass's tiles from
// blockIdx.x, numbered as a launch of a tile a CTA numbers its CTAs (x fastest: segment and tile;
// then head; then batch entry), so that the CTAs at work at one time share K/V rows as there.
template <bool Persistent>
struct TileWalk {
  uint32_t item = blockIdx.x;
  __device__ __forceinline__ ForwardTile tile(const Params& p, const PassInfo& pass,
                                              int tile_rows) const {
    if constexpr (!Persistent) {
      return forward_tile(p, pass, tile_rows);
    } else {
      const uint32_t row_tiles = static_cast<uint32_t>(pass.segments * pass.tiles_per_segment);
      const uint32_t heads = static_cast<uint32_t>(pass.head_count);
      const uint32_t head_and_batch = item / row_tiles;
      return forward_tile(p, pass, tile_rows, item - head_and_batch * row_tiles,
                          head_and_batch % heads, head_and_batch / heads);
    }
  }
  // To the CTA's next tile (into `next_tile`); false past the pass's last.
  __device__ __forceinline__ bool next(const Params& p, const PassInfo& pass, int tile_rows,
                                       ForwardTile& next_tile) {
    if constexpr (!Persistent) return false;
    item += gridDim.x;
    if (item >=
        static_cast<uint32_t>(pass.segments * pass.tiles_per_segment * pass.head_count * p.batch)) {
      return false;
    }
    next_tile = tile(p, pass, tile_rows);
    return true;
  }
};

// Persistent (kPersistentForward instances, launched with fewer CTAs than tiles): the CTA takes
// its tiles one after another through one K/V ring, and its n-th tile's Q goes to Q tile
// n % kQueryTiles (ForwardSmem), so that the producer streams the next tile's first K/V tiles (and
// at D = 64 its Q) while the consumers finish the current one. The setup, the wait for Q and the
// first stage, and the gap between CTAs are 13% of a one-tile CTA at segments of 2048 and 40% at
// 512 (D = 64, bench/NOTES.md, eighteenth and nineteenth sessions); forward.cu launches persistent
// CTAs where tiles are that short.
//
// EarlyQueryRelease (persistent CTAs with one Q tile, D = 128, where the output does not go
// through the copy engine anyway: a pass that accumulates into fp32 rows): the consumers release
// the Q tile once their last S is done and the producer loads the next tile's Q beside the last
// P V and the epilogue (H100, a longnet layer of segments 512, 1024, 2048: -8%). Where the copy
// engine stores the rows, it stages them in the Q tile; storing from registers instead, to
// release it early, cost more than it gained (segments of 512 +7%; bench/NOTES.md, twentieth
// session).
template <typename Elem, int D, int Groups, bool Squares, bool Persistent,
          bool EarlyQueryRelease = false>
__global__ void __launch_bounds__(CtaShape<Groups>::kThreads, 1)
    forward_kernel(const Params p, const PassInfo pass, const __grid_constant__ TensorMaps maps,
                   const __grid_constant__ QueryMaps query_maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(!Persistent || kPersistentForward<Groups, Squares>, "see kPersistentForward");
  using Shape = CtaShape<Groups>;
  using Smem = ForwardSmem<D, Groups, Persistent, EarlyQueryRelease>;
  using QueryTile = GmmaTile<Shape::kRows, D>;
  using KeyTile = GmmaTile<kKeys, D>;
  constexpr int kStages = Smem::kStages;
  constexpr int NT = kKeys / 8;  // n8 column tiles of scores
  constexpr int DT = D / 8;      // n8 column tiles of output
  constexpr uint32_t kKeyTileBytes = KeyTile::kElements * 2;
  extern __shared__ unsigned char smem_raw[];
  Elem* q_tile0 = first_tile<Elem>(smem_raw);
  // B of the row-sum product: an 8 x 16 K-major tile (128-byte swizzle) whose row 0 is ones and
  // rows 1-7 zeros, so that P times it puts each row's sum of P in column 0.
  Elem* sum_selector = q_tile0 + QueryTile::kElements;
  Elem* k_tiles = sum_selector + 512;
  Elem* v_tiles = k_tiles + kStages * KeyTile::kElements;
  Elem* q_tile1 = v_tiles + kStages * KeyTile::kElements;  // persistent CTAs' second Q tile
  const StageRing<kStages> ring{
      smem_address(q_tile1 + (Smem::kQueryTiles - 1) * QueryTile::kElements)};
  const uint32_t scratch =
      ring.bars + StageRing<kStages>::kBytes + 4 * threadIdx.x;  // see wgmma_wait_after
  const uint32_t q_bars = ring.bars + StageRing<kStages>::kBytes + 4 * Shape::kConsumerThreads;
  // The CTA's n-th tile (counting those with keys) uses Q tile n % kQueryTiles: full
  // once its rows landed, empty once the consumers are done with them (the epilogue's rows too).
  constexpr int kQueryTiles = Smem::kQueryTiles;
  const auto q_tile = [&](int n) { return n % kQueryTiles ? q_tile1 : q_tile0; };
  const auto q_full = [&](int n) { return q_bars + 8 * (n % kQueryTiles); };
  const auto q_empty = [&](int n) { return q_bars + 8 * kQueryTiles + 8 * (n % kQueryTiles); };
  // The phases of a tile's use of its Q tile, and of the use before it (n >= kQueryTiles).
  const auto q_phase = [&](int n) { return static_cast<uint32_t>(n / kQueryTiles) & 1; };
  const auto q_previous_phase = [&](int n) { return q_phase(n) ^ 1; };
  // A persistent CTA's tiles are walked by the producer alone, which notes each beside its Q
  // tile before the arrival on q_full that publishes it (num_keys -1: no more tiles). Walking
  // them in the consumers put ~2500 cycles of index arithmetic between every two tiles
  // (bench/NOTES.md, nineteenth session).
  ForwardTile* const tile_notes = reinterpret_cast<ForwardTile*>(
      reinterpret_cast<unsigned char*>(q_tile1 + (Smem::kQueryTiles - 1) * QueryTile::kElements) +
      StageRing<kStages>::kBytes + 4 * Shape::kConsumerThreads + Smem::kQueryBarrierBytes);

  if (threadIdx.x == 0) stamp(11);
  TileWalk<Persistent> walk;
  ForwardTile tile = walk.tile(p, pass, Shape::kRows);
  if (!Persistent && tile.num_keys == 0) return;
  // A whole query tile of a plain stride comes through the copy engine, issued by the producer
  // before any K/V tile (q_full); otherwise the consumers copy it. Along a curve of squares
  // (Squares instances) only a tile of whole aligned squares (two, three at D = 64), whose rows
  // come in the squares' order and go back the same way.
  const auto q_by_copy_engine = [&](const ForwardTile& t) {
    return query_maps.q_enabled && t.q0 + Shape::kRows <= t.rows.count &&
           (Squares ? query_maps.square_width > 0 && ((t.rows.first + t.q0) & 63) == 0
                    : query_maps.square_width == 0);
  };

  // Along a curve of squares (one tile a CTA), the cells that place the first copies (the Q
  // tile's and key tile 0's squares, for the producer's first thread) and each warpgroup's output
  // square (for its threads): read here, so that the reads overlap the setup barrier.
  SquareCells<Shape::kRows> query_cells;
  int square_cell = 0;
  if (Squares && q_by_copy_engine(tile)) {
    if (threadIdx.x == Shape::kConsumerThreads) {
      query_cells.find(query_maps.square_cells, tile.rows.first + tile.q0);
    } else if (threadIdx.x < Shape::kConsumerThreads) {
      square_cell =
          square_cell_at(query_maps.square_cells, tile.rows.first + tile.q0, threadIdx.x / 128);
    }
  }
  const SquareCells<kKeys> key_cells =
      first_key_cells<Squares>(maps, tile, Shape::kConsumerThreads);

  if (threadIdx.x == 0) stamp(1);
  let_next_launch_start();
  if (threadIdx.x == 0) {
    ring.init(Shape::kConsumerThreads / 32);
    mbarrier_init(q_full(0), 1);
    if constexpr (Persistent) {
      for (int i = 0; i < kQueryTiles; ++i) {
        if (i > 0) mbarrier_init(q_full(i), 1);
        mbarrier_init(q_empty(i), Shape::kConsumerThreads);
      }
    }
  }
  __syncthreads();

  if (threadIdx.x >= Shape::kConsumerThreads) {
    shrink_registers_to<Shape::kProducerRegisters>();
    int n = 0, ring_base = 0;
    do {
      if (!Persistent || tile.num_keys != 0) {
        const bool copies_q = q_by_copy_engine(tile);
        // With one Q tile in a persistent CTA, the next tile's first K/V tiles (as many as there
        // are stages: those only wait for the current tile's releases, which come before its
        // epilogue frees the Q tile) go before the wait for its Q tile. Released early (after
        // the last S), one fewer: the last stage is released only after the last P V.
        int keys_before_q = 0;
        if constexpr (Persistent && kQueryTiles == 1) {
          if (n > 0) {
            keys_before_q =
                min(EarlyQueryRelease ? kStages - 1 : kStages, (tile.num_keys + kKeys - 1) / kKeys);
            stream_key_tiles<Elem, D, kStages, Squares>(p, pass, maps, tile, 0, keys_before_q,
                                                        k_tiles, v_tiles, ring, ring_base,
                                                        key_cells);
          }
        }
        if (threadIdx.x == Shape::kConsumerThreads) {
          if (Persistent && n >= kQueryTiles) mbarrier_wait(q_empty(n), q_previous_phase(n));
          if (copies_q) {
            mbarrier_expect_tx(q_full(n), QueryTile::kElements * 2);
            const uint32_t q_address = smem_address(q_tile(n));
            if constexpr (Squares) {
#pragma unroll
              for (int square = 0; square < Shape::kRows / 64; ++square) {
                const SquareCorner corner =
                    square_corner(query_cells.cell[square], query_maps.square_width);
                load_box<D, QueryTile>(&query_maps.q, q_address + square * 64 * 128, q_full(n),
                                       corner.x, corner.y, tile.head, tile.b);
              }
            } else {
              const int64_t position =
                  tile.rows.first + static_cast<int64_t>(tile.q0) * tile.hp.dilation;
              load_box<D, QueryTile>(&query_maps.q, q_address, q_full(n),
                                     static_cast<int>(small_remainder(position, tile.hp.dilation)),
                                     static_cast<int>(small_quotient(position, tile.hp.dilation)),
                                     tile.head, tile.b);
            }
          }
          // In a persistent CTA every tile completes a phase of q_full(n), which also publishes
          // its note to the consumers.
          if constexpr (Persistent) tile_notes[n % Smem::kNotes] = tile;
          if (Persistent || copies_q) mbarrier_arrive(q_full(n));
        }
        const int num_key_tiles = (tile.num_keys + kKeys - 1) / kKeys;
        stream_key_tiles<Elem, D, kStages, Squares>(p, pass, maps, tile, keys_before_q,
                                                    num_key_tiles, k_tiles, v_tiles, ring,
                                                    ring_base, key_cells);
        ring_base += num_key_tiles;
        ++n;
      }
    } while (walk.next(p, pass, Shape::kRows, tile));
    if (Persistent && threadIdx.x == Shape::kConsumerThreads) {
      if (n >= kQueryTiles) mbarrier_wait(q_empty(n), q_previous_phase(n));
      tile_notes[n % Smem::kNotes].num_keys = -1;
      mbarrier_arrive(q_full(n));
    }
    if (threadIdx.x == Shape::kConsumerThreads) stamp(9);
    return;
  }

  grow_registers_to<Shape::kConsumerRegisters>();
  const int warpgroup = threadIdx.x / 128;
  const int lane = threadIdx.x % 32;
  const int warp_row0 = warpgroup * 64 + (threadIdx.x % 128) / 32 * 16;
  const float scale_log2 = p.scale * kLog2e;
  const IssueTurns<Groups> turns{warpgroup};
  for (int i = threadIdx.x; i < 512; i += Shape::kConsumerThreads) {
    sum_selector[i] = from_float<Elem>(i < 64 ? 1.0f : 0.0f);  // line 0 (row 0) is unswizzled
  }
  int n = 0, ring_base = 0;
  for (;;) {
    if constexpr (Persistent) {
      mbarrier_wait(q_full(n), q_phase(n));
      if (__all_sync(0xffffffffu, tile_notes[n % Smem::kNotes].num_keys < 0)) break;
    }
    // The tile, read where it is used: in a persistent CTA from its note, which stays until the
    // consumers release the Q tile (held in registers across the key-tile loop, the note made
    // the consumers spill inside it).
    const ForwardTile& note = Persistent ? tile_notes[n % Smem::kNotes] : tile;
    if (Persistent && threadIdx.x == 0) stamp(13);  // a persistent CTA's tile start
    // Plain copies: the lambdas below capture them (C++17 cannot capture structured bindings).
    const int q0 = note.q0, key_count = note.key_count, shift = note.shift;
    // Through a shuffle: ptxas then knows it warp-uniform and keeps the key-tile loop's counter
    // and stage descriptors in uniform registers (not so for a value of the tile walk: bench/
    // NOTES.md, eighteenth session).
    const int num_key_tiles = __shfl_sync(0xffffffffu, (note.num_keys + kKeys - 1) / kKeys, 0);
    const bool copies_q = __all_sync(0xffffffffu, q_by_copy_engine(note));
    // A persistent CTA waited for q_full(n) above: its Q tile is free (the producer published the
    // note only after q_empty(n)) or, through the copy engine, has landed.
    if (!copies_q) {
      load_tile_async<Elem, Shape::kRows, D, Shape::kConsumerThreads, QueryTile>(
          q_tile(n),
          make_span<Elem>(p, p.q, note.b, note.head, note.hp, note.rows, q0, pass.order));
      cp_async_commit();
      cp_async_wait<0>();
    } else if (!Persistent) {
      mbarrier_wait(q_full(n), 0);
    }
    // Every tile starts with the consumer warpgroups in step, as a CTA's first does: their
    // turns then keep one warpgroup's exponentials beside another's products.
    fence_proxy_async();  // the selector's (and cp.async's) writes, for wgmma
    named_barrier_sync(1, Shape::kConsumerThreads);
    if (threadIdx.x == 0) stamp(2);

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
    const uint64_t q_desc = k_major_desc(smem_address(q_tile(n)) + warpgroup * 64 * 128);
    const uint64_t k_desc = k_major_desc(smem_address(k_tiles));
    const uint64_t v_desc = n_major_desc<kKeys>(smem_address(v_tiles));
    const uint64_t sum_desc = k_major_desc(smem_address(sum_selector));

    // S = Q K^T of key tile t into s (asynchronous; committed as one group).
    auto issue_scores = [&](float(&s)[NT][4], int t) {
      wgmma_ss_over_d<Elem, kKeys, Shape::kRows, D>(
          s, q_desc, desc_plus(k_desc, ((ring_base + t) % kStages) * kKeyTileBytes));
      wgmma_commit();
    };
    // O += P V of key tile t, P from registers (asynchronous; one group).
    auto issue_values = [&](const uint32_t(&pa)[NT / 2][4], int t) {
      const uint64_t v_stage = desc_plus(v_desc, ((ring_base + t) % kStages) * kKeyTileBytes);
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk) {
        wgmma_rs<Elem, D>(o[0], pa[kk], desc_plus(v_stage, n_major_step(kk)));
        wgmma_rs_bk<Elem, 8>(norm[0], pa[kk], sum_desc);  // every K step reads the same ones
      }
      wgmma_commit();
    };
    // Scores of key tile t -> probabilities in pa; the corrections o needs are returned.
    float s[1][NT][4];
    uint32_t pa[1][1][NT / 2][4];
    float corrections[1][2];
    auto softmax = [&](int t) {
      const int key0 = t * kKeys;
      bool needs_mask = key0 + kKeys > key_count;
      // Persistent CTAs run without a causal mask (kPersistentForward): their loop keeps no q0.
      if constexpr (!Persistent) {
        needs_mask = needs_mask || (p.causal && key0 + kKeys > q0 + warp_row0 + shift);
      }
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
    auto wait_full = [&](int t) { ring.wait_full(ring_base + t); };
    auto release = [&](int t) { ring.release(ring_base + t); };

    if (n == 0) turns.begin();
    // A warpgroup past the segment's last row (a partial last tile: 192-row tiles over segments
    // of 2048 rows leave the third one idle) only takes its turns and releases the stages, each
    // after it has landed (an earlier release would count toward the stage's previous use), so
    // that the other warpgroups' products and exponentials have the SM to themselves. Not in
    // persistent CTAs, where it computes on the zero rows instead: a branch around its own loop
    // made ptxas take the key-tile loop off the uniform datapath (and with the products inside
    // one loop under a condition, it serialized them; bench/NOTES.md, eighteenth session).
    if (!Persistent && q0 + warpgroup * 64 >= note.rows.count) {
      for (int t = 0; t <= num_key_tiles; ++t) {
        if (t < num_key_tiles) wait_full(t);
        turns.wait();
        turns.pass();
        if (t < num_key_tiles) release(t);
      }
      return;
    }
    // Software pipeline (FlashAttention-3's intra-warpgroup overlap): the softmax of key tile
    // t runs while the tensor cores compute tile t - 1's P V.
    wait_full(0);
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
      wait_full(t);
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
    // Every S of the tile is done: the Q tile is free (EarlyQueryRelease).
    if constexpr (EarlyQueryRelease) mbarrier_arrive(q_empty(n));
    if (threadIdx.x == 0) stamp(5);
    turns.wait();
    wgmma_fence();
    issue_values(pa[0][0], num_key_tiles - 1);
    turns.pass();
    if (!Persistent) turns.end();
    wgmma_wait<0>();
    pin_accumulators(o[0]);
    pin_accumulators(norm[0]);
    pin_fragments(pa[0][0]);
    release(num_key_tiles - 1);
    {
      // Column 0 holds the sums (thread lane % 4 == 0: registers 0 and 2, rows lane / 4 and
      // + 8); the other columns are 0, so the epilogue's sum over a row's four threads is exact.
      const float row_norm[1][2] = {{norm[0][0][0], norm[0][0][2]}};

      if (threadIdx.x == 0) stamp(6);
      const int64_t b = note.b, head = note.head;
      const HeadPattern hp = note.hp;
      const SegmentRows rows = note.rows;
      wait_for_previous_launches();
      if (threadIdx.x == 0) stamp(10);
      if (Squares && copies_q) {  // rows in the squares' order (above)
        const OutputBox box = square_output_box(square_cell, query_maps.square_width);
        store_rows_through_copy_engine<Elem, QueryTile>(p, pass.lse, query_maps, q_tile(n),
                                                        warpgroup, box, b, head, o, row_max,
                                                        row_sum, row_norm);
      } else if (!Squares && !EarlyQueryRelease &&
                 __all_sync(0xffffffffu, rows_through_copy_engine(p, query_maps, rows, key_count,
                                                                  shift, q0 + warpgroup * 64))) {
        const OutputBox box = strided_output_box(hp, rows, q0 + warpgroup * 64, row_idx);
        store_rows_through_copy_engine<Elem, QueryTile>(p, pass.lse, query_maps, q_tile(n),
                                                        warpgroup, box, b, head, o, row_max,
                                                        row_sum, row_norm);
      } else {
        store_forward_rows<Elem>(p, pass, hp, rows, key_count, shift, b, head, row_idx, o, row_max,
                                 row_sum, row_norm);
      }
      if (threadIdx.x == 0) stamp(7);
      if (threadIdx.x == Shape::kConsumerThreads - 128) stamp(8);  // the last warpgroup
    }
    if constexpr (Persistent && !EarlyQueryRelease) {
      // The thread is done with Q tile n % kQueryTiles and its note (the thread that issued the
      // epilogue's copy engine store also waited for the store to read it). Every thread arrives:
      // each read the note, and racecheck reports reads ordered before another lane's arrival by
      // __syncwarp alone as races with the producer's next note.
      mbarrier_arrive(q_empty(n));
    }
    ring_base += num_key_tiles;
    ++n;
    if constexpr (!Persistent) break;
  }
  if (Persistent && n > 0) turns.end();  // no turns where every tile was empty
  if (threadIdx.x == 0) stamp(0);
#endif
}

}  // namespace dilated::cuda::hopper
