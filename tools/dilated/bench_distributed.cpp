// `dilated bench --distributed`: weak scaling of sequence parallelism across MPI ranks. Each
// case keeps --seq-len tokens per rank (N = P x seq-len in all), verifies the sharded layer
// against the oracle at a small size, times one process with one rank's tokens (rank 0 alone,
// the others waiting), then all ranks together, and reports per-rank times, bytes moved, what
// ring attention would move for the same N, and the weak-scaling efficiency.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cli_error.hpp"
#include "dist_shard.hpp"
#include "distributed.hpp"
#include "json_writer.hpp"
#include "machine.hpp"
#include "output_files.hpp"
#include "text_table.hpp"
#include "timing.hpp"

namespace dilated::cli {
namespace {

size_t at(int64_t i) {
  return static_cast<size_t>(i);
}

// A segment or dilation that may scale with the global length: "N" or "N/K" (K > 0) or a
// number.
struct Scaled {
  int64_t value = 0;    // the number, when not scaled
  int64_t divisor = 0;  // > 0: N / divisor (at least 1)
  int64_t resolve(int64_t n) const {
    return divisor > 0 ? std::max<int64_t>(1, n / divisor) : value;
  }
  std::string text() const {
    return divisor == 0   ? std::to_string(value)
           : divisor == 1 ? "N"
                          : "N/" + std::to_string(divisor);
  }
};

std::vector<Scaled> parse_scaled_list(const std::string& flag, const std::string& text) {
  std::vector<Scaled> list;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string word = text.substr(start, comma - start);
    Scaled s;
    if (word == "N") {
      s.divisor = 1;
    } else if (word.rfind("N/", 0) == 0) {
      s.divisor = parse_integer(flag, word.substr(2));
      if (s.divisor < 1) {
        throw UsageError("--" + flag + " = " + text + ": expected N/K with K >= 1 in '" + word +
                         "'");
      }
    } else {
      s.value = parse_integer(flag, word);
    }
    list.push_back(s);
    start = comma + 1;
  }
  return list;
}

// The single value of a sweep option (the distributed bench sweeps --seq-len only).
int64_t single(const Args& args, const std::string& flag, int64_t fallback) {
  if (!args.has(flag)) return fallback;
  const std::vector<int64_t> v = parse_integer_list(flag, args.required(flag));
  if (v.size() != 1) {
    throw UsageError("--" + flag + " = " + args.required(flag) +
                     ": expected one value with --distributed (it sweeps --seq-len only)");
  }
  return v[0];
}

struct Layer {
  ProblemSpec spec;  // sizes and options; seqlen and patterns set per use
  std::vector<Scaled> segments, dilations;
  std::string backend = "cpu";
  bool backward = false;
  int repeats = 5, warmup = 1;
  uint64_t seed = 1;
  int64_t exchange_budget = 0;  // --exchange-budget

