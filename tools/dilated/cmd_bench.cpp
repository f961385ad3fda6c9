// `dilated bench`: suites or explicit sweeps, every case verified against the oracle and then
// timed on each chosen backend; a case a backend cannot run is a skipped row, never an error.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "args.hpp"
#include "backend_choice.hpp"
#include "bench_report.hpp"
#include "block_options.hpp"
#include "cli_error.hpp"
#include "commands.hpp"
#include "cpu/fma_peak.hpp"
#include "distributed.hpp"
#include "output_files.hpp"
#include "text_table.hpp"

namespace dilated::cli {
namespace {

constexpr const char* kSweepFlags[] = {"seq-len",  "batch",       "heads",     "heads-kv",
                                       "head-dim", "segments",    "dilations", "mode",
                                       "dtype",    "head-offsets"};

void declare(Args& args) {
  args.option("suite", "NAME",
              "default (what make bench runs: the issue's CPU configuration, "
              "both modes), seed (the classic configuration) or long (GPUs, "
              "N up to 1M)");
  args.option("seq-len", "N,..", "sequence lengths to sweep");
  args.option("batch", "B,..", "batch sizes to sweep");
  args.option("heads", "H,..", "query heads to sweep");
  args.option("heads-kv", "HKV,..", "kv heads to sweep (default: = heads)");
  args.option("head-dim", "D,..", "head dims to sweep");
  args.option("segments", "W1,W2,..", "segment lengths of the layer");
  args.option("dilations", "R1,R2,..", "dilation rates, one per segment length");
  args.option("mode", "MODE,..", "longnet, head_groups, or both as a list");
  args.option("head-offsets", "RULE", "paper (default) or grouped, for longnet");
  args.option("dtype", "T,..", "fp32, fp16, bf16, or a list");
  declare_block_options(args, "block-seed");
  args.flag("causal", "causal attention");
  args.flag("backward", "also time the backward pass (suites always do)");
  args.option("backend", "LIST",
              "all (default: every backend but the oracle) or a list of " + backend_choices(false) +
                  "; the oracle only verifies unless named");
  args.option("format", "FMT", "table (default), json or csv");
  args.option("out", "FILE", "write the report to FILE instead of stdout");
  args.option("repeats", "N", "timed repeats at most (default 20)");
  args.option("min-repeats", "N", "timed repeats at least (default 3)");
  args.option("warmup", "N", "untimed runs before timing (default 1)");
  args.option("max-time", "S", "stop adding repeats after S seconds of timing (default 5)");
  args.option("verify-pairs", "P",
              "oracle work bound for verification, in (query, key) pairs "
              "(default 4e6)");
  args.option("seed", "S", "seed of the inputs (default 1)");
  args.option("threads", "N", "host threads for CPU backends and the FMA ceiling (default: all)");
  args.option("fma-seconds", "S", "duration of the FMA ceiling measurement (default 1)");
  args.flag("quiet", "no progress line on stderr");
  declare_distributed_options(args);
  args.note(
      "Without --suite and without sweep options, runs --suite default. With sweep options\n"
      "and no --suite: B 1, N 4096, H 8, D 64, segments 1024,2048, dilations 1,2, longnet,\n"
      "fp32, forward only, each replaced by what is given. With --suite, given options\n"
      "replace the suite's lists.\n"
      "\n"
      "Verification: every case is first run on a reduced instance of the same\n"
      "configuration (batch 1, N cut to at most twice the largest segment, then to the\n"
      "largest N whose oracle work is at most --verify-pairs; same patterns, heads, dims,\n"
      "dtype, mode, causal), forward and backward (with --backward), and compared with the\n"
      "oracle (reference backend): fp32 within 1e-5 (forward) and 5e-5 (gradients) of the\n"
      "largest element, fp16/bf16 within twice the oracle's own rounding error. The oracle\n"
      "is far too slow for the full sizes.\n"
      "The verified N is the report's verify_n.\n"
      "\n"
      "Timing: --warmup runs, then repeats (each forward, then backward, bracketed by\n"
      "synchronising the backend) until --repeats or --max-time (at least --min-repeats);\n"
      "medians are reported with min and max. TFLOP/s use the exact work count\n"
      "(dilated::forward_flops; backward 2.5x, fwd+bwd 3.5x). Peak memory is the tensors +\n"
      "the workspace + the most the host heap grew during one call (the CLI replaces malloc\n"
      "to count it); allocations a GPU driver makes on its own are not seen.\n"
      "\n"
      "Block patterns (--local, --global, --dilated-blocks, --random with --block-seed,\n"
      "--topk, --block-size) join every case; without --segments they replace the dilated\n"
      "patterns. --grid HxW sets N = H * W and orders tokens along a Hilbert curve; the\n"
      "verification instance then uses a smaller grid of the same shape.\n"
      "\n"
      "A case a backend cannot run (dtype, head dim, no GPU, not enough memory) is a row\n"
      "with status 'skipped: <reason>'; exit 1 only when a backend fails or disagrees with\n"
      "the oracle. Example:\n"
      "  dilated bench --seq-len 2048,4096 --heads 8 --segments 512,1024 --dilations 1,2 \\\n"
      "    --mode longnet,head_groups --backward --format json --out bench.json");
}

std::vector<Mode> parse_modes(const std::string& text) {
  std::vector<Mode> modes;
  for (const std::string& name : parse_word_list("mode", text, {"longnet", "head_groups"})) {
    Mode m;
    parse_mode(name, &m);
    modes.push_back(m);
  }
  return modes;
}

std::vector<DType> parse_dtypes(const std::string& text) {
  std::vector<DType> dtypes;
  for (const std::string& name : parse_word_list("dtype", text, {"fp32", "fp16", "bf16"})) {
    DType t;
    parse_dtype(name, &t);
    dtypes.push_back(t);
  }
  return dtypes;
}

// The sweep: a suite, the custom defaults, and what the options replace.
Sweep build_sweep(const Args& args, std::string* suite_label) {
  bool explicit_sweep = has_block_options(args, "block-seed");
  for (const char* flag : kSweepFlags) explicit_sweep = explicit_sweep || args.has(flag);
  Sweep sweep;
  if (args.has("suite") || !explicit_sweep) {
    const std::string name = args.value_or("suite", "default");
    if (!suite_sweep(name, &sweep)) {
      throw UsageError("--suite = " + name + ": expected " + join_choices(suite_names()));
    }
    *suite_label = explicit_sweep ? name + " (modified)" : name;
  } else {
    sweep.seq_lens = {4096};
    sweep.batches = {1};
    sweep.heads = {8};
    sweep.head_dims = {64};
    sweep.patterns = {{1024, 1}, {2048, 2}};
    sweep.modes = {Mode::longnet};
    sweep.dtypes = {DType::f32};
    *suite_label = "custom";
  }
  if (args.has("seq-len")) sweep.seq_lens = parse_integer_list("seq-len", args.required("seq-len"));
  if (args.has("batch")) sweep.batches = parse_integer_list("batch", args.required("batch"));
  if (args.has("heads")) sweep.heads = parse_integer_list("heads", args.required("heads"));
  if (args.has("heads-kv")) {
    sweep.heads_kv = parse_integer_list("heads-kv", args.required("heads-kv"));
  }
  if (args.has("head-dim")) {
    sweep.head_dims = parse_integer_list("head-dim", args.required("head-dim"));
  }
  if (args.has("segments") != args.has("dilations")) {
    const char* missing = args.has("segments") ? "dilations" : "segments";
    throw UsageError(std::string("--") + missing + " is missing: expected --segments and " +
                     "--dilations together, one dilation per segment length");
  }
  if (args.has("segments")) {
    const std::vector<int64_t> w = parse_integer_list("segments", args.required("segments"));
    const std::vector<int64_t> r = parse_integer_list("dilations", args.required("dilations"));
    if (w.size() != r.size()) {
      throw UsageError("--dilations = " + args.required("dilations") + ": expected " +
                       std::to_string(w.size()) + " values, one per segment length in --segments");
    }
    sweep.patterns.clear();
    for (size_t i = 0; i < w.size(); ++i) sweep.patterns.push_back({w[i], r[i]});
  }
  if (args.has("mode")) sweep.modes = parse_modes(args.required("mode"));
  if (args.has("dtype")) sweep.dtypes = parse_dtypes(args.required("dtype"));
  if (args.has("head-offsets") &&
      !parse_head_offsets(args.required("head-offsets"), &sweep.head_offsets)) {
    throw UsageError("--head-offsets = " + args.required("head-offsets") +
                     ": expected paper or grouped");
  }
  ProblemSpec blocks;
  read_block_options(args, "block-seed", &blocks);
  sweep.block_size = blocks.block_size;
  sweep.block_patterns = blocks.block_patterns;
  if (!blocks.block_patterns.empty() && !args.has("segments") && !args.has("suite")) {
    sweep.patterns.clear();  // block patterns alone unless dilated ones are asked for
  }
  if (blocks.grid_height > 0) {
    const int64_t n = blocks.grid_height * blocks.grid_width;
    if (args.has("seq-len") && sweep.seq_lens != std::vector<int64_t>{n}) {
      throw UsageError("--grid = " + args.required("grid") + ": expected --seq-len to be H * W = " +
                       std::to_string(n) + " (or left out)");
    }
    sweep.seq_lens = {n};
    sweep.grid_height = blocks.grid_height;
    sweep.grid_width = blocks.grid_width;
  }
  sweep.causal = sweep.causal || args.is_set("causal");
  sweep.backward = sweep.backward || args.is_set("backward");
  return sweep;
}

int64_t integer_in(const Args& args, const std::string& flag, const std::string& fallback,
                   int64_t lo, int64_t hi) {
  const std::string text = args.value_or(flag, fallback);
  const int64_t v = parse_integer(flag, text);
  if (v < lo || v > hi) {
    throw UsageError("--" + flag + " = " + text + ": expected " + std::to_string(lo) + ".." +
                     std::to_string(hi));
  }
  return v;
}

double number_in(const Args& args, const std::string& flag, const std::string& fallback, double lo,
                 double hi) {
  const std::string text = args.value_or(flag, fallback);
  const double v = parse_number(flag, text);
  if (!(v >= lo && v <= hi)) {
    throw UsageError("--" + flag + " = " + text + ": expected a number in [" + cell("%g", lo) +
                     ", " + cell("%g", hi) + "]");
  }
  return v;
}

// One line on stderr, rewritten in place on a terminal.
class ProgressLine {
 public:
  explicit ProgressLine(bool enabled) : enabled_(enabled), terminal_(::isatty(2) == 1) {}
  ~ProgressLine() { clear(); }
  void show(const std::string& text) {
    if (!enabled_) return;
    if (terminal_) {
      std::fprintf(stderr, "\r\033[K%s", text.c_str());
    } else {
      std::fprintf(stderr, "%s\n", text.c_str());
    }
    std::fflush(stderr);
    shown_ = true;
  }
  void clear() {
    if (enabled_ && terminal_ && shown_) std::fprintf(stderr, "\r\033[K");
    shown_ = false;
  }

