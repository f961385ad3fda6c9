#include "bench_report.hpp"

#include <cmath>
#include <cstdio>
#include <variant>

#include "host_memory.hpp"
#include "json_writer.hpp"
#include "text_table.hpp"

namespace dilated::cli {
namespace {

struct Null {};
using Value = std::variant<Null, std::string, double, int64_t, bool, std::vector<int64_t>>;
using Fields = std::vector<std::pair<std::string, Value>>;

// Effective rates from the exact work count (DESIGN 2.6): backward 2.5x, fwd+bwd 3.5x.
double tflops(double flops, double ms) {
  return ms > 0 ? flops / (ms * 1e-3) / 1e12 : NAN;
}

Value measured(const BenchRow& row, double x) {
  return row.ok() && std::isfinite(x) ? Value(x) : Null{};
}

// Every column of a row, in order: the JSON keys and the CSV header.
Fields row_fields(const BenchRow& row, double fma_gflops) {
  const ProblemSpec& s = row.bench.spec;
  std::vector<int64_t> segments, dilations;
  for (const Pattern& p : s.patterns) {
    segments.push_back(p.segment);
    dilations.push_back(p.dilation);
  }
  const double fwd = row.fwd_ms.median(), bwd = row.bwd_ms.median(), both = row.fwdbwd_ms.median();
  const double tokens = static_cast<double>(s.batch * s.seqlen);
  const bool host = row.on_host && fma_gflops > 0;
  auto percent_of_fma = [&](double tf) {
    return host && std::isfinite(tf) ? Value(100.0 * tf * 1e3 / fma_gflops) : Value(Null{});
  };
  const double fwd_tf = tflops(row.flops, fwd), both_tf = tflops(3.5 * row.flops, both);
  auto bytes = [&](int64_t b) { return row.ok() ? Value(b) : Value(Null{}); };
  return {
      {"impl", row.impl},
      {"backend", row.backend},
      {"device", row.device},
      {"mode", std::string(mode_name(s.mode))},
      {"head_offsets", std::string(head_offsets_name(s.head_offsets))},
      {"b", s.batch},
      {"n", s.seqlen},
      {"h", s.heads},
      {"h_kv", s.heads_kv},
      {"d", s.head_dim},
      {"segments", segments},
      {"dilations", dilations},
      {"blocks", s.blocks_text()},
      {"block_size", s.block_patterns.empty() ? Value(Null{}) : Value(s.block_size)},
      {"grid", s.grid_height > 0
                   ? Value(std::to_string(s.grid_height) + "x" + std::to_string(s.grid_width))
                   : Value(Null{})},
      {"dtype", std::string(dtype_name(s.dtype))},
      {"causal", s.causal},
      {"backward", row.bench.backward},
      {"fwd_ms", measured(row, fwd)},
      {"fwd_ms_min", measured(row, row.fwd_ms.min())},
      {"fwd_ms_max", measured(row, row.fwd_ms.max())},
      {"bwd_ms", measured(row, bwd)},
      {"bwd_ms_min", measured(row, row.bwd_ms.min())},
      {"bwd_ms_max", measured(row, row.bwd_ms.max())},
      {"fwdbwd_ms", measured(row, both)},
      {"fwdbwd_ms_min", measured(row, row.fwdbwd_ms.min())},
      {"fwdbwd_ms_max", measured(row, row.fwdbwd_ms.max())},
      {"repeats", row.ok() ? Value(static_cast<int64_t>(row.fwd_ms.count())) : Value(Null{})},
      {"fwd_gflop", row.flops * 1e-9},
      {"fwd_tflops", measured(row, fwd_tf)},
      {"bwd_tflops", measured(row, tflops(2.5 * row.flops, bwd))},
      {"fwdbwd_tflops", measured(row, both_tf)},
      {"fwd_pct_of_fma", row.ok() ? percent_of_fma(fwd_tf) : Value(Null{})},
      {"fwdbwd_pct_of_fma", row.ok() ? percent_of_fma(both_tf) : Value(Null{})},
      {"tokens_per_s", measured(row, tokens / (fwd * 1e-3))},
      {"fwdbwd_tokens_per_s", measured(row, tokens / (both * 1e-3))},
      {"peak_bytes", bytes(row.peak_bytes())},
      {"tensor_bytes", bytes(row.tensor_bytes)},
      {"extra_bytes", bytes(row.extra_bytes())},
      {"workspace_bytes", bytes(row.workspace_bytes)},
      {"verify_b", row.verify_b ? Value(row.verify_b) : Value(Null{})},
      {"verify_n", row.verify_n ? Value(row.verify_n) : Value(Null{})},
      {"fwd_rel_err", std::isfinite(row.fwd_err) ? Value(row.fwd_err) : Value(Null{})},
      {"bwd_rel_err", std::isfinite(row.bwd_err) ? Value(row.bwd_err) : Value(Null{})},
      {"max_rel_err", std::isfinite(row.max_rel_err()) ? Value(row.max_rel_err()) : Value(Null{})},
      {"status", row.status},
  };
}

void write_value(JsonWriter& json, const Value& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Null>) {
          json.null();
        } else {
          json.value(x);
        }
      },
      v);
}

