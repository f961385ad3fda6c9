// One bench row: a case on a backend, verified against the oracle on a reduced instance of
// the same configuration, then timed. Never throws for a mismatch between the case and the
// backend: such a row is "skipped: <reason>".
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "bench_config.hpp"
#include "timing.hpp"
#include "verify.hpp"

namespace dilated::cli {

struct BenchRow {
  std::string impl = "dilated";
  std::string backend, device;
  bool on_host = true;  // the backend computes on the CPU (its %-of-FMA figures mean something)
  BenchCase bench;
  int64_t verify_b = 0, verify_n = 0;  // the reduced instance checked against the oracle
  double fwd_err = NAN, bwd_err = NAN;
  Samples fwd_ms, bwd_ms, fwdbwd_ms;
  double flops = 0;          // forward FLOPs (DESIGN 2.6)
  int64_t tensor_bytes = 0;  // q, k, v, out, lse (and dout, dq, dk, dv), on the device
  int64_t workspace_bytes = 0;
  int64_t host_growth_bytes = 0;  // the most the host heap grew during one call
  std::string status;             // "ok", "skipped: ...", "failed: ..."

  bool ok() const { return status == "ok"; }
  double max_rel_err() const;
  int64_t peak_bytes() const { return tensor_bytes + workspace_bytes + host_growth_bytes; }
  // What the backend needed beyond the tensors.
  int64_t extra_bytes() const { return workspace_bytes + host_growth_bytes; }
};

// The reduced instance: batch 1 and N cut to at most twice the largest segment, then to the
// largest N whose oracle work is at most `pair_budget` (query, key) pairs (at least 16). Same
// patterns, heads, dims, mode, dtype, causal.
ProblemSpec verification_spec(const ProblemSpec& spec, double pair_budget);

// Oracle results by reduced instance, shared by every backend of a case.
class OracleCache {
 public:
  // Computes (or returns) the oracle for the reduced instance; fails on runtime errors only.
  Status get(const ProblemSpec& reduced, bool backward, uint64_t seed, const HostTensors** inputs,
             const OracleRun** oracle);

 private:
  struct Entry {
    HostTensors inputs;
    OracleRun oracle;
  };
  std::map<std::string, Entry> entries_;
};

using Progress = std::function<void(const std::string& stage)>;

BenchRow bench_one(const BenchCase& bench, const Backend& backend, const TimingOptions& options,
                   OracleCache& oracles, const Progress& progress);

}  // namespace dilated::cli
