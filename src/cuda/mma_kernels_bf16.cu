#include "cuda/kernels/mma_instantiate.cuh"

namespace dilated::cuda {
template void mma_forward_pass_for<__nv_bfloat16>(const Params&, const PassInfo&, cudaStream_t);
template void mma_backward_pass_for<__nv_bfloat16>(const Params&, const PassInfo&, cudaStream_t);
}  // namespace dilated::cuda
