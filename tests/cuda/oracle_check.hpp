// One problem on a device backend against the oracle, forward and backward, with the accuracy
// rule of compare_with_oracle (fp32 within 1e-4, fp16/bf16 within 2x the oracle's own error on
// the same rounded inputs). Outputs start NaN-poisoned (HostProblem), so unwritten elements fail.
#pragma once

#include <cstdint>

#include "cuda/device_problem.hpp"

namespace dilated::testing {

// Reports through gtest (config, seed and every output's errors) and returns false on a
// mismatch; raises *worst_ratio to the largest 16-bit device / oracle error ratio seen.
bool check_against_oracle(const Backend& backend, const ProblemConfig& config, uint64_t seed,
                          double* worst_ratio);

}  // namespace dilated::testing
