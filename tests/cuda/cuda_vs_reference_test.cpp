// The CUDA backend against the oracle: random problems per mode, forward and backward, outputs
// poisoned with NaN before every run (DESIGN 5).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "cuda/device_problem.hpp"
#include "cuda/oracle_check.hpp"

namespace dilated::testing {
namespace {

const Backend& cuda() {
  return *find_backend("cuda");
}

// Largest device / oracle error ratio of the 16-bit cases run so far (printed by the sweeps).
double worst_ratio_seen = 0;

// The shared check (oracle_check.hpp) on the CUDA backend, tracking the worst ratio.
bool check_against_oracle(const ProblemConfig& config, uint64_t seed) {
  return testing::check_against_oracle(cuda(), config, seed, &worst_ratio_seen);
}

RandomLimits gpu_limits() {
  RandomLimits limits;
  limits.max_seqlen = 300;
  limits.max_heads = 6;
  limits.head_dims = {16, 32, 64, 128, 64, 128};
  limits.dtypes = {DType::f32, DType::f16, DType::bf16, DType::bf16};
  return limits;
}

void sweep(Mode mode, int cases) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  int done = 0;
  while (done < cases) {
    ProblemConfig config = random_config(rng, gpu_limits());
    if (config.mode != mode) continue;
    SCOPED_TRACE("run seed " + std::to_string(seed) + ", case " + std::to_string(done));
    if (!check_against_oracle(config, rng())) return;
    ++done;
  }
  std::printf("%s: %d cases, worst 16-bit device/oracle error ratio so far %.2f\n", mode_name(mode),
              cases, worst_ratio_seen);
}

TEST(CudaVsReference, LongnetRandom) {
  DILATED_REQUIRE_BACKEND(cuda());
  sweep(Mode::longnet, 100);
}

TEST(CudaVsReference, HeadGroupsRandom) {
  DILATED_REQUIRE_BACKEND(cuda());
  sweep(Mode::head_groups, 100);
}

// On a Hopper card the forward and backward run the sm_90a kernels; the portable tensor-core
// kernels (the path of every other card) are checked there too. Each ctest test is its own process,
// so the variable does not reach other tests.
TEST(CudaVsReference, PortableForwardWhereHopperWouldRun) {
  DILATED_REQUIRE_BACKEND(cuda());
  setenv("DILATED_CUDA_HOPPER", "0", 1);
  sweep(Mode::longnet, 40);
  sweep(Mode::head_groups, 40);
  unsetenv("DILATED_CUDA_HOPPER");
}

// Sizes where the tensor-core kernels run several key and query tiles, causal and not.
TEST(CudaVsReference, TensorCoreTiles) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  for (int64_t d : {32, 64, 128}) {
    for (DType dtype : {DType::f16, DType::bf16}) {
      for (bool causal : {false, true}) {
        ProblemConfig c;
        c.batch = 2;
        c.seqlen = 700;
        c.heads = 4;
        c.heads_kv = 2;
        c.head_dim = c.head_dim_v = d;
        c.dtype = dtype;
        c.causal = causal;
        c.patterns = {{256, 1}, {512, 2}, {700, 3}};
        c.mode = causal ? Mode::longnet : Mode::head_groups;
        if (!check_against_oracle(c, seed)) return;
      }
    }
  }
}

// `c` against the oracle, then its forward bitwise against the same run with the environment
// variables `knobs` (name, value) set.
void expect_forward_bitwise_under(const ProblemConfig& c, uint64_t seed,
                                  const std::vector<std::pair<const char*, const char*>>& knobs) {
  if (!check_against_oracle(c, seed)) return;
  HostProblem plain(c, seed), knobbed(c, seed);
  for (HostProblem* h : {&plain, &knobbed}) {
    if (h == &knobbed) {
      for (const auto& [name, value] : knobs) setenv(name, value, 1);
    }
    DeviceProblem device(cuda(), *h);
    ASSERT_TRUE(device.run(Direction::forward).ok());
    device.copy_outputs_back();
    for (const auto& knob : knobs) unsetenv(knob.first);
  }
  EXPECT_EQ(plain.buffer("out").bytes, knobbed.buffer("out").bytes);
  ASSERT_EQ(plain.lse_buffer().size(), knobbed.lse_buffer().size());
  EXPECT_EQ(0, std::memcmp(plain.lse_buffer().data(), knobbed.lse_buffer().data(),
                           knobbed.lse_buffer().size() * sizeof(float)));
}

