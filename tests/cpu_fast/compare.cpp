#include "cpu_fast/compare.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

namespace dilated::testing {

Outputs run_backend(HostProblem& problem, const std::string& backend, int threads) {
  problem.poison_outputs();
  Params p = problem.params();
  p.num_threads = threads;
  Outputs o;
  const Status fwd = forward(p, {}, backend);
  EXPECT_TRUE(fwd.ok()) << backend << " forward: " << fwd.message();
  o.out = problem.read("out");
  o.lse = problem.read_lse();
  const Status bwd = backward(p, {}, backend);
  EXPECT_TRUE(bwd.ok()) << backend << " backward: " << bwd.message();
  o.dq = problem.read("dq");
  o.dk = problem.read("dk");
  o.dv = problem.read("dv");
  return o;
}

HostProblem f32_twin(const HostProblem& problem, uint64_t seed) {
  ProblemConfig config = problem.config();
  config.dtype = DType::f32;
  HostProblem twin(config, seed);
  for (const char* name : {"q", "k", "v", "dout"}) twin.set(name, problem.read(name));
  return twin;
}

double output_error(const std::vector<double>& got, const std::vector<double>& ref) {
  const double relative = relative_error(got, ref);
  if (!std::isfinite(relative)) return relative;
  double largest = 0;
  for (double x : ref) {
    if (std::isfinite(x)) largest = std::max(largest, std::fabs(x));
  }
  const double diff = largest > 0 ? relative * largest : relative;
  return diff / std::max(largest, 1.0);
}

std::string first_nonfinite_mismatch(const std::vector<double>& got,
                                     const std::vector<double>& ref) {
  for (size_t i = 0; i < std::min(got.size(), ref.size()); ++i) {
    const bool same = std::isfinite(got[i]) == std::isfinite(ref[i]) &&
                      std::isnan(got[i]) == std::isnan(ref[i]) &&
                      (std::isfinite(ref[i]) || std::isnan(ref[i]) || got[i] == ref[i]);
    if (!same) {
      return "element " + std::to_string(i) + ": got " + std::to_string(got[i]) + ", want " +
             std::to_string(ref[i]);
    }
  }
  return "";
}

double float32_tolerance(const ProblemConfig& config) {
  const double dim = static_cast<double>(config.head_dim);
  const double scale = std::isnan(config.scale) ? 1.0 / std::sqrt(dim) : config.scale;
  return 1e-5 * std::max(1.0, scale * std::sqrt(dim));
}

const std::vector<double>& output(const Outputs& o, const std::string& name) {
  if (name == "out") return o.out;
  if (name == "lse") return o.lse;
  if (name == "dq") return o.dq;
  if (name == "dk") return o.dk;
  return o.dv;
}

}  // namespace dilated::testing
