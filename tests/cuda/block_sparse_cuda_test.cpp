// Block-sparse patterns and token grids (docs/design.md 1.1, 1.2) on the CUDA backend against
// the oracle, forward and backward: every block kind alone and with dilated patterns, both
// modes, causal, GQA, fp32/fp16/bf16, grids alone and with blocks, random mixes. Outputs start
// NaN-poisoned. Each case names its configuration and seed on failure
// (DILATED_TEST_SEED=<seed> reruns it).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <tuple>

#include "cuda/grid_order.hpp"
#include "cuda/oracle_check.hpp"

namespace dilated::testing {
namespace {

const Backend& cuda() {
  return *find_backend("cuda");
}

double worst_ratio_seen = 0;

// One pattern of `kind` with sizes that keep some but not all blocks of a 13-block sequence.
BlockPattern pattern_of(BlockKind kind, uint64_t seed) {
  switch (kind) {
    case BlockKind::local:
      return {kind, 1, 0, 0};
    case BlockKind::global:
      return {kind, 2, 0, 0};
    case BlockKind::dilated:
      return {kind, 3, 2, 0};
    case BlockKind::random:
      return {kind, 4, 0, seed};
    case BlockKind::topk:
      return {kind, 3, 0, 0};
    default:
      return {BlockKind::mask, 0, 0, 0};
  }
}

// A mask of c's block count (c.mask_heads rows of NB x NB), each block kept with probability 1/3
// by a generator seeded with `seed`.
void random_block_mask(ProblemConfig& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t nb = (c.seqlen + c.block_size - 1) / c.block_size;
  c.block_mask.assign(static_cast<size_t>(c.mask_heads * nb * nb), 0);
  for (uint8_t& bit : c.block_mask) bit = rng() % 3 == 0;
}

// batch 2, N 203 (13 blocks of 16, the last one partial), 4 query heads on 2 kv heads.
ProblemConfig block_case(BlockKind kind, DType dtype, bool causal, uint64_t seed) {
  ProblemConfig c;
  c.batch = 2;
  c.seqlen = 203;
  c.heads = 4;
  c.heads_kv = 2;
  c.head_dim = c.head_dim_v = 64;
  c.dtype = dtype;
  c.causal = causal;
  c.patterns.clear();
  c.block_size = 16;
  c.block_patterns = {pattern_of(kind, seed)};
  if (kind == BlockKind::mask) {
    std::mt19937_64 rng(seed);
    const int64_t nb = (c.seqlen + c.block_size - 1) / c.block_size;
    c.mask_heads = seed % 2 ? c.heads : 1;
    c.block_mask.resize(static_cast<size_t>(c.mask_heads * nb * nb));
    for (uint8_t& bit : c.block_mask) bit = rng() % 3 == 0;
  }
  return c;
}

const BlockKind kKinds[] = {BlockKind::local,  BlockKind::global, BlockKind::dilated,
                            BlockKind::random, BlockKind::topk,   BlockKind::mask};

TEST(CudaBlockSparse, EachKindAlone) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  for (BlockKind kind : kKinds) {
    for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
      for (bool causal : {false, true}) {
        SCOPED_TRACE(std::string(block_kind_name(kind)) + " alone, seed " + std::to_string(seed));
        if (!check_against_oracle(cuda(), block_case(kind, dtype, causal, seed), seed,
                                  &worst_ratio_seen)) {
          return;
        }
      }
    }
  }
  std::printf("block kinds alone: worst 16-bit device/oracle error ratio %.2f\n", worst_ratio_seen);
}

