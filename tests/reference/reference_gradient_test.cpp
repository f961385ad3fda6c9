// The oracle's backward against central finite differences of loss = sum(out * dout).
#include <gtest/gtest.h>

#include "support/problem.hpp"

namespace dilated::testing {
namespace {

double loss(HostProblem& problem, const std::vector<double>& dout) {
  EXPECT_TRUE(forward(problem.params(), {}, "reference").ok());
  const std::vector<double> out = problem.read("out");
  double s = 0;
  for (size_t i = 0; i < out.size(); ++i) s += out[i] * dout[i];
  return s;
}

// Perturbs every element of `input`; returns the numerical gradient.
std::vector<double> numerical_gradient(HostProblem& problem, const std::string& input) {
  const std::vector<double> dout = problem.read("dout");
  std::vector<double> x = problem.read(input);
  std::vector<double> grad(x.size());
  // float32 storage: h = 1e-2 balances truncation (h^2) against rounding (eps / h).
  const double h = 1e-2;
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    problem.set(input, x);
    const double plus = loss(problem, dout);
    x[i] = saved - h;
    problem.set(input, x);
    const double minus = loss(problem, dout);
    x[i] = saved;
    grad[i] = (plus - minus) / (2 * h);
  }
  problem.set(input, x);
  return grad;
}

void expect_gradients_match(const ProblemConfig& config) {
  const uint64_t seed = test_seed();
  HostProblem problem(config, seed);
  ASSERT_TRUE(forward(problem.params(), {}, "reference").ok());  // backward reads out
  ASSERT_TRUE(backward(problem.params(), {}, "reference").ok());
  const std::vector<double> dq = problem.read("dq"), dk = problem.read("dk"),
                            dv = problem.read("dv");
  // Dyadic step and inputs rounded to float: the error is O(h^2) ~ 1e-4 of the largest entry.
  EXPECT_LE(relative_error(dq, numerical_gradient(problem, "q")), 2e-3)
      << config.describe() << " seed=" << seed;
  EXPECT_LE(relative_error(dk, numerical_gradient(problem, "k")), 2e-3)
      << config.describe() << " seed=" << seed;
  EXPECT_LE(relative_error(dv, numerical_gradient(problem, "v")), 2e-3)
      << config.describe() << " seed=" << seed;
}

TEST(ReferenceGradient, LongnetCausalGqaPartialSegments) {
  ProblemConfig c;
  c.seqlen = 11;
  c.heads = 4;
  c.heads_kv = 2;
  c.head_dim = 3;
  c.head_dim_v = 2;
  c.patterns = {{4, 1}, {6, 2}, {11, 3}};
  c.causal = true;
  c.scale = 0.8f;
  expect_gradients_match(c);
}

TEST(ReferenceGradient, HeadGroupsVarlenStrided) {
  ProblemConfig c;
  c.seq_lengths = {7, 0, 9};
  c.heads = 3;
  c.heads_kv = 1;
  c.head_dim = c.head_dim_v = 3;
  c.patterns = {{4, 2}, {8, 3}};
  c.mode = Mode::head_groups;
  c.layout = Layout::padded;
  expect_gradients_match(c);
}

TEST(ReferenceGradient, GroupedOffsetsHeadMajor) {
  ProblemConfig c;
  c.seqlen = 10;
  c.heads = c.heads_kv = 3;
  c.head_dim = c.head_dim_v = 2;
  c.patterns = {{5, 2}, {10, 4}};
  c.head_offsets = HeadOffsets::grouped;
  c.layout = Layout::head_major;
  expect_gradients_match(c);
}

// Block patterns join the union with multiplicity; topk is left out: a finite difference
// across a change of its selection has no meaning (its selection carries no gradient).
TEST(ReferenceGradient, BlockPatternsWithDilationCausalGqa) {
  ProblemConfig c;
  c.seqlen = 13;
  c.heads = 2;
  c.heads_kv = 1;
  c.head_dim = c.head_dim_v = 2;
  c.patterns = {{6, 2}};
  c.causal = true;
  c.block_size = 3;  // 5 blocks, the last one of a single token
  c.block_patterns = {{BlockKind::local, 1, 0, 0},
                      {BlockKind::global, 1, 0, 0},
                      {BlockKind::dilated, 2, 1, 0},
                      {BlockKind::random, 2, 0, 4},
                      {BlockKind::mask, 0, 0, 0}};
  c.block_mask.resize(25);
  for (size_t i = 0; i < c.block_mask.size(); ++i) c.block_mask[i] = i % 3 == 1;
  expect_gradients_match(c);
}

TEST(ReferenceGradient, GridOrderWithBlocksAndHeadGroups) {
  ProblemConfig c;
  c.seqlen = 12;
  c.grid_height = 3;
  c.grid_width = 4;
  c.heads = c.heads_kv = 2;
  c.head_dim = c.head_dim_v = 2;
  c.patterns = {{4, 1}, {6, 2}};
  c.mode = Mode::head_groups;
  c.block_size = 4;
  c.block_patterns = {{BlockKind::local, 0, 0, 0}, {BlockKind::random, 1, 0, 2}};
  expect_gradients_match(c);
}

}  // namespace
}  // namespace dilated::testing
