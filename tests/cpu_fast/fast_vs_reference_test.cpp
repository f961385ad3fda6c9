// The fast CPU backend ("cpu") against the oracle on random problems, forward and backward:
// sizes, N not a multiple of w, GQA/MQA, 1-5 patterns, both modes, head offsets, causal,
// custom scales, varlen, strided layouts, head_dim_v != head_dim; fresh inputs every run.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>

#include "cpu_fast/compare.hpp"

namespace dilated::testing {
namespace {

std::string failure_context(uint64_t seed, int index, const ProblemConfig& c) {
  return "seed " + std::to_string(seed) + " (rerun with DILATED_TEST_SEED=" + std::to_string(seed) +
         "), case " + std::to_string(index) + ": " + c.describe();
}

void expect_float32_match(const RandomLimits& limits, int cases) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  for (int i = 0; i < cases && !::testing::Test::HasFailure(); ++i) {
    const ProblemConfig config = random_config(rng, limits);
    SCOPED_TRACE(failure_context(seed, i, config));
    HostProblem problem(config, rng());
    const Outputs want = run_backend(problem, "reference");
    const Outputs got = run_backend(problem, "cpu");
    for (const char* name : kOutputNames) {
      EXPECT_LE(output_error(output(got, name), output(want, name)), float32_tolerance(config))
          << name;
    }
  }
}

TEST(CpuFastVsReference, RandomFloat32) {
  RandomLimits limits;
  limits.max_seqlen = 128;
  expect_float32_match(limits, 200);
}

// Several key and query tiles per segment, chunks that split segments, long causal diagonals.
TEST(CpuFastVsReference, RandomLongerSequences) {
  RandomLimits limits;
  limits.max_batch = 1;
  limits.max_seqlen = 700;
  limits.max_heads = 2;
  limits.head_dims = {16, 32};
  limits.max_patterns = 2;
  expect_float32_match(limits, 8);
}

// Head dims that are not a multiple of any vector width, and large ones.
TEST(CpuFastVsReference, UnusualHeadDims) {
  RandomLimits limits;
  limits.max_seqlen = 80;
  limits.head_dims = {1, 3, 8, 40, 96, 200, 256};
  expect_float32_match(limits, 20);
}

// Block-sparse patterns (alone or mixed with dilated ones, every kind, partial last blocks,
// blocks of 1..24 tokens) and Hilbert grids, in both modes, causal, GQA, varlen.
TEST(CpuFastVsReference, RandomBlockSparseAndGrids) {
  RandomLimits limits;
  limits.max_seqlen = 128;
  limits.allow_blocks = true;
  limits.allow_grid = true;
  expect_float32_match(limits, 150);
}

// Several super-blocks (about 1024 positions) per sequence: the block backward's phases. Sparse
// patterns keep the oracle cheap at these lengths.
TEST(CpuFastVsReference, RandomBlockSparseSeveralSuperBlocks) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  for (int i = 0; i < 8 && !::testing::Test::HasFailure(); ++i) {
    ProblemConfig c;
    c.batch = uniform(1, 2);
    c.seqlen = uniform(2200, 4500);
    c.heads_kv = uniform(1, 2);
    c.heads = c.heads_kv * uniform(1, 2);
    c.head_dim = c.head_dim_v = 8;
    c.causal = uniform(0, 1) == 1;
    c.block_size = uniform(3, 40);
    c.patterns.clear();
    if (uniform(0, 1)) c.patterns = {{uniform(50, 300), uniform(1, 3)}};
    c.block_patterns = {{BlockKind::local, uniform(0, 1), 0, 0},
                        {BlockKind::random, uniform(1, 3), 0, rng() % 1000},
                        {BlockKind::dilated, uniform(5, 60), uniform(1, 3), 0},
                        {BlockKind::topk, uniform(0, 2), 0, 0}};
    if (i % 2 == 0) {
      const int64_t nb = (c.seqlen + c.block_size - 1) / c.block_size;
      c.block_mask.resize(static_cast<size_t>(nb * nb));
      for (uint8_t& bit : c.block_mask) bit = rng() % 500 == 0;
      c.block_patterns.push_back({BlockKind::mask, 0, 0, 0});
    }
    if (i == 7 && c.batch == 1) {
      c.grid_height = 40;
      c.grid_width = c.seqlen / 40;
      c.seqlen = c.grid_height * c.grid_width;
      c.block_mask.clear();
      c.block_patterns.resize(4);
    }
    SCOPED_TRACE(failure_context(seed, i, c));
    HostProblem problem(c, rng());
    const Outputs want = run_backend(problem, "reference");
    const Outputs got = run_backend(problem, "cpu");
    for (const char* name : kOutputNames) {
      EXPECT_LE(output_error(output(got, name), output(want, name)), float32_tolerance(c)) << name;
    }
  }
}