  ProblemSpec at_length(int64_t n) const {
    ProblemSpec s = spec;
    s.seqlen = n;
    s.patterns.clear();
    for (size_t i = 0; i < segments.size(); ++i) {
      const int64_t w = segments[i].resolve(n);
      s.patterns.push_back({w, std::min(w, dilations[i].resolve(n))});
    }
    return s;
  }
  // "b=1 h=8 h_kv=8 d=64 fp32 longnet causal" (sizes that do not change with N).
  std::string sizes_text() const {
    std::string t = "b=" + std::to_string(spec.batch) + " h=" + std::to_string(spec.heads) +
                    " h_kv=" + std::to_string(spec.heads_kv) +
                    " d=" + std::to_string(spec.head_dim) + " " + dtype_name(spec.dtype) + " " +
                    mode_name(spec.mode);
    if (spec.mode == Mode::longnet && spec.head_offsets != HeadOffsets::paper) {
      t += " offsets=" + std::string(head_offsets_name(spec.head_offsets));
    }
    return t + (spec.causal ? " causal" : "");
  }
  std::string patterns_text() const {
    std::string t;
    for (size_t i = 0; i < segments.size(); ++i) {
      t += (i ? " " : "") + std::string("(") + segments[i].text() + "," + dilations[i].text() + ")";
    }
    return t;
  }
};

Layer parse_layer(const Args& args) {
  Layer l;
  l.spec.batch = single(args, "batch", 1);
  l.spec.heads = single(args, "heads", 8);
  l.spec.heads_kv = single(args, "heads-kv", l.spec.heads);
  l.spec.head_dim = single(args, "head-dim", 64);
  if (args.has("mode") && !parse_mode(args.required("mode"), &l.spec.mode)) {
    throw UsageError("--mode = " + args.required("mode") +
                     ": expected longnet or head_groups (one value with --distributed)");
  }
  if (args.has("dtype") && !parse_dtype(args.required("dtype"), &l.spec.dtype)) {
    throw UsageError("--dtype = " + args.required("dtype") +
                     ": expected fp32, fp16 or bf16 (one value with --distributed)");
  }
  if (args.has("head-offsets") &&
      !parse_head_offsets(args.required("head-offsets"), &l.spec.head_offsets)) {
    throw UsageError("--head-offsets = " + args.required("head-offsets") +
                     ": expected paper or grouped");
  }
  l.spec.causal = args.is_set("causal");
  l.segments = parse_scaled_list("segments", args.value_or("segments", "1024,2048"));
  l.dilations = parse_scaled_list("dilations", args.value_or("dilations", "1,2"));
  if (l.segments.size() != l.dilations.size()) {
    throw UsageError("--dilations: expected " + std::to_string(l.segments.size()) +
                     " values, one per segment length in --segments");
  }
  l.backend = args.value_or("backend", "cpu");
  if (l.backend == "all") l.backend = "cpu";
  l.backward = args.is_set("backward");
  l.repeats = static_cast<int>(parse_integer("repeats", args.value_or("repeats", "5")));
  l.warmup = static_cast<int>(parse_integer("warmup", args.value_or("warmup", "1")));
  if (l.repeats < 1 || l.warmup < 0) throw UsageError("--repeats >= 1 and --warmup >= 0 expected");
  l.seed = static_cast<uint64_t>(parse_integer("seed", args.value_or("seed", "1")));
  l.exchange_budget = distributed_exchange_budget(args);
  if (args.has("threads")) {
    l.spec.threads = static_cast<int32_t>(parse_integer("threads", args.required("threads")));
  }
  return l;
}

// What one rank measured in one case; gathered on rank 0.
struct RankResult {
  double forward_ms = 0, backward_ms = 0;
  double exchange_ms = 0, local_ms = 0, remote_ms = 0;  // forward + backward, median repeat
  double bytes_sent = 0, bytes_received = 0;            // forward + backward, one repeat
  double forward_bytes_received = 0;
  double remote_rows = 0;
};

struct CaseResult {
  int64_t per_rank = 0, global = 0;
  double verify_out = 0, verify_grad = 0;
  int64_t verify_n = 0;
  bool verified = false;
  double single_forward_ms = 0, single_backward_ms = 0;
  std::vector<RankResult> ranks;
  double ring_bytes_per_rank = 0;  // forward: every other rank's k and v rows
  double efficiency = 0;
};

void check(dist::Communicator& comm, const Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "dilated bench --distributed: rank %d: %s: %s\n", comm.rank(), what,
               s.message().c_str());
  comm.abort(s.message());
}

// max |got - want| / max(max |want|, 1) over finite entries (NaN where one is NaN: infinite).
double error_of(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, scale = 1;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i])) return INFINITY;
    if (!std::isfinite(want[i])) continue;
    diff = std::max(diff, std::fabs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  return diff / scale;
}

// Rows [first, last) of a whole-problem output ([B, N, width] or lse [B*H, N, 1]).
std::vector<float> rows(const std::vector<float>& whole, int64_t batch, int64_t n, int64_t width,
                        int64_t first, int64_t last) {
  std::vector<float> r;
  for (int64_t b = 0; b < batch; ++b) {
    const auto begin = whole.begin() + (b * n + first) * width;
    r.insert(r.end(), begin, begin + (last - first) * width);
  }
  return r;
}

