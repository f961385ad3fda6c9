// Launch helpers shared by the forward and backward launchers (compiled by nvcc only).
#pragma once

#include <algorithm>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/launch_plan.hpp"
#include "dilated/params.hpp"

namespace dilated::cuda {

inline int64_t token_count(const Params& p) {
  return p.cu_seqlens ? p.total_tokens : p.batch * p.seqlen;
}

// Calls f with a value of the problem's element type (float, __half or __nv_bfloat16).
template <class F>
void with_element_type(DType t, F&& f) {
  switch (t) {
    case DType::f32:
      f(float{});
      break;
    case DType::f16:
      f(__half{});
      break;
    case DType::bf16:
      f(__nv_bfloat16{});
      break;
  }
}

// Query-outer kernels (forward, dq).
inline dim3 pass_grid(const PassInfo& pass, int64_t heads, int64_t batch) {
  return dim3(static_cast<unsigned>(pass.segments * pass.tiles_per_segment),
              static_cast<unsigned>(heads), static_cast<unsigned>(batch));
}

// Key-outer kernels (dk/dv).
inline dim3 key_pass_grid(const PassInfo& pass, int64_t heads, int64_t batch) {
  return dim3(static_cast<unsigned>(pass.key_segments * pass.key_tiles_per_segment),
              static_cast<unsigned>(heads), static_cast<unsigned>(batch));
}

inline unsigned blocks_for(int64_t threads, int block) {
  return static_cast<unsigned>((threads + block - 1) / block);
}

// Blocks of 256 threads for the row-wise kernels (a warp per row, walking rows in steps of the
// grid): enough for several waves on any GPU, few enough that launching blocks costs little.
inline unsigned row_blocks(int64_t rows) {
  return std::min(blocks_for(rows * 32, 256), 4096u);
}

inline Tensor workspace_tensor(const Params& p, int64_t offset, int64_t heads, int64_t dim) {
  return offset < 0 ? Tensor{} : fp32_accumulator(p, offset, heads, dim);
}

inline float* workspace_floats(const Params& p, int64_t offset) {
  return offset < 0 ? nullptr : reinterpret_cast<float*>(static_cast<char*>(p.workspace) + offset);
}

}  // namespace dilated::cuda
