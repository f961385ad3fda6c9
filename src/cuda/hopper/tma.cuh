// The bulk tensor copy engine (TMA) for the Hopper kernels: the K/V tensor maps a pass hands
// its kernel, and the device side of a copy that completes on an mbarrier.
#pragma once

#include <cuda.h>  // CUtensorMap and its enums (the encoder is looked up at run time)

#include <cstdint>

namespace dilated::cuda::hopper {

// Two tensors of one pass (K and V, or Q and dO) as 5-D maps (D, phase < r, position / r,
// head, batch): the box (64 columns, 1 phase, Rows rows) at (half * 64, p % r, p / r, head, b)
// is positions p + j r, j < Rows, of one 64-column half, in the 128-byte-swizzle layout.
// enabled = 0: the producer copies with cp.async instead. square_width > 0 (enabled = 0): the
// maps are (D, x, y, head, batch) over a token grid this wide with boxes of 8 x 8 cells, and
// whole tiles whose 64-position runs are aligned squares of the grid go through the copy engine
// a square per box, rows in the square's row-major order (the keys of a tile in another order:
// only where nothing depends on it); square_cells[k] is the top-left cell of positions
// 64 k .. 64 k + 63 (grid_square_cells_on_device).
struct TensorMaps {
  CUtensorMap a;
  CUtensorMap b;
  int enabled;
  int square_width;
  const int32_t* square_cells;
};

// The forward's query rows and output rows as 5-D maps like TensorMaps::a: q with boxes of 128
// rows (a whole query tile, loaded by the producer), out with boxes of 64 rows (one consumer
// warpgroup's rows, for passes that write out directly). Disabled: the consumers copy Q with
// cp.async, and every row is stored by its threads. square_width > 0: both are maps over a
// token grid's 8 x 8 squares like TensorMaps' (a whole aligned query tile is two squares, its
// rows in the squares' row-major order, and its output goes back the same way; square_cells
// as TensorMaps').
struct QueryMaps {
  CUtensorMap q;
  CUtensorMap out;
  int q_enabled;
  int out_enabled;
  int square_width;
  const int32_t* square_cells;
};

// The top-left cell (x, y) of the aligned 8 x 8 square holding grid cell `cell` of a grid
// `width` cells wide: a square map's box coordinates 1 and 2.
struct SquareCorner {
  int x, y;
};
__device__ __forceinline__ SquareCorner square_corner(int cell, int width) {
  return {cell % width & ~7, cell / width & ~7};
}
// The tensor row of row j of a square's box (the square's cells in row-major order).
__device__ __forceinline__ int64_t square_row(const SquareCorner& corner, int j, int width) {
  return static_cast<int64_t>(corner.y + j / 8) * width + corner.x + j % 8;
}

// Adds the bytes of copy-engine transfers to what the current phase of `bar` waits for (the
// thread arrives separately, after issuing them).
__device__ __forceinline__ void mbarrier_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}

// One box of `map` at the given coordinates into shared memory at `dst`, counted on `bar`.
__device__ __forceinline__ void tma_load_5d(uint32_t dst, const CUtensorMap* map, uint32_t bar,
                                            int c0, int c1, int c2, int c3, int c4) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5, %6, %7}], [%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4)
      : "memory");
}

// One box from shared memory at `src` to `map` at the given coordinates (elements the map
// clips are not written), tracked as part of this thread's bulk async-group.
__device__ __forceinline__ void tma_store_5d(const CUtensorMap* map, uint32_t src, int c0, int c1,
                                             int c2, int c3, int c4) {
  asm volatile(
      "cp.async.bulk.tensor.5d.global.shared::cta.tile.bulk_group"
      " [%0, {%2, %3, %4, %5, %6}], [%1];\n" ::"l"(reinterpret_cast<uint64_t>(map)),
      "r"(src), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4)
      : "memory");
}

// Closes this thread's bulk async-group and waits until its stores have read their shared
// memory (not until they reach global memory): the CTA may then reuse or release it.
__device__ __forceinline__ void tma_store_wait_read() {
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
  asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
}

}  // namespace dilated::cuda::hopper
