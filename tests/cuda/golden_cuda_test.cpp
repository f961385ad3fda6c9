// The golden vectors of the original implementation through the CUDA backend.
#include <gtest/gtest.h>

#include "cuda/device_problem.hpp"
#include "golden/golden_case.hpp"

namespace dilated::testing {
namespace {

TEST(GoldenCuda, Float32MatchesOriginal) {
  const Backend& cuda = *find_backend("cuda");
  DILATED_REQUIRE_BACKEND(cuda);
  for (const std::string& name : golden_case_names()) {
    SCOPED_TRACE(name);
    GoldenCase c = load_golden_case(name);
    ProblemConfig config;
    config.batch = c.batch;
    config.seqlen = c.seqlen;
    config.heads = config.heads_kv = c.heads;
    config.head_dim = config.head_dim_v = c.head_dim;
    config.patterns = c.patterns;
    config.mode = Mode::head_groups;
    config.causal = c.causal;
    HostProblem host(config, 0);
    auto to_double = [](const std::vector<float>& v) {
      return std::vector<double>(v.begin(), v.end());
    };
    host.set("q", to_double(c.q));
    host.set("k", to_double(c.k));
    host.set("v", to_double(c.v));
    host.set("dout", to_double(c.dout));
    DeviceProblem device(cuda, host);
    ASSERT_TRUE(device.run(Direction::forward).ok());
    ASSERT_TRUE(device.run(Direction::backward).ok());
    device.copy_outputs_back();
    // fp32 arithmetic over at most 1024 keys against float64 results: 1e-5 of the largest.
    EXPECT_LE(relative_error(host.read("out"), to_double(c.out)), 1e-5);
    EXPECT_LE(relative_error(host.read("dq"), to_double(c.dq)), 1e-5);
    EXPECT_LE(relative_error(host.read("dk"), to_double(c.dk)), 1e-5);
    EXPECT_LE(relative_error(host.read("dv"), to_double(c.dv)), 1e-5);
  }
}

}  // namespace
}  // namespace dilated::testing
