// Block-pattern rules, the random generator, the Hilbert curve, validation of the new Params
// fields and the work count of block patterns.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>

#include "core/block_rows.hpp"
#include "core/block_sparse.hpp"
#include "dilated/dilated.hpp"
#include "support/problem.hpp"

namespace dilated::testing {
namespace {

void expect_neighbour_walk(int64_t height, int64_t width) {
  const std::vector<int64_t> order = hilbert_order(height, width);
  ASSERT_EQ(static_cast<int64_t>(order.size()), height * width) << height << "x" << width;
  std::vector<bool> seen(order.size(), false);
  for (size_t i = 0; i < order.size(); ++i) {
    ASSERT_GE(order[i], 0);
    ASSERT_LT(order[i], height * width);
    ASSERT_FALSE(seen[order[i]]) << height << "x" << width << ": cell " << order[i] << " twice";
    seen[order[i]] = true;
    if (i == 0) continue;
    const int64_t dy = std::abs(order[i] / width - order[i - 1] / width);
    const int64_t dx = std::abs(order[i] % width - order[i - 1] % width);
    ASSERT_EQ(dx + dy, 1) << height << "x" << width << ": step " << i << " from " << order[i - 1]
                          << " to " << order[i] << " is not between grid neighbours";
  }
  EXPECT_EQ(order[0], 0) << "the curve starts in the corner";
}

TEST(Hilbert, EveryRectangleUpTo40IsANeighbourWalk) {
  for (int64_t h = 1; h <= 40; ++h) {
    for (int64_t w = 1; w <= 40; ++w) expect_neighbour_walk(h, w);
  }
}

TEST(Hilbert, PrimeOddAndLongSides) {
  for (auto [h, w] : {std::pair<int64_t, int64_t>{97, 89},
                      {101, 2},
                      {2, 101},
                      {1, 257},
                      {257, 1},
                      {127, 128},
                      {256, 256},
                      {3, 1000},
                      {1000, 3},
                      {65, 63},
                      {211, 17},
                      {512, 384}}) {
    expect_neighbour_walk(h, w);
  }
}

// Powers of two: segments of w * w cells along the curve are w x w squares (what makes a 1D
// segment a compact 2D region).
TEST(Hilbert, AlignedSegmentsOfSquareGridsAreSquares) {
  const int64_t side = 64;
  const std::vector<int64_t> order = hilbert_order(side, side);
  for (int64_t w : {2, 4, 8, 16, 32}) {
    for (int64_t start = 0; start < side * side; start += w * w) {
      int64_t x0 = side, x1 = -1, y0 = side, y1 = -1;
      for (int64_t i = start; i < start + w * w; ++i) {
        x0 = std::min(x0, order[i] % side);
        x1 = std::max(x1, order[i] % side);
        y0 = std::min(y0, order[i] / side);
        y1 = std::max(y1, order[i] / side);
      }
      ASSERT_EQ(x1 - x0 + 1, w) << "segment at " << start;
      ASSERT_EQ(y1 - y0 + 1, w) << "segment at " << start;
    }
  }
}

TEST(RandomBlocks, DistinctSortedInRangeAndReproducible) {
  std::vector<int64_t> a(64), b(64);
  for (uint64_t seed : {0ull, 1ull, 12345ull}) {
    for (int64_t candidates : {1, 2, 7, 50}) {
      for (int64_t k : {1, 3, 7, 60}) {
        for (int64_t I = 0; I < 5; ++I) {
          const int64_t n = random_key_blocks(seed, 3, I, candidates, k, a.data());
          ASSERT_EQ(n, std::min(k, candidates));
          for (int64_t i = 0; i < n; ++i) {
            ASSERT_GE(a[i], 0);
            ASSERT_LT(a[i], candidates);
            if (i > 0) {
              ASSERT_LT(a[i - 1], a[i]) << "sorted and distinct";
            }
          }
          ASSERT_EQ(random_key_blocks(seed, 3, I, candidates, k, b.data()), n);
          ASSERT_TRUE(std::equal(a.begin(), a.begin() + n, b.begin()));
        }
      }
    }
  }
}

TEST(RandomBlocks, RoughlyUniformAndDifferentPerHeadAndBlock) {
  // 4000 draws of 3 blocks out of 20: each block is expected 600 times, sd ~ 22.
  std::vector<int64_t> hits(20, 0), blocks(3);
  std::set<std::vector<int64_t>> distinct;
  for (int64_t head = 0; head < 40; ++head) {
    for (int64_t I = 0; I < 100; ++I) {
      random_key_blocks(7, head, I, 20, 3, blocks.data());
      for (int64_t x : blocks) ++hits[x];
      distinct.insert(blocks);
    }
  }
  for (int64_t h : hits) EXPECT_NEAR(static_cast<double>(h), 600.0, 150.0);
  EXPECT_GT(distinct.size(), 900u) << "1140 possible sets; heads and blocks must not repeat";
}

TEST(KeyBlocks, RulesAgreeWithRuleKeepsAndTheCausalCut) {
  Params p;
  p.heads = 1;
  for (BlockPattern bp :
       {BlockPattern{BlockKind::local, 2, 0, 0}, BlockPattern{BlockKind::global, 3, 0, 0},
        BlockPattern{BlockKind::dilated, 3, 2, 0}, BlockPattern{BlockKind::dilated, 1, 0, 0}}) {
    for (bool causal : {false, true}) {
      p.causal = causal;
      const int64_t nb = 17;
      std::vector<int64_t> blocks;
      for (int64_t I = 0; I < nb; ++I) {
        key_blocks(p, bp, 0, I, nb, nullptr, &blocks);
        std::vector<int64_t> expected;
        for (int64_t J = 0; J < nb; ++J) {
          if (rule_keeps(bp, I, J) && (!causal || J <= I)) expected.push_back(J);
        }
        EXPECT_EQ(blocks, expected) << block_kind_name(bp.kind) << " I=" << I;
      }
    }
  }
}

// Pairs of block patterns enumerated token by token from the definitions.
int64_t enumerated_block_pairs(const ProblemConfig& c, int64_t n) {
  const int64_t b = c.block_size, nb = (n + b - 1) / b;
  int64_t pairs = 0;
  for (int64_t head = 0; head < c.heads; ++head) {
    for (const BlockPattern& bp : c.block_patterns) {
      for (int64_t t = 0; t < n; ++t) {
        const int64_t I = t / b;
        std::vector<int64_t> random(64);
        const int64_t drawn =
            bp.kind == BlockKind::random
                ? random_key_blocks(bp.seed, head, I, c.causal ? I + 1 : nb, bp.size, random.data())
                : 0;
        for (int64_t u = 0; u <= (c.causal ? t : n - 1); ++u) {
          const int64_t J = u / b;
          const bool kept = bp.kind == BlockKind::random
                                ? std::count(random.begin(), random.begin() + drawn, J) > 0
                                : rule_keeps(bp, I, J);
          pairs += kept;
        }
      }
    }
  }
  return pairs;
}

TEST(BlockWorkCount, MatchesEnumeration) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 200; ++i) {
    ProblemConfig c;
    c.seqlen = std::uniform_int_distribution<int64_t>(1, 90)(rng);
    c.heads = c.heads_kv = 3;
    c.causal = rng() % 2 == 0;
    c.block_size = std::uniform_int_distribution<int64_t>(1, 20)(rng);
    c.patterns.clear();
    c.block_patterns = {{BlockKind::local, int64_t(rng() % 3), 0, 0},
                        {BlockKind::global, int64_t(rng() % 3 + 1), 0, 0},
                        {BlockKind::dilated, int64_t(rng() % 3 + 1), int64_t(rng() % 3), 0},
                        {BlockKind::random, int64_t(rng() % 4 + 1), 0, rng() % 100}};
    HostProblem problem(c, 1);
    const Params p = problem.params();
    ASSERT_TRUE(validate(p, Direction::forward).ok()) << c.describe();
    EXPECT_EQ(attended_pairs(p, c.seqlen), enumerated_block_pairs(c, c.seqlen))
        << c.describe() << " seed=" << seed;
  }
}

