// Block-sparse patterns and Hilbert order on the CUDA backend (issue 7's bench):
//   1. time against kept-block density, 10%..100%, for random(k) and local(W) block patterns
//      alone, against the dense pattern (w = N, r = 1): forward and forward+backward, effective
//      TFLOP/s from dilated::forward_flops (pairs with multiplicity, DESIGN 2.6) and each row's
//      efficiency relative to the dense pattern's;
//   2. a height x width grid in segments of w tokens: mean 2D distance between the tokens of a
//      segment (row-major vs Hilbert), and what the curve order costs as a share of the
//      attention time (the same problem timed without and with the grid; the kernels read
//      order[] in their row mapping, no copies).
// CUDA events, warm-up, median of --repeats. Markdown tables on stdout.
// Usage: block_sparse_gpu_bench [--seq-len 16384] [--heads 8] [--head-dim 64] [--block 64]
//        [--dtype bf16|fp16|fp32] [--causal] [--repeats 10] [--grid 256x256] [--segment 1024]
//        [--skip-density] [--skip-grid]
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_device.cuh"
#include "dilated/dilated.hpp"

#ifdef DILATED_HOPPER_TIMELINE
#include "cuda/hopper/timeline.cuh"
namespace dilated::cuda::hopper {
int read_block_forward_timeline(unsigned long long* host, int ctas);
}
#endif

namespace {

using dilated::BlockKind;
using dilated::BlockPattern;

struct Options {
  int64_t seqlen = 16384, heads = 8, head_dim = 64, block = 64, repeats = 10;
  int64_t grid_h = 256, grid_w = 256, segment = 1024;
  std::string dtype = "bf16";
  bool causal = false, density = true, grid = true;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s: missing value\n", a.c_str());
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    if (a == "--seq-len") {
      o.seqlen = std::stoll(next());
    } else if (a == "--heads") {
      o.heads = std::stoll(next());
    } else if (a == "--head-dim") {
      o.head_dim = std::stoll(next());
    } else if (a == "--block") {
      o.block = std::stoll(next());
    } else if (a == "--dtype") {
      o.dtype = next();
    } else if (a == "--causal") {
      o.causal = true;
    } else if (a == "--repeats") {
      o.repeats = std::stoll(next());
    } else if (a == "--grid") {
      const std::string g = next();
      const size_t x = g.find('x');
      if (x == std::string::npos) {
        std::fprintf(stderr, "--grid %s: expected HxW\n", g.c_str());
        std::exit(2);
      }
      o.grid_h = std::stoll(g.substr(0, x));
      o.grid_w = std::stoll(g.substr(x + 1));
    } else if (a == "--segment") {
      o.segment = std::stoll(next());
    } else if (a == "--skip-density") {
      o.density = false;
    } else if (a == "--skip-grid") {
      o.grid = false;
    } else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      std::exit(2);
    }
  }
  return o;
}

// Device tensors of one problem size, workspace grown on demand.
class Problem {
 public:
  Problem(const Options& o, int64_t seqlen) {
    p_.batch = 1;
    p_.seqlen = seqlen;
    p_.heads = p_.heads_kv = o.heads;
    p_.head_dim = p_.head_dim_v = o.head_dim;
    p_.device = dilated::Device::cuda;
    p_.causal = o.causal;
    if (!dilated::parse_dtype(o.dtype, &p_.dtype)) {
      std::fprintf(stderr, "--dtype %s: expected bf16, fp16 or fp32\n", o.dtype.c_str());
      std::exit(2);
    }
    const int64_t count = seqlen * o.heads * o.head_dim;
    Tensor* tensors[] = {&p_.q, &p_.k, &p_.v, &p_.dout, &p_.out, &p_.dq, &p_.dk, &p_.dv};
    uint32_t seed = 1;
    for (Tensor* t : tensors) *t = random_tensor(count, seed++);
    p_.lse = static_cast<float*>(alloc(seqlen * o.heads * 4));
  }
  ~Problem() {
    for (void* ptr : owned_) cudaFree(ptr);
  }
  Problem(const Problem&) = delete;
  Problem& operator=(const Problem&) = delete;

  // p's tensors with the given patterns (and grid); workspace sized for both directions.
  dilated::Params with(const std::vector<dilated::Pattern>& patterns,
                       const std::vector<BlockPattern>& blocks, int64_t block,
                       dilated::TokenGrid grid = {}) {
    dilated::Params p = p_;
    dilated::set_patterns(p, patterns);
    dilated::set_block_patterns(p, blocks, block);
    p.grid = grid;
    int64_t fwd = 0, bwd = 0;
    dilated::Status s = dilated::workspace_bytes(p, dilated::Direction::forward, "cuda", &fwd);
    if (s.ok()) s = dilated::workspace_bytes(p, dilated::Direction::backward, "cuda", &bwd);
    if (!s.ok()) {
      std::fprintf(stderr, "workspace: %s\n", s.message().c_str());
      std::exit(1);
    }
    const int64_t need = std::max(fwd, bwd);
    if (need > workspace_bytes_) {
      if (workspace_) cudaFree(workspace_);
      CHECK_CUDA(cudaMalloc(&workspace_, static_cast<size_t>(need)));
      workspace_bytes_ = need;
    }
    p.workspace = workspace_;
    p.workspace_bytes = workspace_bytes_;
    return p;
  }

