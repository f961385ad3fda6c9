// Params -> kernel launches on a stream. Workspace comes from the caller; nothing is allocated.
#pragma once

#include <cuda_runtime.h>

#include "dilated/params.hpp"
#include "dilated/status.hpp"

namespace dilated::cuda {

Status launch_forward(const Params& p, cudaStream_t stream);
Status launch_backward(const Params& p, cudaStream_t stream);

// Empty when the tensor-core kernels run this problem on a device of compute capability
// `sm` (e.g. 80, 90); otherwise why the plain-arithmetic kernels run it instead.
const char* tensor_core_unsupported(const Params& p, int sm);

}  // namespace dilated::cuda