// The same against DILATED_CUDA_TMA_QUERY=0 with DILATED_CUDA_TMA_STORE=0 (every row by the
// threads).
void expect_copy_engine_rows_match(const ProblemConfig& c, uint64_t seed) {
  expect_forward_bitwise_under(c, seed,
                               {{"DILATED_CUDA_TMA_STORE", "0"}, {"DILATED_CUDA_TMA_QUERY", "0"}});
}

// head_groups writes out directly; on Hopper the forward loads a whole query tile and stores a
// warpgroup's 64 rows through the copy engine where all of them are written (N a multiple of the
// dilation), and copies and stores row by row elsewhere (here each partial last tile, and the
// second half of some). Both ways give the same values: against the oracle, and bitwise against
// DILATED_CUDA_TMA_QUERY=0 with DILATED_CUDA_TMA_STORE=0 (every row by the threads).
TEST(CudaVsReference, ForwardRowsThroughTheCopyEngine) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  for (int64_t d : {64, 128}) {
    for (DType dtype : {DType::f16, DType::bf16}) {
      for (bool causal : {false, true}) {
        ProblemConfig c;
        c.batch = 2;
        c.seqlen = 1000;
        c.heads = 6;
        c.heads_kv = 3;
        c.head_dim = c.head_dim_v = d;
        c.dtype = dtype;
        c.causal = causal;
        c.patterns = {{512, 1}, {256, 2}, {1000, 4}};
        c.mode = Mode::head_groups;
        SCOPED_TRACE("d " + std::to_string(d) + (causal ? ", causal" : ""));
        expect_copy_engine_rows_match(c, seed);
      }
    }
  }
}

// Along a Hilbert curve that runs in 8 x 8 squares, a whole query tile of two aligned squares
// comes square by square (rows in the squares' order) and its output goes back the same way;
// segments of 320 positions leave partial and unaligned tiles to the thread copies.
TEST(CudaVsReference, ForwardSquaresThroughTheCopyEngine) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  for (int64_t d : {64, 128}) {
    ProblemConfig c;
    c.batch = 2;
    c.grid_height = c.grid_width = 32;
    c.seqlen = 1024;
    c.heads = 6;
    c.heads_kv = 3;
    c.head_dim = c.head_dim_v = d;
    c.dtype = d == 64 ? DType::f16 : DType::bf16;
    c.patterns = {{320, 1}, {512, 1}, {1024, 1}};
    c.mode = Mode::head_groups;
    SCOPED_TRACE("d " + std::to_string(d));
    expect_copy_engine_rows_match(c, seed);
  }
}

// At D = 64 the Hopper forward runs three consumer warpgroups (192 query rows a CTA); a row's
// arithmetic does not depend on which warpgroup takes it, so the forward must match the two-group
// shape (DILATED_CUDA_HOPPER_FORWARD_GROUPS=2) bit for bit, besides the oracle. Segments of 1000,
// 320 and 200 selected rows leave CTAs whose last one or two warpgroups hold partial rows or
// none; the grid cases take the curve's squares (three to a query tile).
TEST(CudaVsReference, ForwardThreeWarpgroupsMatchTwo) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  for (int variant = 0; variant < 5; ++variant) {
    ProblemConfig c;
    c.batch = 2;
    c.seqlen = 1000;
    c.heads = 6;
    c.heads_kv = 2;
    c.head_dim = c.head_dim_v = 64;
    c.dtype = variant % 2 == 0 ? DType::bf16 : DType::f16;
    c.causal = variant == 1 || variant == 3;
    c.patterns = {{1000, 1}, {640, 2}, {200, 1}};
    c.mode = variant < 2 ? Mode::head_groups : Mode::longnet;
    if (variant == 4) {
      c.grid_height = c.grid_width = 32;
      c.seqlen = 1024;
      c.patterns = {{320, 1}, {1024, 1}, {576, 1}};
      c.mode = Mode::head_groups;
    }
    SCOPED_TRACE("variant " + std::to_string(variant));
    expect_forward_bitwise_under(c, seed, {{"DILATED_CUDA_HOPPER_FORWARD_GROUPS", "2"}});
  }
}

