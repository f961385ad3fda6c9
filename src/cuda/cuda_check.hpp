// CUDA runtime errors as Status values.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "dilated/status.hpp"

namespace dilated::cuda {

inline Status cuda_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return {};
  return Status::Runtime(std::string(what) + ": " + cudaGetErrorString(e));
}

// After a launch: configuration errors show up at once, faults at the next synchronisation.
inline Status last_launch_status(const char* what) {
  return cuda_status(cudaGetLastError(), what);
}

}  // namespace dilated::cuda