std::string csv_text(const Value& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Null>) {
          return "";
        } else if constexpr (std::is_same_v<T, std::string>) {
          std::string q = "\"";
          for (char c : x) q += c == '"' ? std::string("\"\"") : std::string(1, c);
          return q + "\"";
        } else if constexpr (std::is_same_v<T, double>) {
          char text[32];
          std::snprintf(text, sizeof text, "%.6g", x);
          return text;
        } else if constexpr (std::is_same_v<T, bool>) {
          return x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, int64_t>) {
          return std::to_string(x);
        } else {
          std::string s = "\"";
          for (size_t i = 0; i < x.size(); ++i) s += (i ? "," : "") + std::to_string(x[i]);
          return s + "\"";
        }
      },
      v);
}

std::string list_text(const std::vector<Pattern>& patterns, bool segments) {
  std::string s;
  for (size_t i = 0; i < patterns.size(); ++i) {
    s += (i ? "," : "") + std::to_string(segments ? patterns[i].segment : patterns[i].dilation);
  }
  return s;
}

std::string mib(int64_t bytes) {
  return cell("%.1f", static_cast<double>(bytes) / (1 << 20));
}

}  // namespace

std::string format_json(const BenchReport& r) {
  JsonWriter json;
  json.begin_object();
  json.key("tool").value("dilated bench");
  json.key("suite").value(r.suite);
  json.key("machine").begin_object();
  json.key("cpu").value(r.machine.cpu);
  json.key("hardware_threads").value(r.machine.hardware_threads);
  json.key("simd").value(r.machine.simd);
  json.key("gpus").begin_array();
  for (const std::string& g : r.machine.gpus) json.value(g);
  json.end_array();
  json.key("memory_available_bytes").value(r.machine.memory_available);
  json.end_object();
  json.key("ceiling").begin_object();
  json.key("fma_gflops").value(r.fma_gflops);
  json.key("fma_threads").value(r.fma_threads);
  json.key("fma_seconds").value(r.fma_seconds);
  json.end_object();
  json.key("settings").begin_object();
  json.key("warmup").value(r.options.warmup);
  json.key("repeats").value(r.options.repeats);
  json.key("min_repeats").value(r.options.min_repeats);
  json.key("max_seconds").value(r.options.max_seconds);
  json.key("verify_pairs").value(r.options.verify_pairs);
  json.key("seed").value(static_cast<int64_t>(r.options.seed));
  json.key("host_heap_tracked").value(host_heap_tracked());
  json.key("peak_memory")
      .value(
          "peak_bytes = tensors + workspace + the most the host heap grew during one call "
          "(malloc replaced in the CLI binary)");
  json.end_object();
  json.key("results").begin_array();
  for (const BenchRow& row : r.rows) {
    json.begin_object();
    for (const auto& [key, value] : row_fields(row, r.fma_gflops)) {
      json.key(key);
      write_value(json, value);
    }
    json.end_object();
  }
  json.end_array();
  json.end_object();
  return json.str() + "\n";
}

