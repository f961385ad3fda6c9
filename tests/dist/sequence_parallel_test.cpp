// dilated::dist::forward/backward with ranks as threads of this process (ThreadGroup): every
// rank's shard of out, lse, dq, dk, dv equals the single-device oracle. The same checks run
// across processes under mpirun in mpi_test_main.cpp.
//
// Tolerance, fp32: a rank's output is the union softmax of its shard's own keys (one windowed
// call) and of each segment's remote keys (one call per unit), merged with the lse rule; each
// part is within float32_tolerance (compare.hpp) of exact, and a merge is a convex
// combination computed in double, rounded to float once per merge. A gradient row is a sum of
// at most P partial sums (one per rank whose queries see the key), each within the single-call
// tolerance at the scale of its terms. So 4x the single-call tolerance for P <= 4.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <random>
#include <string>

#include "dist/shard_problem.hpp"
#include "dist/thread_group.hpp"

namespace dilated::testing {
namespace {

struct RunResult {
  std::vector<std::string> failures;  // one per rank, "" when its shard matches
  std::vector<std::string> statuses;  // the forward/backward messages per rank
};

// Runs the whole problem on `cuts.size() - 1` thread ranks through `backend`, forward then
// backward, and compares each rank's rows with `oracle`. With backward_from_oracle the backward
// reads the oracle's out and lse (which `whole` holds), not the sharded forward's.
RunResult run_sharded(HostProblem& whole, const Outputs& oracle, const std::vector<int64_t>& cuts,
                      const std::string& backend,
                      const std::function<double(const std::string&)>& tolerance,
                      bool backward_from_oracle = false) {
  const int ranks = static_cast<int>(cuts.size()) - 1;
  RunResult result;
  result.failures.resize(static_cast<size_t>(ranks));
  result.statuses.resize(static_cast<size_t>(ranks));
  ThreadGroup group(ranks, 30.0);
  group.run([&](dist::Communicator& comm) {
    const auto r = static_cast<size_t>(comm.rank());
    Shard shard(whole, cuts[r], cuts[r + 1]);
    dist::Options options;
    options.backend = backend;
    Status s = dist::forward(shard.params(), shard.info(), comm, options);
    std::string failures = s.ok() ? compare_shard(shard, oracle, whole.config(), cuts[r],
                                                  cuts[r + 1], false, tolerance)
                                  : "";
    if (backward_from_oracle) shard.take_outputs_of(whole);
    if (s.ok()) s = dist::backward(shard.params(), shard.info(), comm, options);
    result.statuses[r] = s.message();
    if (!s.ok()) {
      result.failures[r] = "status: " + s.message();
      return;
    }
    result.failures[r] = failures + compare_shard(shard, oracle, whole.config(), cuts[r],
                                                  cuts[r + 1], true, tolerance);
  });
  return result;
}

void expect_shards_match(const std::string& backend, int cases, int64_t max_seqlen) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  for (int i = 0; i < cases && !::testing::Test::HasFailure(); ++i) {
    const int ranks = static_cast<int>(std::uniform_int_distribution<int>(2, 4)(rng));
    const ProblemConfig config = random_dist_config(rng, ranks, max_seqlen);
    const bool uneven = std::uniform_int_distribution<int>(0, 1)(rng) == 1;
    const std::vector<int64_t> cuts = shard_cuts(rng, config.seqlen, ranks, uneven);
    std::string where = "seed " + std::to_string(seed) + " (DILATED_TEST_SEED), case " +
                        std::to_string(i) + ": P=" + std::to_string(ranks) + " cuts";
    for (int64_t c : cuts) where += " " + std::to_string(c);
    SCOPED_TRACE(where + ": " + config.describe());
    HostProblem whole(config, rng());
    const Outputs oracle = oracle_outputs(whole);
    const double tol = 4 * float32_tolerance(config);
    const RunResult result =
        run_sharded(whole, oracle, cuts, backend, [tol](const std::string&) { return tol; });
    for (int r = 0; r < ranks; ++r) {
      EXPECT_EQ(result.failures[static_cast<size_t>(r)], "") << "rank " << r;
    }
  }
}

// 16-bit inputs: the shards compute in float32 from the 16-bit values and round once, as the
// oracle does from double. So each output is within one 16-bit unit in the last place of the
// oracle's 16-bit run (two roundings of nearly the same number, at most half a unit each),
// relative to the largest element (2^-7 bf16, 2^-10 fp16), plus the float32 tolerance of the
// parts it sums. lse is float32 in both. The backward reads the oracle's 16-bit out, as the
// oracle's does: delta = <dout, out> from a rounded out differs by more than that between two
// out tensors that are each correctly rounded.
TEST(SequenceParallelThreads, SixteenBitInputs) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 16 && !HasFailure(); ++i) {
    const int ranks = static_cast<int>(std::uniform_int_distribution<int>(2, 4)(rng));
    const DType dtype = i % 2 ? DType::bf16 : DType::f16;
    const ProblemConfig config = random_dist_config(rng, ranks, 80, {dtype});
    const std::vector<int64_t> cuts = shard_cuts(rng, config.seqlen, ranks, i % 4 < 2);
    SCOPED_TRACE("seed " + std::to_string(seed) + ", case " + std::to_string(i) +
                 ": P=" + std::to_string(ranks) + ": " + config.describe());
    HostProblem whole(config, rng());
    const Outputs oracle16 = oracle_outputs(whole);
    const double f32_tol = 4 * float32_tolerance(config);
    const double unit = dtype == DType::bf16 ? 0x1p-7 : 0x1p-10;
    const RunResult result = run_sharded(
        whole, oracle16, cuts, "cpu",
        [&](const std::string& name) { return (name == "lse" ? 0.0 : unit) + f32_tol; }, true);
    for (int r = 0; r < ranks; ++r) {
      EXPECT_EQ(result.failures[static_cast<size_t>(r)], "") << "rank " << r;
    }
  }
}

