#include "cuda/oracle_check.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace dilated::testing {

bool check_against_oracle(const Backend& backend, const ProblemConfig& config, uint64_t seed,
                          double* worst_ratio) {
  HostProblem device(config, seed);
  HostProblem oracle(config, seed);
  std::unique_ptr<HostProblem> exact = exact_twin(oracle);
  EXPECT_TRUE(forward(oracle.params(), {}, "reference").ok());
  EXPECT_TRUE(forward(exact->params(), {}, "reference").ok());
  EXPECT_TRUE(backward(exact->params(), {}, "reference").ok());

  DeviceProblem on_device(backend, device);
  const Status fwd = on_device.run(Direction::forward);
  EXPECT_TRUE(fwd.ok()) << "forward: " << fwd.message() << "\n" << config.describe();
  const Status bwd = on_device.run(Direction::backward);
  EXPECT_TRUE(bwd.ok()) << "backward: " << bwd.message() << "\n" << config.describe();
  on_device.copy_outputs_back();
  // The backward reads the stored forward output (delta = <dout, out>): the oracle's backward
  // gets the very out the device's backward read; its forward output is compared separately.
  const std::vector<double> oracle_out = oracle.read("out");
  oracle.set("out", device.read("out"));
  EXPECT_TRUE(backward(oracle.params(), {}, "reference").ok());
  AccuracyReport report = compare_with_oracle(device, oracle, *exact, {"lse", "dq", "dk", "dv"});
  oracle.set("out", oracle_out);
  const AccuracyReport forward_report = compare_with_oracle(device, oracle, *exact, {"out"});
  report.lines.insert(report.lines.begin(), forward_report.lines.begin(),
                      forward_report.lines.end());
  report.ok = report.ok && forward_report.ok;
  *worst_ratio = std::max({*worst_ratio, report.worst_ratio, forward_report.worst_ratio});
  std::string lines;
  for (const std::string& l : report.lines) lines += "  " + l + "\n";
  EXPECT_TRUE(report.ok) << config.describe() << " seed=" << seed << "\n" << lines;
  return report.ok && fwd.ok() && bwd.ok();
}

}  // namespace dilated::testing
