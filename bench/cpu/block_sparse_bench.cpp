// Block-sparse patterns and Hilbert order on the fast CPU backend (bench/NOTES.md, "Block-sparse
// and Hilbert (CPU)"):
//   1. time against kept-block density: random(k) and local(W) block patterns from 10% to
//      100% of the blocks, against one dilated pattern covering the whole sequence (the dense
//      pattern), effective GFLOP/s from dilated::forward_flops and % of the FMA ceiling
//      measured just before each row;
//   2. a height x width grid in segments of w tokens: mean 2D distance between the tokens of
//      a segment in row-major and in curve order, and the time the reordering costs, applied
//      in the kernels' index mapping (--grid) or as a gather of q, k, v (and dout, out) into
//      curve order before a plain run and a scatter of the results after it.
//
//   block_sparse_bench [--n 8192] [--heads 4] [--dim 64] [--block 64] [--grid 256x256]
//                      [--segment 1024] [--grid-heads 4] [--repeats 3] [--threads 0]
//                      [--fma-seconds 1] [--skip-density] [--skip-grid] [--skip-local]
//                      [--tenths 1,2,...,10]
//   --tenths picks the density rows (tenths of the blocks) of the sweep, --skip-local drops
//   the local(W) rows: shorter runs for A/B comparisons of the random rows.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cpu/fma_peak.hpp"
#include "dilated/dilated.hpp"

namespace {

using dilated::BlockKind;
using dilated::BlockPattern;
using dilated::Params;

struct Options {
  int64_t n = 8192, heads = 4, dim = 64, block = 64;
  int64_t grid_h = 256, grid_w = 256, segment = 1024, grid_heads = 4;
  int repeats = 3, threads = 0;
  double fma_seconds = 1.0;
  bool density = true, grid = true, local = true;
  std::vector<int> tenths{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "block_sparse_bench: %s: expected a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--n")
      o.n = std::stoll(value());
    else if (arg == "--heads")
      o.heads = std::stoll(value());
    else if (arg == "--dim")
      o.dim = std::stoll(value());
    else if (arg == "--block")
      o.block = std::stoll(value());
    else if (arg == "--segment")
      o.segment = std::stoll(value());
    else if (arg == "--grid-heads")
      o.grid_heads = std::stoll(value());
    else if (arg == "--repeats")
      o.repeats = std::max(1, std::stoi(value()));
    else if (arg == "--threads")
      o.threads = std::stoi(value());
    else if (arg == "--fma-seconds")
      o.fma_seconds = std::stod(value());
    else if (arg == "--skip-density")
      o.density = false;
    else if (arg == "--skip-grid")
      o.grid = false;
    else if (arg == "--skip-local")
      o.local = false;
    else if (arg == "--tenths") {
      o.tenths.clear();
      std::string list = value();
      for (size_t at = 0; at < list.size();) {
        const size_t comma = std::min(list.find(',', at), list.size());
        o.tenths.push_back(std::clamp(std::stoi(list.substr(at, comma - at)), 1, 10));
        at = comma + 1;
      }
    } else if (arg == "--grid") {
      const std::string g = value();
      o.grid_h = std::stoll(g.substr(0, g.find('x')));
      o.grid_w = std::stoll(g.substr(g.find('x') + 1));
    } else {
      std::fprintf(stderr, "block_sparse_bench: unknown option %s\n", arg.c_str());
      std::exit(2);
    }
  }
  return o;
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median ms of `repeats` calls after one warm-up.
double time_ms(int repeats, const std::function<void()>& call) {
  call();
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    const double start = now_ms();
    call();
    ms.push_back(now_ms() - start);
  }
  return median(ms);
}

void check(const dilated::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "block_sparse_bench: %s: %s\n", what, s.message().c_str());
    std::exit(1);
  }
}

// A float32 problem [1, n, heads, dim] with forward and backward buffers.
struct Problem {
  int64_t n, heads, dim;
  std::vector<float> q, k, v, out, dout, dq, dk, dv, lse;
  Params p;