TEST(SequenceParallelThreads, ShardsEqualTheOracleOnTheCpuBackend) {
  expect_shards_match("cpu", 60, 96);
}

TEST(SequenceParallelThreads, ShardsEqualTheOracleOnTheReferenceBackend) {
  expect_shards_match("reference", 25, 48);
}

// Longer sequences: several key tiles per remote unit, shards cutting many segments.
TEST(SequenceParallelThreads, LongerSequencesOnTheCpuBackend) {
  expect_shards_match("cpu", 6, 700);
}

// LongNet's pattern w = N, r = N / 64 spans every rank: each rank receives the other ranks'
// 64 - 64/P selected rows per kv head and offset, never N. A pattern whose segments lie
// inside the shards moves nothing.
TEST(SequenceParallelThreads, ExchangesOnlyTheSelectedRowsOfSpanningSegments) {
  ProblemConfig config;
  config.seqlen = 4096;
  config.heads = 4;
  config.heads_kv = 2;  // GQA: heads 0, 1 read kv head 0; heads 2, 3 kv head 1
  config.head_dim = config.head_dim_v = 8;
  config.patterns = {{1024, 2}, {4096, 64}};
  for (bool causal : {false, true}) {
    config.causal = causal;
    SCOPED_TRACE(config.describe());
    HostProblem whole(config, test_seed());
    const Outputs oracle = oracle_outputs(whole);
    std::vector<dist::Stats> stats(4);
    std::vector<std::string> failures(4);
    ThreadGroup(4, 30.0).run([&](dist::Communicator& comm) {
      const int r = comm.rank();
      Shard shard(whole, r * 1024, (r + 1) * 1024);
      dist::Options options;
      options.backend = "cpu";
      options.stats = &stats[static_cast<size_t>(r)];
      Status s = dist::forward(shard.params(), shard.info(), comm, options);
      failures[static_cast<size_t>(r)] =
          s.ok() ? compare_shard(shard, oracle, config, r * 1024, (r + 1) * 1024, false)
                 : s.message();
    });
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(failures[static_cast<size_t>(r)], "") << "rank " << r;
      // Offsets 0..3 of r = 64 (paper rule j % 64), one class per (kv head, offset) = per
      // head here; 16 selected rows per rank and class; causal: from earlier ranks only.
      const int64_t senders = causal ? r : 3;
      EXPECT_EQ(stats[static_cast<size_t>(r)].remote_rows, 4 * 16 * senders) << "rank " << r;
      const int64_t row_bytes = 2 * 8 * 4;  // k and v rows, float32
      EXPECT_LE(stats[static_cast<size_t>(r)].bytes_received,
                4 * 16 * senders * row_bytes + 4096)  // + the configuration records
          << "rank " << r;
    }
  }
}