 private:
  bool enabled_, terminal_, shown_ = false;
};

}  // namespace

int command_bench(const Words& words) {
  Args args("bench", "dilated bench [--suite default|seed|long | sweep options] [options]",
            "Verifies each case against the oracle, then times it on every chosen backend:\n"
            "milliseconds (median, min, max), effective TFLOP/s, tokens/s and peak memory, with\n"
            "the CPU's fp32 FMA peak measured in the same run as the ceiling.");
  declare(args);
  args.parse(words);
  if (args.help_requested()) {
    std::fputs(args.help_text().c_str(), stdout);
    return kExitOk;
  }
  if (args.is_set("distributed")) return bench_distributed(args);

  BenchReport report;
  const Sweep sweep = build_sweep(args, &report.suite);
  TimingOptions& options = report.options;
  options.repeats = static_cast<int>(integer_in(args, "repeats", "20", 1, 100000));
  options.min_repeats = static_cast<int>(
      std::min<int64_t>(integer_in(args, "min-repeats", "3", 1, 100000), options.repeats));
  options.warmup = static_cast<int>(integer_in(args, "warmup", "1", 0, 1000));
  options.max_seconds = number_in(args, "max-time", "5", 0, 86400);
  options.verify_pairs = number_in(args, "verify-pairs", "4e6", 1, 1e12);
  options.seed = static_cast<uint64_t>(integer_in(args, "seed", "1", 0, INT64_MAX));
  options.host_backends_skip = report.suite == "long";
  const int32_t threads = static_cast<int32_t>(integer_in(args, "threads", "0", 0, 4096));
  const double fma_seconds = number_in(args, "fma-seconds", "1", 0.05, 60);
  const std::string format = args.value_or("format", "table");
  if (format != "table" && format != "json" && format != "csv") {
    throw UsageError("--format = " + format + ": expected table, json or csv");
  }
  if (args.has("out")) check_output_file("out", args.required("out"));
  const std::vector<const Backend*> chosen = backends_named(args.value_or("backend", "all"));

  // Every case must be a valid problem before anything runs.
  const std::vector<BenchCase> cases = expand(sweep, threads);
  for (const BenchCase& c : cases) {
    const Status s = validate_spec(c.spec, c.backward ? Direction::backward : Direction::forward);
    if (!s.ok()) throw UsageError("invalid case (" + c.spec.describe() + "): " + s.message());
  }

  ProgressLine progress(!args.is_set("quiet"));
  progress.show("dilated bench: measuring the fp32 FMA ceiling");
  report.machine = describe_machine();
  report.fma_threads =
      threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  report.fma_seconds = fma_seconds;
  report.fma_gflops = cpu::measure_fma_gflops(report.fma_threads, fma_seconds);

  OracleCache oracles;
  const size_t total = cases.size() * chosen.size();
  size_t done = 0;
  bool any_failed = false;
  for (const BenchCase& c : cases) {
    for (const Backend* backend : chosen) {
      const std::string label = "[" + std::to_string(++done) + "/" + std::to_string(total) + "] " +
                                backend->name() + " " + c.spec.describe() +
                                (c.backward ? " fwd+bwd" : " fwd") + ": ";
      progress.show(label + "starting");
      BenchRow row = bench_one(c, *backend, options, oracles,
                               [&](const std::string& stage) { progress.show(label + stage); });
      any_failed = any_failed || row.status.rfind("failed", 0) == 0;
      report.rows.push_back(std::move(row));
    }
  }
  progress.clear();

  const std::string text = format == "json"  ? format_json(report)
                           : format == "csv" ? format_csv(report)
                                             : format_table(report);
  if (args.has("out")) {
    const std::filesystem::path path(args.required("out"));
    OutputFiles file(path.parent_path().string());
    throw_if_failed(file.stage_text(path.filename().string(), text));
    throw_if_failed(file.commit());
  } else {
    std::fputs(text.c_str(), stdout);
  }
  return any_failed ? kExitFailure : kExitOk;
}

}  // namespace dilated::cli
