// Times the fast CPU backend ("cpu") against the cores' fp32 FMA ceiling measured in the same
// run (issue 2's performance section): effective GFLOP/s from dilated::forward_flops
// (backward 2.5x, forward+backward 3.5x), efficiency, and the memory beyond the tensors.
//
//   cpu_fast_bench [--n 16384] [--batch 1] [--heads 8] [--heads-kv 8] [--dim 64]
//                  [--segments 2048,4096,8192] [--dilations 1,2,4] [--mode both|longnet|
//                  head_groups] [--dtype fp32|bf16|fp16] [--causal] [--threads 0]
//                  [--repeats 5] [--no-backward] [--fma-seconds 1]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/dtype_convert.hpp"
#include "cpu/fma_peak.hpp"
#include "dilated/dilated.hpp"

namespace {

using dilated::DType;
using dilated::Mode;
using dilated::Params;

struct Options {
  int64_t n = 16384, batch = 1, heads = 8, heads_kv = 8, dim = 64;
  std::vector<int64_t> segments = {2048, 4096, 8192}, dilations = {1, 2, 4};
  std::vector<Mode> modes = {Mode::head_groups, Mode::longnet};
  DType dtype = DType::f32;
  bool causal = false, backward = true;
  int threads = 0, repeats = 5;
  double fma_seconds = 1.0;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "cpu_fast_bench: %s\n", message.c_str());
  std::exit(2);
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> values;
  std::stringstream list(s);
  for (std::string item; std::getline(list, item, ',');) values.push_back(std::stoll(item));
  return values;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(arg + ": expected a value");
      return argv[++i];
    };
    if (arg == "--n")
      o.n = std::stoll(value());
    else if (arg == "--batch")
      o.batch = std::stoll(value());
    else if (arg == "--heads")
      o.heads = std::stoll(value());
    else if (arg == "--heads-kv")
      o.heads_kv = std::stoll(value());
    else if (arg == "--dim")
      o.dim = std::stoll(value());
    else if (arg == "--segments")
      o.segments = parse_list(value());
    else if (arg == "--dilations")
      o.dilations = parse_list(value());
    else if (arg == "--threads")
      o.threads = std::stoi(value());
    else if (arg == "--repeats")
      o.repeats = std::max(1, std::stoi(value()));
    else if (arg == "--fma-seconds")
      o.fma_seconds = std::stod(value());
    else if (arg == "--causal")
      o.causal = true;
    else if (arg == "--no-backward")
      o.backward = false;
    else if (arg == "--dtype") {
      if (!dilated::parse_dtype(value(), &o.dtype))
        usage_error("--dtype: expected fp32, bf16 or fp16");
    } else if (arg == "--mode") {
      const std::string m = value();
      if (m == "both")
        o.modes = {Mode::head_groups, Mode::longnet};
      else if (m == "longnet")
        o.modes = {Mode::longnet};
      else if (m == "head_groups")
        o.modes = {Mode::head_groups};
      else
        usage_error("--mode " + m + ": expected both, longnet or head_groups");
    } else {
      usage_error("unknown argument " + arg);
    }
  }
  if (o.segments.size() != o.dilations.size())
    usage_error("--segments and --dilations differ in length");
  return o;
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

long peak_rss_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A contiguous [B, N, heads, dim] tensor of the problem's dtype.
struct HostTensor {
  std::vector<unsigned char> bytes;
  dilated::Tensor view;
};

HostTensor make_tensor(const Params& p, int64_t heads, std::mt19937_64* rng) {
  HostTensor t;
  const int64_t elements = p.batch * p.seqlen * heads * p.head_dim;
  t.bytes.resize(static_cast<size_t>(elements * dilated::dtype_size(p.dtype)));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < elements; ++i) {
    dilated::store_element(p.dtype, t.bytes.data(), i, rng ? normal(*rng) : 0.0f);
  }
  t.view = dilated::contiguous_tensor(p, t.bytes.data(), heads, p.head_dim);
  return t;
}