// Every rank checks the same configuration first: a rank that differs makes all of them fail
// with one message that names it; so does a rank with invalid arguments of its own.
TEST(SequenceParallelThreads, MismatchedConfigurationFailsOnEveryRankWithOneMessage) {
  ProblemConfig config;
  config.seqlen = 60;
  config.patterns = {{20, 2}, {60, 4}};
  HostProblem whole(config, test_seed());
  struct Variant {
    const char* name;
    std::function<void(Params&, dist::ShardInfo&)> change;  // applied on rank 2
    const char* expect;
  };
  const Variant variants[] = {
      {"dilation", [](Params& p, dist::ShardInfo&) { p.patterns[1].dilation = 3; },
       "dist: the ranks disagree on the call: rank 0 has {forward N=60"},
      {"causal", [](Params& p, dist::ShardInfo&) { p.causal = true; },
       "rank 2 has {forward N=60 B=1 H=2 Hkv=2 D=16 Dv=16 dtype=fp32 mode=longnet offsets=paper "
       "causal=1"},
      {"length", [](Params&, dist::ShardInfo& s) { s.global_seqlen = 61; },
       "rank 2 has {forward N=61"},
      {"own argument", [](Params& p, dist::ShardInfo&) { p.heads_kv = 0; },
       "dist: rank 2: heads_kv = 0: expected >= 1"},
      {"shard layout", [](Params&, dist::ShardInfo& s) { s.offset -= 1; },
       "dist: shard of rank 2 starts at position 39: expected 40"},
  };
  for (const Variant& v : variants) {
    SCOPED_TRACE(v.name);
    std::vector<Status> statuses(3);
    ThreadGroup(3, 30.0).run([&](dist::Communicator& comm) {
      const int r = comm.rank();
      Shard shard(whole, r * 20, (r + 1) * 20);
      Params p = shard.params();
      dist::ShardInfo info = shard.info();
      if (r == 2) v.change(p, info);
      statuses[static_cast<size_t>(r)] = dist::forward(p, info, comm, {});
    });
    for (int r = 0; r < 3; ++r) {
      EXPECT_EQ(statuses[static_cast<size_t>(r)].code(), StatusCode::invalid_argument);
      EXPECT_EQ(statuses[static_cast<size_t>(r)].message(), statuses[0].message()) << "rank " << r;
    }
    EXPECT_NE(statuses[0].message().find(v.expect), std::string::npos) << statuses[0].message();
  }
}

// A rank that never arrives: the others fail with a runtime error once the communicator's
// timeout has passed, and do not hang.
TEST(SequenceParallelThreads, AMissingRankMakesTheOthersFailAfterTheTimeout) {
  ProblemConfig config;
  config.seqlen = 30;
  config.patterns = {{30, 3}};
  HostProblem whole(config, test_seed());
  std::vector<Status> statuses(3);
  std::vector<double> seconds(3, 0.0);
  ThreadGroup(3, 0.5).run([&](dist::Communicator& comm) {
    const int r = comm.rank();
    if (r == 1) return;  // leaves early
    Shard shard(whole, r * 10, (r + 1) * 10);
    const auto start = std::chrono::steady_clock::now();
    statuses[static_cast<size_t>(r)] = dist::forward(shard.params(), shard.info(), comm, {});
    seconds[static_cast<size_t>(r)] =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  });
  for (int r : {0, 2}) {
    EXPECT_EQ(statuses[static_cast<size_t>(r)].code(), StatusCode::runtime_error) << r;
    EXPECT_NE(statuses[static_cast<size_t>(r)].message().find("waited more than 0.5"),
              std::string::npos)
        << statuses[static_cast<size_t>(r)].message();
    EXPECT_GE(seconds[static_cast<size_t>(r)], 0.45);
    EXPECT_LT(seconds[static_cast<size_t>(r)], 5.0);
  }
}

}  // namespace
}  // namespace dilated::testing