  Problem(int64_t n_, int64_t heads_, int64_t dim_, int threads) : n(n_), heads(heads_), dim(dim_) {
    const size_t size = static_cast<size_t>(n * heads * dim);
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    for (auto* x : {&q, &k, &v, &dout}) {
      x->resize(size);
      for (float& e : *x) e = normal(rng);
    }
    for (auto* x : {&out, &dq, &dk, &dv}) x->assign(size, 0.0f);
    lse.assign(static_cast<size_t>(n * heads), 0.0f);
    p.batch = 1;
    p.seqlen = n;
    p.heads = p.heads_kv = heads;
    p.head_dim = p.head_dim_v = dim;
    p.num_threads = threads;
    p.q = dilated::contiguous_tensor(p, q.data(), heads, dim);
    p.k = dilated::contiguous_tensor(p, k.data(), heads, dim);
    p.v = dilated::contiguous_tensor(p, v.data(), heads, dim);
    p.out = dilated::contiguous_tensor(p, out.data(), heads, dim);
    p.dout = dilated::contiguous_tensor(p, dout.data(), heads, dim);
    p.dq = dilated::contiguous_tensor(p, dq.data(), heads, dim);
    p.dk = dilated::contiguous_tensor(p, dk.data(), heads, dim);
    p.dv = dilated::contiguous_tensor(p, dv.data(), heads, dim);
    p.lse = lse.data();
  }
};

struct Timing {
  double fwd_ms, bwd_ms;
};

Timing time_problem(const Params& p, int repeats) {
  Timing t;
  t.fwd_ms = time_ms(repeats, [&] { check(dilated::forward(p, {}, "cpu"), "forward"); });
  t.bwd_ms = time_ms(repeats, [&] { check(dilated::backward(p, {}, "cpu"), "backward"); });
  return t;
}

void density_sweep(const Options& o, int threads) {
  Problem prob(o.n, o.heads, o.dim, threads);
  const int64_t nb = (o.n + o.block - 1) / o.block;
  std::printf(
      "\n## 1. Time against kept-block density: N=%lld, H=%lld, D=%lld, block %lld (%lld "
      "blocks), fp32, non-causal\n\n",
      (long long)o.n, (long long)o.heads, (long long)o.dim, (long long)o.block, (long long)nb);
  std::printf(
      "| pattern | kept | fwd ms | bwd ms | fwd GFLOP/s | fwd+bwd GFLOP/s | ceiling | fwd %% | "
      "fwd+bwd %% | fwd / dense | fwd+bwd / dense |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n");
  // Other processes share these cores: the ceiling is measured again just before each row
  // (shown, so that a disturbed row can be told apart), each row's % uses its own, and the
  // ratios to the dense pattern compare those %.
  auto ceiling_now = [&] { return dilated::cpu::measure_fma_gflops(threads, 0.2); };
  double row_ceiling = ceiling_now();
  const double dense_ceiling = row_ceiling;
  Params dense = prob.p;
  dilated::set_patterns(dense, {{o.n, 1}});
  const Timing dense_t = time_problem(dense, o.repeats);
  const double dense_flops = dilated::forward_flops(dense);
  const double dense_fwd = dense_flops / dense_t.fwd_ms * 1e-6 / dense_ceiling;
  const double dense_both =
      3.5 * dense_flops / (dense_t.fwd_ms + dense_t.bwd_ms) * 1e-6 / dense_ceiling;
  auto row = [&](const std::string& name, const Params& p, const Timing& t) {
    const double flops = dilated::forward_flops(p);
    const double fwd = flops / t.fwd_ms * 1e-6;
    const double both = 3.5 * flops / (t.fwd_ms + t.bwd_ms) * 1e-6;
    std::printf("| %s | %.1f%% | %.1f | %.1f | %.1f | %.1f | %.0f | %.1f | %.1f | %.2f | %.2f |\n",
                name.c_str(), 100.0 * flops / dense_flops, t.fwd_ms, t.bwd_ms, fwd, both,
                row_ceiling, 100 * fwd / row_ceiling, 100 * both / row_ceiling,
                fwd / row_ceiling / dense_fwd, both / row_ceiling / dense_both);
    std::fflush(stdout);
  };
  row("dense (dilated w=N, r=1)", dense, dense_t);
  for (const int tenth : o.tenths) {
    Params p = prob.p;
    dilated::set_patterns(p, {});
    const int64_t k = std::max<int64_t>(1, (tenth * nb + 5) / 10);
    dilated::set_block_patterns(p, {BlockPattern{BlockKind::random, k, 0, 7}}, o.block);
    row_ceiling = ceiling_now();
    row("random(" + std::to_string(k) + ")", p, time_problem(p, o.repeats));
  }
  for (const int tenth : o.tenths) {
    if (!o.local) break;
    Params p = prob.p;
    dilated::set_patterns(p, {});
    // local(W) keeps about 2W + 1 of the nb blocks per row.
    const int64_t w = std::max<int64_t>(0, (tenth * nb / 10 - 1) / 2);
    const int64_t window = tenth == 10 ? nb : w;
    dilated::set_block_patterns(p, {BlockPattern{BlockKind::local, window, 0, 0}}, o.block);
    row_ceiling = ceiling_now();
    row("local(" + std::to_string(window) + ")", p, time_problem(p, o.repeats));
  }
}

