// The CUDA backend: fused kernels reading q/k/v in place (tensor cores for fp16/bf16 with head
// dims 32/64/128 on sm_80+, plain arithmetic otherwise), and the device services.
#include <cuda_runtime.h>

#include <string>

#include "core/backend_list.hpp"
#include "cuda/block_plan.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/launch_plan.hpp"
#include "cuda/launchers.hpp"
#include "dilated/dilated.hpp"

namespace dilated {
namespace {

constexpr int64_t kMaxHeadDim = 256;   // the plain-arithmetic kernels keep 8 values per lane
constexpr int64_t kMaxGridYZ = 65535;  // heads and batch index grid dimensions y and z

class CudaBackend final : public Backend {
 public:
  const char* name() const override { return "cuda"; }
  const char* description() const override {
    return "fused CUDA kernels (tensor cores for fp16/bf16, head dims 32/64/128, sm_80+)";
  }
  Device device() const override { return Device::cuda; }

  std::string unavailable_reason() const override {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
      return std::string("no usable CUDA device (") + cudaGetErrorString(e) + ")";
    }
    if (count == 0) return "no CUDA device";
    return {};
  }

  std::string unsupported_reason(const Params& p, Direction) const override {
    if (p.dtype == DType::f64) return "float64 runs on the reference backend only";
    if (const char* why = cuda::block_pass_unsupported(p); *why) return why;
    if (p.head_dim > kMaxHeadDim || p.head_dim_v > kMaxHeadDim) {
      return "head_dim = " + std::to_string(p.head_dim) +
             ", head_dim_v = " + std::to_string(p.head_dim_v) +
             ": the CUDA backend takes head dims up to 256";
    }
    if (p.heads > kMaxGridYZ || p.batch > kMaxGridYZ) {
      return "heads and batch must be at most 65535 on the CUDA backend";
    }
    // The kernels index positions, segments and heads in 32 bits (small_quotient).
    constexpr int64_t kMaxPositions = (int64_t{1} << 31) - 1;
    if (p.seqlen > kMaxPositions || p.window.global_seqlen > kMaxPositions) {
      return "sequences must be shorter than 2^31 positions on the CUDA backend";
    }
    for (int i = 0; i < p.num_patterns; ++i) {
      const Pattern& pat = p.patterns[i];
      if (pat.segment > kMaxPositions) {
        return "segment lengths must be below 2^31 on the CUDA backend (pattern " +
               std::to_string(i) + " has " + std::to_string(pat.segment) + ")";
      }
      const int64_t blocks = (p.seqlen + pat.segment - 1) / pat.segment *
                             ((pat.segment + pat.dilation - 1) / pat.dilation + 3) / 4;
      if (blocks > (int64_t{1} << 31) - 1) return "too many thread blocks for one pass";
    }
    return {};
  }

  int64_t workspace_bytes(const Params& p, Direction dir) const override {
    return dir == Direction::forward ? cuda::forward_workspace(p).bytes
                                     : cuda::backward_workspace(p).bytes;
  }

  Status run_forward(const Params& p, Stream stream) const override {
    return cuda::launch_forward(p, static_cast<cudaStream_t>(stream.handle));
  }
  Status run_backward(const Params& p, Stream stream) const override {
    return cuda::launch_backward(p, static_cast<cudaStream_t>(stream.handle));
  }

  std::string device_name() const override {
    int device = 0;
    cudaDeviceProp prop{};
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
      return "no CUDA device";
    }
    return prop.name;
  }
  Status allocate(int64_t bytes, void** ptr) const override {
    *ptr = nullptr;
    if (bytes == 0) return {};
    return cuda::cuda_status(cudaMalloc(ptr, static_cast<size_t>(bytes)), "cudaMalloc");
  }
  void release(void* ptr) const override { cudaFree(ptr); }
  Status copy_to_device(void* dst, const void* src, int64_t bytes) const override {
    return cuda::cuda_status(
        cudaMemcpy(dst, src, static_cast<size_t>(bytes), cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  Status copy_to_host(void* dst, const void* src, int64_t bytes) const override {
    return cuda::cuda_status(
        cudaMemcpy(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost), "cudaMemcpy");
  }
  Status synchronize(Stream stream) const override {
    return cuda::cuda_status(cudaStreamSynchronize(static_cast<cudaStream_t>(stream.handle)),
                             "cudaStreamSynchronize");
  }
};

}  // namespace

const Backend& cuda_backend() {
  static const CudaBackend backend;
  return backend;
}

}  // namespace dilated
