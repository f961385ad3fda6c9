// The tensor-core path behind the launchers: which problems it takes, its tile sizes, and one
// pass of forward or backward (compiled once per element type and head dim).
#pragma once

#include <cuda_runtime.h>

#include "cuda/launch_plan.hpp"
#include "dilated/params.hpp"
#include "dilated/status.hpp"

namespace dilated::cuda {

// Compute capability of the current device as 10 * major + minor.
Status device_sm(int* sm);

int64_t mma_forward_tile_rows(const Params& p);
int64_t mma_backward_tile_rows(const Params& p);
void mma_forward_pass(const Params& p, const PassInfo& pass, cudaStream_t stream);
void mma_backward_pass(const Params& p, const PassInfo& pass, cudaStream_t stream);

// Per element type (mma_kernels_<type>.cu): head dims 32, 64, 128.
template <typename Elem>
void mma_forward_pass_for(const Params& p, const PassInfo& pass, cudaStream_t stream);
template <typename Elem>
void mma_backward_pass_for(const Params& p, const PassInfo& pass, cudaStream_t stream);

}  // namespace dilated::cuda
