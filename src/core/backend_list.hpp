// The backends compiled into this build. Each backend folder defines its accessor; the
// registry lists them explicitly so that static linking cannot drop one.
#pragma once

#include "dilated/backend.hpp"

namespace dilated {

const Backend& reference_backend();  // src/cpu/reference.cpp
const Backend& cpu_fast_backend();   // src/cpu/fast/
#if DILATED_WITH_CUDA
const Backend& cuda_backend();  // src/cuda/
#endif

}  // namespace dilated
