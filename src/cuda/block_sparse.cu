// The block pass: building the multiplicity matrix and running the block attention kernels.
#include "cuda/block_launch.hpp"
#include "cuda/kernel_launch.hpp"
#include "cuda/kernels/block_lists.cuh"
#include "cuda/kernels/block_sparse_attention.cuh"

namespace dilated::cuda {
namespace {

dim3 row_grid(const Params& p, int64_t heads) {
  return dim3(blocks_for(p.seqlen, kBlockRowsPerCta), static_cast<unsigned>(heads),
              static_cast<unsigned>(p.batch));
}

}  // namespace

void build_block_lists(const Params& p, const BlockPass& bp, cudaStream_t stream) {
  const int64_t rows = p.batch * bp.head_classes * bp.nb;
  block_rule_rows_kernel<<<blocks_for(rows * 32, 256), 256, 0, stream>>>(p, bp);
  if (!bp.means_q) return;
  with_element_type(p.dtype, [&](auto elem) {
    using Elem = decltype(elem);
    const int64_t per_head = p.batch * bp.nb * p.head_dim;
    block_means_kernel<Elem><<<blocks_for(per_head * p.heads, 256), 256, 0, stream>>>(
        p, p.q, p.heads, bp.means_q, bp.nb, bp.block, bp.order);
    block_means_kernel<Elem><<<blocks_for(per_head * p.heads_kv, 256), 256, 0, stream>>>(
        p, p.k, p.heads_kv, bp.means_k, bp.nb, bp.block, bp.order);
  });
  const int smem = static_cast<int>(bp.nb * static_cast<int64_t>(sizeof(double)));
  cudaFuncSetAttribute(block_topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  block_topk_kernel<<<dim3(static_cast<unsigned>(bp.nb), static_cast<unsigned>(p.heads),
                           static_cast<unsigned>(p.batch)),
                      kTopkThreads, smem, stream>>>(p, bp);
}

void block_forward_pass(const Params& p, const BlockPass& bp, cudaStream_t stream) {
  if (block_pass_uses_tensor_cores(p)) {
    block_mma_pass(p, bp, false, stream);
    return;
  }
  with_element_type(p.dtype, [&](auto elem) {
    using Elem = decltype(elem);
    block_forward_kernel<Elem><<<row_grid(p, p.heads), 32 * kBlockRowsPerCta, 0, stream>>>(p, bp);
  });
}

void block_backward_pass(const Params& p, const BlockPass& bp, cudaStream_t stream) {
  if (block_pass_uses_tensor_cores(p)) {
    block_mma_pass(p, bp, true, stream);
    return;
  }
  with_element_type(p.dtype, [&](auto elem) {
    using Elem = decltype(elem);
    block_backward_dq_kernel<Elem>
        <<<row_grid(p, p.heads), 32 * kBlockRowsPerCta, 0, stream>>>(p, bp);
    block_backward_dkdv_kernel<Elem>
        <<<row_grid(p, p.heads_kv), 32 * kBlockRowsPerCta, 0, stream>>>(p, bp);
  });
}

}  // namespace dilated::cuda
