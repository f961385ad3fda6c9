// The device path of sequence parallelism (src/dist/device/device_call.cpp: packing, message
// layouts, remote units as windowed calls, the in-place lse merge, dq adds, dk/dv sent back and
// added in order, the memory agreement) run on hosts without GPUs: the same code over host
// versions of its runtime and row kernels (host_device_runtime.cpp), host memory, ranks as
// threads, and the cpu backend in place of the CUDA one. Every rank's shard must equal the
// oracle, as in sequence_parallel_test.cpp. What this cannot check, the GPU tests do: the
// kernels themselves, streams and events, NCCL.
#include <gtest/gtest.h>

#include <random>

#include "dist/device/device_call.hpp"
#include "dist/shard_problem.hpp"
#include "dist/thread_group.hpp"

namespace dilated::testing {
namespace {

Status run_device_plan(const Params& local, const std::vector<int64_t>& cuts,
                       dist::Communicator& comm, Direction dir, dist::DeviceScratch& scratch,
                       int64_t budget, dist::Stats* stats_out) {
  dist::ShardTable shards;
  shards.first = cuts;
  dist::Stats stats;
  dist::Traffic traffic;
  bool failed = false;
  dist::DeviceCall call;
  call.local = &local;
  call.shards = &shards;
  call.rank = comm.rank();
  call.comm = &comm;
  call.host = &comm;
  call.backend = "cpu";
  call.scratch = &scratch;
  call.stats = &stats;
  call.traffic = &traffic;
  call.communication_failed = &failed;
  call.exchange_budget_bytes = budget;
  const Status s =
      dir == Direction::forward ? dist::device_forward(call) : dist::device_backward(call);
  if (stats_out) *stats_out = stats;
  return s;
}

// Forward then backward (from the oracle's out and lse when `from_oracle`, else from the
// sharded forward), each rank compared with the oracle; "" per rank when it matches.
std::vector<std::string> run_sharded(HostProblem& whole, const Outputs& oracle,
                                     const std::vector<int64_t>& cuts,
                                     const std::function<double(const std::string&)>& tolerance,
                                     bool from_oracle, int64_t budget = 0,
                                     std::vector<dist::Stats>* forward_stats = nullptr) {
  const int ranks = static_cast<int>(cuts.size()) - 1;
  std::vector<std::string> failures(static_cast<size_t>(ranks));
  if (forward_stats) forward_stats->resize(static_cast<size_t>(ranks));
  ThreadGroup group(ranks, 30.0);
  group.run([&](dist::Communicator& comm) {
    const auto r = static_cast<size_t>(comm.rank());
    Shard shard(whole, cuts[r], cuts[r + 1]);
    dist::DeviceScratch scratch(find_backend("cpu"));  // host memory stands for the device's
    Status s = run_device_plan(shard.params(), cuts, comm, Direction::forward, scratch, budget,
                               forward_stats ? &(*forward_stats)[r] : nullptr);
    std::string f = s.ok() ? compare_shard(shard, oracle, whole.config(), cuts[r], cuts[r + 1],
                                           false, tolerance)
                           : "forward: " + s.message();
    if (from_oracle) shard.take_outputs_of(whole);
    // The scratch is reused as between calls on a GPU.
    if (s.ok()) {
      s = run_device_plan(shard.params(), cuts, comm, Direction::backward, scratch, budget,
                          nullptr);
    }
    failures[r] = !s.ok() ? f + "backward: " + s.message()
                          : f + compare_shard(shard, oracle, whole.config(), cuts[r], cuts[r + 1],
                                              true, tolerance);
  });
  return failures;
}

// fp32: the tolerance argument of sequence_parallel_test.cpp (4x one call's, P <= 4); the
// merges here run in float32 instead of double, which adds ~1e-7 relative per merge.
TEST(DevicePlanOnHost, ShardsEqualTheOracle) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 40 && !HasFailure(); ++i) {
    const int ranks = std::uniform_int_distribution<int>(2, 4)(rng);
    const ProblemConfig config = random_dist_config(rng, ranks, 96);
    const std::vector<int64_t> cuts = shard_cuts(rng, config.seqlen, ranks, i % 3 != 0);
    std::string where = "seed " + std::to_string(seed) + " (DILATED_TEST_SEED), case " +
                        std::to_string(i) + ": P=" + std::to_string(ranks) + " cuts";
    for (int64_t c : cuts) where += " " + std::to_string(c);
    SCOPED_TRACE(where + ": " + config.describe());
    HostProblem whole(config, rng());
    const Outputs oracle = oracle_outputs(whole);
    const double tol = 4 * float32_tolerance(config);
    const std::vector<std::string> failures = run_sharded(
        whole, oracle, cuts, [tol](const std::string&) { return tol; }, false);
    for (int r = 0; r < ranks; ++r) EXPECT_EQ(failures[static_cast<size_t>(r)], "") << "rank " << r;
  }
}

