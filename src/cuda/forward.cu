// Forward: every row starts unselected (out 0, lse -inf); each pass writes its rows directly,
// or merges them into running fp32 results when a row collects keys from several passes. With
// a converting pass (launch_plan.hpp) nothing is cleared: it writes every row; nor before a
// block pass that runs alone and writes every row (BlockPass::writes_every_row).
// Block patterns run as one more pass. With a token grid every kernel maps curve positions to
// rows through the device order (grid_order.hpp); the row-wise passes (fills, the final
// conversion) treat all rows alike and need no order.
#include "core/block_sparse.hpp"
#include "cuda/block_launch.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/grid_order.hpp"
#include "cuda/kernel_launch.hpp"
#include "cuda/kernels/elementwise.cuh"
#include "cuda/kernels/simt_attention.cuh"
#include "cuda/launchers.hpp"
#include "cuda/mma_launch.hpp"
#include "dilated/dilated.hpp"

namespace dilated::cuda {

Status launch_forward(const Params& params, cudaStream_t stream) {
  Params p = params;
  p.scale = softmax_scale(params);  // kernels read the resolved scale
  const WorkspaceLayout ws = forward_workspace(p);
  const bool merge = forward_merges(p);
  const int64_t tokens = token_count(p);
  float* lse = p.lse ? p.lse : workspace_floats(p, ws.lse);
  Tensor out_acc;
  if (merge)
    out_acc =
        p.dtype == DType::f32 ? p.out : workspace_tensor(p, ws.out_acc, p.heads, p.head_dim_v);
  int sm = 0;
  if (Status s = device_sm(&sm); !s.ok()) return s;
  const bool tensor_cores = tensor_core_unsupported(p, sm)[0] == '\0';
  const int64_t* order = nullptr;
  if (Status s = grid_order_on_device(p, &order); !s.ok()) return s;
  BlockPass blocks;
  if (has_block_patterns(p)) {
    blocks = make_block_pass(p, ws);
    blocks.order = order;
    blocks.out_acc = out_acc;
    blocks.lse = lse;
    // Alone (no dilated pass to merge with), the tensor-core block kernels write every row of a
    // whole sequence, so out and lse are not cleared first: a pass over both saved.
    blocks.writes_every_row = !merge && !windowed(p) && block_pass_uses_tensor_cores(p);
    build_block_lists(p, blocks, stream);
  }

  with_element_type(p.dtype, [&](auto elem) {
    using Elem = decltype(elem);
    const unsigned rows_grid = row_blocks(tokens * p.heads);
    // The converting pass, if any, goes last and writes out itself. It writes every row, so
    // nothing is cleared first: passes store a row no earlier pass selected (accumulator_holds).
    const int converting = tensor_cores ? converting_pass(p) : -1;
    const bool clears = converting < 0 && !blocks.writes_every_row;
    if (clears && merge && p.dtype != DType::f32) {
      zero_rows<float>(p, out_acc, tokens, p.heads, p.head_dim_v, stream);
    } else if (clears) {
      zero_rows<Elem>(p, p.out, tokens, p.heads, p.head_dim_v, stream);
    }
    if (clears && lse)
      fill_values_kernel<<<blocks_for(tokens * p.heads, 256), 256, 0, stream>>>(
          lse, tokens * p.heads, -INFINITY);
    uint32_t earlier = 0;  // patterns of the passes so far
    for (int i = 0; i < pass_count(p); ++i) {
      const int k = pass_in_order(p, i, converting);
      if (tensor_cores) {
        PassInfo pass = make_pass(p, k, mma_forward_tile_rows(p));
        pass.order = order;
        pass.out_acc = out_acc;
        pass.lse = lse;
        pass.converts = k == converting;
        pass.accumulators_cleared = clears;
        pass.earlier_passes = earlier;
        pass.overlaps_previous_launch = i > 0;
        earlier |= 1u << k;
        mma_forward_pass(p, pass, stream);
      } else {
        PassInfo pass = make_pass(p, k, kSimtRowsPerBlock);
        pass.order = order;
        pass.out_acc = out_acc;
        pass.lse = lse;
        simt_forward_kernel<Elem>
            <<<pass_grid(pass, pass.head_count, p.batch), 32 * kSimtRowsPerBlock, 0, stream>>>(
                p, pass);
      }
    }
    if (has_block_patterns(p)) block_forward_pass(p, blocks, stream);
    // Merged rows hold the softmax average; head_groups divides it by m (DESIGN 2.4) here.
    if (merge && p.dtype != DType::f32 && converting < 0) {
      convert_rows_kernel<Elem><<<rows_grid, 256, 0, stream>>>(p, out_acc, p.out, tokens, p.heads,
                                                               p.head_dim_v, output_scale(p));
    } else if (merge && output_scale(p) != 1.0f) {
      convert_rows_kernel<float><<<rows_grid, 256, 0, stream>>>(p, p.out, p.out, tokens, p.heads,
                                                                p.head_dim_v, output_scale(p));
    }
  });
  return last_launch_status("forward launch");
}

}  // namespace dilated::cuda