// The sharded layer at N = P x min(seq-len, 256) against the oracle, on every rank.
void verify(dist::Communicator& comm, const Layer& layer, int64_t per_rank, CaseResult* result) {
  const int ranks = comm.size(), rank = comm.rank();
  const ProblemSpec spec = layer.at_length(ranks * std::min<int64_t>(per_rank, 256));
  result->verify_n = spec.seqlen;
  const std::vector<int64_t> cuts = even_cuts(spec.seqlen, ranks);
  const int64_t first = cuts[at(rank)], last = cuts[at(rank) + 1];
  const HostTensors whole = random_inputs(spec, layer.seed, layer.backward);
  HostShard shard(spec, first, last, layer.backward);
  const int64_t b = spec.batch, n = spec.seqlen, qw = spec.heads * spec.head_dim;
  const int64_t kw = spec.heads_kv * spec.head_dim;
  HostTensors mine;
  mine.q = rows(whole.q, b, n, qw, first, last);
  mine.k = rows(whole.k, b, n, kw, first, last);
  mine.v = rows(whole.v, b, n, kw, first, last);
  if (layer.backward) mine.dout = rows(whole.dout, b, n, qw, first, last);
  shard.set_inputs(mine);
  dist::Options options;
  options.backend = layer.backend;
  options.exchange_budget_bytes = layer.exchange_budget;
  check(comm, dist::forward(shard.params(), shard.info(), comm, options), "verify forward");
  if (layer.backward) {
    check(comm, dist::backward(shard.params(), shard.info(), comm, options), "verify backward");
  }
  // The oracle on the whole problem (every rank: it is small), in the same dtype.
  HostShard oracle(spec, 0, n, layer.backward);
  oracle.set_inputs(whole);
  check(comm, forward(oracle.params(), {}, "reference"), "oracle forward");
  if (layer.backward) check(comm, backward(oracle.params(), {}, "reference"), "oracle backward");
  const HostOutputs got = shard.outputs(), want = oracle.outputs();
  double errors[2] = {error_of(got.out, rows(want.out, b, n, qw, first, last)), 0.0};
  if (layer.backward) {
    errors[1] = std::max({error_of(got.dq, rows(want.dq, b, n, qw, first, last)),
                          error_of(got.dk, rows(want.dk, b, n, kw, first, last)),
                          error_of(got.dv, rows(want.dv, b, n, kw, first, last))});
  }
  std::vector<double> all(at(2 * ranks));
  check(comm, comm.all_gather(errors, sizeof(errors), all.data()), "verify");
  for (int q = 0; q < ranks; ++q) {
    result->verify_out = std::max(result->verify_out, all[at(2 * q)]);
    result->verify_grad = std::max(result->verify_grad, all[at(2 * q + 1)]);
  }
  // fp32: the CLI bench's bounds; 16-bit: one unit in the last place (the shards compute in
  // float32 and round once, like the oracle) and four for gradients (delta reads the rounded
  // out).
  const double unit = spec.dtype == DType::bf16 ? 0x1p-7 : spec.dtype == DType::f16 ? 0x1p-10 : 0;
  const double out_bound = spec.dtype == DType::f32 ? 1e-5 : unit + 1e-5;
  const double grad_bound = spec.dtype == DType::f32 ? 5e-5 : 4 * unit + 5e-5;
  result->verified = result->verify_out <= out_bound && result->verify_grad <= grad_bound;
}

// One process, one rank's tokens: rank 0 alone while the others wait.
void time_single(dist::Communicator& comm, const Layer& layer, int64_t per_rank,
                 CaseResult* result) {
  if (comm.rank() == 0) {
    const ProblemSpec spec = layer.at_length(per_rank);
    HostShard whole(spec, 0, per_rank, layer.backward);
    whole.set_inputs(random_inputs(spec, layer.seed, layer.backward));
    Samples fwd, bwd;
    for (int i = 0; i < layer.warmup + layer.repeats; ++i) {
      const Stopwatch f;
      check(comm, forward(whole.params(), {}, layer.backend), "single-process forward");
      const double fms = f.milliseconds();
      const Stopwatch g;
      if (layer.backward) {
        check(comm, backward(whole.params(), {}, layer.backend), "single-process backward");
      }
      if (i >= layer.warmup) {
        fwd.add(fms);
        bwd.add(g.milliseconds());
      }
    }
    result->single_forward_ms = fwd.median();
    result->single_backward_ms = layer.backward ? bwd.median() : 0;
  }
  check(comm, comm.barrier(), "barrier after the single-process run");
}

