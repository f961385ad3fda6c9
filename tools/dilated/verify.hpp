// Checking a backend against the oracle (the reference backend) on the same inputs.
//
// Tolerances (DESIGN 5), as max |got - want| / max |want| per output:
// - fp32: forward 1e-5 (fp32 accumulation over at most a few thousand keys: the rounding
//   error of a blocked sum stays near 1e-6 of the largest term), gradients 5e-5 (dq sums over
//   keys, dk and dv over queries, each after a second product and a difference).
// - fp16 and bf16: twice the error of the oracle's own output in that dtype on the same
//   rounded inputs (the final rounding dominates), and never below the fp32 figures.
#pragma once

#include <string>

#include "dilated/dilated.hpp"
#include "problem.hpp"

namespace dilated::cli {

// What a correct backend must approach: the oracle in fp32 on the spec's (rounded) inputs,
// and for 16-bit dtypes the oracle's own error when it stores results in that dtype.
struct OracleRun {
  HostOutputs exact;
  double forward_tolerance = 0;
  double backward_tolerance = 0;
};

// Runs the oracle on `inputs` (host memory). Fails only on runtime errors.
Status run_oracle(const ProblemSpec& spec, const HostTensors& inputs, bool backward,
                  OracleRun* oracle);

struct Verdict {
  double forward_error = 0;   // max over out and lse
  double backward_error = 0;  // max over dq, dk, dv (0 without backward)
  bool passed = false;
  std::string detail;  // which output failed and by how much
};

Verdict compare(const OracleRun& oracle, const HostOutputs& got, bool backward);

// Runs `backend` on `inputs` (poisoned outputs first), downloads what it wrote.
Status run_backend(const Backend& backend, const ProblemSpec& spec, const HostTensors& inputs,
                   bool backward, HostOutputs* outputs);

// max |got - want| / max |want|; a NaN, or an infinity where want has none (lse may be -inf
// where no pattern selects a row), gives +inf.
double relative_error(const std::vector<float>& got, const std::vector<float>& want);

}  // namespace dilated::cli
