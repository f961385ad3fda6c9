// The oracle against dense masked attention built straight from the definitions.
#include <gtest/gtest.h>

#include <cmath>

#include "reference/dense_attention.hpp"
#include "support/problem.hpp"

namespace dilated::testing {
namespace {

// Storing the double result in the output dtype costs half an ulp of the largest element.
double storage_tolerance(DType t) {
  switch (t) {
    case DType::f32:
      return 1e-6;
    case DType::f16:
      return 1e-3;
    case DType::bf16:
      return 8e-3;
    case DType::f64:
      return 1e-12;  // double accumulation in both; only summation order differs
  }
  return 0;
}

void expect_matches_dense(const ProblemConfig& config, uint64_t seed) {
  HostProblem problem(config, seed);
  ASSERT_TRUE(forward(problem.params(), {}, "reference").ok());
  const DenseResult dense = dense_attention(problem);
  const std::vector<double> out = problem.read("out");
  const std::vector<double> lse = problem.read_lse();
  EXPECT_LE(relative_error(out, dense.out), storage_tolerance(config.dtype))
      << config.describe() << " seed=" << seed;
  // lse is float32 whatever the inputs; -inf where no pattern selects the row.
  EXPECT_LE(relative_error(lse, dense.lse), 1e-6) << config.describe() << " seed=" << seed;
}

TEST(ReferenceVsDense, RandomConfigurations) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  RandomLimits limits;
  limits.max_seqlen = 70;
  limits.head_dims = {4, 8, 16};
  limits.dtypes = {DType::f32, DType::f32, DType::f16, DType::bf16, DType::f64};
  for (int i = 0; i < 150; ++i) {
    const ProblemConfig config = random_config(rng, limits);
    SCOPED_TRACE("run seed " + std::to_string(seed) + ", case " + std::to_string(i));
    expect_matches_dense(config, rng());
    if (HasFailure()) return;
  }
}

// Named corners of DESIGN 2.2-2.4, each once.
TEST(ReferenceVsDense, Corners) {
  const uint64_t seed = test_seed();
  std::vector<ProblemConfig> corners;
  ProblemConfig c;
  c.seqlen = 45;  // the last segment of every pattern is partial
  c.heads = 4;
  c.heads_kv = 4;
  c.head_dim = c.head_dim_v = 8;
  c.patterns = {{16, 3}, {7, 3}, {45, 5}};  // w % r != 0
  corners.push_back(c);
  c.causal = true;
  corners.push_back(c);
  c.mode = Mode::head_groups;  // groups of 2, 1, 1 heads; offsets 0, 1, 2
  corners.push_back(c);
  c = ProblemConfig{};
  c.heads = 3;  // fewer heads than the dilation: grouped offsets j / ceil(H / r)
  c.heads_kv = 1;
  c.patterns = {{32, 4}, {64, 8}};
  c.head_offsets = HeadOffsets::grouped;
  corners.push_back(c);
  c.heads = 6;  // 6 heads, r = 4: torchscale pads to 8 heads, groups of 2
  c.heads_kv = 2;
  corners.push_back(c);
  c = ProblemConfig{};
  c.head_dim_v = 5;  // v narrower than q and k
  c.scale = -0.7f;
  corners.push_back(c);
  c = ProblemConfig{};
  c.seq_lengths = {0, 37, 1, 64};  // varlen with empty and one-token sequences
  c.patterns = {{16, 2}, {32, 4}};
  c.causal = true;
  corners.push_back(c);
  for (const ProblemConfig& config : corners) expect_matches_dense(config, seed);
}

TEST(ReferenceVsDense, RandomBlockSparseAndGridConfigurations) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  RandomLimits limits;
  limits.max_seqlen = 90;
  limits.head_dims = {4, 8};
  limits.dtypes = {DType::f32, DType::f64};
  limits.allow_blocks = true;
  limits.allow_grid = true;
  for (int i = 0; i < 150; ++i) {
    const ProblemConfig config = random_config(rng, limits);
    SCOPED_TRACE("run seed " + std::to_string(seed) + ", case " + std::to_string(i));
    expect_matches_dense(config, rng());
    if (HasFailure()) return;
  }
}

// Each block pattern alone, with dilated patterns, causal, head_groups, GQA, a partial last
// block, and on a grid.
TEST(ReferenceVsDense, EachBlockPattern) {
  const uint64_t seed = test_seed();
  const int64_t nb = 6;  // 45 tokens in blocks of 8: the last one holds 5
  std::vector<uint8_t> mask(2 * nb * nb);
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = (i * 7 + i / 5) % 3 == 0;
  const std::vector<BlockPattern> kinds = {
      {BlockKind::local, 1, 0, 0},  {BlockKind::global, 1, 0, 0}, {BlockKind::dilated, 2, 1, 0},
      {BlockKind::random, 2, 0, 9}, {BlockKind::topk, 2, 0, 0},   {BlockKind::mask, 0, 0, 0}};
  for (const BlockPattern& bp : kinds) {
    ProblemConfig c;
    c.seqlen = 45;
    c.heads = 2;
    c.heads_kv = 1;
    c.head_dim = c.head_dim_v = 8;
    c.block_size = 8;
    c.block_patterns = {bp};
    if (bp.kind == BlockKind::mask) {
      c.block_mask = mask;
      c.mask_heads = 2;
    }
    c.patterns.clear();
    expect_matches_dense(c, seed);
    c.causal = true;
    expect_matches_dense(c, seed);
    c.patterns = {{16, 2}, {45, 3}};
    expect_matches_dense(c, seed);
    c.mode = Mode::head_groups;
    expect_matches_dense(c, seed);
    c.mode = Mode::longnet;
    c.seqlen = 5 * 9;
    c.grid_height = 5;
    c.grid_width = 9;
    expect_matches_dense(c, seed);
  }
}

TEST(ReferenceVsDense, UnselectedRowsAreZeroWithMinusInfLse) {
  ProblemConfig c;
  c.seqlen = 32;
  c.heads = c.heads_kv = 1;
  c.patterns = {{8, 2}};  // head 0 offset 0: odd positions of each segment are unselected
  HostProblem problem(c, test_seed());
  ASSERT_TRUE(forward(problem.params(), {}, "reference").ok());
  const std::vector<double> out = problem.read("out"), lse = problem.read_lse();
  for (int64_t t = 1; t < 32; t += 2) {
    EXPECT_TRUE(std::isinf(lse[t]) && lse[t] < 0) << "t=" << t;
    for (int64_t d = 0; d < c.head_dim; ++d) EXPECT_EQ(out[t * c.head_dim + d], 0.0);
  }
  for (int64_t t = 0; t < 32; t += 2) EXPECT_TRUE(std::isfinite(lse[t])) << "t=" << t;
}

}  // namespace
}  // namespace dilated::testing
