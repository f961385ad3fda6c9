// What `dilated bench` runs: the named suites (DESIGN 4.1) or explicit sweeps, expanded into
// cases, and how it times them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "problem.hpp"

namespace dilated::cli {

// Lists sweep: every combination becomes a case.
struct Sweep {
  std::vector<int64_t> seq_lens, batches, heads, heads_kv /* empty: = heads */, head_dims;
  std::vector<Pattern> patterns;
  std::vector<Mode> modes;
  std::vector<DType> dtypes;
  HeadOffsets head_offsets = HeadOffsets::paper;
  bool causal = false;
  bool backward = false;
  // Block patterns and grid, the same for every case (a grid fixes N = height * width).
  int64_t block_size = 64;
  std::vector<BlockPattern> block_patterns;
  int64_t grid_height = 0, grid_width = 0;
};

// default: what `make bench` runs on the CPU in a few minutes (issue 2's performance
// configuration, both modes, forward and backward). seed: the classic configuration
// (B 2, H 12, D 64, N 2048/4096, segments 512,1024,2048, dilations 1,2,4). long: N up to 1M
// for GPUs. False for an unknown name.
bool suite_sweep(const std::string& name, Sweep* sweep);
std::vector<std::string> suite_names();

struct BenchCase {
  ProblemSpec spec;
  bool backward = false;
};

std::vector<BenchCase> expand(const Sweep& sweep, int32_t threads);

struct TimingOptions {
  int warmup = 1;             // untimed runs first
  int repeats = 20;           // timed runs at most
  int min_repeats = 3;        // timed runs at least
  double max_seconds = 5.0;   // stop adding repeats once this much was timed
  double verify_pairs = 4e6;  // oracle work bound for the reduced verification instance
  uint64_t seed = 1;
  bool host_backends_skip = false;  // suite long: GPUs only
};

}  // namespace dilated::cli
