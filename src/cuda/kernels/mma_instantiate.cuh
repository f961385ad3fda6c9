// Launch functions of the tensor-core kernels for one element type; each mma_kernels_<type>.cu
// includes this once, so the two types compile in parallel.
#pragma once

#include "cuda/kernel_launch.hpp"
#include "cuda/kernels/mma_backward.cuh"
#include "cuda/kernels/mma_forward.cuh"
#include "cuda/mma_launch.hpp"

namespace dilated::cuda {

template <class Kernel>
void launch_with_smem(Kernel kernel, dim3 grid, int smem_bytes, cudaStream_t stream,
                      const Params& p, const PassInfo& pass) {
  // Above 48 KiB a kernel must opt in; the attribute is per function, set on every launch
  // (cheap) so that no launch depends on an earlier one.
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
  kernel<<<grid, kMmaThreads, smem_bytes, stream>>>(p, pass);
}

template <typename Elem, int D>
void forward_pass_d(const Params& p, const PassInfo& pass, cudaStream_t stream) {
  launch_with_smem(mma_forward_kernel<Elem, D>, pass_grid(pass, pass.head_count, p.batch),
                   ForwardSmem<Elem, D>::kBytes, stream, p, pass);
}

template <typename Elem, int D>
void backward_pass_d(const Params& p, const PassInfo& pass, cudaStream_t stream) {
  launch_with_smem(mma_backward_dq_kernel<Elem, D>, pass_grid(pass, pass.head_count, p.batch),
                   DqSmem<Elem, D>::kBytes, stream, p, pass);
  launch_with_smem(mma_backward_dkdv_kernel<Elem, D>, key_pass_grid(pass, p.heads_kv, p.batch),
                   DkdvSmem<Elem, D>::kBytes, stream, p, pass);
}

template <typename Elem>
void mma_forward_pass_for(const Params& p, const PassInfo& pass, cudaStream_t stream) {
  switch (p.head_dim) {
    case 32:
      forward_pass_d<Elem, 32>(p, pass, stream);
      break;
    case 64:
      forward_pass_d<Elem, 64>(p, pass, stream);
      break;
    default:
      forward_pass_d<Elem, 128>(p, pass, stream);
      break;
  }
}

template <typename Elem>
void mma_backward_pass_for(const Params& p, const PassInfo& pass, cudaStream_t stream) {
  switch (p.head_dim) {
    case 32:
      backward_pass_d<Elem, 32>(p, pass, stream);
      break;
    case 64:
      backward_pass_d<Elem, 64>(p, pass, stream);
      break;
    default:
      backward_pass_d<Elem, 128>(p, pass, stream);
      break;
  }
}

}  // namespace dilated::cuda
