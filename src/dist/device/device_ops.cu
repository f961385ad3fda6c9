#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "dist/device/device_ops.hpp"

namespace dilated::dist {
namespace {

template <typename Elem>
__device__ __forceinline__ float as_float(Elem x) {
  return static_cast<float>(x);
}
template <typename Elem>
__device__ __forceinline__ Elem from_float(float x) {
  if constexpr (std::is_same_v<Elem, float>) {
    return x;
  } else if constexpr (std::is_same_v<Elem, __nv_bfloat16>) {
    return __float2bfloat16_rn(x);
  } else {
    return __float2half_rn(x);
  }
}

struct Index {
  int64_t b, r, h, e;
};
__device__ __forceinline__ Index unflatten(int64_t i, const RowBlock& k) {
  Index x;
  x.e = i % k.dim;
  i /= k.dim;
  x.h = i % k.heads;
  i /= k.heads;
  x.r = i % k.rows;
  x.b = i / k.rows;
  return x;
}
__device__ __forceinline__ int64_t at(const Tensor& t, const Index& x) {
  return x.b * t.batch_stride + x.r * t.row_stride + x.h * t.head_stride + x.e;
}

template <typename Elem>
__global__ void copy_rows_kernel(const Tensor src, const Tensor dst, const RowBlock block,
                                 float factor, bool add) {
  const int64_t total = block.count();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Index x = unflatten(i, block);
    const Elem* s = static_cast<const Elem*>(src.data) + at(src, x);
    Elem* d = static_cast<Elem*>(dst.data) + at(dst, x);
    const float v = factor * as_float(*s);
    *d = from_float<Elem>(add ? as_float(*d) + v : v);
  }
}

// One thread per (batch, row, head); block.dim values each.
template <typename Elem>
__global__ void merge_rows_kernel(const Tensor out, const Tensor lse, const Tensor part_out,
                                  const Tensor part_lse, const RowBlock block, float share) {
  const RowBlock rows{block.batch, block.rows, block.heads, 1};
  const int64_t total = rows.count();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Index x = unflatten(i, rows);
    const float part = static_cast<const float*>(part_lse.data)[at(part_lse, x)];
    float* l = static_cast<float*>(lse.data) + at(lse, x);
    const float old = *l;
    if (part == -INFINITY) continue;  // the part saw no key of this row
    float merged, w_old, w_part;
    if (isnan(part) || isnan(old)) {
      merged = w_old = w_part = NAN;
    } else {
      const float top = fmaxf(old, part);
      merged = top + logf(expf(old - top) + expf(part - top));
      w_old = expf(old - merged);
      w_part = expf(part - merged) * share;
    }
    Elem* o = static_cast<Elem*>(out.data) + at(out, x);
    const Elem* po = static_cast<const Elem*>(part_out.data) + at(part_out, x);
    for (int64_t e = 0; e < block.dim; ++e) {
      o[e] = from_float<Elem>(w_old * as_float(o[e]) + w_part * as_float(po[e]));
    }
    *l = merged;
  }
}

unsigned grid_for(int64_t threads) {
  const int64_t blocks = (threads + 255) / 256;
  return static_cast<unsigned>(blocks < 8192 ? (blocks > 0 ? blocks : 1) : 8192);
}

template <class F>
void with_type(DType t, F&& f) {
  switch (t) {
    case DType::f16:
      f(__half{});
      break;
    case DType::bf16:
      f(__nv_bfloat16{});
      break;
    default:
      f(float{});
      break;
  }
}

}  // namespace

void copy_rows(DType dtype, const Tensor& src, const Tensor& dst, const RowBlock& block,
               float factor, bool add, void* stream) {
  if (block.count() == 0) return;
  with_type(dtype, [&](auto elem) {
    using Elem = decltype(elem);
    copy_rows_kernel<Elem><<<grid_for(block.count()), 256, 0, static_cast<cudaStream_t>(stream)>>>(
        src, dst, block, factor, add);
  });
}

void merge_rows(DType dtype, const Tensor& out, const Tensor& lse, const Tensor& part_out,
                const Tensor& part_lse, const RowBlock& block, float share, void* stream) {
  const int64_t rows = block.batch * block.rows * block.heads;
  if (rows == 0) return;
  with_type(dtype, [&](auto elem) {
    using Elem = decltype(elem);
    merge_rows_kernel<Elem><<<grid_for(rows), 256, 0, static_cast<cudaStream_t>(stream)>>>(
        out, lse, part_out, part_lse, block, share);
  });
}

Status last_kernel_status(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return {};
  return Status::Runtime(std::string("dist: ") + what + ": " + cudaGetErrorString(e));
}

}  // namespace dilated::dist
