// One rank's rows of a problem in host memory, and moving rows between rank 0 and the others
// (for `run --distributed` and `bench --distributed`).
#pragma once

#include <cstdint>
#include <vector>

#include "dilated/dist.hpp"
#include "problem.hpp"

namespace dilated::cli {

// Rank boundaries of an even split of n tokens: ranks + 1 entries.
std::vector<int64_t> even_cuts(int64_t n, int ranks);

// Rows [first, last) of every tensor of a problem, contiguous, in the problem's dtype.
class HostShard {
 public:
  HostShard(const ProblemSpec& spec, int64_t first, int64_t last, bool backward);
  HostShard(const HostShard&) = delete;
  HostShard& operator=(const HostShard&) = delete;

  const Params& params() const { return params_; }
  dist::ShardInfo info() const { return {global_seqlen_, first_}; }
  int64_t rows() const { return params_.seqlen; }

  // Inputs from float values laid out [B, rows, heads, dim] (dout only with backward).
  void set_inputs(const HostTensors& rows);
  // The outputs as float, [B, rows, heads, dim] and lse [B, H, rows].
  HostOutputs outputs() const;

 private:
  std::vector<unsigned char>& storage(std::vector<unsigned char>& v, int64_t heads, Tensor* t);
  ProblemSpec spec_;
  int64_t global_seqlen_, first_;
  bool backward_;
  Params params_;
  std::vector<unsigned char> q_, k_, v_, out_, dout_, dq_, dk_, dv_;
  std::vector<float> lse_;
};

// Rank 0 sends every rank its rows of `whole` (contiguous [B, N, heads, D] floats, only read
// on rank 0); every rank stores them in `shard`.
Status scatter_rows(dist::Communicator& comm, const ProblemSpec& spec,
                    const std::vector<int64_t>& cuts, const HostTensors& whole, bool backward,
                    HostShard* shard);

// Every rank sends rank 0 its outputs; rank 0 assembles the whole problem's in `whole`.
Status gather_rows(dist::Communicator& comm, const ProblemSpec& spec,
                   const std::vector<int64_t>& cuts, const HostShard& shard, bool backward,
                   HostOutputs* whole);

}  // namespace dilated::cli