// 16-bit: the device path computes in the caller's dtype and rounds each row once for the
// shard's own keys and once more per remote unit merged or added into it (at most one per
// pattern); each rounding is at most one unit in the last place relative to the largest
// element (2^-7 bf16, 2^-10 fp16). The backward reads the oracle's out and lse.
TEST(DevicePlanOnHost, SixteenBitShards) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 16 && !HasFailure(); ++i) {
    const int ranks = std::uniform_int_distribution<int>(2, 4)(rng);
    const DType dtype = i % 2 ? DType::bf16 : DType::f16;
    const ProblemConfig config = random_dist_config(rng, ranks, 80, {dtype});
    const std::vector<int64_t> cuts = shard_cuts(rng, config.seqlen, ranks, i % 4 < 2);
    SCOPED_TRACE("seed " + std::to_string(seed) + ", case " + std::to_string(i) +
                 ": P=" + std::to_string(ranks) + ": " + config.describe());
    HostProblem whole(config, rng());
    const Outputs oracle16 = oracle_outputs(whole);
    const double f32_tol = 4 * float32_tolerance(config);
    const double unit = dtype == DType::bf16 ? 0x1p-7 : 0x1p-10;
    const double roundings = static_cast<double>(config.patterns.size()) + 2;
    const std::vector<std::string> failures = run_sharded(
        whole, oracle16, cuts,
        [&](const std::string& name) { return (name == "lse" ? 0.0 : roundings * unit) + f32_tol; },
        true);
    for (int r = 0; r < ranks; ++r) EXPECT_EQ(failures[static_cast<size_t>(r)], "") << "rank " << r;
  }
}

// The ring (a 1-byte budget forces it whenever anything is exchanged): the same results, one
// peer's rows per exchange.
TEST(DevicePlanOnHost, RingEqualsTheOracle) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  int rings = 0;
  for (int i = 0; i < 30 && !HasFailure(); ++i) {
    const int ranks = std::uniform_int_distribution<int>(3, 4)(rng);
    ProblemConfig config = random_dist_config(rng, ranks, 96);
    const Pattern whole_sequence{
        config.seqlen,
        std::uniform_int_distribution<int64_t>(1, std::max<int64_t>(1, config.seqlen / 8))(rng)};
    if (config.mode == Mode::longnet && config.patterns.size() < kMaxPatterns) {
      config.patterns.push_back(whole_sequence);
    } else {
      config.patterns.back() = whole_sequence;
    }
    const std::vector<int64_t> cuts = shard_cuts(rng, config.seqlen, ranks, i % 2 == 0);
    SCOPED_TRACE("seed " + std::to_string(seed) + " (DILATED_TEST_SEED), case " +
                 std::to_string(i) + ": P=" + std::to_string(ranks) + ": " + config.describe());
    HostProblem whole(config, rng());
    const Outputs oracle = oracle_outputs(whole);
    const double tol = 4 * float32_tolerance(config);
    std::vector<dist::Stats> stats;
    const std::vector<std::string> failures = run_sharded(
        whole, oracle, cuts, [tol](const std::string&) { return tol; }, false, 1, &stats);
    int64_t received = 0;
    for (const dist::Stats& st : stats) received += st.remote_rows;
    for (int r = 0; r < ranks; ++r) {
      EXPECT_EQ(failures[static_cast<size_t>(r)], "") << "rank " << r;
      if (received > 0) {
        EXPECT_EQ(stats[static_cast<size_t>(r)].exchanges, ranks - 1) << "rank " << r;
      }
    }
    rings += received > 0 ? 1 : 0;
  }
  EXPECT_GT(rings, 0) << "no case exercised the ring";
}

}  // namespace
}  // namespace dilated::testing