// With dilated patterns: the block pass merges into the passes' fp32 (out, lse) in longnet and
// joins each group's single softmax in head_groups (where out is then divided by m).
TEST(CudaBlockSparse, EachKindWithDilatedPatterns) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  for (BlockKind kind : kKinds) {
    for (Mode mode : {Mode::longnet, Mode::head_groups}) {
      for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
        for (bool causal : {false, true}) {
          ProblemConfig c = block_case(kind, dtype, causal, seed);
          c.mode = mode;
          c.patterns = {{64, 1}, {128, 2}};
          SCOPED_TRACE(std::string(block_kind_name(kind)) + " with dilated patterns, seed " +
                       std::to_string(seed));
          if (!check_against_oracle(cuda(), c, seed, &worst_ratio_seen)) return;
        }
      }
    }
  }
  std::printf("block kinds with dilated patterns: worst 16-bit ratio %.2f\n", worst_ratio_seen);
}

// Overlapping patterns: a key kept by several patterns counts once per pattern.
TEST(CudaBlockSparse, MultiplicityCounts) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (bool causal : {false, true}) {
      ProblemConfig c = block_case(BlockKind::local, dtype, causal, seed);
      c.patterns = {{203, 1}};
      c.block_patterns = {{BlockKind::local, 1, 0, 0},     {BlockKind::local, 2, 0, 0},
                          {BlockKind::dilated, 1, 2, 0},   {BlockKind::global, 1, 0, 0},
                          {BlockKind::random, 5, 0, seed}, {BlockKind::topk, 2, 0, 0},
                          {BlockKind::topk, 4, 0, 0}};
      if (!check_against_oracle(cuda(), c, seed, &worst_ratio_seen)) return;
    }
  }
}

// The random pattern's picks, which a warp makes 32 draws at a time (kernels/block_lists.cuh):
// fewer and more draws than a warp's lanes, every block (k = NB), causal rows with fewer
// candidates than k, and two seeded patterns in one row (each pattern's marks cleared before the
// next). 130 blocks of 16, fp32 (a wrong pick moves a row far beyond the tolerance).
TEST(CudaBlockSparse, RandomPicksOverManyDraws) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  for (bool causal : {false, true}) {
    for (int64_t k : {31, 33, 97, 130}) {
      ProblemConfig c = block_case(BlockKind::random, DType::f32, causal, seed);
      c.batch = 1;
      c.seqlen = 130 * 16;
      c.heads = c.heads_kv = 2;
      c.head_dim = c.head_dim_v = 32;
      c.block_patterns = {{BlockKind::random, k, 0, seed}};
      if (k == 33) c.block_patterns.push_back({BlockKind::random, 40, 0, seed + 1});
      SCOPED_TRACE("random(" + std::to_string(k) + "), causal " + std::to_string(causal) +
                   ", seed " + std::to_string(seed));
      if (!check_against_oracle(cuda(), c, seed, &worst_ratio_seen)) return;
    }
  }
}

// Longer sequences: blocks of 64 (a tensor-core tile), more than 32 blocks per row (several
// ballots), topk ranking over ~40 candidates; and varlen (each sequence its own block count).
TEST(CudaBlockSparse, LongerSequencesAndVarlen) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  for (bool varlen : {false, true}) {
    ProblemConfig c;
    c.batch = varlen ? 3 : 1;
    c.seqlen = 2500;
    if (varlen) c.seq_lengths = {2500, 900, 1700};
    c.heads = 2;
    c.heads_kv = 1;
    c.head_dim = c.head_dim_v = 64;
    c.dtype = varlen ? DType::f32 : DType::bf16;
    c.causal = varlen;
    c.patterns = {{512, 1}, {2500, 8}};
    c.block_size = 64;
    c.block_patterns = {
        {BlockKind::local, 1, 0, 0}, {BlockKind::random, 6, 0, seed}, {BlockKind::topk, 4, 0, 0}};
    SCOPED_TRACE("N 2500, blocks of 64, seed " + std::to_string(seed));
    if (!check_against_oracle(cuda(), c, seed, &worst_ratio_seen)) return;
  }
}

