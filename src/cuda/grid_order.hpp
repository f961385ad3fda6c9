// Token grids on the CUDA backend (docs/design.md 1.2): the kernels map curve position t to row
// order[t] of every row-indexed buffer themselves (PassInfo::order, BlockPass::order), so no
// copies of the tensors are made. The order lives in device memory, built once per device and
// grid shape and kept for the process.
#pragma once

#include <cstdint>

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

}  // namespace dilated::cuda
