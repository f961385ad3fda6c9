#include "bench_runner.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "backend_choice.hpp"
#include "core/pattern_math.hpp"
#include "host_memory.hpp"
#include "machine.hpp"
#include "timing.hpp"

namespace dilated::cli {

double BenchRow::max_rel_err() const {
  if (std::isnan(fwd_err)) return NAN;
  return std::isnan(bwd_err) ? fwd_err : std::max(fwd_err, bwd_err);
}

// A grid problem keeps a grid: side s scales it to ceil(H s / L) x ceil(W s / L), L the longer
// side; the largest s within the budget, by bisection.
ProblemSpec reduced_grid(ProblemSpec reduced, double pair_budget) {
  const int64_t h = reduced.grid_height, w = reduced.grid_width, longer = std::max(h, w);
  auto shaped = [&](int64_t side) {
    ProblemSpec g = reduced;
    g.grid_height = ceil_div(h * side, longer);
    g.grid_width = ceil_div(w * side, longer);
    g.seqlen = g.grid_height * g.grid_width;
    return g;
  };
  auto fits = [&](int64_t side) {
    const ProblemSpec g = shaped(side);
    return static_cast<double>(attended_pairs(spec_params(g), g.seqlen)) <= pair_budget;
  };
  int64_t lo = 1, hi = longer;
  if (fits(hi)) lo = hi;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  return shaped(lo);
}

ProblemSpec verification_spec(const ProblemSpec& spec, double pair_budget) {
  ProblemSpec reduced = spec;
  reduced.batch = 1;
  if (spec.grid_height > 0) return reduced_grid(reduced, pair_budget);
  int64_t widest = 1;
  for (const Pattern& p : spec.patterns) widest = std::max(widest, p.segment);
  // Block patterns: room for every block rule to matter (the budget cuts it further).
  if (!spec.block_patterns.empty()) widest = std::max(widest, 16 * spec.block_size);
  const Params p = spec_params(reduced);
  auto fits = [&](int64_t n) { return static_cast<double>(attended_pairs(p, n)) <= pair_budget; };
  // The pair count grows with n: the largest n within the budget, by bisection.
  int64_t lo = std::min<int64_t>(spec.seqlen, 16), hi = std::min(spec.seqlen, 2 * widest);
  if (fits(hi)) lo = hi;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  reduced.seqlen = lo;
  return reduced;
}

Status OracleCache::get(const ProblemSpec& reduced, bool backward, uint64_t seed,
                        const HostTensors** inputs, const OracleRun** oracle) {
  const std::string key = reduced.describe() + (backward ? " backward" : "");
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    Entry entry;
    entry.inputs = random_inputs(reduced, seed, backward);
    if (Status s = run_oracle(reduced, entry.inputs, backward, &entry.oracle); !s.ok()) return s;
    it = entries_.emplace(key, std::move(entry)).first;
  }
  *inputs = &it->second.inputs;
  *oracle = &it->second.oracle;
  return {};
}

namespace {

std::string gib(double bytes) {
  std::ostringstream s;
  s.precision(3);
  s << bytes / (1024.0 * 1024.0 * 1024.0) << " GiB";
  return s.str();
}

// Times one direction (forward, or forward then backward) with the backend synchronised
// before and after each call, and watches the host heap during every call.
class Timer {
 public:
  Timer(const Backend& backend, const Params& p, BenchRow& row)
      : backend_(backend), params_(p), row_(row) {}

  Status call(Direction dir, double* ms) {
    if (Status s = backend_.synchronize({}); !s.ok()) return s;
    reset_host_heap_peak();
    const int64_t base = host_heap_bytes();
    const Stopwatch clock;
    Status s = dir == Direction::forward ? forward(params_, {}, backend_.name())
                                         : backward(params_, {}, backend_.name());
    if (s.ok()) s = backend_.synchronize({});
    *ms = clock.milliseconds();
    row_.host_growth_bytes = std::max(row_.host_growth_bytes, host_heap_peak() - base);
    return s;
  }

