// The same binary runs on AVX2-only (and older) machines: every SIMD target Highway compiled
// in, forced one at a time, matches the oracle.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>

#include "cpu/fast/kernels.hpp"
#include "cpu_fast/compare.hpp"
#include "hwy/targets.h"

namespace dilated::testing {
namespace {

TEST(CpuFastTargets, EveryCompiledTargetMatchesTheOracle) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  ASSERT_FALSE(targets.empty());
  for (int64_t target : targets) {
    hwy::SetSupportedTargetsForTest(target);
    ASSERT_EQ(std::string(cpu_fast::kernel_target_name()), hwy::TargetName(target));
    for (int i = 0; i < 16 && !HasFailure(); ++i) {
      RandomLimits limits;
      limits.max_seqlen = 96;
      limits.dtypes = {i % 4 == 3 ? DType::bf16 : DType::f32};
      limits.allow_blocks = limits.allow_grid = i % 2 == 1;  // tiles of other widths too
      const ProblemConfig config = random_config(rng, limits);
      SCOPED_TRACE(std::string("target ") + hwy::TargetName(target) + ", seed " +
                   std::to_string(seed) + ", case " + std::to_string(i) + ": " + config.describe());
      const uint64_t problem_seed = rng();
      HostProblem problem(config, problem_seed);
      const Outputs got = run_backend(problem, "cpu");
      if (config.dtype == DType::f32) {
        const Outputs want = run_backend(problem, "reference");
        for (const char* name : kOutputNames) {
          EXPECT_LE(output_error(output(got, name), output(want, name)), float32_tolerance(config))
              << name;
        }
      } else {  // as in CpuFastVsReference.RandomBfloat16
        HostProblem twin = f32_twin(problem, problem_seed);
        const Outputs exact = run_backend(twin, "reference");
        const Outputs oracle = run_backend(problem, "reference");
        for (const char* name : kOutputNames) {
          const double oracle_error = output_error(output(oracle, name), output(exact, name));
          EXPECT_LE(output_error(output(got, name), output(exact, name)),
                    std::max(2.0 * oracle_error, float32_tolerance(config)))
              << name;
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);  // back to what this CPU supports
}

}  // namespace
}  // namespace dilated::testing
