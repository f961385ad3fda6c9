// Sequence parallelism across processes: run under `mpirun -np P` (ctest does, P = 2, 3, 4).
// Every rank builds the same random problem from rank 0's seed, computes its shard through
// dilated::dist over MPI and compares it with the single-device oracle on the whole problem
// (the tolerance argument is in sequence_parallel_test.cpp). Ranks agree after each case, so
// that a failure on one rank stops all of them at the same point instead of leaving the others
// waiting.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "dilated/dist_mpi.hpp"
#include "dist/shard_problem.hpp"

namespace dilated::testing {
namespace {

dist::Communicator* g_comm = nullptr;

// Rank 0's value of x on every rank.
uint64_t from_rank0(uint64_t x) {
  std::vector<uint64_t> all(static_cast<size_t>(g_comm->size()));
  EXPECT_TRUE(g_comm->all_gather(&x, sizeof(x), all.data()).ok());
  return all[0];
}

// True when `failed` is true on some rank.
bool any_rank(bool failed) {
  double flag = failed ? 1 : 0;
  EXPECT_TRUE(dist::all_reduce_sum(*g_comm, &flag, 1).ok());
  return flag > 0;
}

void expect_shards_match(const std::string& backend, int cases, int64_t max_seqlen) {
  const int ranks = g_comm->size(), r = g_comm->rank();
  const uint64_t seed = from_rank0(test_seed());
  std::mt19937_64 rng(seed);
  for (int i = 0; i < cases; ++i) {
    const ProblemConfig config = random_dist_config(rng, ranks, max_seqlen);
    const std::vector<int64_t> cuts = shard_cuts(rng, config.seqlen, ranks, i % 2 == 1);
    SCOPED_TRACE("seed " + std::to_string(seed) + " (DILATED_TEST_SEED on rank 0), case " +
                 std::to_string(i) + ", rank " + std::to_string(r) + ": " + config.describe());
    HostProblem whole(config, rng());
    const Outputs oracle = oracle_outputs(whole);
    Shard shard(whole, cuts[static_cast<size_t>(r)], cuts[static_cast<size_t>(r) + 1]);
    dist::Options options;
    options.backend = backend;
    Status s = dist::forward(shard.params(), shard.info(), *g_comm, options);
    if (s.ok()) s = dist::backward(shard.params(), shard.info(), *g_comm, options);
    ASSERT_TRUE(s.ok()) << s.message();  // every rank gets the same status
    EXPECT_EQ(compare_shard(shard, oracle, config, cuts[static_cast<size_t>(r)],
                            cuts[static_cast<size_t>(r) + 1], true),
              "");
    if (any_rank(::testing::Test::HasFailure())) return;
  }
}

TEST(SequenceParallelMpi, ShardsEqualTheOracleOnTheCpuBackend) {
  expect_shards_match("cpu", 12, 96);
}

TEST(SequenceParallelMpi, ShardsEqualTheOracleOnTheReferenceBackend) {
  expect_shards_match("reference", 6, 40);
}

// A rank whose configuration differs: every rank fails with the same message, naming it.
TEST(SequenceParallelMpi, MismatchedConfigurationFailsOnEveryRankWithOneMessage) {
  const int ranks = g_comm->size(), r = g_comm->rank();
  ProblemConfig config;
  config.seqlen = 16 * ranks;
  config.patterns = {{8, 2}, {config.seqlen, 4}};
  HostProblem whole(config, from_rank0(test_seed()));
  Shard shard(whole, 16 * r, 16 * (r + 1));
  Params p = shard.params();
  if (r == ranks - 1) p.patterns[1].dilation = 2;
  const Status s = dist::forward(p, shard.info(), *g_comm, {});
  EXPECT_EQ(s.code(), StatusCode::invalid_argument);
  const std::string expect = "rank " + std::to_string(ranks - 1) + " has {forward";
  EXPECT_NE(s.message().find(expect), std::string::npos) << s.message();
  // The same message everywhere.
  char mine[512] = {};
  std::strncpy(mine, s.message().c_str(), sizeof(mine) - 1);
  std::vector<char> all(sizeof(mine) * static_cast<size_t>(ranks));
  ASSERT_TRUE(g_comm->all_gather(mine, sizeof(mine), all.data()).ok());
  for (int q = 0; q < ranks; ++q) {
    EXPECT_STREQ(all.data() + q * sizeof(mine), mine) << "rank " << q;
  }
  // And the group is still usable.
  EXPECT_TRUE(g_comm->barrier().ok());
}

// Ranks other than 0 report failures only (with their rank), so that the log stays readable.
class QuietRank : public ::testing::EmptyTestEventListener {
 public:
  explicit QuietRank(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (result.failed()) {
      std::fprintf(stderr, "[rank %d] %s:%d: %s\n", rank_, result.file_name(), result.line_number(),
                   result.summary());
    }
  }

 private:
  int rank_;
};

}  // namespace
}  // namespace dilated::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::unique_ptr<dilated::dist::Communicator> comm;
  const dilated::Status s = dilated::dist::mpi_world(&comm);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.message().c_str());
    return 1;
  }
  comm->set_timeout(60);
  dilated::testing::g_comm = comm.get();
  if (comm->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new dilated::testing::QuietRank(comm->rank()));
  }
  const int failed = RUN_ALL_TESTS();
  // The job fails when any rank failed (mpirun returns the first non-zero exit code).
  return failed;
}