// Without a causal mask, where a pass's rows see at most 1024 keys (all passes here), the
// forward runs persistent CTAs, one an SM, each taking every gridDim-th query tile of a pass
// through one K/V ring and two Q tiles (one at D = 128). Passes of more tiles than a GPU has SMs
// (132 on an H100) give each CTA several, among them tiles with idle warpgroups, tiles whose Q the
// threads copy, and (varlen) tiles past a short sequence that have no rows. Against the oracle, and
// bitwise against a CTA a tile.
TEST(CudaVsReference, ForwardPersistentMatchesTileACta) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  for (int variant = 0; variant < 3; ++variant) {
    ProblemConfig c;
    c.head_dim = c.head_dim_v = variant == 2 ? 128 : 64;
    // Variant 0 (and 2, at D = 128): 144 tiles in the first pass, 64 of them past the shorter
    // sequence.
    if (variant != 1) {
      c.seq_lengths = {3000, 1700};
      c.heads = 4;
      c.heads_kv = 2;
      c.dtype = DType::bf16;
      c.patterns = {{512, 1}, {1024, 2}};
      c.mode = Mode::longnet;
    } else {  // 192 tiles in the first pattern's pass
      c.batch = 3;
      c.seqlen = 2048;
      c.heads = c.heads_kv = 8;
      c.dtype = DType::f16;
      c.patterns = {{256, 1}, {2048, 2}};
      c.mode = Mode::head_groups;
    }
    SCOPED_TRACE("variant " + std::to_string(variant));
    expect_forward_bitwise_under(c, seed, {{"DILATED_CUDA_HOPPER_PERSISTENT", "0"}});
  }
}

// Segments of many key tiles, so the double-buffered tiles are reused several times over.
TEST(CudaVsReference, LongSegments) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  for (int64_t d : {64, 128}) {
    for (bool causal : {false, true}) {
      ProblemConfig c;
      c.seqlen = 1500;
      c.heads = 2;
      c.heads_kv = 1;
      c.head_dim = c.head_dim_v = d;
      c.dtype = d == 64 ? DType::f16 : DType::bf16;
      c.causal = causal;
      c.patterns = {{1500, 1}, {1024, 2}};
      c.mode = Mode::longnet;
      if (!check_against_oracle(c, seed)) return;
    }
  }
}

// longnet with a dilation-1 pattern and one query head per kv head: that pattern's pass runs
// last and writes the 16-bit out, dq, dk and dv from the fp32 accumulators (converting_pass),
// so it must write every row (the outputs are poisoned with NaN), under causal masks, partial
// segments and varlen.
// The converting pass (every row) runs last, and nothing is cleared before the passes: each
// pass stores the rows no earlier pass selected. The second pattern list's rows are not nested
// (dilation 3 against 2, segments not multiples of each other, the other head offsets), so
// each pass meets rows that earlier passes did and did not write. DeviceProblem fills the
// workspace with NaN first: a read of an unwritten accumulator row fails the comparison.
TEST(CudaVsReference, LastPassWritesOutAndGradients) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  const std::vector<std::vector<Pattern>> pattern_lists = {{{256, 2}, {300, 1}, {700, 4}},
                                                           {{200, 3}, {128, 2}, {96, 1}}};
  for (size_t list = 0; list < pattern_lists.size(); ++list) {
    for (int64_t d : {64, 128}) {
      for (bool causal : {false, true}) {
        for (bool varlen : {false, true}) {
          ProblemConfig c;
          c.batch = 2;
          c.seqlen = 700;
          c.heads = c.heads_kv = 3;
          c.head_dim = c.head_dim_v = d;
          c.dtype = causal ? DType::f16 : DType::bf16;
          c.causal = causal;
          c.patterns = pattern_lists[list];
          c.mode = Mode::longnet;
          c.head_offsets = list == 0 ? HeadOffsets::paper : HeadOffsets::grouped;
          if (varlen) c.seq_lengths = {333, 700};
          if (!check_against_oracle(c, seed)) return;
        }
      }
    }
  }
}

TEST(CudaVsReference, BackwardIsBitwiseReproducible) {
  DILATED_REQUIRE_BACKEND(cuda());
  ProblemConfig c;
  c.seqlen = 500;
  c.heads = 4;
  c.heads_kv = 1;
  c.head_dim = c.head_dim_v = 64;
  c.dtype = DType::bf16;
  c.patterns = {{128, 1}, {256, 2}, {500, 4}};
  const uint64_t seed = test_seed();
  HostProblem first(c, seed), second(c, seed);
  for (HostProblem* h : {&first, &second}) {
    DeviceProblem d(cuda(), *h);
    ASSERT_TRUE(d.run(Direction::forward).ok());
    ASSERT_TRUE(d.run(Direction::backward).ok());
    d.copy_outputs_back();
  }
  for (const char* name : {"dq", "dk", "dv"}) {
    EXPECT_EQ(first.buffer(name).bytes, second.buffer(name).bytes) << name;
  }
}

