// Stages of shared memory passed between the producer warpgroup and the consumers: a full and
// an empty mbarrier per stage. Item t of a stream goes to stage t % Stages; the producer waits
// for the stage's previous item to be released, the consumers for the item to land.
#pragma once

#include <cstdint>

#include "cuda/hopper/barriers.cuh"
#include "cuda/hopper/tma.cuh"
#include "cuda/hopper/warp_roles.cuh"
#include "cuda/hopper/wgmma.cuh"
#include "cuda/kernels/mma_tiles.cuh"

namespace dilated::cuda::hopper {

template <int Stages>
struct StageRing {
  static constexpr int kBytes = 2 * Stages * 8;
  uint32_t bars;  // shared address of 2 * Stages mbarriers

  __device__ __forceinline__ uint32_t full(int t) const { return bars + 8 * (t % Stages); }
  __device__ __forceinline__ uint32_t empty(int t) const {
    return bars + 8 * (Stages + t % Stages);
  }
  // By one thread, before a __syncthreads: each producer thread arrives on full (directly or
  // when its copies land), each of `consumers` warps on empty.
  // A producer thread that fills a stage in several parts arrives once per part; `notes` more
  // arrivals come from producer threads that also write what the stage holds (a plain arrive,
  // whose release makes those writes visible to the consumers' wait).
  __device__ __forceinline__ void init(int consumers = kConsumerThreads / 32, int parts = 1,
                                       int notes = 0) const {
    for (int stage = 0; stage < Stages; ++stage) {
      mbarrier_init(full(stage), 128 * parts + notes);
      mbarrier_init(empty(stage), consumers);
    }
  }
  // Producer: before filling item t's stage.
  __device__ __forceinline__ void wait_empty(int t) const {
    if (t >= Stages) mbarrier_wait(empty(t), (t / Stages + 1) & 1);
  }
  // Consumer: before reading item t; the fence lets wgmma (the async proxy) read what
  // cp.async wrote.
  __device__ __forceinline__ void wait_full(int t) const {
    mbarrier_wait(full(t), (t / Stages) & 1);
    fence_proxy_async();
  }
  // Consumer warp: done with item t (its products have completed).
  __device__ __forceinline__ void release(int t) const {
    __syncwarp();
    if (threadIdx.x % 32 == 0) mbarrier_arrive(empty(t));
  }
  // Consumer thread: done with item t, where every lane read the stage with ordinary loads (row
  // statistics); init's `consumers` counts threads then. compute-sanitizer's racecheck orders a
  // read before the producer's next copy into the stage only through the reading thread's own
  // arrival: it reports reads ordered by __syncwarp (or a warpgroup bar.sync) before another
  // thread's arrival as races.
  __device__ __forceinline__ void release_by_thread(int t) const { mbarrier_arrive(empty(t)); }
};

// The tensor rows one producer thread copies for a tile of Rows selected rows from idx0: rows
// thread / 8 + 16 j of the tile (-1 past the run). Producers locate the next tile while the
// current one is in flight: with a token grid each row is an order[] read from global memory,
// and located just before its copy, every tile waited for those reads in turn. 32-bit rows: the
// producer has 40 registers (64-bit ones spilled), and these kernels take D >= 64, so a sequence
// of 2^31 rows would need 256 GiB for q alone.
// Whether the tile of Rows selected rows from idx0 goes through the copy engine (whole tiles of
// a plain stride, where `maps` are enabled; tensor_maps.hpp).
template <int Rows>
__device__ __forceinline__ bool copy_engine_tile(const TensorMaps& maps, const RowSpan& span,
                                                 int idx0) {
  return maps.enabled && idx0 + Rows <= span.count;
}

// Whether the tile goes through the copy engine square by square (TensorMaps::square_width): a
// whole tile of consecutive positions from a multiple of 64.
template <int Rows>
__device__ __forceinline__ bool copy_engine_squares(const TensorMaps& maps, const RowSpan& span,
                                                    int idx0) {
  return maps.square_width > 0 && idx0 + Rows <= span.count && span.step == 1 &&
         ((static_cast<int>(span.first) + idx0) & 63) == 0;  // low bits suffice
}

// The top-left cell of the square holding curve position `position`, or of the `next`-th square
// after it (TensorMaps::square_cells: one entry per 64 positions).
__device__ __forceinline__ int square_cell_at(const int32_t* square_cells, int64_t position,
                                              int next = 0) {
  return __ldg(square_cells + (position >> 6) + next);
}

// The top-left cells of the squares of a whole tile of Rows positions from `first`, a multiple
// of 64, along a curve of squares.
template <int Rows>
struct SquareCells {
  int cell[Rows / 64] = {};
  __device__ __forceinline__ void find(const int32_t* square_cells, int64_t first) {
#pragma unroll
    for (int square = 0; square < Rows / 64; ++square) {
      cell[square] = square_cell_at(square_cells, first, square);
    }
  }
};

template <int Rows>
struct ProducerRows {
  static_assert(Rows % 16 == 0, "16 rows per pass of the producer warpgroup");
  static constexpr int kCount = Rows / 16;
  int32_t row[kCount];

