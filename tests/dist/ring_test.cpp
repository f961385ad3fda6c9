// The ring variant (Options::exchange_budget_bytes): when the one-shot exchange would give a
// rank more k/v bytes than the budget, P - 1 steps each exchange with one peer. Same results
// as the oracle (tolerance of sequence_parallel_test.cpp: 4x one call's, P <= 4; the ring only
// changes the order in which the lse merges and gradient sums happen), one peer's rows held at
// a time, and every rank must set the same budget.
#include <gtest/gtest.h>

#include <random>

#include "dist/shard_problem.hpp"
#include "dist/thread_group.hpp"

namespace dilated::testing {
namespace {

struct RingRun {
  std::vector<std::string> failures;
  std::vector<dist::Stats> forward, backward;
};

RingRun run(HostProblem& whole, const Outputs& oracle, const std::vector<int64_t>& cuts,
            int64_t budget) {
  const int ranks = static_cast<int>(cuts.size()) - 1;
  RingRun result;
  result.failures.resize(static_cast<size_t>(ranks));
  result.forward.resize(static_cast<size_t>(ranks));
  result.backward.resize(static_cast<size_t>(ranks));
  const double tol = 4 * float32_tolerance(whole.config());
  ThreadGroup(ranks, 30.0).run([&](dist::Communicator& comm) {
    const auto r = static_cast<size_t>(comm.rank());
    Shard shard(whole, cuts[r], cuts[r + 1]);
    dist::Options options;
    options.backend = "cpu";
    options.exchange_budget_bytes = budget;
    options.stats = &result.forward[r];
    Status s = dist::forward(shard.params(), shard.info(), comm, options);
    auto same = [tol](const std::string&) { return tol; };
    std::string f =
        s.ok() ? compare_shard(shard, oracle, whole.config(), cuts[r], cuts[r + 1], false, same)
               : "forward: " + s.message();
    options.stats = &result.backward[r];
    if (s.ok()) s = dist::backward(shard.params(), shard.info(), comm, options);
    result.failures[r] = !s.ok() ? f + "backward: " + s.message()
                                 : f + compare_shard(shard, oracle, whole.config(), cuts[r],
                                                     cuts[r + 1], true, same);
  });
  return result;
}

TEST(RingVariant, ShardsEqualTheOracleWithOnePeerAtATime) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  int rings = 0;
  for (int i = 0; i < 30 && !HasFailure(); ++i) {
    const int ranks = std::uniform_int_distribution<int>(3, 4)(rng);
    ProblemConfig config = random_dist_config(rng, ranks, 96);
    // A whole-sequence pattern, so that segments span the shards and the ring has work.
    const Pattern whole_sequence{
        config.seqlen,
        std::uniform_int_distribution<int64_t>(1, std::max<int64_t>(1, config.seqlen / 8))(rng)};
    if (config.mode == Mode::longnet) {
      config.patterns.push_back(whole_sequence);
      if (config.patterns.size() > kMaxPatterns) config.patterns.erase(config.patterns.begin());
    } else {
      config.patterns.back() = whole_sequence;
    }
    const std::vector<int64_t> cuts = shard_cuts(rng, config.seqlen, ranks, i % 2 == 0);
    std::string where = "seed " + std::to_string(seed) + " (DILATED_TEST_SEED), case " +
                        std::to_string(i) + ": P=" + std::to_string(ranks) + " cuts";
    for (int64_t c : cuts) where += " " + std::to_string(c);
    SCOPED_TRACE(where + ": " + config.describe());
    HostProblem whole(config, rng());
    const Outputs oracle = oracle_outputs(whole);
    const RingRun one_shot = run(whole, oracle, cuts, 0);
    const RingRun ring = run(whole, oracle, cuts, 1);  // any exchange exceeds 1 byte
    for (int r = 0; r < ranks; ++r) {
      const auto q = static_cast<size_t>(r);
      EXPECT_EQ(ring.failures[q], "") << "rank " << r;
      EXPECT_EQ(one_shot.failures[q], "") << "rank " << r;
      // The same rows arrive, over P - 1 exchanges (forward; twice that in backward, keys and
      // gradients) when there is anything to exchange, each holding one peer's rows.
      EXPECT_EQ(ring.forward[q].remote_rows, one_shot.forward[q].remote_rows) << "rank " << r;
      EXPECT_LE(ring.forward[q].largest_receive_bytes, one_shot.forward[q].largest_receive_bytes);
      int64_t exchanged_anything = 0;
      for (const dist::Stats& s : one_shot.forward) exchanged_anything += s.remote_rows;
      if (exchanged_anything > 0) {
        ++rings;
        EXPECT_EQ(ring.forward[q].exchanges, ranks - 1) << "rank " << r;
        EXPECT_EQ(ring.backward[q].exchanges, 2 * (ranks - 1)) << "rank " << r;
      } else {
        EXPECT_EQ(ring.forward[q].exchanges, 1) << "rank " << r;
      }
    }
  }
  EXPECT_GT(rings, 0) << "no case exercised the ring";
}

// The budget decides how many collectives run, so the ranks must agree on it.
TEST(RingVariant, DifferentBudgetsFailOnEveryRank) {
  ProblemConfig config;
  config.seqlen = 60;
  config.patterns = {{20, 2}, {60, 4}};
  HostProblem whole(config, test_seed());
  const std::vector<int64_t> cuts = {0, 20, 40, 60};
  std::vector<Status> statuses(3);
  ThreadGroup(3, 30.0).run([&](dist::Communicator& comm) {
    const auto r = static_cast<size_t>(comm.rank());
    Shard shard(whole, cuts[r], cuts[r + 1]);
    dist::Options options;
    options.backend = "cpu";
    options.exchange_budget_bytes = r == 1 ? 4096 : 0;
    statuses[r] = dist::forward(shard.params(), shard.info(), comm, options);
  });
  for (const Status& s : statuses) {
    EXPECT_EQ(s.code(), StatusCode::invalid_argument) << s.message();
    EXPECT_NE(s.message().find("exchange_budget=4096"), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace dilated::testing
