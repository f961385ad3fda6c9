// The device's multiplicity rows (src/cuda/block_row_rules.hpp, run here on the host) against
// the core's key_blocks(), which the oracle uses: for every rule kind, the mask and the counts of
// the seeded random pattern's marks, causal or not, with one worker and with several (the warp's
// striding). Runs without a GPU. The random picks themselves are made by a warp's shuffles on the
// device (kernels/block_lists.cuh); CudaBlockSparse.RandomPicksOverManyDraws checks them there.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/block_rows.hpp"
#include "cuda/block_row_rules.hpp"
#include "support/problem.hpp"

namespace dilated::testing {
namespace {

// The row as the rule kernel builds it (lanes workers; the random picks marked as the device's
// warp marks them, from the core's list of them).
std::vector<uint8_t> device_row(const Params& p, int64_t head, int64_t I, int64_t nb, int lanes) {
  std::vector<uint8_t> row(static_cast<size_t>(nb), 0);
  const int64_t last = p.causal ? I : nb - 1;
  std::vector<int64_t> picks(static_cast<size_t>(nb));
  for (int i = 0; i < p.blocks.num_patterns; ++i) {
    const BlockPattern& pat = p.blocks.patterns[i];
    if (pat.kind == BlockKind::random) {
      const int64_t count = random_key_blocks(pat.seed, head, I, last + 1, pat.size, picks.data());
      for (int64_t c = 0; c < count; ++c)
        row[picks[c]] = static_cast<uint8_t>(row[picks[c]] | 0x80);
      for (int lane = 0; lane < lanes; ++lane)
        cuda::count_random_marks(row.data(), last, lane, lanes);
      continue;
    }
    const BlockMask& m = p.blocks.mask;
    const uint8_t* mask_row = pat.kind == BlockKind::mask
                                  ? m.data + ((m.heads == 1 ? 0 : head) * m.blocks + I) * m.blocks
                                  : nullptr;
    for (int lane = 0; lane < lanes; ++lane) {
      cuda::add_rule_or_mask(row.data(), pat, mask_row, I, last, lane, lanes);
    }
  }
  return row;
}

TEST(CudaBlockRowRules, MatchKeyBlocksWithMultiplicity) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  for (int trial = 0; trial < 3000; ++trial) {
    const int64_t nb = uniform(1, 70), heads = uniform(1, 4);
    Params p;
    p.heads = heads;
    p.causal = uniform(0, 1) == 1;
    std::vector<uint8_t> mask;
    std::vector<BlockPattern> patterns;
    for (int64_t i = uniform(1, 8); i > 0; --i) {
      BlockPattern bp;
      bp.kind = static_cast<BlockKind>(uniform(0, 5));
      if (bp.kind == BlockKind::topk) bp.kind = BlockKind::random;  // topk: its own kernel
      bp.size = uniform(bp.kind == BlockKind::local ? 0 : 1, trial % 2 ? 5 : nb + 2);
      bp.reach = uniform(0, 4);
      bp.seed = rng();
      if (bp.kind == BlockKind::mask) {
        if (!mask.empty()) continue;
        p.blocks.mask.heads = uniform(0, 1) ? heads : 1;
        mask.resize(static_cast<size_t>(p.blocks.mask.heads * nb * nb));
        for (uint8_t& bit : mask) bit = static_cast<uint8_t>(uniform(0, 2) == 0);
        p.blocks.mask.data = mask.data();
        p.blocks.mask.blocks = nb;
      }
      patterns.push_back(bp);
    }
    p.blocks.num_patterns = static_cast<int32_t>(patterns.size());
    for (size_t i = 0; i < patterns.size(); ++i) p.blocks.patterns[i] = patterns[i];
    std::vector<int64_t> blocks;
    for (int64_t head = 0; head < heads; ++head) {
      for (int64_t I = 0; I < nb; ++I) {
        std::vector<int> expected(static_cast<size_t>(nb), 0);
        for (const BlockPattern& bp : patterns) {
          key_blocks(p, bp, head, I, nb, nullptr, &blocks);
          for (int64_t J : blocks) ++expected[static_cast<size_t>(J)];
        }
        for (int lanes : {1, 3, 32}) {
          const std::vector<uint8_t> got = device_row(p, head, I, nb, lanes);
          for (int64_t J = 0; J < nb; ++J) {
            ASSERT_EQ(got[static_cast<size_t>(J)], expected[static_cast<size_t>(J)])
                << "seed " << seed << " trial " << trial << " head " << head << " I " << I << " J "
                << J << " nb " << nb << " causal " << p.causal << " lanes " << lanes;
          }
        }
      }
    }
  }
}

TEST(CudaBlockRowRules, TopkOrderIsTheHostOrder) {
  const double nan = std::nan("");
  EXPECT_TRUE(cuda::topk_before(2.0, 5, 1.0, 0));  // larger score first
  EXPECT_TRUE(cuda::topk_before(1.0, 0, 1.0, 3));  // ties to the smaller block
  EXPECT_FALSE(cuda::topk_before(1.0, 3, 1.0, 0));
  EXPECT_TRUE(cuda::topk_before(-1e300, 9, nan, 0));  // NaN after every number
  EXPECT_FALSE(cuda::topk_before(nan, 0, -1e300, 9));
}

}  // namespace
}  // namespace dilated::testing
