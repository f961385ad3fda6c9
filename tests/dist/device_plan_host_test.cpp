// The device path of sequence parallelism (src/dist/device/device_call.cpp: packing, message
// layouts, remote units as windowed calls, the in-place lse merge, dq adds, dk/dv sent back and
// added in order, the memory agreement) run on hosts without GPUs: the same code over host
// versions of its runtime and row kernels (host_device_runtime.cpp), host memory, ranks as
// threads, and the cpu backend in place of the CUDA one. Every rank's shard must equal the
// oracle, as in sequence_parallel_test.cpp. What this cannot check, the GPU tests do: the
// kernels themselves, streams and events, NCCL.
#include <gtest/gtest.h>
#include <cstdlib>

#include <random>

#include "dist/device/device_call.hpp"
#include "dist/shard_problem.hpp"
#include "dist/thread_group.hpp"

namespace dilated::testing {
namespace {

// A communicator that says it has a device stream (a token: the host runtime runs every
// stream in order at once), so that the plan takes its path with remote units beside the
// local part (device_call.cpp, choose_remote_stream).
class WithStream final : public dist::Communicator {
 public:
  explicit WithStream(dist::Communicator& c) : c_(c) {}
  int rank() const override { return c_.rank(); }
  int size() const override { return c_.size(); }
  Device device() const override { return c_.device(); }
  void* device_stream() const override { return const_cast<WithStream*>(this); }
  Status all_to_all(const void* send, const int64_t* send_bytes, void* recv,
                    const int64_t* recv_bytes) override {
    return c_.all_to_all(send, send_bytes, recv, recv_bytes);
  }
  Status all_gather(const void* send, int64_t bytes, void* recv) override {
    return c_.all_gather(send, bytes, recv);
  }
  Status barrier() override { return c_.barrier(); }
  void set_timeout(double seconds) override { c_.set_timeout(seconds); }
  double timeout() const override { return c_.timeout(); }
  [[noreturn]] void abort(const std::string& reason) override {
    c_.abort(reason);
    std::abort();  // not reached: Communicator::abort ends the process
  }

 private:
  dist::Communicator& c_;
};

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
                                     std::vector<dist::Stats>* forward_stats = nullptr,
                                     bool side_stream = false) {
  const int ranks = static_cast<int>(cuts.size()) - 1;
  std::vector<std::string> failures(static_cast<size_t>(ranks));
  if (forward_stats) forward_stats->resize(static_cast<size_t>(ranks));
  ThreadGroup group(ranks, 30.0);
  group.run([&](dist::Communicator& thread_comm) {
    WithStream with_stream(thread_comm);
    dist::Communicator& comm = side_stream ? with_stream : thread_comm;
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
    // Odd cases: remote units beside the local part (a communicator with a stream).
    const std::vector<std::string> failures = run_sharded(
        whole, oracle, cuts, [tol](const std::string&) { return tol; }, false, 0, nullptr,
        i % 2 == 1);
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