// Mean Euclidean distance between the grid cells of each segment's tokens, over segments.
double mean_segment_distance(const std::vector<int64_t>& order, int64_t width, int64_t segment) {
  double total = 0;
  int64_t segments = 0;
  for (int64_t s0 = 0; s0 + segment <= static_cast<int64_t>(order.size()); s0 += segment) {
    double sum = 0;
    for (int64_t i = s0; i < s0 + segment; ++i) {
      for (int64_t j = i + 1; j < s0 + segment; ++j) {
        const double dy = double(order[i] / width - order[j] / width);
        const double dx = double(order[i] % width - order[j] % width);
        sum += std::sqrt(dx * dx + dy * dy);
      }
    }
    total += sum / (double(segment) * double(segment - 1) / 2);
    ++segments;
  }
  return total / double(segments);
}

// dst[i] = src[rows[i]] (row = heads * dim floats), or the scatter dst[rows[i]] = src[i], on
// `threads` threads.
void permute_rows(const std::vector<float>& src, std::vector<float>& dst,
                  const std::vector<int64_t>& rows, int64_t row, bool scatter, int threads) {
  const int64_t n = static_cast<int64_t>(rows.size());
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int64_t i = n * t / threads; i < n * (t + 1) / threads; ++i) {
        const int64_t from = scatter ? i : rows[i], to = scatter ? rows[i] : i;
        std::copy_n(src.data() + from * row, row, dst.data() + to * row);
      }
    });
  }
  for (std::thread& t : pool) t.join();
}