void time_distributed(dist::Communicator& comm, const Layer& layer, int64_t per_rank,
                      CaseResult* result) {
  const int ranks = comm.size(), rank = comm.rank();
  const ProblemSpec spec = layer.at_length(ranks * per_rank);
  const std::vector<int64_t> cuts = even_cuts(spec.seqlen, ranks);
  HostShard shard(spec, cuts[at(rank)], cuts[at(rank) + 1], layer.backward);
  ProblemSpec mine = spec;
  mine.seqlen = shard.rows();
  shard.set_inputs(
      random_inputs(mine, layer.seed + 101 * static_cast<uint64_t>(rank), layer.backward));
  dist::Options options;
  options.backend = layer.backend;
  options.exchange_budget_bytes = layer.exchange_budget;
  Samples fwd, bwd, exchange, local, remote;
  RankResult r;
  for (int i = 0; i < layer.warmup + layer.repeats; ++i) {
    check(comm, comm.barrier(), "barrier");
    dist::Stats fs, bs;
    options.stats = &fs;
    const Stopwatch f;
    check(comm, dist::forward(shard.params(), shard.info(), comm, options), "forward");
    const double fms = f.milliseconds();
    const Stopwatch g;
    if (layer.backward) {
      options.stats = &bs;
      check(comm, dist::backward(shard.params(), shard.info(), comm, options), "backward");
    }
    const double bms = g.milliseconds();
    if (i < layer.warmup) continue;
    fwd.add(fms);
    bwd.add(bms);
    exchange.add(1e3 * (fs.exchange_seconds + bs.exchange_seconds));
    local.add(1e3 * (fs.local_seconds + bs.local_seconds));
    remote.add(1e3 * (fs.remote_seconds + bs.remote_seconds));
    r.bytes_sent = static_cast<double>(fs.bytes_sent + bs.bytes_sent);
    r.bytes_received = static_cast<double>(fs.bytes_received + bs.bytes_received);
    r.forward_bytes_received = static_cast<double>(fs.bytes_received);
    r.remote_rows = static_cast<double>(fs.remote_rows);
  }
  r.forward_ms = fwd.median();
  r.backward_ms = layer.backward ? bwd.median() : 0;
  r.exchange_ms = exchange.median();
  r.local_ms = local.median();
  r.remote_ms = remote.median();
  result->ranks.resize(at(ranks));
  check(comm, comm.all_gather(&r, sizeof(r), result->ranks.data()), "gather results");
  const int64_t row_bytes = spec.heads_kv * 2 * spec.head_dim * dtype_size(spec.dtype);
  result->ring_bytes_per_rank =
      static_cast<double>((ranks - 1) * per_rank * spec.batch * row_bytes);
  double slowest = 0;
  for (const RankResult& x : result->ranks)
    slowest = std::max(slowest, x.forward_ms + x.backward_ms);
  result->efficiency = (result->single_forward_ms + result->single_backward_ms) / slowest;
}

std::string kib(double bytes) {
  return cell("%.1f", bytes / 1024.0);
}

std::string format_table(const Layer& layer, int ranks, const Machine& m,
                         const std::vector<CaseResult>& cases) {
  std::string s = "dilated bench --distributed: " + std::to_string(ranks) + " ranks (MPI) on " +
                  m.cpu + " (" + std::to_string(m.hardware_threads) + " hardware threads" +
                  (ranks > m.hardware_threads ? ", oversubscribed" : "") + "), backend " +
                  layer.backend + ", " + std::to_string(layer.spec.threads) +
                  " thread(s) per rank" + "\nlayer: " + layer.sizes_text() + " with patterns " +
                  layer.patterns_text() + (layer.backward ? ", fwd+bwd" : ", fwd") + "\n";
  for (const CaseResult& c : cases) {
    s += "\nN = " + std::to_string(c.global) + " (" + std::to_string(c.per_rank) +
         " per rank): verified at N = " + std::to_string(c.verify_n) + " (max error out " +
         cell("%.2g", c.verify_out) + ", gradients " + cell("%.2g", c.verify_grad) + ": " +
         (c.verified ? "ok" : "FAILED") + ")\n";
    s += "one process at N = " + std::to_string(c.per_rank) + ": forward " +
         cell("%.2f", c.single_forward_ms) + " ms" +
         (layer.backward ? ", backward " + cell("%.2f", c.single_backward_ms) + " ms" : "") + "\n";
    TextTable t({"rank", "fwd ms", "bwd ms", "exchange ms", "local ms", "remote ms", "sent KiB",
                 "recv KiB", "k/v rows in", "ring KiB (fwd)"});
    for (size_t q = 0; q < c.ranks.size(); ++q) {
      const RankResult& r = c.ranks[q];
      t.add({std::to_string(q), cell("%.2f", r.forward_ms), cell("%.2f", r.backward_ms),
             cell("%.2f", r.exchange_ms), cell("%.2f", r.local_ms), cell("%.2f", r.remote_ms),
             kib(r.bytes_sent), kib(r.bytes_received), cell("%.0f", r.remote_rows),
             kib(c.ring_bytes_per_rank)});
    }
    s += t.str();
    s += "weak-scaling efficiency (one process at N/P over the slowest rank at N): " +
         cell("%.1f", 100 * c.efficiency) + "%\n";
  }
  return s;
}

