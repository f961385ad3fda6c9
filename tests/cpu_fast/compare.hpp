// Runs a host backend forward and backward on a test problem and reads every output back.
#pragma once

#include <string>
#include <vector>

#include "support/problem.hpp"

namespace dilated::testing {

struct Outputs {
  std::vector<double> out, lse, dq, dk, dv;
};

// Poisons the outputs, runs forward then backward (which reads this run's out and lse) with
// `threads` workers; fails the current test on a bad status.
Outputs run_backend(HostProblem& problem, const std::string& backend, int threads = 0);

// The f32 twin of a 16-bit problem: same config and the same (rounded) input values.
HostProblem f32_twin(const HostProblem& problem, uint64_t seed);

// max |got - ref| over max(max |ref|, 1): relative to the largest reference element, and
// absolute where that is below 1. Inputs are standard normal, so an output that cancels to ~0
// (a gradient through a softmax over one distinct key) is judged at the scale of its O(1)
// terms instead of its own rounding noise. Infinite where NaN or Inf positions differ.
double output_error(const std::vector<double>& got, const std::vector<double>& ref);

// Where got and ref first differ in NaN/Inf-ness ("" if nowhere), to explain a failure.
std::string first_nonfinite_mismatch(const std::vector<double>& got,
                                     const std::vector<double>& ref);

// float32 tolerance for output_error. The oracle accumulates in double; the fast backend in
// float32 (unit roundoff u = 6e-8) with a 2^x polynomial of relative error 1.1e-7. out is a
// convex combination of value rows and each gradient a sum of at most a few thousand O(1)
// products here: rounding grows about like sqrt(terms) * u, ~3e-6 for 2000 terms. Scores carry
// an absolute rounding error proportional to their size, |s| ~ scale * sqrt(D) for standard
// normal q and k, which exp turns into a relative error of the weights: the bound grows with
// it past the default scale 1/sqrt(D). A wrong key set or a missing pattern shows up as 1e-2
// or more.
double float32_tolerance(const ProblemConfig& config);

inline const char* const kOutputNames[] = {"out", "lse", "dq", "dk", "dv"};
const std::vector<double>& output(const Outputs& o, const std::string& name);

}  // namespace dilated::testing