// The tensor-core block pass (fp16/bf16, head dims 32/64/128, blocks a multiple of 64): every
// kind alone and with dilated patterns, blocks of one and two 64-row tiles, a partial last
// block, causal, GQA, varlen.
TEST(CudaBlockSparse, TensorCoreBlockPass) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  int case_number = 0;
  for (BlockKind kind : kKinds) {
    for (int64_t d : {32, 64, 128}) {
      for (bool causal : {false, true}) {
        ProblemConfig c = block_case(kind, case_number % 2 ? DType::f16 : DType::bf16, causal,
                                     seed + static_cast<uint64_t>(case_number));
        c.head_dim = c.head_dim_v = d;
        c.block_size = case_number % 3 == 2 ? 128 : 64;
        c.seqlen = 485;  // 8 blocks of 64 (or 4 of 128), the last one partial
        // The mask's shape follows the block count.
        if (kind == BlockKind::mask) random_block_mask(c, seed);
        if (kind == BlockKind::random) c.block_patterns[0].size = 3;
        if (case_number % 4 == 1) c.patterns = {{128, 1}, {485, 4}};
        if (case_number % 4 == 3) {
          c.mode = Mode::head_groups;
          c.patterns = {{256, 2}, {485, 1}};
        }
        if (case_number % 5 == 4) {
          c.batch = 3;
          c.seq_lengths = {485, 130, 321};
        }
        ++case_number;
        SCOPED_TRACE(std::string(block_kind_name(kind)) + " on tensor cores, seed " +
                     std::to_string(seed));
        if (!check_against_oracle(cuda(), c, seed, &worst_ratio_seen)) return;
      }
    }
  }
  std::printf("tensor-core block pass: worst 16-bit ratio %.2f\n", worst_ratio_seen);
}

// On Hopper the block forward at D = 64 runs one warpgroup per CTA three to an SM (64-key tiles);
// DILATED_CUDA_HOPPER_BLOCK_CTAS=2 keeps two to an SM (128-key tiles), the shape D = 128 runs:
// that one against the oracle here, each block kind, causal and not.
TEST(CudaBlockSparse, TwoCtasPerSmAtD64) {
  DILATED_REQUIRE_BACKEND(cuda());
  setenv("DILATED_CUDA_HOPPER_BLOCK_CTAS", "2", 1);
  const uint64_t seed = test_seed();
  int case_number = 0;
  for (BlockKind kind : kKinds) {
    for (bool causal : {false, true}) {
      ProblemConfig c = block_case(kind, causal ? DType::f16 : DType::bf16, causal,
                                   seed + static_cast<uint64_t>(case_number));
      c.block_size = 64;
      c.seqlen = 485;
      if (kind == BlockKind::mask) random_block_mask(c, seed);
      if (kind == BlockKind::random) c.block_patterns[0].size = 3;
      if (case_number % 3 == 1) c.patterns = {{128, 1}, {485, 4}};
      ++case_number;
      SCOPED_TRACE(std::string(block_kind_name(kind)) + ", two CTAs per SM, seed " +
                   std::to_string(seed));
      if (!check_against_oracle(cuda(), c, seed, &worst_ratio_seen)) break;
    }
  }
  unsetenv("DILATED_CUDA_HOPPER_BLOCK_CTAS");
}

