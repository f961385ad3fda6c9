// What the GPU benchmark programs share: a CUDA call check that ends the program, and inputs
// filled with deterministic pseudo-random values in [-1, 1) of the problem's dtype.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "dilated/dilated.hpp"

#define CHECK_CUDA(x)                                              \
  do {                                                             \
    cudaError_t e = (x);                                           \
    if (e != cudaSuccess) {                                        \
      std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e)); \
      std::exit(1);                                                \
    }                                                              \
  } while (0)

namespace bench {

template <typename T>
__global__ void fill_random_kernel(T* data, int64_t count, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 16;
    h *= 2246822519u;
    h ^= h >> 13;
    data[i] = static_cast<T>(static_cast<float>(h & 0xffffff) / 8388608.0f - 1.0f);
  }
}

// `count` elements of `dtype` (bf16, fp16, else fp32) at `data`, on the default stream.
inline void fill_random(dilated::DType dtype, void* data, int64_t count, uint32_t seed) {
  if (dtype == dilated::DType::bf16) {
    fill_random_kernel<<<1024, 256>>>(static_cast<__nv_bfloat16*>(data), count, seed);
  } else if (dtype == dilated::DType::f16) {
    fill_random_kernel<<<1024, 256>>>(static_cast<__half*>(data), count, seed);
  } else {
    fill_random_kernel<<<1024, 256>>>(static_cast<float*>(data), count, seed);
  }
}

}  // namespace bench