// Blocks longer than a forward task (1100 positions: tasks hold parts of a query block) and
// than a group of backward key tiles.
TEST(CpuFastVsReference, BlocksLongerThanTasks) {
  const uint64_t seed = test_seed();
  for (bool causal : {false, true}) {
    ProblemConfig c;
    c.seqlen = 1500;
    c.heads = c.heads_kv = 1;
    c.head_dim = c.head_dim_v = 8;
    c.causal = causal;
    c.patterns.clear();
    c.block_size = 1100;
    c.block_patterns = {{BlockKind::local, 0, 0, 0}, {BlockKind::global, 1, 0, 0}};
    SCOPED_TRACE(failure_context(seed, causal, c));
    HostProblem problem(c, seed);
    const Outputs want = run_backend(problem, "reference");
    const Outputs got = run_backend(problem, "cpu");
    for (const char* name : kOutputNames) {
      EXPECT_LE(output_error(output(got, name), output(want, name)), float32_tolerance(c)) << name;
    }
  }
}

// Longer sequences: several query and key tiles per block and per run, tasks of many blocks.
TEST(CpuFastVsReference, BlockSparseLongerSequences) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 6 && !::testing::Test::HasFailure(); ++i) {
    ProblemConfig c;
    c.seqlen = std::uniform_int_distribution<int64_t>(300, 700)(rng);
    c.heads = 4;
    c.heads_kv = 2;
    c.head_dim = c.head_dim_v = 32;
    c.causal = i % 2 == 1;
    c.block_size = i < 3 ? 64 : std::uniform_int_distribution<int64_t>(20, 150)(rng);
    c.patterns = i % 3 == 0 ? std::vector<Pattern>{} : std::vector<Pattern>{{256, 2}};
    c.block_patterns = {{BlockKind::local, 1, 0, 0},
                        {BlockKind::global, 1, 0, 0},
                        {BlockKind::dilated, 3, 2, 0},
                        {BlockKind::random, 2, 0, rng() % 1000},
                        {BlockKind::topk, 2, 0, 0}};
    if (i >= 4) {
      c.grid_height = 16;
      c.seqlen = c.seqlen / 16 * 16;
      c.grid_width = c.seqlen / 16;
    }
    SCOPED_TRACE(failure_context(seed, i, c));
    HostProblem problem(c, rng());
    const Outputs want = run_backend(problem, "reference");
    const Outputs got = run_backend(problem, "cpu");
    for (const char* name : kOutputNames) {
      EXPECT_LE(output_error(output(got, name), output(want, name)), float32_tolerance(c)) << name;
    }
  }
}

// 16-bit inputs: the exact answer is the oracle run in float32 on the rounded inputs; the fast
// backend's error against it must stay within 2x the error of the oracle's own 16-bit run
// (which only rounds its double results once). lse is float32 in both: float32 tolerance.
void expect_16bit_match(DType dtype, int cases, bool blocks = false) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  RandomLimits limits;
  limits.max_seqlen = 96;
  limits.dtypes = {dtype};
  limits.allow_blocks = limits.allow_grid = blocks;
  for (int i = 0; i < cases && !::testing::Test::HasFailure(); ++i) {
    const ProblemConfig config = random_config(rng, limits);
    SCOPED_TRACE(failure_context(seed, i, config));
    const uint64_t problem_seed = rng();
    HostProblem problem(config, problem_seed);
    HostProblem twin = f32_twin(problem, problem_seed);
    const Outputs exact = run_backend(twin, "reference");
    const Outputs oracle = run_backend(problem, "reference");
    const Outputs got = run_backend(problem, "cpu");
    for (const char* name : kOutputNames) {
      const double oracle_error = output_error(output(oracle, name), output(exact, name));
      const double error = output_error(output(got, name), output(exact, name));
      // A floor at the float32 tolerance for outputs the oracle happens to round exactly.
      EXPECT_LE(error, std::max(2.0 * oracle_error, float32_tolerance(config)))
          << name << ": oracle's own error " << oracle_error;
    }
  }
}

TEST(CpuFastVsReference, RandomBfloat16) {
  expect_16bit_match(DType::bf16, 60);
}

TEST(CpuFastVsReference, RandomFloat16) {
  expect_16bit_match(DType::f16, 30);
}

TEST(CpuFastVsReference, RandomBfloat16BlockSparseAndGrids) {
  expect_16bit_match(DType::bf16, 40, true);
}

}  // namespace
}  // namespace dilated::testing