// Non-finite inputs (NaN and infinity in q, k and v, as a diverged model would pass) must not
// stop a kernel: no loop or barrier may depend on the values. Forward and backward finish with
// an ok status on every Hopper block shape (blocks of 64 and 128, D = 64 and 128) and with
// dilated patterns beside them; a hang fails by the test's timeout.
TEST(CudaBlockSparse, NonFiniteInputsFinish) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  int case_number = 0;
  for (int64_t d : {64, 128}) {
    for (int64_t block : {64, 128}) {
      for (bool causal : {false, true}) {
        ProblemConfig c;
        c.seqlen = 2048;
        c.heads = 4;
        c.heads_kv = 2;
        c.head_dim = c.head_dim_v = d;
        c.dtype = DType::bf16;
        c.causal = causal;
        c.block_size = block;
        c.patterns.clear();
        c.block_patterns = {{case_number % 2 ? BlockKind::local : BlockKind::random, 3, 0, seed}};
        if (case_number % 3 == 2) c.patterns = {{512, 1}, {2048, 4}};
        ++case_number;
        HostProblem h(c, seed);
        std::mt19937_64 rng(seed + static_cast<uint64_t>(case_number));
        const double specials[] = {std::nan(""), INFINITY, -INFINITY};
        for (const char* name : {"q", "k", "v"}) {
          std::vector<double> x = h.read(name);
          for (int i = 0; i < 64; ++i) x[rng() % x.size()] = specials[rng() % 3];
          h.set(name, x);
        }
        SCOPED_TRACE(c.describe());
        DeviceProblem device(cuda(), h);
        EXPECT_TRUE(device.run(Direction::forward).ok());
        EXPECT_TRUE(device.run(Direction::backward).ok());
        device.copy_outputs_back();
      }
    }
  }
}

// A block pass alone writes every row, nothing being cleared before it: query blocks whose mask
// row keeps nothing (rows 0 and 5 of 8) come out as zeros with lse -inf, beside rows written
// through the copy engine (whole 64-row tiles) and row by row (the partial last block); blocks of
// 64 (one warpgroup per CTA) and 128 (two), head dims 64 and 128.
TEST(CudaBlockSparse, BlockPassAloneWritesRowsThatSeeNoKey) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  for (int64_t block : {64, 128}) {
    for (int64_t d : {64, 128}) {
      for (bool causal : {false, true}) {
        ProblemConfig c = block_case(BlockKind::mask, DType::bf16, causal, seed);
        c.head_dim = c.head_dim_v = d;
        c.block_size = block;
        c.seqlen = 485;
        const int64_t nb = (c.seqlen + block - 1) / block;
        c.block_mask.assign(static_cast<size_t>(c.mask_heads * nb * nb), 0);
        for (int64_t h = 0; h < c.mask_heads; ++h) {
          for (int64_t I = 0; I < nb; ++I) {
            if (I == 0 || I == 5) continue;
            for (int64_t J = 0; J < nb; ++J) {
              c.block_mask[static_cast<size_t>((h * nb + I) * nb + J)] = J == I || rng() % 3 == 0;
            }
          }
        }
        SCOPED_TRACE("blocks of " + std::to_string(block) + ", D " + std::to_string(d) +
                     ", causal " + std::to_string(causal) + ", seed " + std::to_string(seed));
        if (!check_against_oracle(cuda(), c, seed, &worst_ratio_seen)) return;
      }
    }
  }
}

// Token grids: the kernels run on curve positions and address rows through the order; results
// land in row-major order.
TEST(CudaBlockSparse, GridsAloneAndWithBlocks) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  const int64_t grids[][2] = {{7, 9}, {16, 16}, {13, 31}};
  for (const auto& g : grids) {
    for (bool blocks : {false, true}) {
      for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
        for (bool causal : {false, true}) {
          ProblemConfig c;
          c.batch = 2;
          c.grid_height = g[0];
          c.grid_width = g[1];
          c.seqlen = g[0] * g[1];
          c.heads = 4;
          c.heads_kv = 2;
          c.head_dim = c.head_dim_v = 64;
          c.dtype = dtype;
          c.causal = causal;
          c.mode = causal ? Mode::longnet : Mode::head_groups;
          c.patterns = {{32, 1}, {64, 2}};
          c.block_size = g[0] == 16 ? 64 : 8;  // 16x16: the tensor-core block pass
          if (blocks) {
            c.block_patterns = {{BlockKind::local, 1, 0, 0}, {BlockKind::topk, 2, 0, 0}};
          }
          SCOPED_TRACE("grid " + std::to_string(g[0]) + "x" + std::to_string(g[1]) + ", seed " +
                       std::to_string(seed));
          if (!check_against_oracle(cuda(), c, seed, &worst_ratio_seen)) return;
        }
      }
    }
  }
}

