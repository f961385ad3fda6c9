// Launches of the Hopper block backward (block_dq_kernel.cuh, then block_dkdv_kernel.cuh), per
// element type and head dim.
#include <cstdlib>
#include <cstring>

#include "cuda/hopper/block_dkdv_kernel.cuh"
#include "cuda/hopper/block_dq_kernel.cuh"
#include "cuda/hopper/block_shape_choice.hpp"
#include "cuda/hopper/hopper_launch.hpp"
#include "cuda/hopper/instances.hpp"
#include "cuda/hopper/tensor_maps.hpp"
#include "cuda/kernel_launch.hpp"

namespace dilated::cuda::hopper {

const char* block_backward_unsupported(const Params& p, int sm) {
  const char* why = block_forward_unsupported(p, sm);
  if (*why) return why;
  const char* env = std::getenv("DILATED_CUDA_HOPPER_BLOCK_BACKWARD");
  if (env && std::strcmp(env, "0") == 0) return "DILATED_CUDA_HOPPER_BLOCK_BACKWARD=0";
  return "";
}

namespace {

template <class Kernel>
void launch(Kernel kernel, int smem, int rows, int64_t heads, int threads, const Params& p,
            const BlockPass& bp, const TensorMaps& maps, cudaStream_t stream) {
  // Above 48 KiB a kernel must opt in; set on every launch so no launch depends on another.
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const dim3 grid(blocks_for(p.seqlen, rows), static_cast<unsigned>(heads),
                  static_cast<unsigned>(p.batch));
  kernel<<<grid, threads, smem, stream>>>(p, bp, maps);
}

// Both kernels' CTAs hold rows of one block: two warpgroups (128 rows) where the blocks are a
// multiple of 128 positions, else one (two CTAs per SM), except that dk/dv at D = 128 then takes
// two warpgroups over the same 64 keys (block_dkdv_kernel.cuh says why).
template <typename Elem, int D, int Groups>
void launch_both(const Params& p, const BlockPass& bp, cudaStream_t stream) {
  using Shape = BlockShape<Groups>;
  launch(block_dq_kernel<Elem, D, Groups>, BlockDqSmem<D, Groups>::kBytes, Shape::kRows, p.heads,
         Shape::kThreads, p, bp,
         position_tensor_maps(p, bp.order, p.k, p.v, p.heads_kv, kBlockKeys, true), stream);
  constexpr int kQueryTurns = Groups == 1 && D == 128 ? 2 : 1;
  using Dkdv = BlockDkdvSmem<D, Groups, kQueryTurns>;
  launch(block_dkdv_kernel<Elem, D, Groups, kQueryTurns>, Dkdv::kBytes, Dkdv::kKeys, p.heads_kv,
         Dkdv::Shape::kThreads, p, bp,
         position_tensor_maps(p, bp.order, p.q, p.dout, p.heads, kBlockDkdvQueries), stream);
}

}  // namespace

void block_backward(const Params& p, const BlockPass& bp, cudaStream_t stream) {
  const bool two_groups = bp.block % BlockShape<2>::kRows == 0 && forced_block_groups() != 0;
  with_instance(p, [&](auto elem, auto dim) {
    using Elem = decltype(elem);
    constexpr int D = decltype(dim)::value;
    if (two_groups) {
      launch_both<Elem, D, 2>(p, bp, stream);
    } else {
      launch_both<Elem, D, 1>(p, bp, stream);
    }
  });
}

}  // namespace dilated::cuda::hopper
