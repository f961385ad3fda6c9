// Sequence-parallel test problems: a random whole problem (the same on every rank, from one
// seed), each rank's shard of it as Params, and the comparison of a rank's rows with the
// single-device oracle.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu_fast/compare.hpp"
#include "dilated/dist.hpp"
#include "support/problem.hpp"

namespace dilated::testing {

// A random problem for `ranks` ranks: every feature but varlen (N >= ranks), and often a
// pattern whose segment is the whole sequence, so that segments span several shards.
ProblemConfig random_dist_config(std::mt19937_64& rng, int ranks, int64_t max_seqlen,
                                 const std::vector<DType>& dtypes = {DType::f32});

// Shard boundaries: even, or (uneven = true) random non-empty pieces.
std::vector<int64_t> shard_cuts(std::mt19937_64& rng, int64_t n, int ranks, bool uneven);

// One rank's share of a whole problem: Params whose tensors view the whole problem's rows
// [first, last) of its (separate) output buffers, and its own lse.
class Shard {
 public:
  Shard(const HostProblem& whole, int64_t first, int64_t last);
  const Params& params() const { return params_; }
  dist::ShardInfo info() const { return info_; }
  // The shard's outputs, laid out like HostProblem::read / read_lse restricted to its rows.
  std::vector<double> read(const std::string& name) const;
  std::vector<double> read_lse() const;
  // Overwrites the shard's out and lse with the whole problem's rows (as backward inputs).
  void take_outputs_of(const HostProblem& whole);

 private:
  Buffer out_, dq_, dk_, dv_;
  std::vector<float> lse_;
  Params params_;
  dist::ShardInfo info_;
  int64_t first_, last_;
  ProblemConfig config_;
};

// The rows [first, last) of a whole-problem output (read() layout), or of its lse.
std::vector<double> rows_of(const std::vector<double>& whole, const ProblemConfig& c,
                            const std::string& name, int64_t first, int64_t last);

// Outputs of the whole problem on the oracle, forward then backward.
Outputs oracle_outputs(HostProblem& whole);

// Compares one rank's shard with the oracle; returns "" or what differs. Tolerance: 4x the
// float32 tolerance of compare.hpp (fp32), argued in sequence_parallel_test.cpp, or the
// given one per output name.
std::string compare_shard(const Shard& shard, const Outputs& oracle, const ProblemConfig& c,
                          int64_t first, int64_t last, bool backward);
std::string compare_shard(const Shard& shard, const Outputs& oracle, const ProblemConfig& c,
                          int64_t first, int64_t last, bool backward,
                          const std::function<double(const std::string&)>& tolerance);

}  // namespace dilated::testing