// Token grids on the tensor-core dilated kernels (forward: 128-row CTAs; dq, dk/dv: 64-row
// tiles), which map curve positions to rows through the device order in their tile loaders and
// epilogues: head dims 32/64/128, fp16 and bf16, dilations above 1 (strided selection along the
// curve), partial segments and tiles, causal, GQA, both modes, other layouts. A 24 x 20 grid
// (480 tokens) puts several 128-row forward tiles into one segment.
TEST(CudaBlockSparse, GridsOnTensorCoreDilatedKernels) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  int case_number = 0;
  for (int64_t d : {32, 64, 128}) {
    for (DType dtype : {DType::f16, DType::bf16}) {
      for (bool causal : {false, true}) {
        ProblemConfig c;
        c.batch = 2;
        c.grid_height = case_number % 2 ? 24 : 17;
        c.grid_width = case_number % 2 ? 20 : 23;  // 17 x 23: odd sides, a partial last tile
        c.seqlen = c.grid_height * c.grid_width;
        c.heads = 4;
        c.heads_kv = case_number % 3 == 0 ? 1 : 2;
        c.head_dim = c.head_dim_v = d;
        c.dtype = dtype;
        c.causal = causal;
        c.mode = case_number % 4 == 3 ? Mode::head_groups : Mode::longnet;
        c.patterns = {{300, 1}, {c.seqlen, 3}};
        // head_major strides stay 16-byte aligned (tensor cores); padded rows are not, so those
        // cases check the plain kernels' row mapping on the same shapes.
        c.layout = case_number % 3 == 1
                       ? Layout::head_major
                       : (case_number % 3 == 2 ? Layout::padded : Layout::contiguous);
        if (case_number % 5 == 2) {  // with blocks: the tensor-core block pass on the curve too
          c.block_size = 64;
          c.block_patterns = {{BlockKind::local, 1, 0, 0}, {BlockKind::topk, 1, 0, 0}};
        }
        ++case_number;
        SCOPED_TRACE("grid " + std::to_string(c.grid_height) + "x" + std::to_string(c.grid_width) +
                     " on tensor cores, d " + std::to_string(d) + ", seed " + std::to_string(seed));
        if (!check_against_oracle(cuda(), c, seed, &worst_ratio_seen)) return;
      }
    }
  }
  std::printf("grids on the tensor-core dilated kernels: worst 16-bit ratio %.2f\n",
              worst_ratio_seen);
}

RandomLimits sparse_limits() {
  RandomLimits limits;
  limits.max_seqlen = 300;
  limits.max_heads = 6;
  limits.head_dims = {16, 32, 64, 128, 64};
  limits.dtypes = {DType::f32, DType::f16, DType::bf16, DType::bf16};
  limits.allow_blocks = true;
  limits.allow_grid = true;
  return limits;
}

void sweep(Mode mode, int cases) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  int done = 0;
  while (done < cases) {
    ProblemConfig config = random_config(rng, sparse_limits());
    if (config.mode != mode) continue;
    SCOPED_TRACE("run seed " + std::to_string(seed) + ", case " + std::to_string(done));
    if (!check_against_oracle(cuda(), config, rng(), &worst_ratio_seen)) return;
    ++done;
  }
  std::printf("%s with blocks and grids: %d cases, worst 16-bit ratio so far %.2f\n",
              mode_name(mode), cases, worst_ratio_seen);
}

