// The producer of the Hopper block kernels that walk a query block's row of the multiplicity
// matrix (the forward and dq): it streams the kept blocks' keys (K and V) into a ring of stages,
// Parts runs of 64 keys per stage, not necessarily adjacent (a missing last part is zero-filled
// and masked), through the copy engine for whole runs of plain rows and cp.async for the rest,
// and writes each stage's parts (StagedPart, per consumer warpgroup) beside it.
#pragma once

#include "cuda/hopper/block_shape.cuh"
#include "cuda/hopper/stage_ring.cuh"
#include "cuda/kernels/block_pass_common.cuh"

namespace dilated::cuda::hopper {

// The rows a CTA's key stream walks: its query block's row of the multiplicity matrix and, where
// its two warpgroups' rows lie in two query blocks, the second block's row (`other`, else
// nullptr: the producer then streams the blocks either row keeps and notes per warpgroup which
// parts its own row keeps); blocks from `limit` on are not walked (causal), n: the sequence's
// length, last_row: the CTA's last query row (the causal cut of the last kept block).
struct KeyStreamRows {
  const uint8_t* row;
  const uint8_t* other;
  int64_t limit;
  int64_t n;
  int last_row;
};

// The producer warpgroup's loop: the kept key tiles from `first`, stage t % Stages for tile t.
// The full barrier of a stage takes 128 arrivals per part and one from the thread that writes
// the notes (StageRing::init(consumers, Parts, 1)).
template <typename Elem, int D, int Groups, int Parts, int Stages, class KeyTile>
__device__ __forceinline__ void stream_kept_key_tiles(const Params& p, const BlockPass& bp,
                                                      const TensorMaps& maps, int64_t b,
                                                      int64_t kv_head, const KeyStreamRows& walk,
                                                      const KeptBlock& first, Elem* k_tiles,
                                                      Elem* v_tiles, StagedPart* notes,
                                                      const StageRing<Stages>& ring) {
  const int64_t limit = walk.limit, n = walk.n;
  // A tile is Parts cursors; parts past the last kept tile have J == limit.
  using TileCursors = KeyTileCursor[Parts];
  auto next = [&](const KeyTileCursor& c) {
    return c.J < limit ? next_tile(p, bp, walk.row, c, limit, n, walk.last_row, walk.other) : c;
  };
  auto tile_from = [&](TileCursors& tile, const KeyTileCursor& c) {
    tile[0] = c;
#pragma unroll
    for (int part = 1; part < Parts; ++part) tile[part] = next(tile[part - 1]);
  };
  TileCursors tile;
  tile_from(tile, tile_of_block(p, bp, first, limit, n, walk.last_row));
  const bool writer = threadIdx.x % 128 == 0;
  RowSpan k_span = position_span<Elem>(p, bp, p.k, b, kv_head, 0, 0);
  RowSpan v_span = position_span<Elem>(p, bp, p.v, b, kv_head, 0, 0);
  for (int t = 0; tile[0].J < limit; ++t) {
    ring.wait_empty(t);
    StagedPart* note = notes + (t % Stages) * Parts * Groups;
#pragma unroll
    for (int part = 0; part < Parts; ++part) {
      // Keys past the block (or the causal cut), and a missing part, read as zeros.
      const bool kept = tile[part].J < limit;
      k_span.idx0 = v_span.idx0 = kept ? tile[part].key0 : 0;
      k_span.count = v_span.count = kept ? tile[part].end : 0;
      if (writer) {
#pragma unroll
        for (int group = 0; group < Groups; ++group) {
          // Over two rows, the warpgroup's own row says whether it keeps the block.
          const float bias =
              walk.other != nullptr && group == 1 ? tile[part].other_bias : tile[part].bias;
          const bool keeps = kept && bias != -INFINITY;
          note[part * Groups + group] = {k_span.idx0, keeps ? k_span.count : 0, keeps ? bias : 0.0f,
                                         0};
        }
      }
      ProducerRows<kBlockKeys> rows;
      rows.locate(maps, k_span, k_span.idx0);
      // Part p is rows 64 p.. of the tile: an offset of 64 lines in each 64-column half.
      const int offset = (t % Stages) * KeyTile::kElements + part * kBlockKeys * 64;
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
    tile_from(tile, next(tile[Parts - 1]));
    if (writer) {
#pragma unroll
      for (int group = 0; group < Groups; ++group) note[group].last = tile[0].J >= limit;
      mbarrier_arrive(ring.full(t));
    }
  }
  cp_async_wait<0>();
}

}  // namespace dilated::cuda::hopper