struct Timing {
  std::vector<double> ms;
  void add(const std::function<void()>& f) {
    const auto start = std::chrono::steady_clock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  std::string summary() const {
    char s[96];
    std::snprintf(s, sizeof s, "%.1f ms (min %.1f, max %.1f)", median(ms),
                  *std::min_element(ms.begin(), ms.end()), *std::max_element(ms.begin(), ms.end()));
    return s;
  }
};

void check(const dilated::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "cpu_fast_bench: %s: %s\n", what, s.message().c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M", std::localtime(&now));
  const dilated::Backend* cpu = dilated::find_backend("cpu");
  std::printf("date %s, CPU %s, %s\n", date, cpu->device_name().c_str(), cpu->description());
  std::printf("load average at start: %s\n", load_average().c_str());
  const double fma_start = dilated::cpu::measure_fma_gflops(o.threads, o.fma_seconds);
  std::printf("FMA ceiling (%s, %d threads): %.1f GFLOP/s\n", dilated::cpu::simd_target_name(),
              o.threads, fma_start);

  // Other processes share this machine: the ceiling is measured before, between and after
  // the runs and the best measurement counts (efficiencies are then the conservative ones).
  std::vector<double> ceilings = {fma_start};
  struct Row {
    Mode mode;
    double fwd_gflops, fwdbwd_gflops;
  };
  std::vector<Row> rows;
  for (Mode mode : o.modes) {
    if (!rows.empty())
      ceilings.push_back(dilated::cpu::measure_fma_gflops(o.threads, o.fma_seconds));
    Params p;
    p.batch = o.batch;
    p.seqlen = o.n;
    p.heads = o.heads;
    p.heads_kv = o.heads_kv;
    p.head_dim = p.head_dim_v = o.dim;
    p.dtype = o.dtype;
    p.mode = mode;
    p.causal = o.causal;
    p.num_threads = o.threads;
    std::vector<dilated::Pattern> patterns;
    for (size_t i = 0; i < o.segments.size(); ++i)
      patterns.push_back({o.segments[i], o.dilations[i]});
    check(dilated::set_patterns(p, patterns), "patterns");

    std::mt19937_64 rng(12345);
    HostTensor q = make_tensor(p, p.heads, &rng), k = make_tensor(p, p.heads_kv, &rng);
    HostTensor v = make_tensor(p, p.heads_kv, &rng), dout = make_tensor(p, p.heads, &rng);
    HostTensor out = make_tensor(p, p.heads, nullptr), dq = make_tensor(p, p.heads, nullptr);
    HostTensor dk = make_tensor(p, p.heads_kv, nullptr), dv = make_tensor(p, p.heads_kv, nullptr);
    std::vector<float> lse(static_cast<size_t>(p.batch * p.heads * p.seqlen), 0.0f);
    p.q = q.view;
    p.k = k.view;
    p.v = v.view;
    p.out = out.view;
    p.dout = dout.view;
    p.dq = dq.view;
    p.dk = dk.view;
    p.dv = dv.view;
    p.lse = lse.data();
    const double qkvo =
        static_cast<double>(q.bytes.size() + k.bytes.size() + v.bytes.size() + out.bytes.size());

    int64_t ws_fwd = 0, ws_bwd = 0;
    check(dilated::workspace_bytes(p, dilated::Direction::forward, "cpu", &ws_fwd), "workspace");
    check(dilated::workspace_bytes(p, dilated::Direction::backward, "cpu", &ws_bwd), "workspace");
    const long rss_before = peak_rss_kib();  // every tensor is allocated and touched by now

    const double flops = dilated::forward_flops(p);
    Timing fwd, bwd;
    check(dilated::forward(p, {}, "cpu"), "forward");  // warm-up
    for (int r = 0; r < o.repeats; ++r)
      fwd.add([&] { check(dilated::forward(p, {}, "cpu"), "forward"); });
    if (o.backward) {
      check(dilated::backward(p, {}, "cpu"), "backward");
      for (int r = 0; r < o.repeats; ++r) {
        bwd.add([&] { check(dilated::backward(p, {}, "cpu"), "backward"); });
      }
    }
    const double rss_extra = static_cast<double>(peak_rss_kib() - rss_before) * 1024.0;

    const double t_fwd = median(fwd.ms) * 1e-3;
    const double fwd_gflops = flops / t_fwd * 1e-9;
    std::printf("\n%s: B=%lld N=%lld H=%lld Hkv=%lld D=%lld %s%s, %.3g forward GFLOP\n",
                dilated::mode_name(mode), static_cast<long long>(o.batch),
                static_cast<long long>(o.n), static_cast<long long>(o.heads),
                static_cast<long long>(o.heads_kv), static_cast<long long>(o.dim),
                dilated::dtype_name(o.dtype), o.causal ? " causal" : "", flops * 1e-9);
    std::printf("  forward   %s: %.1f GFLOP/s\n", fwd.summary().c_str(), fwd_gflops);
    Row row{mode, fwd_gflops, 0.0};
    if (o.backward) {
      const double t_bwd = median(bwd.ms) * 1e-3;
      const double bwd_gflops = 2.5 * flops / t_bwd * 1e-9;
      const double both_gflops = 3.5 * flops / (t_fwd + t_bwd) * 1e-9;
      row.fwdbwd_gflops = both_gflops;
      std::printf("  backward  %s: %.1f GFLOP/s\n", bwd.summary().c_str(), bwd_gflops);
      std::printf("  fwd+bwd   %.1f GFLOP/s\n", both_gflops);
    }
    std::printf(
        "  workspace forward %.2f MiB, backward %.2f MiB = %.2f%% of q+k+v+out (%.0f MiB);"
        " peak RSS grew %.2f MiB\n",
        static_cast<double>(ws_fwd) / 1048576.0, static_cast<double>(ws_bwd) / 1048576.0,
        100.0 * static_cast<double>(std::max(ws_fwd, ws_bwd)) / qkvo, qkvo / 1048576.0,
        rss_extra / 1048576.0);
    rows.push_back(row);
  }
  ceilings.push_back(dilated::cpu::measure_fma_gflops(o.threads, o.fma_seconds));
  const double ceiling = *std::max_element(ceilings.begin(), ceilings.end());
  std::printf("\nFMA ceiling measurements:");
  for (double c : ceilings) std::printf(" %.1f", c);
  std::printf(" GFLOP/s; load average at end: %s\n", load_average().c_str());
  for (const Row& row : rows) {
    std::printf("%-11s efficiency vs %.1f GFLOP/s: forward %.1f%%", dilated::mode_name(row.mode),
                ceiling, 100.0 * row.fwd_gflops / ceiling);
    if (o.backward) std::printf(", forward+backward %.1f%%", 100.0 * row.fwdbwd_gflops / ceiling);
    std::printf("\n");
  }
  if (rows.size() == 2) {
    std::printf("longnet / head_groups efficiency: forward %.2f",
                rows[1].fwd_gflops / rows[0].fwd_gflops);
    if (o.backward) std::printf(", fwd+bwd %.2f", rows[1].fwdbwd_gflops / rows[0].fwdbwd_gflops);
    std::printf("\n");
  }
  return 0;
}