// Which grids' curves run in aligned 8 x 8 squares (the copy engine's square boxes): Hilbert on
// power-of-two sides does; odd sides and the plain order do not. Runs without a GPU.
TEST(GridSquares, PowerOfTwoHilbertRunsInSquares) {
  Params p;
  for (const auto& [h, w, squares] : {std::tuple<int64_t, int64_t, bool>{16, 16, true},
                                      {32, 32, true},
                                      {256, 256, true},
                                      {7, 9, false},
                                      {24, 20, false},
                                      {0, 0, false}}) {
    p.grid = {h, w};
    p.seqlen = h * w;
    EXPECT_EQ(cuda::grid_runs_in_squares(p), squares) << h << " x " << w;
  }
}

// The square table the Hopper kernels place square boxes from: entry k is an aligned corner
// whose 8 x 8 square holds all 64 cells of curve positions 64 k .. 64 k + 63. Runs without a
// GPU.
TEST(GridSquares, CornerTableHoldsEachRunOfTheCurve) {
  for (const auto& [h, w] : {std::pair<int64_t, int64_t>{16, 16}, {32, 32}, {256, 256}, {64, 16}}) {
    const std::vector<int64_t> curve = hilbert_order(h, w);
    const std::vector<int32_t> corners = cuda::square_corner_cells(curve, w);
    ASSERT_EQ(corners.size(), curve.size() / 64) << h << " x " << w;
    for (size_t k = 0; k < corners.size(); ++k) {
      const int64_t x0 = corners[k] % w, y0 = corners[k] / w;
      ASSERT_EQ(x0 % 8, 0) << h << " x " << w << ", square " << k;
      ASSERT_EQ(y0 % 8, 0) << h << " x " << w << ", square " << k;
      for (size_t t = 64 * k; t < 64 * k + 64; ++t) {
        const int64_t x = curve[t] % w, y = curve[t] / w;
        ASSERT_TRUE(x >= x0 && x < x0 + 8 && y >= y0 && y < y0 + 8)
            << h << " x " << w << ", position " << t << " at (" << x << ", " << y
            << ") outside the square at (" << x0 << ", " << y0 << ")";
      }
    }
  }
}

// Curves that run in squares on the Hopper kernels: whole K/V tiles of non-causal dilation-1
// passes (forward, dq, block forward) and dk/dv's whole 64-row query tiles (with their lse and
// delta) come square by square through the copy engine, rows in another order than the curve's;
// partial tiles, tiles off a multiple of 64, dilated passes and causal cases keep cp.async.
// Segments of 128, 192 and 160 positions (a 128-row tile, then a partial one; the 160s' second
// segment starts off a square), both modes, head dims 64 and 128, blocks of 64.
TEST(CudaBlockSparse, GridSquaresThroughTheCopyEngine) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  int case_number = 0;
  for (int64_t side : {16, 32}) {
    for (int64_t d : {64, 128}) {
      for (bool causal : {false, true}) {
        ProblemConfig c;
        c.batch = 2;
        c.grid_height = c.grid_width = side;
        c.seqlen = side * side;
        c.heads = 4;
        c.heads_kv = 2;
        c.head_dim = c.head_dim_v = d;
        c.dtype = case_number % 2 ? DType::f16 : DType::bf16;
        c.causal = causal;
        c.mode = case_number % 3 == 0 ? Mode::head_groups : Mode::longnet;
        c.patterns = {{128, 1}, {c.seqlen, 2}, {192, 1}, {160, 1}};
        if (case_number % 2 == 1) {
          c.block_size = 64;
          c.block_patterns = {{BlockKind::local, 1, 0, 0}, {BlockKind::random, 2, 0, seed}};
        }
        ++case_number;
        SCOPED_TRACE("grid " + std::to_string(side) + "x" + std::to_string(side) + ", d " +
                     std::to_string(d) + (causal ? ", causal" : "") + ", seed " +
                     std::to_string(seed));
        if (!check_against_oracle(cuda(), c, seed, &worst_ratio_seen)) return;
      }
    }
  }
}

TEST(CudaBlockSparse, RandomMixesLongnet) {
  DILATED_REQUIRE_BACKEND(cuda());
  sweep(Mode::longnet, 80);
}