  // Locates the rows of the tile from idx0 unless the copy engine will fetch it.
  __device__ __forceinline__ void locate(const TensorMaps& maps, const RowSpan& span, int idx0) {
    if (copy_engine_tile<Rows>(maps, span, idx0) ||
        (Rows % 64 == 0 && copy_engine_squares<Rows>(maps, span, idx0))) {
      return;
    }
    const int thread = threadIdx.x % 128;
#pragma unroll
    for (int j = 0; j < kCount; ++j) {
      const int idx = idx0 + thread / 8 + 16 * j;
      row[j] = idx < span.count
                   ? static_cast<int32_t>(
                         grid_row(span.order, span.first + static_cast<int64_t>(idx) * span.step))
                   : -1;
    }
  }
};

// The producer warpgroup's copy of the located rows of two spans with the same positions (K and
// V, or Q and dO) into two tiles in the 128-byte-swizzle layout (rows past the run are
// zero-filled). Eight threads share a row, one 16-byte chunk of each 64-column half apiece.
// Tile: the destination's layout, which may hold more rows than are copied (the copy then fills
// a part of it, from a row that is a multiple of 8).
template <typename Elem, int Rows, int D, class Tile = GmmaTile<Rows, D>>
__device__ __forceinline__ void copy_row_tiles(Elem* a_tile, Elem* b_tile, const RowSpan& a_span,
                                               const RowSpan& b_span,
                                               const ProducerRows<Rows>& rows) {
  const int thread = threadIdx.x % 128;
  // Row thread / 8 + 16 j keeps the thread's row % 8, so the destination moves by constants; the
  // 64-column halves of a row are constant offsets from one source pointer per tensor.
  const uint32_t a_dst = smem_address(a_tile) + Tile::chunk_offset(thread / 8, thread % 8) * 2;
  const uint32_t b_dst = smem_address(b_tile) + Tile::chunk_offset(thread / 8, thread % 8) * 2;
  const Elem* a_src = static_cast<const Elem*>(a_span.base) + (thread % 8) * 8;
  const Elem* b_src = static_cast<const Elem*>(b_span.base) + (thread % 8) * 8;
#pragma unroll
  for (int j = 0; j < ProducerRows<Rows>::kCount; ++j) {
    const bool valid = rows.row[j] >= 0;
    const int64_t tensor_row = valid ? rows.row[j] : 0;  // widened for the offsets
    const Elem* a_row = a_src + tensor_row * a_span.row_stride;
    const Elem* b_row = b_src + tensor_row * b_span.row_stride;
#pragma unroll
    for (int half = 0; half < D / 64; ++half) {
      const uint32_t offset = j * 16 * Tile::kRowBytes + half * Tile::kHalfBytes;
      cp_async_16(a_dst + offset, a_row + half * 64, valid);
      cp_async_16(b_dst + offset, b_row + half * 64, valid);
    }
  }
}

// By one thread: the box at (c1, c2) of `map` (tma.cuh), each 64-column half at its offset in the
// tile at shared address dst.
template <int D, class Tile>
__device__ __forceinline__ void load_box(const CUtensorMap* map, uint32_t dst, uint32_t bar, int c1,
                                         int c2, int64_t head, int64_t b) {
#pragma unroll
  for (int half = 0; half < D / 64; ++half) {
    tma_load_5d(dst + half * Tile::kHalfBytes, map, bar, half * 64, c1, c2, static_cast<int>(head),
                static_cast<int>(b));
  }
}

// By one thread: the box at (c1, c2) of both maps (tma.cuh), each 64-column half at its offset
// in the tiles at shared addresses a_dst and b_dst.
template <int D, class Tile>
__device__ __forceinline__ void load_box_pair(const TensorMaps& maps, uint32_t a_dst,
                                              uint32_t b_dst, uint32_t full, int c1, int c2,
                                              int64_t head, int64_t b) {
#pragma unroll
  for (int half = 0; half < D / 64; ++half) {
    const uint32_t offset = half * Tile::kHalfBytes;
    tma_load_5d(a_dst + offset, &maps.a, full, half * 64, c1, c2, static_cast<int>(head),
                static_cast<int>(b));
    tma_load_5d(b_dst + offset, &maps.b, full, half * 64, c1, c2, static_cast<int>(head),
                static_cast<int>(b));
  }
}

// Rows idx0 .. idx0 + Rows - 1 of two spans (A: k or q, B: v or dout; the same positions) into a
// stage: a whole tile through the copy engine where `maps` hold the two tensors (one thread
// issues it; tma.cuh), the last partial tile of a run and anything else with cp.async from the
// located `rows` (a box would read the next segment's rows, whose NaNs would reach the products
// through zero weights). Every producer thread arrives on the stage's full barrier once, when
// its copies have landed. Tile: as copy_row_tiles.
template <typename Elem, int Rows, int D, class Tile = GmmaTile<Rows, D>>
__device__ __forceinline__ void produce_row_tiles(const TensorMaps& maps, const RowSpan& a_span,
                                                  const RowSpan& b_span,
                                                  const ProducerRows<Rows>& rows, int64_t head,
                                                  int64_t b, Elem* a_tile, Elem* b_tile,
                                                  uint32_t full) {
  if (copy_engine_tile<Rows>(maps, a_span, a_span.idx0)) {
    if (threadIdx.x % 128 == 0) {
      const int64_t first = a_span.first + static_cast<int64_t>(a_span.idx0) * a_span.step;
      const int phase = static_cast<int>(first % a_span.step);
      const int row = static_cast<int>(first / a_span.step);
      mbarrier_expect_tx(full, 2 * Rows * D * 2);
      load_box_pair<D, Tile>(maps, smem_address(a_tile), smem_address(b_tile), full, phase, row,
                             head, b);
    }
  } else {
    copy_row_tiles<Elem, Rows, D, Tile>(a_tile, b_tile, a_span, b_span, rows);
  }
  // Also covers any other cp.async the thread issued for this stage (the backward's row
  // statistics); the copy engine's bytes are counted by the expect_tx above.
  cp_async_mbarrier_arrive(full);
}

// By one thread: a whole tile of Rows positions whose 64-position runs are aligned 8 x 8 squares
// of a token grid (TensorMaps::square_width) through the copy engine, a box per square, found
// from the cell of its first position; rows in the square's row-major order.
template <int Rows, int D, class Tile>
__device__ __forceinline__ void copy_square_boxes(const TensorMaps& maps,
                                                  const int (&cells)[Rows / 64], int64_t head,
                                                  int64_t b, uint32_t a_tile, uint32_t b_tile,
                                                  uint32_t full) {
  mbarrier_expect_tx(full, 2 * Rows * D * 2);
#pragma unroll
  for (int square = 0; square < Rows / 64; ++square) {
    const SquareCorner corner = square_corner(cells[square], maps.square_width);
    load_box_pair<D, Tile>(maps, a_tile + square * 64 * 128, b_tile + square * 64 * 128, full,
                           corner.x, corner.y, head, b);
  }
}

// produce_row_tiles where the maps are a token grid's squares: whole tiles of positions from a
// multiple of 64 square by square, anything else with cp.async.
template <typename Elem, int Rows, int D, class Tile = GmmaTile<Rows, D>>
__device__ __forceinline__ void produce_square_tiles(const TensorMaps& maps, const RowSpan& a_span,
                                                     const RowSpan& b_span,
                                                     const ProducerRows<Rows>& rows, int64_t head,
                                                     int64_t b, Elem* a_tile, Elem* b_tile,
                                                     uint32_t full) {
  static_assert(Rows % 64 == 0, "whole squares");
  if (copy_engine_squares<Rows>(maps, a_span, a_span.idx0)) {
    if (threadIdx.x % 128 == 0) {
      SquareCells<Rows> squares;
      squares.find(maps.square_cells, a_span.first + a_span.idx0);
      copy_square_boxes<Rows, D, Tile>(maps, squares.cell, head, b, smem_address(a_tile),
                                       smem_address(b_tile), full);
    }
  } else {
    copy_row_tiles<Elem, Rows, D, Tile>(a_tile, b_tile, a_span, b_span, rows);
  }
  cp_async_mbarrier_arrive(full);
}

}  // namespace dilated::cuda::hopper
