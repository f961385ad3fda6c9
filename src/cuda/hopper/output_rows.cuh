// The forward's row epilogue through the copy engine. A consumer warpgroup whose 64 rows are all
// written (inside the slice, each seeing a key) puts them, normalised and in the output dtype,
// into its own 64 rows of the Q tile (dead after its last S = Q K^T) and stores them with one box
// per 64-column half: no thread computes a row address, and the threads need not wait at exit
// for their stores to drain (bench/NOTES.md, eleventh session). Other warpgroups store row by
// row (store_forward_rows).
#pragma once

#include "cuda/hopper/barriers.cuh"
#include "cuda/hopper/tma.cuh"
#include "cuda/hopper/warp_roles.cuh"
#include "cuda/hopper/wgmma.cuh"
#include "cuda/kernels/forward_rows.cuh"

namespace dilated::cuda::hopper {

// Four 8 x 8 blocks of 16-bit values, each thread holding two adjacent values of a row of each
// (the m16n8 accumulator layout); lanes 8 m .. 8 m + 7 give the shared addresses of block m's
// rows (16 bytes each).
__device__ __forceinline__ void store_matrices_x4(uint32_t address, uint32_t b0, uint32_t b1,
                                                  uint32_t b2, uint32_t b3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(address),
               "r"(b0), "r"(b1), "r"(b2), "r"(b3)
               : "memory");
}

// Whether the 64 selected rows from `first_row` are all written by a direct-write forward pass.
__device__ __forceinline__ bool rows_through_copy_engine(const Params& p, const QueryMaps& maps,
                                                         const SegmentRows& rows, int key_count,
                                                         int shift, int first_row) {
  // Visible keys grow with the row: the first row seeing one means all do.
  return maps.out_enabled && first_row + 64 <= rows.count &&
         visible_keys(p.causal, key_count, first_row, shift) > 0;
}

// Where a warpgroup's 64 rows go: the box of maps.out (coordinates 1 and 2) and, for lse, the
// tensor rows of the thread's two rows.
struct OutputBox {
  int c1, c2;
  int64_t row[2];
};
// Rows of a plain stride: selected rows row_idx of the segment (the warpgroup's first is
// first_row), box (phase, position / dilation).
__device__ __forceinline__ OutputBox strided_output_box(const HeadPattern& hp,
                                                        const SegmentRows& rows, int first_row,
                                                        const int (&row_idx)[1][2]) {
  const int64_t position = rows.first + static_cast<int64_t>(first_row) * hp.dilation;
  return {static_cast<int>(small_remainder(position, hp.dilation)),
          static_cast<int>(small_quotient(position, hp.dilation)),
          {rows.first + row_idx[0][0] * hp.dilation, rows.first + row_idx[0][1] * hp.dilation}};
}
// Rows that came as one 8 x 8 square of a token grid (QueryMaps::square_width), the one holding
// `cell`: row j of the warpgroup is the square's cell (j % 8, j / 8).
__device__ __forceinline__ OutputBox square_output_box(int cell, int width) {
  const SquareCorner c = square_corner(cell, width);
  const int j = (threadIdx.x % 128) / 32 * 16 + threadIdx.x % 32 / 4;
  return {c.x, c.y, {square_row(c, j, width), square_row(c, j + 8, width)}};
}

// Warpgroup `warpgroup`'s rows (accumulators o as in store_forward_rows) to out through `tile`
// (the Q tile's layout, Tile) and maps.out at `box`; lse (into lse_rows, if any) as
// store_forward_rows writes it.
template <typename Elem, class Tile, int DT>
__device__ __forceinline__ void store_rows_through_copy_engine(
    const Params& p, float* lse_rows, const QueryMaps& maps, Elem* tile, int warpgroup,
    const OutputBox& box, int64_t b, int64_t head, const float (&o)[1][DT][4],
    const float (&row_max)[1][2], const float (&row_sum)[1][2], const float (&row_norm)[1][2]) {
  const int lane = threadIdx.x % 32;
  float scale[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const FinishedRow f = finish_row(row_max[0][r], row_sum[0][r], row_norm[0][r]);
    scale[r] = f.inv_norm * output_scale(p);
    if (lse_rows && lane % 4 == 0) lse_rows[lse_index(p, b, head, box.row[r])] = f.lse;
  }
  // Per stmatrix: the 8 x 8 blocks (rows 0-7, n8 tile d), (rows 8-15, d), (0-7, d + 1),
  // (8-15, d + 1) of the warp's 16 rows, lanes 8 m .. 8 m + 7 addressing block m's rows.
  const int block = lane / 8;
  const int address_row =
      warpgroup * 64 + (threadIdx.x % 128) / 32 * 16 + 8 * (block % 2) + lane % 8;
  const uint32_t base = smem_address(tile);
#pragma unroll
  for (int d = 0; d < DT; d += 2) {
    store_matrices_x4(base + 2 * Tile::chunk_offset(address_row, d + block / 2),
                      pack2<Elem>(o[0][d][0] * scale[0], o[0][d][1] * scale[0]),
                      pack2<Elem>(o[0][d][2] * scale[1], o[0][d][3] * scale[1]),
                      pack2<Elem>(o[0][d + 1][0] * scale[0], o[0][d + 1][1] * scale[0]),
                      pack2<Elem>(o[0][d + 1][2] * scale[1], o[0][d + 1][3] * scale[1]));
  }
  fence_proxy_async();
  named_barrier_sync(kOutputBarrier + warpgroup, 128);
  if (threadIdx.x % 128 == 0) {
#pragma unroll
    for (int half = 0; half < DT / 8; ++half) {
      tma_store_5d(&maps.out, smem_address(tile + Tile::chunk_offset(warpgroup * 64, 8 * half)),
                   64 * half, box.c1, box.c2, static_cast<int>(head), static_cast<int>(b));
    }
    tma_store_wait_read();
  }
}

}  // namespace dilated::cuda::hopper