std::string format_json(const Layer& layer, int ranks, const Machine& m,
                        const std::vector<CaseResult>& cases) {
  JsonWriter j;
  j.begin_object();
  j.key("ranks").value(ranks).key("backend").value(layer.backend);
  j.key("threads_per_rank").value(static_cast<int64_t>(layer.spec.threads));
  j.key("machine")
      .begin_object()
      .key("cpu")
      .value(m.cpu)
      .key("hardware_threads")
      .value(m.hardware_threads)
      .end_object();
  j.key("layer").value(layer.sizes_text()).key("patterns").value(layer.patterns_text());
  j.key("backward").value(layer.backward);
  j.key("cases").begin_array();
  for (const CaseResult& c : cases) {
    j.begin_object();
    j.key("seq_len").value(c.global).key("seq_len_per_rank").value(c.per_rank);
    j.key("verify_n").value(c.verify_n).key("verify_error_out").value(c.verify_out);
    j.key("verify_error_grad").value(c.verify_grad).key("verified").value(c.verified);
    j.key("single_forward_ms").value(c.single_forward_ms);
    j.key("single_backward_ms").value(c.single_backward_ms);
    j.key("ring_bytes_per_rank").value(c.ring_bytes_per_rank);
    j.key("efficiency").value(c.efficiency);
    j.key("per_rank").begin_array();
    for (const RankResult& r : c.ranks) {
      j.begin_object();
      j.key("forward_ms").value(r.forward_ms).key("backward_ms").value(r.backward_ms);
      j.key("exchange_ms").value(r.exchange_ms).key("local_ms").value(r.local_ms);
      j.key("remote_ms").value(r.remote_ms).key("bytes_sent").value(r.bytes_sent);
      j.key("bytes_received").value(r.bytes_received);
      j.key("forward_bytes_received").value(r.forward_bytes_received);
      j.key("remote_rows").value(r.remote_rows);
      j.end_object();
    }
    j.end_array();
    j.end_object();
  }
  j.end_array();
  j.end_object();
  return j.str() + "\n";
}

}  // namespace

int bench_distributed(const Args& args) {
  dist::Communicator& comm = distributed_communicator();
  comm.set_timeout(distributed_timeout(args));
  Layer layer = parse_layer(args);
  if (!args.has("threads")) {
    layer.spec.threads = default_rank_threads(local_rank_count(comm));
  }
  const std::vector<int64_t> per_rank =
      parse_integer_list("seq-len", args.value_or("seq-len", "4096"));
  const std::string format = args.value_or("format", "table");
  if (format != "table" && format != "json") {
    throw UsageError("--format = " + format + ": expected table or json with --distributed");
  }
  if (args.has("out")) check_output_file("out", args.required("out"));
  for (int64_t n : per_rank) {
    if (n < 1)
      throw UsageError("--seq-len = " + std::to_string(n) + ": expected tokens per rank >= 1");
    for (int64_t total : {n, n * comm.size()}) {
      const Status s = validate_spec(layer.at_length(total),
                                     layer.backward ? Direction::backward : Direction::forward);
      if (!s.ok())
        throw UsageError("invalid case at N = " + std::to_string(total) + ": " + s.message());
    }
  }
  const bool progress = !args.is_set("quiet") && comm.rank() == 0;
  std::vector<CaseResult> cases;
  for (int64_t n : per_rank) {
    CaseResult c;
    c.per_rank = n;
    c.global = n * comm.size();
    if (progress)
      std::fprintf(stderr, "dilated bench --distributed: N = %lld: verifying\n",
                   static_cast<long long>(c.global));
    verify(comm, layer, n, &c);
    if (progress)
      std::fprintf(stderr, "dilated bench --distributed: N = %lld: one process\n",
                   static_cast<long long>(c.global));
    time_single(comm, layer, n, &c);
    if (progress)
      std::fprintf(stderr, "dilated bench --distributed: N = %lld: %d ranks\n",
                   static_cast<long long>(c.global), comm.size());
    time_distributed(comm, layer, n, &c);
    cases.push_back(c);
  }
  bool verified = true;
  for (const CaseResult& c : cases) verified = verified && c.verified;
  if (comm.rank() != 0) return verified ? kExitOk : kExitFailure;
  const Machine m = describe_machine();
  const std::string text = format == "json" ? format_json(layer, comm.size(), m, cases)
                                            : format_table(layer, comm.size(), m, cases);
  if (args.has("out")) {
    const std::filesystem::path path(args.required("out"));
    OutputFiles file(path.parent_path().string());
    throw_if_failed(file.stage_text(path.filename().string(), text));
    throw_if_failed(file.commit());
  } else {
    std::fputs(text.c_str(), stdout);
  }
  return verified ? kExitOk : kExitFailure;
}

}  // namespace dilated::cli
