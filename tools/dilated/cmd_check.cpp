// `dilated check`: random small problems, every chosen backend against the oracle, forward
// and backward, in the style of ggml's test-backend-ops.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include "args.hpp"
#include "backend_choice.hpp"
#include "cli_error.hpp"
#include "commands.hpp"
#include "text_table.hpp"
#include "verify.hpp"

namespace dilated::cli {
namespace {

// Small problems covering what the computation varies in: partial last segments, w % r != 0,
// w > N, GQA/MQA, both modes and offset rules, causal, custom scale.
ProblemSpec random_spec(std::mt19937_64& rng, DType dtype) {
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  ProblemSpec s;
  s.dtype = dtype;
  s.batch = uniform(1, 2);
  s.seqlen = uniform(1, 96);
  s.heads_kv = uniform(1, 3);
  s.heads = s.heads_kv * uniform(1, 2);
  const int64_t dims[] = {16, 32, 64, 128};
  s.head_dim = dims[uniform(0, 3)];
  s.mode = uniform(0, 1) ? Mode::head_groups : Mode::longnet;
  const int64_t max_patterns = s.mode == Mode::head_groups ? std::min<int64_t>(4, s.heads) : 4;
  for (int64_t i = uniform(1, max_patterns); i > 0; --i) {
    const int64_t w = uniform(1, s.seqlen + s.seqlen / 4 + 1);
    s.patterns.push_back({w, uniform(1, std::min<int64_t>(w, 6))});
  }
  if (s.mode == Mode::longnet && uniform(0, 3) == 0) s.head_offsets = HeadOffsets::grouped;
  s.causal = uniform(0, 1) == 1;
  if (uniform(0, 3) == 0) s.scale = static_cast<float>(uniform(1, 24)) / 16.0f;
  return s;
}

std::string error_cell(double error) {
  return cell("%.2e", error);
}

}  // namespace

int command_check(const Words& words) {
  Args args("check", "dilated check [--cases N] [--seed S] [--backend LIST] [--dtype LIST]",
            "Runs random small problems (B <= 2, N <= 96, H <= 6, D in 16..128, 1-4 patterns,\n"
            "both modes, causal or not) on every chosen backend and on the oracle (the\n"
            "reference backend), forward and backward, and prints one row per case and\n"
            "backend. Outputs are poisoned with NaN before each run. Tolerances: fp32 1e-5\n"
            "(forward) and 5e-5 (gradients) of the largest element; fp16/bf16 twice the\n"
            "oracle's own error in that dtype. Exit 1 if any comparison fails.");
  args.option("cases", "N", "number of random problems (default 20)");
  args.option("seed", "S", "random seed (default: from the clock, printed)");
  args.option("backend", "LIST",
              "all (default: every backend but the oracle) or a list of " + backend_choices(false));
  args.option("dtype", "LIST", "fp32 (default), fp16, bf16, or a list: each case in each");
  args.parse(words);
  if (args.help_requested()) {
    std::fputs(args.help_text().c_str(), stdout);
    return kExitOk;
  }
  const int64_t cases = parse_integer("cases", args.value_or("cases", "20"));
  if (cases < 1 || cases > 100000) {
    throw UsageError("--cases = " + args.required("cases") + ": expected 1..100000");
  }
  const uint64_t seed =
      args.has("seed")
          ? static_cast<uint64_t>(parse_integer("seed", args.required("seed")))
          : static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count() &
                                  0xffffffff);
  std::vector<DType> dtypes;
  for (const std::string& name :
       parse_word_list("dtype", args.value_or("dtype", "fp32"), {"fp32", "fp16", "bf16"})) {
    DType t;
    parse_dtype(name, &t);
    dtypes.push_back(t);
  }
  const std::vector<const Backend*> chosen = backends_named(args.value_or("backend", "all"));

  std::printf("dilated check: %lld cases, seed %llu\n", static_cast<long long>(cases),
              static_cast<unsigned long long>(seed));
  TextTable table({"case", "backend", "fwd err", "bwd err", "status", "problem"});
  int passed = 0, failed = 0, skipped = 0;
  std::vector<const Backend*> available;
  for (const Backend* b : chosen) {
    if (std::string reason = b->unavailable_reason(); !reason.empty()) {
      table.add({"-", b->name(), "-", "-", "skipped: unavailable: " + reason, "every case"});
      ++skipped;
    } else {
      available.push_back(b);
    }
  }
  std::mt19937_64 rng(seed);
  for (int64_t c = 0; c < cases && !available.empty(); ++c) {
    const ProblemSpec spec = random_spec(rng, dtypes[static_cast<size_t>(c) % dtypes.size()]);
    throw_if_failed(validate_spec(spec, Direction::backward), "internal: random case");
    const HostTensors inputs = random_inputs(spec, rng(), true);
    OracleRun oracle;
    throw_if_failed(run_oracle(spec, inputs, true, &oracle), "oracle");
    for (const Backend* b : available) {
      const std::string id = std::to_string(c);
      if (std::string reason = cannot_run(*b, spec, true); !reason.empty()) {
        table.add({id, b->name(), "-", "-", "skipped: " + reason, spec.describe()});
        ++skipped;
        continue;
      }
      HostOutputs got;
      if (Status s = run_backend(*b, spec, inputs, true, &got); !s.ok()) {
        table.add({id, b->name(), "-", "-", "FAILED: " + s.message(), spec.describe()});
        ++failed;
        continue;
      }
      const Verdict v = compare(oracle, got, true);
      table.add({id, b->name(), error_cell(v.forward_error), error_cell(v.backward_error),
                 v.passed ? "ok" : "FAILED: " + v.detail, spec.describe()});
      (v.passed ? passed : failed)++;
    }
  }
  std::fputs(table.str().c_str(), stdout);
  std::printf("dilated check: %d ok, %d failed, %d skipped (seed %llu)\n", passed, failed, skipped,
              static_cast<unsigned long long>(seed));
  return failed ? kExitFailure : kExitOk;
}

}  // namespace dilated::cli
