// Host side of the Hopper block kernels' CTA shapes (block_shape.cuh): the override the
// environment may give, shared by the forward's and the backward's launchers.
#pragma once

namespace dilated::cuda::hopper {

// DILATED_CUDA_HOPPER_BLOCK_SHARED=0 asks for one consumer warpgroup per CTA, =1 for two wherever
// the kernel's patterns allow them (to compare the shapes in one build); 0, 1, or -1 when unset.
int forced_block_groups();

}  // namespace dilated::cuda::hopper
