// Launches of the Hopper block forward (block_forward_kernel.cuh), per element type and head dim.
#include <cstdlib>
#include <cstring>

#include "cuda/hopper/block_forward_kernel.cuh"
#include "cuda/hopper/hopper_launch.hpp"
#include "cuda/hopper/instances.hpp"
#include "cuda/hopper/tensor_maps.hpp"
#include "cuda/kernel_launch.hpp"

namespace dilated::cuda::hopper {

const char* block_forward_unsupported(const Params& p, int sm) {
  const char* why = forward_unsupported(p, sm);
  if (*why) return why;
  if (p.blocks.block_size % kBlockKeys != 0) {
    return "the Hopper block forward takes blocks of a multiple of 64 positions";
  }
  const char* env = std::getenv("DILATED_CUDA_HOPPER_BLOCK");
  if (env && std::strcmp(env, "0") == 0) return "DILATED_CUDA_HOPPER_BLOCK=0";
  return "";
}

// Two warpgroups per CTA sharing each stage where the blocks allow it, unless the environment
// variable DILATED_CUDA_HOPPER_BLOCK_SHARED=0 asks for one (to compare the shapes in one build).
bool shared_stages(const BlockPass& bp) {
  static const bool off = [] {
    const char* env = std::getenv("DILATED_CUDA_HOPPER_BLOCK_SHARED");
    return env && std::strcmp(env, "0") == 0;
  }();
  return !off && bp.block % BlockForwardShape<2>::kRows == 0;
}

template <typename Elem, int D, int Groups>
void launch(const Params& p, const BlockPass& bp, cudaStream_t stream) {
  const auto kernel = block_forward_kernel<Elem, D, Groups>;
  const int smem = BlockForwardSmem<D, Groups>::kBytes;
  // Above 48 KiB a kernel must opt in; set on every launch so no launch depends on another.
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const dim3 grid(blocks_for(p.seqlen, BlockForwardShape<Groups>::kRows),
                  static_cast<unsigned>(p.heads), static_cast<unsigned>(p.batch));
  kernel<<<grid, BlockForwardShape<Groups>::kThreads, smem, stream>>>(
      p, bp, position_tensor_maps(p, bp.order, p.k, p.v, p.heads_kv, kBlockKeys, true));
}

void block_forward(const Params& p, const BlockPass& bp, cudaStream_t stream) {
  with_instance(p, [&](auto elem, auto dim) {
    using Elem = decltype(elem);
    constexpr int D = decltype(dim)::value;
    if (shared_stages(bp)) {
      launch<Elem, D, 2>(p, bp, stream);
    } else {
      launch<Elem, D, 1>(p, bp, stream);
    }
  });
}

}  // namespace dilated::cuda::hopper