 private:
  using Tensor = dilated::Tensor;
  void* alloc(int64_t bytes) {
    void* ptr = nullptr;
    CHECK_CUDA(cudaMalloc(&ptr, static_cast<size_t>(bytes)));
    owned_.push_back(ptr);
    return ptr;
  }
  Tensor random_tensor(int64_t count, uint32_t seed) {
    void* ptr = alloc(count * dilated::dtype_size(p_.dtype));
    bench::fill_random(p_.dtype, ptr, count, seed);
    return dilated::contiguous_tensor(p_, ptr, p_.heads, p_.head_dim);
  }

  dilated::Params p_;
  std::vector<void*> owned_;
  void* workspace_ = nullptr;
  int64_t workspace_bytes_ = 0;
};

struct Timing {
  float fwd_ms = 0, fwdbwd_ms = 0;
};

Timing time_problem(const dilated::Params& p, int64_t repeats) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  auto run = [&](bool backward) {
    dilated::Status s = dilated::forward(p, {}, "cuda");
    if (s.ok() && backward) s = dilated::backward(p, {}, "cuda");
    if (!s.ok()) {
      std::fprintf(stderr, "run: %s\n", s.message().c_str());
      std::exit(1);
    }
  };
  auto median_ms = [&](bool backward) {
    for (int i = 0; i < 2; ++i) run(backward);
    std::vector<float> times;
    for (int64_t i = 0; i < repeats; ++i) {
      CHECK_CUDA(cudaEventRecord(start));
      run(backward);
      CHECK_CUDA(cudaEventRecord(stop));
      CHECK_CUDA(cudaEventSynchronize(stop));
      float ms = 0;
      CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
      times.push_back(ms);
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  };
  Timing t;
  t.fwd_ms = median_ms(false);
  t.fwdbwd_ms = median_ms(true);
  CHECK_CUDA(cudaGetLastError());
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return t;
}

// Diagnosis builds (-DDILATED_HOPPER_TIMELINE): after the sweep row named by the environment's
// DILATED_TIMELINE_ROW (e.g. "random(77)"), one more forward of it, whose block forward's per-CTA
// clock stamps go to DILATED_TIMELINE_FILE (bench/gpu/forward_timeline.py reads them).
void dump_block_timeline(const std::string& name, const dilated::Params& p) {
#ifdef DILATED_HOPPER_TIMELINE
  const char* wanted = std::getenv("DILATED_TIMELINE_ROW");
  const char* path = std::getenv("DILATED_TIMELINE_FILE");
  if (!wanted || !path || name != wanted) return;
  if (!dilated::forward(p, {}, "cuda").ok()) return;
  CHECK_CUDA(cudaDeviceSynchronize());
  namespace hopper = dilated::cuda::hopper;
  std::vector<unsigned long long> stamps(static_cast<size_t>(hopper::kTimelineCtas) *
                                         hopper::kTimelineSlots);
  const int ctas = hopper::read_block_forward_timeline(stamps.data(), hopper::kTimelineCtas);
  if (FILE* f = std::fopen(path, "wb")) {
    std::fwrite(stamps.data(), 8, static_cast<size_t>(ctas) * hopper::kTimelineSlots, f);
    std::fclose(f);
  }
#else
  (void)name;
  (void)p;
#endif
}

double tflops(double flops, float ms) {
  return flops / (static_cast<double>(ms) * 1e9);
}

