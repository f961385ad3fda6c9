// Chooses between the tensor-core and plain-arithmetic paths and routes a pass to the
// instantiation for the problem's element type.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/cuda_check.hpp"
#include "cuda/kernels/mma_forward.cuh"
#include "cuda/launchers.hpp"
#include "cuda/mma_launch.hpp"
#if DILATED_WITH_HOPPER
#include "cuda/hopper/hopper_launch.hpp"
#endif

namespace dilated::cuda {
namespace {

bool aligned_16_bytes(const Tensor& t, int64_t elem_bytes) {
  const bool base = reinterpret_cast<uintptr_t>(t.data) % 16 == 0;
  const int64_t per_chunk = 16 / elem_bytes;
  return base && t.row_stride % per_chunk == 0 && t.head_stride % per_chunk == 0 &&
         t.batch_stride % per_chunk == 0;
}

}  // namespace

Status device_sm(int* sm) {
  int device = 0, major = 0, minor = 0;
  if (Status s = cuda_status(cudaGetDevice(&device), "cudaGetDevice"); !s.ok()) return s;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  *sm = 10 * major + minor;
  return {};
}

const char* tensor_core_unsupported(const Params& p, int sm) {
  if (sm < 80) return "tensor-core kernels need compute capability 8.0 or newer";
  if (p.dtype == DType::f32) return "fp32 inputs run on the plain-arithmetic kernels";
  if (p.head_dim != p.head_dim_v) return "head_dim_v differs from head_dim";
  if (p.head_dim != 32 && p.head_dim != 64 && p.head_dim != 128) {
    return "tensor-core kernels take head dims 32, 64 and 128";
  }
  const Tensor* tensors[] = {&p.q, &p.k, &p.v, &p.out, &p.dout, &p.dq, &p.dk, &p.dv};
  for (const Tensor* t : tensors) {
    if (t->data && !aligned_16_bytes(*t, 2)) {
      return "tensor-core kernels need 16-byte aligned rows (strides multiple of 8 elements)";
    }
  }
  return "";
}

#if DILATED_WITH_HOPPER
namespace {

// Whether a Hopper path takes p on this device, by its reasons (`unsupported`: "" when it does).
bool hopper_takes(const Params& p, const char* (*unsupported)(const Params&, int)) {
  int sm = 0;
  return device_sm(&sm).ok() && unsupported(p, sm)[0] == '\0';
}
bool hopper_forward(const Params& p) {
  return hopper_takes(p, hopper::forward_unsupported);
}
bool hopper_backward(const Params& p) {
  return hopper_takes(p, hopper::backward_unsupported);
}

}  // namespace
#endif

int64_t mma_forward_tile_rows(const Params& p) {
#if DILATED_WITH_HOPPER
  if (hopper_forward(p)) return hopper::forward_tile_rows(p);
#endif
  return kForwardRows;
}

int64_t mma_backward_tile_rows(const Params& p) {
#if DILATED_WITH_HOPPER
  if (hopper_backward(p)) return hopper::backward_tile_rows();
#endif
  return kMmaRows;
}

void mma_forward_pass(const Params& p, const PassInfo& pass, cudaStream_t stream) {
#if DILATED_WITH_HOPPER
  if (hopper_forward(p)) {
    hopper::forward_pass(p, pass, stream);
    return;
  }
#endif
  if (p.dtype == DType::bf16) {
    mma_forward_pass_for<__nv_bfloat16>(p, pass, stream);
  } else {
    mma_forward_pass_for<__half>(p, pass, stream);
  }
}

void mma_backward_pass(const Params& p, const PassInfo& pass, cudaStream_t stream) {
#if DILATED_WITH_HOPPER
  if (hopper_backward(p)) {
    hopper::backward_pass(p, pass, stream);
    return;
  }
#endif
  if (p.dtype == DType::bf16) {
    mma_backward_pass_for<__nv_bfloat16>(p, pass, stream);
  } else {
    mma_backward_pass_for<__half>(p, pass, stream);
  }
}

}  // namespace dilated::cuda
