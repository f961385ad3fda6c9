// Pattern helpers and the DESIGN 2.6 work count against direct enumeration.
#include <gtest/gtest.h>

#include "core/pattern_math.hpp"
#include "dilated/dilated.hpp"
#include "support/problem.hpp"

namespace dilated::testing {
namespace {

TEST(PatternMath, HeadGroupsSplitLikeTheOriginal) {
  // H = 5, m = 2: groups {0, 1, 2}, {3, 4}; H = 7, m = 3: {0, 1, 2}, {3, 4}, {5, 6}.
  const int64_t expected5[] = {0, 0, 0, 1, 1};
  for (int64_t h = 0; h < 5; ++h) EXPECT_EQ(head_group_of(h, 5, 2), expected5[h]);
  const int64_t expected7[] = {0, 0, 0, 1, 1, 2, 2};
  for (int64_t h = 0; h < 7; ++h) EXPECT_EQ(head_group_of(h, 7, 3), expected7[h]);
}

// Pairs counted one query at a time from key_range, the way every kernel enumerates them.
int64_t enumerated_pairs(const Params& p, int64_t n) {
  int64_t pairs = 0;
  for (int64_t head = 0; head < p.heads; ++head) {
    for (int k = 0; k < head_pattern_count(p); ++k) {
      const HeadPattern hp = head_pattern(p, head, k);
      for (int64_t t = 0; t < n; ++t) {
        if (selects(hp, t)) pairs += key_range(hp, t, n, p.causal).count;
      }
    }
  }
  return pairs;
}

TEST(PatternMath, WorkCountMatchesEnumeration) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  RandomLimits limits;
  limits.max_seqlen = 300;
  for (int i = 0; i < 300; ++i) {
    const ProblemConfig config = random_config(rng, limits);
    HostProblem problem(config, 1);
    const Params p = problem.params();
    for (int64_t n : {p.seqlen, p.seqlen / 2 + 1}) {
      EXPECT_EQ(attended_pairs(p, n), enumerated_pairs(p, n))
          << config.describe() << " n=" << n << " seed=" << seed;
    }
  }
}

TEST(PatternMath, ClosedFormForDividingSegments) {
  // DESIGN 2.6: a pattern contributes 4 * B * H * D * N * w / r^2 (non-causal, w, r | N).
  Params p;
  p.batch = 2;
  p.seqlen = 4096;
  p.heads = p.heads_kv = 12;
  p.head_dim = p.head_dim_v = 64;
  set_patterns(p, {{512, 1}, {1024, 2}, {2048, 4}});
  double expected = 0;
  for (const auto& [w, r] : {std::pair{512.0, 1.0}, {1024.0, 2.0}, {2048.0, 4.0}}) {
    expected += 4.0 * 2 * 12 * 64 * 4096 * w / (r * r);
  }
  EXPECT_DOUBLE_EQ(forward_flops(p), expected);
}

}  // namespace
}  // namespace dilated::testing