TEST(CudaBlockSparse, RandomMixesHeadGroups) {
  DILATED_REQUIRE_BACKEND(cuda());
  sweep(Mode::head_groups, 80);
}

TEST(CudaBlockSparse, BackwardIsBitwiseReproducible) {
  DILATED_REQUIRE_BACKEND(cuda());
  ProblemConfig c = block_case(BlockKind::random, DType::bf16, true, test_seed());
  c.patterns = {{64, 1}, {203, 2}};
  c.block_patterns.push_back({BlockKind::topk, 2, 0, 0});
  c.grid_height = 7;
  c.grid_width = 29;
  const uint64_t seed = test_seed();
  HostProblem first(c, seed), second(c, seed);
  for (HostProblem* h : {&first, &second}) {
    DeviceProblem d(cuda(), *h);
    ASSERT_TRUE(d.run(Direction::forward).ok());
    ASSERT_TRUE(d.run(Direction::backward).ok());
    d.copy_outputs_back();
  }
  for (const char* name : {"out", "dq", "dk", "dv"}) {
    EXPECT_EQ(first.buffer(name).bytes, second.buffer(name).bytes) << name;
  }
}

// Forward without an lse output (it is optional): the block pass writes out directly (blocks
// alone) or merges through the workspace's lse; the same out bit for bit as with an lse.
// Variant 4: blocks of 64 alone on the tensor-core kernels, which write every row (whole tiles
// through the copy engine on sm_90) with no lse to write.
TEST(CudaBlockSparse, ForwardWithoutLse) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  for (int variant = 0; variant < 5; ++variant) {
    ProblemConfig c =
        block_case(BlockKind::random, variant % 2 || variant == 4 ? DType::bf16 : DType::f32,
                   variant == 2 || variant == 3, seed);
    if (variant == 1 || variant == 3) c.patterns = {{64, 1}, {203, 2}};
    if (variant == 2 || variant == 3) {
      c.grid_height = 7;
      c.grid_width = 29;
    }
    if (variant == 4) {
      c.block_size = 64;
      c.seqlen = 485;
    }
    HostProblem with_lse(c, seed), without_lse(c, seed);
    DeviceProblem a(cuda(), with_lse);
    ASSERT_TRUE(a.run(Direction::forward).ok());
    a.copy_outputs_back();
    DeviceProblem b(cuda(), without_lse);
    Params p = b.params(Direction::forward);
    p.lse = nullptr;
    const int64_t need = cuda().workspace_bytes(p, Direction::forward);
    void* workspace = nullptr;
    ASSERT_TRUE(cuda().allocate(need, &workspace).ok());
    p.workspace = workspace;
    p.workspace_bytes = need;
    const Status s = forward(p, {}, "cuda");
    EXPECT_TRUE(s.ok()) << s.message();
    EXPECT_TRUE(cuda().synchronize({}).ok());
    b.copy_outputs_back();
    cuda().release(workspace);
    EXPECT_EQ(with_lse.read("out"), without_lse.read("out"))
        << c.describe() << " seed=" << seed << " variant " << variant;
  }
}

