// Host side of the copy engine for the Hopper kernels: the tensor maps a pass hands its kernel.
#pragma once

#include "cuda/hopper/tma.cuh"
#include "cuda/launch_plan.hpp"
#include "dilated/params.hpp"

namespace dilated::cuda::hopper {

// Maps of two tensors of the same shape (k and v: heads = heads_kv; q and dout: heads) for
// pass `pass`, with boxes of `box_rows` selected rows. Disabled (the kernels copy with
// cp.async) where the selected rows are no plain stride of whole sequences (token grid,
// sequence window, varlen), where N is no multiple of the dilation (the last phase's rows would
// fall outside the map), where the encoder refuses the strides, and with DILATED_CUDA_TMA=0.
// rows_any_order: the kernel may see a tile's rows in any order (K and V of a pass without
// causal masking; dk/dv's Q and dO, whose lse and delta follow the squares), so that a token grid
// whose curve runs in squares takes the copy engine (TensorMaps::square_width;
// DILATED_CUDA_CURVE_SQUARES=0 keeps cp.async there).
TensorMaps pass_tensor_maps(const Params& p, const PassInfo& pass, const Tensor& a, const Tensor& b,
                            int64_t heads, int box_rows, bool rows_any_order = false);
// The forward's maps of q (boxes of q_box_rows rows) and, for a pass that writes out directly
// (PassInfo::out_acc null), of out (boxes of 64 rows); disabled where pass_tensor_maps would be,
// or with DILATED_CUDA_TMA_QUERY=0 or DILATED_CUDA_TMA_STORE=0 (A/B runs). With a token grid
// both or neither, square by square (QueryMaps::square_width), where the pass writes out
// directly and pass_tensor_maps would fetch K/V square by square.
QueryMaps pass_query_maps(const Params& p, const PassInfo& pass, int q_box_rows);
// The same over consecutive positions (the block pass's tiles), rows through `order` if any.
TensorMaps position_tensor_maps(const Params& p, const int64_t* order, const Tensor& a,
                                const Tensor& b, int64_t heads, int box_rows,
                                bool rows_any_order = false);
// The block pass's maps of q and out over consecutive positions: as pass_query_maps' for
// dilation 1, out only where the pass writes out directly (writes_out). Disabled along a token
// grid (`order`): the block kernels copy such rows with cp.async and store them row by row.
QueryMaps position_query_maps(const Params& p, const int64_t* order, bool writes_out,
                              int q_box_rows);

}  // namespace dilated::cuda::hopper
