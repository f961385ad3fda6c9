// The Hopper (sm_90a) path behind the tensor-core launcher: which problems it takes and one
// forward pass. Built when the CUDA architectures include 90 (DILATED_WITH_HOPPER).
#pragma once

#include <cuda_runtime.h>

#include "cuda/launch_plan.hpp"
#include "dilated/params.hpp"

namespace dilated::cuda::hopper {

// "" when the Hopper forward takes p on a device of compute capability `sm` (10 * major +
// minor), else why not. DILATED_CUDA_HOPPER=0 in the environment keeps the portable kernels.
const char* forward_unsupported(const Params& p, int sm);
// One forward pass (same tiles and grid as the portable forward: mma_forward_tile_rows).
void forward_pass(const Params& p, const PassInfo& pass, cudaStream_t stream);

}  // namespace dilated::cuda::hopper
