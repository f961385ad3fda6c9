// Launches of the tensor-core block pass (block_sparse_mma.cuh) per element type and head dim.
#include <cstdlib>
#include <string>

#include "cuda/block_launch.hpp"
#include "cuda/kernel_launch.hpp"
#include "cuda/kernels/block_sparse_mma.cuh"
#include "cuda/launchers.hpp"
#include "cuda/mma_launch.hpp"
#if DILATED_WITH_HOPPER
#include "cuda/hopper/hopper_launch.hpp"
#endif

namespace dilated::cuda {
namespace {

template <class Kernel>
void launch(Kernel kernel, dim3 grid, int threads, int smem_bytes, cudaStream_t stream,
            const Params& p, const BlockPass& bp) {
  // Above 48 KiB a kernel must opt in; set on every launch so that none depends on another.
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
  kernel<<<grid, threads, smem_bytes, stream>>>(p, bp);
}

dim3 tile_grid(const Params& p, int64_t heads) {
  return dim3(blocks_for(p.seqlen, kMmaRows), static_cast<unsigned>(heads),
              static_cast<unsigned>(p.batch));
}

// The block forward's m16 tiles per warp: 2 (2 warps of 32 rows) for head dims up to 64, unless
// the environment variable DILATED_CUDA_BLOCK_FORWARD_M_TILES=1 asks for 4 warps of 16 rows (to
// compare the two in one build); 1 for D = 128.
bool block_forward_one_m_tile() {
  static const bool one = [] {
    const char* v = std::getenv("DILATED_CUDA_BLOCK_FORWARD_M_TILES");
    return v && std::string(v) == "1";
  }();
  return one;
}

template <typename Elem, int D, int MT>
void forward_d(const Params& p, const BlockPass& bp, cudaStream_t stream) {
  launch(block_mma_forward_kernel<Elem, D, MT>, tile_grid(p, p.heads), kBlockForwardThreads<MT>,
         BlockMmaSmem<Elem, D>::kForwardBytes, stream, p, bp);
}

template <typename Elem, int D>
void run_d(const Params& p, const BlockPass& bp, bool backward, cudaStream_t stream) {
  using Smem = BlockMmaSmem<Elem, D>;
  if (!backward) {
    if constexpr (D <= 64) {
      if (!block_forward_one_m_tile()) {
        forward_d<Elem, D, 2>(p, bp, stream);
        return;
      }
    }
    forward_d<Elem, D, 1>(p, bp, stream);
    return;
  }
  launch(block_mma_dq_kernel<Elem, D>, tile_grid(p, p.heads), kMmaThreads, Smem::kDqBytes, stream,
         p, bp);
  launch(block_mma_dkdv_kernel<Elem, D>, tile_grid(p, p.heads_kv), kMmaThreads, Smem::kDkdvBytes,
         stream, p, bp);
}

template <typename Elem>
void run(const Params& p, const BlockPass& bp, bool backward, cudaStream_t stream) {
  switch (p.head_dim) {
    case 32:
      run_d<Elem, 32>(p, bp, backward, stream);
      break;
    case 64:
      run_d<Elem, 64>(p, bp, backward, stream);
      break;
    default:
      run_d<Elem, 128>(p, bp, backward, stream);
      break;
  }
}

}  // namespace

bool block_pass_uses_tensor_cores(const Params& p) {
  // DILATED_CUDA_BLOCK_SIMT=1 forces the warp-per-row kernels (to compare the two paths).
  static const bool forced_simt = [] {
    const char* v = std::getenv("DILATED_CUDA_BLOCK_SIMT");
    return v && *v && *v != '0';
  }();
  if (forced_simt) return false;
  int sm = 0;
  if (!device_sm(&sm).ok()) return false;
  return tensor_core_unsupported(p, sm)[0] == '\0' && p.blocks.block_size % kMmaRows == 0;
}

void block_mma_pass(const Params& p, const BlockPass& bp, bool backward, cudaStream_t stream) {
#if DILATED_WITH_HOPPER
  int sm = 0;
  if (device_sm(&sm).ok()) {
    if (!backward && hopper::block_forward_unsupported(p, sm)[0] == '\0') {
      hopper::block_forward(p, bp, stream);
      return;
    }
    if (backward && hopper::block_backward_unsupported(p, sm)[0] == '\0') {
      hopper::block_backward(p, bp, stream);
      return;
    }
  }
#endif
  if (p.dtype == DType::bf16) {
    run<__nv_bfloat16>(p, bp, backward, stream);
  } else {
    run<__half>(p, bp, backward, stream);
  }
}

}  // namespace dilated::cuda
