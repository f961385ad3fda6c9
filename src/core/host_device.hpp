// Lets the small pattern and indexing helpers compile into host code and CUDA kernels alike.
#pragma once

#if defined(__CUDACC__)
#define DILATED_HD __host__ __device__ __forceinline__
#else
#define DILATED_HD inline
#endif

#include <cstdint>

namespace dilated {

// a / b and a % b for 0 <= a, 0 < b, both below 2^31: positions within a sequence, segment
// lengths, dilations, head counts. On the GPU they divide in 32 bits: a 64-bit division is a
// call of ~70 dependent instructions there, and a CTA's setup is a chain of them
// (bench/NOTES.md, eleventh session). The CUDA backend declines problems whose sequences or
// segments reach 2^31 (cuda_backend.cpp), so these operands always fit.
DILATED_HD int64_t small_quotient(int64_t a, int64_t b) {
#if defined(__CUDA_ARCH__)
  return static_cast<int64_t>(static_cast<uint32_t>(a) / static_cast<uint32_t>(b));
#else
  return a / b;
#endif
}
DILATED_HD int64_t small_remainder(int64_t a, int64_t b) {
#if defined(__CUDA_ARCH__)
  return static_cast<int64_t>(static_cast<uint32_t>(a) % static_cast<uint32_t>(b));
#else
  return a % b;
#endif
}

}  // namespace dilated