void grid_study(const Options& o, int threads) {
  const int64_t n = o.grid_h * o.grid_w;
  const std::vector<int64_t> order = dilated::hilbert_order(o.grid_h, o.grid_w);
  std::vector<int64_t> identity(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) identity[i] = i;
  std::printf("\n## 2. Hilbert order: %lldx%lld grid (N=%lld), segments of %lld tokens\n\n",
              (long long)o.grid_h, (long long)o.grid_w, (long long)n, (long long)o.segment);
  std::printf(
      "mean 2D distance between the tokens of a segment: row-major %.2f, Hilbert %.2f "
      "cells\n",
      mean_segment_distance(identity, o.grid_w, o.segment),
      mean_segment_distance(order, o.grid_w, o.segment));

  Problem prob(n, o.grid_heads, o.dim, threads);
  Params plain = prob.p;
  dilated::set_patterns(plain, {{o.segment, 1}});
  Params mapped = plain;
  mapped.grid = {o.grid_h, o.grid_w};
  // Fused gather: curve-ordered copies of the inputs, a plain run, results scattered back.
  Problem curve(n, o.grid_heads, o.dim, threads);
  const int64_t row = o.grid_heads * o.dim;
  const int th = threads;
  auto gather_inputs = [&](bool backward) {
    permute_rows(prob.q, curve.q, order, row, false, th);
    permute_rows(prob.k, curve.k, order, row, false, th);
    permute_rows(prob.v, curve.v, order, row, false, th);
    if (backward) {
      permute_rows(prob.dout, curve.dout, order, row, false, th);
      permute_rows(prob.out, curve.out, order, row, false, th);
      // lse [H, N] in curve order, for the backward
      for (int64_t h = 0; h < o.grid_heads; ++h) {
        for (int64_t i = 0; i < n; ++i) curve.lse[h * n + i] = prob.lse[h * n + order[i]];
      }
    }
  };
  auto scatter_outputs = [&](bool backward) {
    if (!backward) {
      permute_rows(curve.out, prob.out, order, row, true, th);
      for (int64_t h = 0; h < o.grid_heads; ++h) {
        for (int64_t i = 0; i < n; ++i) prob.lse[h * n + order[i]] = curve.lse[h * n + i];
      }
      return;
    }
    permute_rows(curve.dq, prob.dq, order, row, true, th);
    permute_rows(curve.dk, prob.dk, order, row, true, th);
    permute_rows(curve.dv, prob.dv, order, row, true, th);
  };
  Params gathered = curve.p;
  dilated::set_patterns(gathered, {{o.segment, 1}});

  // Other processes share these cores: the variants alternate within each round, and the
  // costs are medians of the per-round ratios to the row-major run of the same round.
  auto run = [](const Params& p, dilated::Direction dir) {
    check(dir == dilated::Direction::forward ? dilated::forward(p, {}, "cpu")
                                             : dilated::backward(p, {}, "cpu"),
          "attention");
  };
  auto timed = [](const std::function<void()>& call) {
    const double start = now_ms();
    call();
    return now_ms() - start;
  };
  std::vector<double> plain_ms[2], mapped_ms[2], gather_ms[2], attn_ms[2], scatter_ms[2];
  std::vector<double> mapped_ratio[2], gather_ratio[2];
  for (int round = 0; round <= o.repeats; ++round) {  // round 0 warms up
    for (int d = 0; d < 2; ++d) {
      const auto dir = d == 0 ? dilated::Direction::forward : dilated::Direction::backward;
      const double plain_t = timed([&] { run(plain, dir); });
      const double mapped_t = timed([&] { run(mapped, dir); });
      const double gather_t = timed([&] { gather_inputs(d == 1); });
      const double attn_t = timed([&] { run(gathered, dir); });
      const double scatter_t = timed([&] { scatter_outputs(d == 1); });
      if (round == 0) continue;
      plain_ms[d].push_back(plain_t);
      mapped_ms[d].push_back(mapped_t);
      gather_ms[d].push_back(gather_t);
      attn_ms[d].push_back(attn_t);
      scatter_ms[d].push_back(scatter_t);
      mapped_ratio[d].push_back(mapped_t / plain_t - 1);
      gather_ratio[d].push_back((gather_t + attn_t + scatter_t) / plain_t - 1);
    }
  }

  // The two ways must agree: same outputs.
  check(dilated::forward(mapped, {}, "cpu"), "forward");
  const std::vector<float> mapped_out = prob.out;
  gather_inputs(false);
  check(dilated::forward(gathered, {}, "cpu"), "forward");
  scatter_outputs(false);
  double diff = 0;
  for (size_t i = 0; i < mapped_out.size(); ++i) {
    diff = std::max(diff, double(std::fabs(mapped_out[i] - prob.out[i])));
  }

  std::printf(
      "\nH=%lld, D=%lld, fp32, one dilated pattern (w=%lld, r=1); ms, medians of %d "
      "alternating rounds; cost = median over rounds of (variant / row-major) - 1:\n\n",
      (long long)o.grid_heads, (long long)o.dim, (long long)o.segment, o.repeats);
  std::printf(
      "| | forward ms | backward ms | cost forward | cost backward |\n|---|---|---|---|---|\n");
  std::printf("| row-major (no grid) | %.1f | %.1f | - | - |\n", median(plain_ms[0]),
              median(plain_ms[1]));
  std::printf("| grid, index mapping in the kernels | %.1f | %.1f | %+.1f%% | %+.1f%% |\n",
              median(mapped_ms[0]), median(mapped_ms[1]), 100 * median(mapped_ratio[0]),
              100 * median(mapped_ratio[1]));
  std::printf(
      "| grid, gather + plain run + scatter | %.1f + %.1f + %.1f | %.1f + %.1f + %.1f | "
      "%+.1f%% | %+.1f%% |\n",
      median(gather_ms[0]), median(attn_ms[0]), median(scatter_ms[0]), median(gather_ms[1]),
      median(attn_ms[1]), median(scatter_ms[1]), 100 * median(gather_ratio[0]),
      100 * median(gather_ratio[1]));
  std::printf("\nmax |out(index mapping) - out(gather)| = %.3g\n", diff);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const int threads = o.threads > 0
                          ? o.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const double ceiling = dilated::cpu::measure_fma_gflops(threads, o.fma_seconds);
  std::printf(
      "# block_sparse_bench: %d threads, SIMD %s, fp32 FMA ceiling %.1f GFLOP/s (measured "
      "now)\n",
      threads, dilated::cpu::simd_target_name(), ceiling);
  if (o.density) density_sweep(o, threads);
  if (o.grid) grid_study(o, threads);
  const double after = dilated::cpu::measure_fma_gflops(threads, o.fma_seconds);
  std::printf("\nceiling again at the end: %.1f GFLOP/s\n", after);
  return 0;
}