void density_sweep(const Options& o) {
  Problem problem(o, o.seqlen);
  const int64_t n = o.seqlen, nb = (n + o.block - 1) / o.block;
  std::printf(
      "\n## 1. Time against kept-block density: N=%lld, H=%lld, D=%lld, %s, block %lld (%lld "
      "blocks), %s\n\n",
      static_cast<long long>(n), static_cast<long long>(o.heads),
      static_cast<long long>(o.head_dim), o.dtype.c_str(), static_cast<long long>(o.block),
      static_cast<long long>(nb), o.causal ? "causal" : "non-causal");
  const dilated::Params dense = problem.with({{n, 1}}, {}, o.block);
  const double dense_flops = dilated::forward_flops(dense);
  const Timing d = time_problem(dense, o.repeats);
  const double dense_fwd = tflops(dense_flops, d.fwd_ms);
  const double dense_both = tflops(3.5 * dense_flops, d.fwdbwd_ms);
  std::printf(
      "| pattern | kept pairs | fwd ms | fwd TFLOP/s | fwd eff. vs dense | fwd+bwd ms | "
      "fwd+bwd TFLOP/s | fwd+bwd eff. vs dense |\n|---|---|---|---|---|---|---|---|\n");
  auto row = [&](const std::string& name, const dilated::Params& p, const Timing& t) {
    const double flops = dilated::forward_flops(p);
    const double f = tflops(flops, t.fwd_ms), fb = tflops(3.5 * flops, t.fwdbwd_ms);
    std::printf("| %s | %.1f%% | %.3f | %.1f | %.0f%% | %.3f | %.1f | %.0f%% |\n", name.c_str(),
                100.0 * flops / dense_flops, t.fwd_ms, f, 100.0 * f / dense_fwd, t.fwdbwd_ms, fb,
                100.0 * fb / dense_both);
    std::fflush(stdout);
  };
  row("dense (w=N, r=1)", dense, d);
  for (int tenth = 1; tenth <= 10; ++tenth) {
    const int64_t k = std::max<int64_t>(1, (nb * tenth + 5) / 10);
    const dilated::Params p = problem.with({}, {BlockPattern{BlockKind::random, k, 0, 7}}, o.block);
    row("random(" + std::to_string(k) + ")", p, time_problem(p, o.repeats));
    dump_block_timeline("random(" + std::to_string(k) + ")", p);
  }
  for (int tenth = 1; tenth <= 10; ++tenth) {
    // (2W + 1) / NB of the blocks (fewer at the edges); all of them at 100%.
    const int64_t w = tenth == 10 ? nb : std::max<int64_t>(0, (nb * tenth / 10 - 1) / 2);
    const dilated::Params p = problem.with({}, {BlockPattern{BlockKind::local, w, 0, 0}}, o.block);
    row("local(" + std::to_string(w) + ")", p, time_problem(p, o.repeats));
    dump_block_timeline("local(" + std::to_string(w) + ")", p);
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
        const double dy = static_cast<double>(order[i] / width - order[j] / width);
        const double dx = static_cast<double>(order[i] % width - order[j] % width);
        sum += std::sqrt(dx * dx + dy * dy);
      }
    }
    total += sum / (static_cast<double>(segment) * static_cast<double>(segment - 1) / 2);
    ++segments;
  }
  return total / static_cast<double>(segments);
}

void grid_costs(const Options& o) {
  const int64_t n = o.grid_h * o.grid_w;
  const std::vector<int64_t> order = dilated::hilbert_order(o.grid_h, o.grid_w);
  std::vector<int64_t> identity(order.size());
  for (size_t i = 0; i < identity.size(); ++i) identity[i] = static_cast<int64_t>(i);
  std::printf(
      "\n## 2. Hilbert order: %lldx%lld grid (N=%lld), segments of %lld tokens, H=%lld, "
      "D=%lld, %s\n\n",
      static_cast<long long>(o.grid_h), static_cast<long long>(o.grid_w), static_cast<long long>(n),
      static_cast<long long>(o.segment), static_cast<long long>(o.heads),
      static_cast<long long>(o.head_dim), o.dtype.c_str());
  std::printf("mean 2D distance between the tokens of a segment: row-major %.2f, Hilbert %.2f\n\n",
              mean_segment_distance(identity, o.grid_w, o.segment),
              mean_segment_distance(order, o.grid_w, o.segment));
  Problem problem(o, n);
  std::printf(
      "| problem | row-major fwd ms | Hilbert fwd ms | curve cost fwd | row-major "
      "fwd+bwd ms | Hilbert fwd+bwd ms | curve cost fwd+bwd |\n"
      "|---|---|---|---|---|---|---|\n");
  struct Case {
    std::string name;
    std::vector<dilated::Pattern> patterns;
    std::vector<BlockPattern> blocks;
  };
  const Case cases[] = {
      {"w=" + std::to_string(o.segment) + ", r=1", {{o.segment, 1}}, {}},
      {"w=" + std::to_string(o.segment) + ", r=1 + local(1) blocks of " + std::to_string(o.block),
       {{o.segment, 1}},
       {BlockPattern{BlockKind::local, 1, 0, 0}}},
      // Dilated rows along the curve: every 4th position of segments of 4w.
      {"w=" + std::to_string(4 * o.segment) + ", r=4", {{4 * o.segment, 4}}, {}},
  };
  for (const Case& c : cases) {
    const Timing plain = time_problem(problem.with(c.patterns, c.blocks, o.block), o.repeats);
    const Timing curve = time_problem(
        problem.with(c.patterns, c.blocks, o.block, dilated::TokenGrid{o.grid_h, o.grid_w}),
        o.repeats);
    std::printf("| %s | %.3f | %.3f | %.1f%% | %.3f | %.3f | %.1f%% |\n", c.name.c_str(),
                plain.fwd_ms, curve.fwd_ms, 100.0 * (curve.fwd_ms - plain.fwd_ms) / plain.fwd_ms,
                plain.fwdbwd_ms, curve.fwdbwd_ms,
                100.0 * (curve.fwdbwd_ms - plain.fwdbwd_ms) / plain.fwdbwd_ms);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("# Block-sparse and Hilbert on the CUDA backend: %s\n", prop.name);
  if (o.density) density_sweep(o);
  if (o.grid) grid_costs(o);
  return 0;
}
