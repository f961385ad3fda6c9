// Backward: delta = rowsum(dout * out), gradients zeroed, then per pass the dq kernel (query
// rows outer) and the dk/dv kernel (key rows outer). With the final union lse every pass's
// contribution is additive; rows shared between passes or heads add into fp32 accumulators,
// converted at the end, or by the last pass where one covers every row (converting_pass).
// No atomics: the result is the same bit for bit on every run. Block patterns add one more
// pass (block_sparse.cu). With a token grid the attention kernels map curve positions to rows
// (grid_order.hpp); delta, the zeroing and the conversions treat all rows alike.
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
namespace {

// The gradient's accumulation target: null (store directly), the fp32 output itself, or a
// workspace accumulator.
Tensor accumulation_target(const Params& p, bool accumulates, const Tensor& grad, int64_t offset,
                           int64_t heads, int64_t dim) {
  if (!accumulates) return Tensor{};
  return p.dtype == DType::f32 ? grad : workspace_tensor(p, offset, heads, dim);
}

template <typename Elem>
void zero_gradient(const Params& p, const Tensor& grad, const Tensor& acc, int64_t heads,
                   int64_t dim, cudaStream_t stream) {
  if (acc.data && p.dtype != DType::f32) {
    zero_rows<float>(p, acc, token_count(p), heads, dim, stream);
  } else {
    zero_rows<Elem>(p, grad, token_count(p), heads, dim, stream);
  }
}

template <typename Elem>
void convert_gradient(const Params& p, const Tensor& grad, const Tensor& acc, int64_t heads,
                      int64_t dim, cudaStream_t stream) {
  if (!acc.data || p.dtype == DType::f32) return;
  const int64_t tokens = token_count(p);
  convert_rows_kernel<Elem>
      <<<row_blocks(tokens * heads), 256, 0, stream>>>(p, acc, grad, tokens, heads, dim, 1.0f);
}

}  // namespace

Status launch_backward(const Params& params, cudaStream_t stream) {
  Params p = params;
  p.scale = softmax_scale(params);  // kernels read the resolved scale
  const WorkspaceLayout ws = backward_workspace(p);
  const int64_t tokens = token_count(p);
  float* delta = workspace_floats(p, ws.delta);
  const Tensor dq_acc =
      accumulation_target(p, backward_accumulates_dq(p), p.dq, ws.dq_acc, p.heads, p.head_dim);
  const bool dkdv = backward_accumulates_dkdv(p);
  const Params keys = key_side(p);  // dk, dv have the key rows (Params::window)
  const Tensor dk_acc = accumulation_target(keys, dkdv, p.dk, ws.dk_acc, p.heads_kv, p.head_dim);
  const Tensor dv_acc = accumulation_target(keys, dkdv, p.dv, ws.dv_acc, p.heads_kv, p.head_dim_v);
  int sm = 0;
  if (Status s = device_sm(&sm); !s.ok()) return s;
  const bool tensor_cores = tensor_core_unsupported(p, sm)[0] == '\0';
  const int64_t* order = nullptr;
  if (Status s = grid_order_on_device(p, &order); !s.ok()) return s;
  BlockPass blocks;
  if (has_block_patterns(p)) {
    blocks = make_block_pass(p, ws);
    blocks.order = order;
    blocks.delta = delta;
    blocks.dq_acc = dq_acc;
    blocks.dk_acc = dk_acc;
    blocks.dv_acc = dv_acc;
    build_block_lists(p, blocks, stream);
  }

  with_element_type(p.dtype, [&](auto elem) {
    using Elem = decltype(elem);
    delta_kernel<Elem><<<row_blocks(tokens * p.heads), 256, 0, stream>>>(p, delta, tokens);
    // The converting pass, if any, goes last. It writes every gradient row, so nothing is
    // cleared first: passes store a row no earlier pass selected (accumulator_holds).
    const int converting = tensor_cores ? converting_pass(p) : -1;
    const bool clears = converting < 0;
    if (clears) {
      zero_gradient<Elem>(p, p.dq, dq_acc, p.heads, p.head_dim, stream);
      zero_gradient<Elem>(keys, p.dk, dk_acc, p.heads_kv, p.head_dim, stream);
      zero_gradient<Elem>(keys, p.dv, dv_acc, p.heads_kv, p.head_dim_v, stream);
    }
    uint32_t earlier = 0;  // patterns of the passes so far
    for (int i = 0; i < pass_count(p); ++i) {
      const int k = pass_in_order(p, i, converting);
      const int64_t tile = tensor_cores ? mma_backward_tile_rows(p) : kSimtRowsPerBlock;
      PassInfo pass = make_pass(p, k, tile);
      pass.converts = k == converting;
      pass.accumulators_cleared = clears;
      pass.earlier_passes = earlier;
      pass.overlaps_previous_launch = i > 0;
      earlier |= 1u << k;
      pass.order = order;
      pass.delta = delta;
      pass.dq_acc = dq_acc;
      pass.dk_acc = dk_acc;
      pass.dv_acc = dv_acc;
      if (tensor_cores) {
        mma_backward_pass(p, pass, stream);
      } else {
        simt_backward_dq_kernel<Elem>
            <<<pass_grid(pass, pass.head_count, p.batch), 32 * kSimtRowsPerBlock, 0, stream>>>(
                p, pass);
        simt_backward_dkdv_kernel<Elem>
            <<<key_pass_grid(pass, p.heads_kv, p.batch), 32 * kSimtRowsPerBlock, 0, stream>>>(p,
                                                                                              pass);
      }
    }
    if (has_block_patterns(p)) block_backward_pass(p, blocks, stream);
    if (converting < 0) {
      convert_gradient<Elem>(p, p.dq, dq_acc, p.heads, p.head_dim, stream);
      convert_gradient<Elem>(keys, p.dk, dk_acc, p.heads_kv, p.head_dim, stream);
      convert_gradient<Elem>(keys, p.dv, dv_acc, p.heads_kv, p.head_dim_v, stream);
    }
  });
  return last_launch_status("backward launch");
}

}  // namespace dilated::cuda
