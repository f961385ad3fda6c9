// The producer of the Hopper block kernels that walk a query block's row of the multiplicity
// matrix (the forward and dq): it streams the kept blocks' keys (K and V) into a ring of stages,
// Parts runs of 64 keys per stage, not necessarily adjacent (a missing last part is zero-filled
// and masked), and writes each stage's parts (StagedPart, per consumer warpgroup) beside it.
// Where the maps hold plain rows one warp does it, every part a copy-engine box
// (stream_kept_key_boxes); along a token grid the warpgroup, squares through the copy engine and
// the rest with cp.async (stream_kept_key_tiles).
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

// The kept key tiles of a walk, Parts cursors at a time (parts past the last kept tile have
// J == limit). Every lane of a warp walks alike (next_kept's ballots).
template <int Parts>
struct KeptTiles {
  KeyTileCursor part[Parts];

  __device__ __forceinline__ bool done(const KeyStreamRows& walk) const {
    return part[0].J >= walk.limit;
  }
  // The tile whose first part is c.
  __device__ __forceinline__ void start_at(const Params& p, const BlockPass& bp,
                                           const KeyStreamRows& walk, const KeyTileCursor& c) {
    part[0] = c;
#pragma unroll
    for (int i = 1; i < Parts; ++i) part[i] = after(p, bp, walk, part[i - 1]);
  }
  // The tile after this one (found while this one's copies are in flight).
  __device__ __forceinline__ void advance(const Params& p, const BlockPass& bp,
                                          const KeyStreamRows& walk) {
    start_at(p, bp, walk, after(p, bp, walk, part[Parts - 1]));
  }
  // Per consumer warpgroup, what part i of this tile holds (its own row says whether it keeps
  // the block, over two rows); `last` is written once the next tile is known.
  template <int Groups>
  __device__ __forceinline__ void write_notes(StagedPart* note, const KeyStreamRows& walk) const {
#pragma unroll
    for (int i = 0; i < Parts; ++i) {
      const bool kept = part[i].J < walk.limit;
#pragma unroll
      for (int group = 0; group < Groups; ++group) {
        const float bias = walk.other != nullptr && group == 1 ? part[i].other_bias : part[i].bias;
        const bool keeps = kept && bias != -INFINITY;
        note[i * Groups + group] = {kept ? part[i].key0 : 0, keeps ? part[i].end : 0,
                                    keeps ? bias : 0.0f, 0};
      }
    }
  }