std::string format_csv(const BenchReport& r) {
  std::string out;
  const Fields header = row_fields(BenchRow{}, r.fma_gflops);
  for (size_t i = 0; i < header.size(); ++i) out += (i ? "," : "") + header[i].first;
  out += "\n";
  for (const BenchRow& row : r.rows) {
    const Fields fields = row_fields(row, r.fma_gflops);
    for (size_t i = 0; i < fields.size(); ++i) out += (i ? "," : "") + csv_text(fields[i].second);
    out += "\n";
  }
  return out;
}

std::string format_table(const BenchReport& r) {
  std::string out = "machine: " + r.machine.cpu + " (" +
                    std::to_string(r.machine.hardware_threads) + " threads, " + r.machine.simd +
                    ")";
  for (const std::string& g : r.machine.gpus) out += "; " + g;
  out += "\nceiling: " + cell("%.1f", r.fma_gflops) + " GFLOP/s fp32 FMA on " +
         std::to_string(r.fma_threads) + " threads (measured now)\n\n";
  TextTable table({"backend",  "mode",      "dtype",    "b",         "n",          "h",
                   "h_kv",     "d",         "segments", "dilations", "blocks",     "causal",
                   "fwd ms",   "bwd ms",    "fwd TF/s", "f+b TF/s",  "%fma f/f+b", "Mtok/s",
                   "peak MiB", "extra MiB", "err (n)",  "status"});
  for (const BenchRow& row : r.rows) {
    const ProblemSpec& s = row.bench.spec;
    const double fwd = row.fwd_ms.median(), both = row.fwdbwd_ms.median();
    auto ms = [&](const Samples& samples) {
      if (!row.ok() || samples.empty()) return std::string("-");
      const double m = samples.median();
      return cell("%.2f", m) + cell(" ±%.0f%%", 50.0 * (samples.max() - samples.min()) / m);
    };
    const bool host = row.on_host && r.fma_gflops > 0;
    std::string pct = "-";
    if (row.ok() && host) {
      pct = cell("%.0f", 100.0 * tflops(row.flops, fwd) * 1e3 / r.fma_gflops);
      if (!row.fwdbwd_ms.empty()) {
        pct += "/" + cell("%.0f", 100.0 * tflops(3.5 * row.flops, both) * 1e3 / r.fma_gflops);
      }
    }
    table.add(
        {row.backend,
         mode_name(s.mode),
         dtype_name(s.dtype),
         std::to_string(s.batch),
         std::to_string(s.seqlen),
         std::to_string(s.heads),
         std::to_string(s.heads_kv),
         std::to_string(s.head_dim),
         list_text(s.patterns, true),
         list_text(s.patterns, false),
         s.block_patterns.empty() && s.grid_height == 0
             ? "-"
             : s.blocks_text() + (s.grid_height > 0 ? " grid " + std::to_string(s.grid_height) +
                                                          "x" + std::to_string(s.grid_width)
                                                    : ""),
         s.causal ? "yes" : "no",
         ms(row.fwd_ms),
         ms(row.bwd_ms),
         row.ok() ? cell("%.3f", tflops(row.flops, fwd)) : "-",
         row.ok() && !row.fwdbwd_ms.empty() ? cell("%.3f", tflops(3.5 * row.flops, both)) : "-",
         pct,
         row.ok() ? cell("%.3f", static_cast<double>(s.batch * s.seqlen) / fwd * 1e-3) : "-",
         row.ok() ? mib(row.peak_bytes()) : "-",
         row.ok() ? mib(row.extra_bytes()) : "-",
         std::isfinite(row.max_rel_err())
             ? cell("%.1e", row.max_rel_err()) + " (" + std::to_string(row.verify_n) + ")"
             : "-",
         row.status});
  }
  out += table.str();
  out +=
      "\nms: median ± half the range over the repeats; TF/s from the exact work count "
      "(backward 2.5x, fwd+bwd 3.5x the forward); err: max relative error against the "
      "oracle on b=1 and the n shown; peak: tensors + workspace + host heap growth during "
      "a call; extra: peak minus the tensors.\n";
  return out;
}

}  // namespace dilated::cli
