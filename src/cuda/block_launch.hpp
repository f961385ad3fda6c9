// Launchers of the block pass (compiled by nvcc; called from forward.cu and backward.cu).
#pragma once

#include <cuda_runtime.h>

#include "cuda/block_plan.hpp"
#include "dilated/params.hpp"
#include "dilated/status.hpp"

namespace dilated::cuda {

// Fills bp.mult for p (and topk's block means); forward and backward each build it.
void build_block_lists(const Params& p, const BlockPass& bp, cudaStream_t stream);
// After the dilated passes: the block pass's forward (merging into bp.out_acc / bp.lse as the
// passes do) and its backward contributions to dq, dk, dv.
void block_forward_pass(const Params& p, const BlockPass& bp, cudaStream_t stream);
void block_backward_pass(const Params& p, const BlockPass& bp, cudaStream_t stream);

// The tensor-core block pass takes what the tensor-core dilated passes take (fp16/bf16, head
// dims 32/64/128, aligned rows, sm_80+) with blocks of a multiple of 64 positions; the
// warp-per-row kernels take the rest (and everything when the environment variable
// DILATED_CUDA_BLOCK_SIMT=1 is set).
bool block_pass_uses_tensor_cores(const Params& p);
void block_mma_pass(const Params& p, const BlockPass& bp, bool backward, cudaStream_t stream);

}  // namespace dilated::cuda