 private:
  __device__ __forceinline__ static KeyTileCursor after(const Params& p, const BlockPass& bp,
                                                        const KeyStreamRows& walk,
                                                        const KeyTileCursor& c) {
    return c.J < walk.limit
               ? next_tile(p, bp, walk.row, c, walk.limit, walk.n, walk.last_row, walk.other)
               : c;
  }
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
  KeptTiles<Parts> tile;
  tile.start_at(p, bp, walk, tile_of_block(p, bp, first, walk.limit, walk.n, walk.last_row));
  const bool writer = threadIdx.x % 128 == 0;
  RowSpan k_span = position_span<Elem>(p, bp, p.k, b, kv_head, 0, 0);
  RowSpan v_span = position_span<Elem>(p, bp, p.v, b, kv_head, 0, 0);
  for (int t = 0; !tile.done(walk); ++t) {
    ring.wait_empty(t);
    StagedPart* note = notes + (t % Stages) * Parts * Groups;
    if (writer) tile.template write_notes<Groups>(note, walk);
#pragma unroll
    for (int part = 0; part < Parts; ++part) {
      // Keys past the block (or the causal cut), and a missing part, read as zeros.
      const bool kept = tile.part[part].J < walk.limit;
      k_span.idx0 = v_span.idx0 = kept ? tile.part[part].key0 : 0;
      k_span.count = v_span.count = kept ? tile.part[part].end : 0;
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
    tile.advance(p, bp, walk);
    if (writer) {
#pragma unroll
      for (int group = 0; group < Groups; ++group) note[group].last = tile.done(walk);
      mbarrier_arrive(ring.full(t));
    }
  }
  cp_async_wait<0>();
}

// stream_kept_key_tiles where the maps hold plain rows (TensorMaps::enabled), by one warp: every
// part through the copy engine, its lane 0 issuing a box of 64 positions per part and tensor.
// Parts end at a block's end (a multiple of 64 positions) or at the sequence's, past which the
// map reads zeros, so a box holds no key the part does not (a missing part's box lies wholly
// past the sequence: zeros). The full barrier takes lane 0's arrival only
// (StageRing::init(consumers, 0, 1)), and the producer's other warps have nothing to do. With
// them walking and arriving too, the block forward issued 1.6x the dense forward's instructions
// per flop at blocks of 64; one warp made it 5-8% faster (bench/NOTES.md, thirteenth session).
template <int D, int Groups, int Parts, int Stages, class KeyTile>
__device__ __forceinline__ void stream_kept_key_boxes(const Params& p, const BlockPass& bp,
                                                      const TensorMaps& maps, int64_t b,
                                                      int64_t kv_head, const KeyStreamRows& walk,
                                                      const KeptBlock& first, uint32_t k_tiles,
                                                      uint32_t v_tiles, StagedPart* notes,
                                                      const StageRing<Stages>& ring) {
  KeptTiles<Parts> tile;
  tile.start_at(p, bp, walk, tile_of_block(p, bp, first, walk.limit, walk.n, walk.last_row));
  const bool writer = threadIdx.x % 32 == 0;
  constexpr uint32_t kTileBytes = KeyTile::kElements * 2;
  for (int t = 0; !tile.done(walk); ++t) {
    ring.wait_empty(t);
    StagedPart* note = notes + (t % Stages) * Parts * Groups;
    if (writer) {
      tile.template write_notes<Groups>(note, walk);
#if DILATED_HOPPER_BLOCK_CEILING == 2
      // Diagnosis build (bench/gpu/block_forward_ceilings.sh): the products alone, on whatever
      // the stages hold; the walk and the notes as always.
      constexpr int kCopiedParts = 0;
#else
      constexpr int kCopiedParts = Parts;
#endif
      mbarrier_expect_tx(ring.full(t), kCopiedParts * 2 * kBlockKeys * D * 2);
#pragma unroll
      for (int part = 0; part < kCopiedParts; ++part) {
        const bool kept = tile.part[part].J < walk.limit;
        const uint32_t offset = (t % Stages) * kTileBytes + part * kBlockKeys * 128;
        load_box_pair<D, KeyTile>(maps, k_tiles + offset, v_tiles + offset, ring.full(t), 0,
                                  kept ? tile.part[part].key0 : static_cast<int>(walk.n), kv_head,
                                  b);
      }
    }
    tile.advance(p, bp, walk);
    if (writer) {
#pragma unroll
      for (int group = 0; group < Groups; ++group) note[group].last = tile.done(walk);
      mbarrier_arrive(ring.full(t));
    }
  }
}

// The producer warpgroup's side of a block kernel that walks a query block's row: the key
// stream of stream_kept_key_boxes where the maps hold plain rows, else stream_kept_key_tiles.
// Stages' full barriers count producer_parts_arriving(maps, Parts) parts (StageRing::init).
template <typename Elem, int D, int Groups, int Parts, int Stages, class KeyTile>
__device__ __forceinline__ void produce_kept_keys(const Params& p, const BlockPass& bp,
                                                  const TensorMaps& maps, int64_t b,
                                                  int64_t kv_head, const KeyStreamRows& walk,
                                                  const KeptBlock& first, Elem* k_tiles,
                                                  Elem* v_tiles, StagedPart* notes,
                                                  const StageRing<Stages>& ring) {
  if (!maps.enabled) {
    stream_kept_key_tiles<Elem, D, Groups, Parts, Stages, KeyTile>(
        p, bp, maps, b, kv_head, walk, first, k_tiles, v_tiles, notes, ring);
  } else if (threadIdx.x % 128 < 32) {
    stream_kept_key_boxes<D, Groups, Parts, Stages, KeyTile>(p, bp, maps, b, kv_head, walk, first,
                                                             smem_address(k_tiles),
                                                             smem_address(v_tiles), notes, ring);
  }
}
__device__ __forceinline__ int producer_parts_arriving(const TensorMaps& maps, int parts) {
  return maps.enabled ? 0 : parts;
}

}  // namespace dilated::cuda::hopper
