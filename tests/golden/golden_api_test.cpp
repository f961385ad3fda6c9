// The golden vectors through the C++ API, on every host backend that runs them.
#include <gtest/gtest.h>

#include "golden/golden_case.hpp"

namespace dilated::testing {
namespace {

class GoldenApi : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenApi, ForwardAndBackwardMatchOriginal) {
  const Backend* backend = find_backend(GetParam());
  ASSERT_NE(backend, nullptr);
  if (std::string reason = backend->unavailable_reason(); !reason.empty()) {
    GTEST_SKIP() << GetParam() << " unavailable: " << reason;
  }
  for (const std::string& name : golden_case_names()) {
    SCOPED_TRACE(name);
    GoldenCase c = load_golden_case(name);
    std::vector<float> out, lse, dq, dk, dv;
    Params p = golden_params(c, out, lse, dq, dk, dv);
    ASSERT_TRUE(forward(p, {}, GetParam()).ok());
    // Golden: float64 results stored as float32; ours accumulate in double (reference) or
    // float32 (fast backends) over at most 1024 keys: 1e-5 of the largest element.
    EXPECT_LE(max_relative_error(out, c.out), 1e-5);
    ASSERT_TRUE(backward(p, {}, GetParam()).ok());
    EXPECT_LE(max_relative_error(dq, c.dq), 1e-5);
    EXPECT_LE(max_relative_error(dk, c.dk), 1e-5);
    EXPECT_LE(max_relative_error(dv, c.dv), 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(HostBackends, GoldenApi, ::testing::Values("reference", "cpu"));

}  // namespace
}  // namespace dilated::testing