TEST(BlockWorkCount, TopkCountsItsDiagonalAndFullBlocks) {
  ProblemConfig c;
  c.seqlen = 256;
  c.heads = c.heads_kv = 2;
  c.block_size = 32;  // 8 blocks
  c.patterns.clear();
  c.block_patterns = {{BlockKind::topk, 3, 0, 0}};
  HostProblem problem(c, 1);
  // Non-causal: every query block keeps 4 blocks of 32 keys.
  EXPECT_EQ(attended_pairs(problem.params(), 256), 2 * 256 * 4 * 32);
}

struct BadCase {
  const char* what;
  std::function<void(Params&)> spoil;
  const char* named;
};

TEST(ValidateBlocks, RefusesEachBadValueNamingIt) {
  ProblemConfig c;
  c.seqlen = 100;
  c.heads = 4;
  c.heads_kv = 2;
  c.block_size = 16;  // 7 blocks
  c.block_patterns = {{BlockKind::local, 1, 0, 0}, {BlockKind::mask, 0, 0, 0}};
  c.block_mask.assign(7 * 7, 1);
  HostProblem problem(c, test_seed());
  ASSERT_TRUE(validate(problem.params(), Direction::backward).ok());
  const std::vector<BadCase> cases = {
      {"block size 0", [](Params& p) { p.blocks.block_size = 0; }, "block_size = 0"},
      {"too many", [](Params& p) { p.blocks.num_patterns = 9; }, "number of block patterns = 9"},
      {"negative window", [](Params& p) { p.blocks.patterns[0].size = -1; },
       "block_patterns[0] local window W = -1"},
      {"global 0",
       [](Params& p) {
         p.blocks.patterns[0] = {BlockKind::global, 0, 0, 0};
       },
       "global blocks g = 0"},
      {"dilated stride 0",
       [](Params& p) {
         p.blocks.patterns[0] = {BlockKind::dilated, 0, 1, 0};
       },
       "dilated_blocks stride s = 0"},
      {"dilated count -1",
       [](Params& p) {
         p.blocks.patterns[0] = {BlockKind::dilated, 2, -1, 0};
       },
       "dilated_blocks count c = -1"},
      {"random 0",
       [](Params& p) {
         p.blocks.patterns[0] = {BlockKind::random, 0, 0, 5};
       },
       "random k = 0"},
      {"topk -1",
       [](Params& p) {
         p.blocks.patterns[0] = {BlockKind::topk, -1, 0, 0};
       },
       "topk k = -1"},
      {"unknown kind", [](Params& p) { p.blocks.patterns[0].kind = static_cast<BlockKind>(11); },
       "kind = 11"},
      {"two masks", [](Params& p) { p.blocks.patterns[0].kind = BlockKind::mask; },
       "at most one mask"},
      {"null mask", [](Params& p) { p.blocks.mask.data = nullptr; }, "block mask: null"},
      {"mask heads", [](Params& p) { p.blocks.mask.heads = 2; }, "block mask heads = 2"},
      {"mask blocks", [](Params& p) { p.blocks.mask.blocks = 6; }, "block mask blocks = 6"},
      {"grid product",
       [](Params& p) {
         p.grid = {9, 11};
       },
       "grid = 9x11: expected height * width = seqlen = 100"},
      {"grid half set",
       [](Params& p) {
         p.grid = {10, 0};
       },
       "grid = 10x0"},
      {"no dilated pattern in head_groups",
       [](Params& p) {
         p.mode = Mode::head_groups;
         p.num_patterns = 0;
       },
       "number of patterns = 0"},
  };
  for (const BadCase& bad : cases) {
    Params p = problem.params();
    bad.spoil(p);
    const Status s = validate(p, Direction::forward);
    EXPECT_FALSE(s.ok()) << bad.what;
    EXPECT_NE(s.message().find(bad.named), std::string::npos)
        << bad.what << ": message was: " << s.message();
  }
  Params p = problem.params();
  p.num_patterns = 0;  // block patterns alone make a longnet layer
  EXPECT_TRUE(validate(p, Direction::forward).ok());
  p.grid = {10, 10};
  EXPECT_TRUE(validate(p, Direction::forward).ok());
  ProblemConfig varlen = c;
  varlen.seq_lengths = {100, 50};
  varlen.grid_height = varlen.grid_width = 10;
  HostProblem packed(varlen, 1);
  const Status s = validate(packed.params(), Direction::forward);
  EXPECT_NE(s.message().find("grid: not available with varlen"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace dilated::testing