// A small set for compute-sanitizer (memcheck, racecheck): every block kernel (rules, random,
// mask, topk, attention forward/dq/dkdv on both paths), on a token grid (rows through the order).
TEST(CudaBlockSparseSanitizer, EveryKernelOnce) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  for (DType dtype : {DType::f32, DType::bf16}) {
    ProblemConfig c = block_case(BlockKind::mask, dtype, true, seed);
    c.patterns = {{64, 1}};
    c.block_patterns.push_back({BlockKind::local, 1, 0, 0});
    c.block_patterns.push_back({BlockKind::random, 3, 0, seed});
    c.block_patterns.push_back({BlockKind::topk, 2, 0, 0});
    c.grid_height = 7;
    c.grid_width = 29;
    if (!check_against_oracle(cuda(), c, seed, &worst_ratio_seen)) return;
  }
  // The tensor-core block pass: blocks of 64, a partial last one, GQA, causal; on the grid
  // (its loaders locate rows through the order a tile ahead).
  ProblemConfig c = block_case(BlockKind::random, DType::bf16, true, seed);
  c.block_size = 64;
  c.grid_height = 7;
  c.grid_width = 29;
  c.patterns = {{64, 1}};
  c.block_patterns = {
      {BlockKind::local, 1, 0, 0}, {BlockKind::random, 2, 0, seed}, {BlockKind::topk, 1, 0, 0}};
  if (!check_against_oracle(cuda(), c, seed, &worst_ratio_seen)) return;
  // Without the grid, whole key tiles come through the copy engine on Hopper (block
  // forward and dq; query tiles of dk/dv), the partial last block with cp.async; D = 128 for
  // the other tile shapes (one-part stages; dk/dv's two turns over the same keys).
  c.grid_height = c.grid_width = 0;
  c.seqlen = 203;
  c.head_dim = c.head_dim_v = 128;
  c.dtype = DType::f16;
  if (!check_against_oracle(cuda(), c, seed, &worst_ratio_seen)) return;
  // Blocks of 128: on Hopper two warpgroups share the block kernels' stages (the forward's
  // taking turns).
  c.block_size = 128;
  c.seqlen = 331;
  c.head_dim = c.head_dim_v = 64;
  if (!check_against_oracle(cuda(), c, seed, &worst_ratio_seen)) return;
  // Local and global patterns over blocks of 64 at D = 128: on Hopper two query blocks per CTA,
  // their warpgroups sharing the stages of the key blocks either keeps.
  c.block_size = 64;
  c.head_dim = c.head_dim_v = 128;
  c.block_patterns = {{BlockKind::local, 2, 0, 0}, {BlockKind::global, 1, 0, 0}};
  check_against_oracle(cuda(), c, seed, &worst_ratio_seen);
}

// The backend takes block patterns and grids now, and declines what its block pass cannot
// hold with a reason that names the way out.
TEST(CudaBlockSparse, SupportAndLimits) {
  ProblemConfig c = block_case(BlockKind::topk, DType::bf16, false, 1);
  c.grid_height = 7;
  c.grid_width = 29;
  const HostProblem problem(c, 1);
  Params p = problem.params();
  p.device = Device::cuda;  // the reasons only: nothing runs
  for (Direction dir : {Direction::forward, Direction::backward}) {
    EXPECT_EQ(cuda().unsupported_reason(p, dir), "");
  }
  p.grid = TokenGrid{};
  p.seqlen = 16 * (16384 + 1);  // one block more than topk ranks
  EXPECT_NE(cuda().unsupported_reason(p, Direction::forward).find("block_size"), std::string::npos);
  p.blocks.patterns[0] = {BlockKind::local, 1, 0, 0};
  p.seqlen = int64_t{1} << 22;  // 2^18 blocks: a 2^36-byte matrix
  p.blocks.block_size = 16;
  EXPECT_NE(cuda().unsupported_reason(p, Direction::forward).find("4 GiB"), std::string::npos);
}

// In device memory, `auto` picks the CUDA backend for block patterns and grids.
TEST(CudaBlockSparse, AutoPicksCudaForDeviceTensors) {
  DILATED_REQUIRE_BACKEND(cuda());
  ProblemConfig c = block_case(BlockKind::local, DType::f32, false, 1);
  c.grid_height = 7;
  c.grid_width = 29;
  const HostProblem problem(c, 1);
  Params p = problem.params();
  p.device = Device::cuda;  // validation and selection only: nothing runs
  const Backend* chosen = nullptr;
  ASSERT_TRUE(select_backend(p, Direction::forward, "auto", &chosen).ok());
  EXPECT_STREQ(chosen->name(), "cuda");
}

}  // namespace
}  // namespace dilated::testing
