// Token grids on the CUDA backend (docs/design.md 1.2): the kernels map curve position t to row
// order[t] of every row-indexed buffer themselves (PassInfo::order, BlockPass::order), so no
// copies of the tensors are made. The order lives in device memory, built once per device and
// grid shape and kept for the process.
#pragma once

#include <cstdint>
#include <vector>

#include "dilated/params.hpp"
#include "dilated/status.hpp"

namespace dilated::cuda {

// The curve order of p's grid on the current device ([seqlen] int64), or null without a grid.
// The first call for a shape computes it on the host and copies it synchronously (run one
// launch before capturing a CUDA graph); later calls only look it up.
Status grid_order_on_device(const Params& p, const int64_t** order);

// Whether p's grid has a curve whose every 64 positions from a multiple of 64 fill one aligned
// 8 x 8 square of the grid (Hilbert on power-of-two sides does): such a run is 8 runs of 8
// consecutive rows, which the copy engine fetches as 8 boxes (hopper/tensor_maps.hpp). Cached
// per grid shape; false without a grid.
bool grid_runs_in_squares(const Params& p);

// Entry k: the top-left cell (row-major index) of the aligned 8 x 8 square that curve positions
// 64 k .. 64 k + 63 fill, for a curve that runs in squares (grid_runs_in_squares).
std::vector<int32_t> square_corner_cells(const std::vector<int64_t>& curve, int64_t width);

// square_corner_cells of p's grid on the current device ([seqlen / 64] int32), uploaded with
// the order (grid_order_on_device), or null where the grid's curve does not run in squares.
// The kernels place a square's box from it instead of an order[] read: the table is 1/32 of
// the order's bytes, a 32-byte sector covers 512 positions instead of 4.
Status grid_square_cells_on_device(const Params& p, const int32_t** cells);

}  // namespace dilated::cuda