// The kernels divide positions, segment lengths and head counts in 32 bits (small_quotient):
// the backend declines what would not fit, naming the limit.
TEST(CudaVsReference, DeclinesPositionsBeyond32Bits) {
  ProblemConfig c;
  c.seqlen = 256;
  c.patterns = {{128, 1}, {256, 2}};
  const HostProblem problem(c, 1);
  Params p = problem.params();
  p.device = Device::cuda;  // the reasons only: nothing runs
  EXPECT_EQ(cuda().unsupported_reason(p, Direction::forward), "");
  p.patterns[1].segment = int64_t{1} << 31;
  EXPECT_NE(cuda().unsupported_reason(p, Direction::forward).find("pattern 1"), std::string::npos);
  p.patterns[1].segment = 256;
  p.seqlen = int64_t{1} << 31;
  EXPECT_NE(cuda().unsupported_reason(p, Direction::backward).find("2^31"), std::string::npos);
}

TEST(CudaVsReference, MissingWorkspaceIsAnError) {
  DILATED_REQUIRE_BACKEND(cuda());
  ProblemConfig c;
  c.dtype = DType::bf16;
  c.patterns = {{16, 1}, {32, 2}};
  HostProblem host(c, test_seed());
  DeviceProblem d(cuda(), host);
  Params p = d.params(Direction::backward);
  p.workspace = nullptr;
  p.workspace_bytes = 0;
  const Status s = backward(p, {}, "cuda");
  EXPECT_EQ(s.code(), StatusCode::invalid_argument);
  EXPECT_NE(s.message().find("workspace_bytes"), std::string::npos) << s.message();
}

// A small set for compute-sanitizer (memcheck, racecheck): every kernel, both paths.
TEST(CudaSanitizerSubset, EveryKernelOnce) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (Mode mode : {Mode::longnet, Mode::head_groups}) {
      ProblemConfig c;
      c.batch = 2;
      c.seqlen = 200;
      c.heads = 4;
      c.heads_kv = 2;
      c.head_dim = c.head_dim_v = 64;
      c.dtype = dtype;
      c.mode = mode;
      c.causal = mode == Mode::longnet;
      c.patterns = {{64, 1}, {128, 2}};
      if (!check_against_oracle(c, seed)) return;
    }
  }
}

// Segments of 8 key tiles of 128 (and 16 query tiles of 64): every stage ring of the forward
// (five stages at D = 64), dq and dk/dv kernels goes round, so that the sanitizers see a stage
// reused; 192-row query tiles leave the last one a warpgroup without rows.
TEST(CudaSanitizerSubset, StageRingsGoRound) {
  DILATED_REQUIRE_BACKEND(cuda());
  ProblemConfig c;
  c.seqlen = 1024;
  c.heads = c.heads_kv = 2;
  c.head_dim = c.head_dim_v = 64;
  c.dtype = DType::f16;
  c.mode = Mode::head_groups;
  c.patterns = {{1024, 1}, {1024, 2}};
  check_against_oracle(c, test_seed());
}

// More query tiles (256) than an H100 or H200 has SMs, so that the persistent forward's CTAs
// take several: at D = 64 the two Q tiles alternate; at D = 128 the one Q tile is loaded after
// the next tile's first K/V tiles, released after the epilogue (one pattern: the pass writes
// out through the copy engine) or after the last S (two patterns: the passes merge into fp32
// rows); the K/V ring runs on from one tile to the next.
TEST(CudaSanitizerSubset, PersistentForwardTakesSeveralTiles) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  for (int variant = 0; variant < 3; ++variant) {
    const int64_t d = variant == 0 ? 64 : 128;
    ProblemConfig c;
    c.batch = d == 64 ? 2 : 4;
    c.seqlen = 2048;
    c.heads = 8;
    c.heads_kv = 4;
    c.head_dim = c.head_dim_v = d;
    c.dtype = DType::bf16;
    c.mode = Mode::longnet;
    c.patterns = {{d == 64 ? 256 : 512, 1}};
    if (variant == 2) c.patterns.push_back({1024, 2});
    SCOPED_TRACE("variant " + std::to_string(variant));
    if (!check_against_oracle(c, seed)) return;
  }
}

}  // namespace
}  // namespace dilated::testing