 private:
  const Backend& backend_;
  const Params& params_;
  BenchRow& row_;
};

Status time_row(const Backend& backend, const DeviceProblem& problem, bool backward,
                const TimingOptions& options, BenchRow& row) {
  Timer timer(backend, problem.params(), row);
  double fwd = 0, bwd = 0;
  for (int i = 0; i < options.warmup; ++i) {
    if (Status s = timer.call(Direction::forward, &fwd); !s.ok()) return s;
    if (backward) {
      if (Status s = timer.call(Direction::backward, &bwd); !s.ok()) return s;
    }
  }
  const Stopwatch budget;
  for (int i = 0; i < options.repeats; ++i) {
    if (i >= options.min_repeats && budget.seconds() >= options.max_seconds) break;
    if (Status s = timer.call(Direction::forward, &fwd); !s.ok()) return s;
    row.fwd_ms.add(fwd);
    if (backward) {
      if (Status s = timer.call(Direction::backward, &bwd); !s.ok()) return s;
      row.bwd_ms.add(bwd);
      row.fwdbwd_ms.add(fwd + bwd);
    }
  }
  return {};
}

}  // namespace

BenchRow bench_one(const BenchCase& bench, const Backend& backend, const TimingOptions& options,
                   OracleCache& oracles, const Progress& progress) {
  BenchRow row;
  row.backend = backend.name();
  row.device = backend.device_name();
  row.on_host = backend.device() == Device::host;
  row.bench = bench;
  const ProblemSpec& spec = bench.spec;
  row.flops = forward_flops(spec_params(spec));
  row.tensor_bytes = problem_bytes(spec, bench.backward);

  if (std::string reason = cannot_run(backend, spec, bench.backward); !reason.empty()) {
    row.status = "skipped: " + reason;
    return row;
  }
  if (options.host_backends_skip && backend.device() == Device::host) {
    row.status = "skipped: suite long is for GPU backends (give explicit sizes to run it here)";
    return row;
  }
  if (backend.device() == Device::host) {
    // Linux overcommits: an allocation too big for the machine succeeds and the process is
    // killed later, so the host's free memory is checked first.
    const int64_t available = host_memory_available();
    if (available > 0 &&
        static_cast<double>(row.tensor_bytes) > 0.8 * static_cast<double>(available)) {
      row.status = "skipped: needs " + gib(static_cast<double>(row.tensor_bytes)) +
                   " of host memory, " + gib(static_cast<double>(available)) + " available";
      return row;
    }
  }

  // Verify on the reduced instance.
  const ProblemSpec reduced = verification_spec(spec, options.verify_pairs);
  row.verify_b = reduced.batch;
  row.verify_n = reduced.seqlen;
  progress("verifying against the oracle at b=1 n=" + std::to_string(reduced.seqlen));
  const HostTensors* inputs = nullptr;
  const OracleRun* oracle = nullptr;
  if (Status s = oracles.get(reduced, bench.backward, options.seed, &inputs, &oracle); !s.ok()) {
    row.status = "failed: oracle: " + s.message();
    return row;
  }
  if (std::string reason = cannot_run(backend, reduced, bench.backward); !reason.empty()) {
    row.status = "skipped: the reduced instance for verification: " + reason;
    return row;
  }
  HostOutputs got;
  if (Status s = run_backend(backend, reduced, *inputs, bench.backward, &got); !s.ok()) {
    row.status = "failed: verification run: " + s.message();
    return row;
  }
  const Verdict verdict = compare(*oracle, got, bench.backward);
  row.fwd_err = verdict.forward_error;
  if (bench.backward) row.bwd_err = verdict.backward_error;
  if (!verdict.passed) {
    row.status = "failed: differs from the oracle: " + verdict.detail;
    return row;
  }

  // Time the full problem.
  progress("timing");
  DeviceProblem problem;
  if (Status s = problem.create(backend, spec, bench.backward); !s.ok()) {
    row.status = "skipped: cannot allocate " + gib(static_cast<double>(row.tensor_bytes)) +
                 " on the device: " + s.message();
    return row;
  }
  row.workspace_bytes = problem.workspace_bytes();
  if (Status s = problem.fill_random(options.seed); !s.ok()) {
    row.status = "failed: " + s.message();
    return row;
  }
  if (Status s = time_row(backend, problem, bench.backward, options, row); !s.ok()) {
    row.status = "failed: " + s.message();
    return row;
  }
  row.status = "ok";
  return row;
}

}  // namespace dilated::cli
