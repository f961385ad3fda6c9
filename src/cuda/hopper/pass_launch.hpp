// How the Hopper launchers start a pass kernel (compiled by nvcc only).
#pragma once

#include <cstdlib>
#include <cstring>

#include <cuda_runtime.h>

#include "cuda/hopper/tma.cuh"
#include "cuda/hopper/warp_roles.cuh"
#include "cuda/launch_plan.hpp"
#include "dilated/params.hpp"

namespace dilated::cuda::hopper {

// Launches kernel(args...) as `threads` threads a CTA with `smem` bytes of dynamic shared
// memory. With `overlaps`
// (and unless DILATED_CUDA_OVERLAP=0, a benchmark knob) the launch may start before the
// previous one on the stream has finished (programmatic dependent launch, grid_dependency.cuh).
template <class Kernel, class... Args>
void launch_pass_kernel(Kernel kernel, dim3 grid, int threads, int smem, bool overlaps,
                        cudaStream_t stream, const Args&... args) {
  // Above 48 KiB a kernel must opt in; set on every launch so no launch depends on another.
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const char* env = std::getenv("DILATED_CUDA_OVERLAP");
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = dim3(static_cast<unsigned>(threads));
  config.dynamicSmemBytes = static_cast<size_t>(smem);
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = overlaps && !(env && std::strcmp(env, "0") == 0) ? 1 : 0;
  cudaLaunchKernelEx(&config, kernel, args...);
}

}  // namespace dilated::cuda::hopper
