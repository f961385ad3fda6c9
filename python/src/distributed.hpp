// Sequence parallelism for the Python package (python/src/distributed.cpp).
#pragma once

#include <nanobind/nanobind.h>

#include "array_params.hpp"

namespace dilated_python {

// Adds dist_forward and dist_backward to the module.
void register_distributed(nb::module_& m);

}  // namespace dilated_python
