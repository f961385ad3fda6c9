// The Hopper kernels' instantiations: element type (bf16, fp16) and head dim (64, 128).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "dilated/params.hpp"

namespace dilated::cuda::hopper {

// Calls launch(Elem{}, std::integral_constant<int, D>{}) for p's element type and head dim
// (which *_unsupported has checked).
template <class Launch>
void with_instance(const Params& p, Launch&& launch) {
  auto with_dim = [&](auto elem) {
    if (p.head_dim == 64) {
      launch(elem, std::integral_constant<int, 64>{});
    } else {
      launch(elem, std::integral_constant<int, 128>{});
    }
  };
  if (p.dtype == DType::bf16) {
    with_dim(__nv_bfloat16{});
  } else {
    with_dim(__half{});
  }
}

}  // namespace dilated::cuda::hopper
