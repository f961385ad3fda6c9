// Launches of the Hopper forward, one instantiation per element type and head dim (64, 128).
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>
#include <cstring>

#include "cuda/hopper/forward_kernel.cuh"
#include "cuda/hopper/hopper_launch.hpp"
#include "cuda/kernel_launch.hpp"
#include "cuda/kernels/mma_forward.cuh"

namespace dilated::cuda::hopper {
namespace {

static_assert(kRows == kForwardRows, "the Hopper forward shares the portable forward's tiles");

// The driver's tensor-map encoder, looked up once (the library links only the runtime).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      fn = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

// 5-D map of K or V for a pass of dilation r (tma.cuh). False where the copy engine cannot
// take the problem; the kernel's producer then copies with cp.async.
bool encode_key_map(const Params& p, const Tensor& t, int64_t r, CUtensorMap* map) {
  const auto encode = tensor_map_encoder();
  if (!encode) return false;
  const cuuint64_t elem = 2;
  const cuuint64_t dims[5] = {static_cast<cuuint64_t>(p.head_dim), static_cast<cuuint64_t>(r),
                              static_cast<cuuint64_t>(p.seqlen / r),
                              static_cast<cuuint64_t>(p.heads_kv),
                              static_cast<cuuint64_t>(p.batch)};
  const cuuint64_t strides[4] = {static_cast<cuuint64_t>(t.row_stride) * elem,
                                 static_cast<cuuint64_t>(t.row_stride * r) * elem,
                                 static_cast<cuuint64_t>(t.head_stride) * elem,
                                 static_cast<cuuint64_t>(t.batch_stride) * elem};
  const cuuint32_t box[5] = {64, 1, static_cast<cuuint32_t>(kKeys), 1, 1};
  const cuuint32_t element_strides[5] = {1, 1, 1, 1, 1};
  const CUtensorMapDataType type =
      p.dtype == DType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  return encode(map, type, 5, t.data, dims, strides, box, element_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// K/V maps of a pass where its key rows are a plain stride of whole sequences: no token grid,
// no sequence window, no varlen, N a multiple of the dilation (else the last phase rows would
// fall outside the map), DILATED_CUDA_TMA not 0.
KeyMaps key_maps(const Params& p, const PassInfo& pass) {
  KeyMaps maps{};
  const char* env = std::getenv("DILATED_CUDA_TMA");
  if ((env && std::strcmp(env, "0") == 0) || pass.order || p.cu_seqlens ||
      p.window.global_seqlen != 0) {
    return maps;
  }
  const int64_t r = head_pattern(p, pass.head_begin, p.mode == Mode::longnet ? pass.k : 0).dilation;
  if (p.seqlen % r != 0) return maps;
  maps.enabled = encode_key_map(p, p.k, r, &maps.k) && encode_key_map(p, p.v, r, &maps.v);
  return maps;
}

template <typename Elem, int D>
void launch(const Params& p, const PassInfo& pass, cudaStream_t stream) {
  constexpr int smem = ForwardSmem<D>::kBytes;
  // Above 48 KiB a kernel must opt in; set on every launch so no launch depends on another.
  cudaFuncSetAttribute(forward_kernel<Elem, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  forward_kernel<Elem, D><<<pass_grid(pass, pass.head_count, p.batch), kThreads, smem, stream>>>(
      p, pass, key_maps(p, pass));
}

template <typename Elem>
void launch_for(const Params& p, const PassInfo& pass, cudaStream_t stream) {
  if (p.head_dim == 64) {
    launch<Elem, 64>(p, pass, stream);
  } else {
    launch<Elem, 128>(p, pass, stream);
  }
}

}  // namespace

const char* forward_unsupported(const Params& p, int sm) {
  if (sm != 90) return "the Hopper kernels run on compute capability 9.0 only";
  if (p.head_dim != 64 && p.head_dim != 128) return "the Hopper forward takes head dims 64, 128";
  const char* env = std::getenv("DILATED_CUDA_HOPPER");
  if (env && std::strcmp(env, "0") == 0) return "DILATED_CUDA_HOPPER=0";
  return "";
}

void forward_pass(const Params& p, const PassInfo& pass, cudaStream_t stream) {
  if (p.dtype == DType::bf16) {
    launch_for<__nv_bfloat16>(p, pass, stream);
  } else {
    launch_for<__half>(p, pass, stream);
  }
}

}  // namespace dilated::cuda::hopper
