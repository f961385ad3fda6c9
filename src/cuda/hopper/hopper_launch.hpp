// The Hopper (sm_90a) path behind the tensor-core launcher: which problems it takes and one
// forward and backward pass. Built when the CUDA architectures include 90 (DILATED_WITH_HOPPER).
#pragma once

#include <cuda_runtime.h>

#include "cuda/block_plan.hpp"
#include "cuda/launch_plan.hpp"
#include "dilated/params.hpp"

namespace dilated::cuda::hopper {

// "" when the Hopper forward takes p on a device of compute capability `sm` (10 * major +
// minor), else why not. DILATED_CUDA_HOPPER=0 in the environment keeps the portable kernels.
const char* forward_unsupported(const Params& p, int sm);
// Selected query rows per tile of the Hopper forward's pass plan (mma_forward_tile_rows): 128,
// or 192 at D = 64 (three consumer warpgroups).
int64_t forward_tile_rows(const Params& p);
// One forward pass of a plan made with forward_tile_rows(p) rows a tile.
void forward_pass(const Params& p, const PassInfo& pass, cudaStream_t stream);

// The same for the backward (dq, dk, dv); DILATED_CUDA_HOPPER_BACKWARD=0 keeps the portable
// backward alone.
const char* backward_unsupported(const Params& p, int sm);
// Selected rows per query tile and per key tile of the Hopper backward's pass plan.
int64_t backward_tile_rows();
void backward_pass(const Params& p, const PassInfo& pass, cudaStream_t stream);

// The block pass's forward on the Hopper kernels (blocks of a multiple of 64 positions);
// DILATED_CUDA_HOPPER_BLOCK=0 keeps the mma.sync block forward.
const char* block_forward_unsupported(const Params& p, int sm);
void block_forward(const Params& p, const BlockPass& bp, cudaStream_t stream);
// Its backward (dq, then dk/dv; what the forward takes); DILATED_CUDA_HOPPER_BLOCK_BACKWARD=0
// (or DILATED_CUDA_HOPPER_BLOCK=0) keeps the mma.sync block backward.
const char* block_backward_unsupported(const Params& p, int sm);
void block_backward(const Params& p, const BlockPass& bp, cudaStream_t stream);

}  // namespace dilated::cuda::hopper
