// Lets the small pattern and indexing helpers compile into host code and CUDA kernels alike.
#pragma once

#if defined(__CUDACC__)
#define DILATED_HD __host__ __device__ __forceinline__
#else
#define DILATED_HD inline
#endif
