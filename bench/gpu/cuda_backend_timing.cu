// Times the CUDA backend's forward, backward and forward+backward with CUDA events (warm-up,
// then the median of many repeats) on random device inputs; prints one JSON object per case.
// Usage: cuda_backend_timing --batch B --seq-len N --heads H [--heads-kv K] --head-dim D
//        --segments 2048,4096 --dilations 1,2 [--mode longnet|head_groups] [--causal]
//        [--dtype bf16|fp16|fp32] [--repeats R] [--grid HxW]   (a token grid: N = H * W, the
//        sequence along its Hilbert curve)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_device.cuh"
#include "dilated/dilated.hpp"

namespace {

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    v.push_back(std::stoll(s.substr(start, comma - start)));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return v;
}

float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

#ifdef DILATED_HOPPER_TIMELINE
#include "cuda/hopper/timeline.cuh"
namespace dilated::cuda::hopper {
int read_forward_timeline(unsigned long long* host, int ctas);
}
#endif

int main(int argc, char** argv) {
  int64_t batch = 1, seqlen = 32768, heads = 16, heads_kv = 0, head_dim = 128, repeats = 20;
  std::string segments = "2048,4096,8192", dilations = "1,2,4", mode = "longnet", dtype = "bf16";
  bool causal = false;
  std::string grid;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return std::string(argv[++i]); };
    if (a == "--batch")
      batch = std::stoll(next());
    else if (a == "--seq-len")
      seqlen = std::stoll(next());
    else if (a == "--heads")
      heads = std::stoll(next());
    else if (a == "--heads-kv")
      heads_kv = std::stoll(next());
    else if (a == "--head-dim")
      head_dim = std::stoll(next());
    else if (a == "--segments")
      segments = next();
    else if (a == "--dilations")
      dilations = next();
    else if (a == "--mode")
      mode = next();
    else if (a == "--dtype")
      dtype = next();
    else if (a == "--causal")
      causal = true;
    else if (a == "--repeats")
      repeats = std::stoll(next());
    else if (a == "--grid")
      grid = next();
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  dilated::Params p;
  p.batch = batch;
  p.seqlen = seqlen;
  p.heads = heads;
  p.heads_kv = heads_kv ? heads_kv : heads;
  p.head_dim = p.head_dim_v = head_dim;
  p.device = dilated::Device::cuda;
  p.causal = causal;
  if (!dilated::parse_dtype(dtype, &p.dtype) || !dilated::parse_mode(mode, &p.mode)) return 2;
  const std::vector<int64_t> segs = parse_list(segments), dils = parse_list(dilations);
  std::vector<dilated::Pattern> patterns;
  for (size_t i = 0; i < segs.size(); ++i) patterns.push_back({segs[i], dils.at(i)});
  dilated::set_patterns(p, patterns);
  if (!grid.empty()) {
    const size_t x = grid.find('x');
    if (x == std::string::npos) {
      std::fprintf(stderr, "--grid %s: expected HxW\n", grid.c_str());
      return 2;
    }
    p.grid = {std::stoll(grid.substr(0, x)), std::stoll(grid.substr(x + 1))};
    if (p.grid.height * p.grid.width != seqlen) {
      std::fprintf(stderr, "--grid %s: H * W must equal --seq-len %lld\n", grid.c_str(),
                   static_cast<long long>(seqlen));
      return 2;
    }
  }

  const int64_t elem = dilated::dtype_size(p.dtype);
  const int64_t q_elems = batch * seqlen * heads * head_dim;
  const int64_t kv_elems = batch * seqlen * p.heads_kv * head_dim;
  std::vector<void*> owned;
  auto alloc = [&](int64_t bytes) {
    void* ptr = nullptr;
    CHECK_CUDA(cudaMalloc(&ptr, static_cast<size_t>(bytes)));
    owned.push_back(ptr);
    return ptr;
  };
  auto random_tensor = [&](int64_t count, int64_t h, uint32_t seed) {
    void* ptr = alloc(count * elem);
    bench::fill_random(p.dtype, ptr, count, seed);
    return dilated::contiguous_tensor(p, ptr, h, head_dim);
  };
  p.q = random_tensor(q_elems, heads, 1);
  p.k = random_tensor(kv_elems, p.heads_kv, 2);
  p.v = random_tensor(kv_elems, p.heads_kv, 3);
  p.dout = random_tensor(q_elems, heads, 4);
  p.out = random_tensor(q_elems, heads, 5);
  p.dq = random_tensor(q_elems, heads, 6);
  p.dk = random_tensor(kv_elems, p.heads_kv, 7);
  p.dv = random_tensor(kv_elems, p.heads_kv, 8);
  p.lse = static_cast<float*>(alloc(batch * heads * seqlen * 4));
  int64_t fwd_ws = 0, bwd_ws = 0;
  dilated::Status s = dilated::workspace_bytes(p, dilated::Direction::forward, "cuda", &fwd_ws);
  if (s.ok()) s = dilated::workspace_bytes(p, dilated::Direction::backward, "cuda", &bwd_ws);
  if (!s.ok()) {
    std::printf("{\"status\": \"skipped: %s\"}\n", s.message().c_str());
    return 0;
  }
  p.workspace_bytes = std::max(fwd_ws, bwd_ws);
  p.workspace = p.workspace_bytes ? alloc(p.workspace_bytes) : nullptr;
  CHECK_CUDA(cudaDeviceSynchronize());

  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  auto time_ms = [&](auto&& fn) {
    for (int i = 0; i < 3; ++i) fn();
    std::vector<float> times;
    for (int64_t i = 0; i < repeats; ++i) {
      CHECK_CUDA(cudaEventRecord(start));
      fn();
      CHECK_CUDA(cudaEventRecord(stop));
      CHECK_CUDA(cudaEventSynchronize(stop));
      float ms = 0;
      CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
      times.push_back(ms);
    }
    return median(times);
  };
  auto run_forward = [&] {
    dilated::Status st = dilated::forward(p, {}, "cuda");
    if (!st.ok()) {
      std::fprintf(stderr, "forward: %s\n", st.message().c_str());
      std::exit(1);
    }
  };
  auto run_backward = [&] {
    dilated::Status st = dilated::backward(p, {}, "cuda");
    if (!st.ok()) {
      std::fprintf(stderr, "backward: %s\n", st.message().c_str());
      std::exit(1);
    }
  };
  const float fwd = time_ms(run_forward);
  const float bwd = time_ms(run_backward);
  const float both = time_ms([&] {
    run_forward();
    run_backward();
  });
  CHECK_CUDA(cudaGetLastError());
  const double flops = dilated::forward_flops(p);
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  // DILATED_CUDA_HOPPER=0 keeps the portable kernels on a Hopper card and DILATED_CUDA_TMA=0
  // the Hopper kernel's cp.async producer: rows named apart.
  const auto env_off = [](const char* name) {
    const char* value = std::getenv(name);
    return value && std::string(value) == "0";
  };
  const char* impl = env_off("DILATED_CUDA_HOPPER") ? "dilated-cuda-portable"
                     : env_off("DILATED_CUDA_TMA")  ? "dilated-cuda-no-tma"
                                                    : "dilated-cuda";
  std::printf(
      "{\"impl\": \"%s\", \"gpu\": \"%s\", \"mode\": \"%s\", \"b\": %lld, \"n\": %lld, "
      "\"h\": %lld, \"h_kv\": %lld, \"d\": %lld, \"segments\": \"%s\", \"dilations\": \"%s\", "
      "\"dtype\": \"%s\", \"causal\": %s, \"grid\": \"%s\", \"fwd_ms\": %.4f, \"bwd_ms\": %.4f, "
      "\"fwdbwd_ms\": %.4f, "
      "\"fwd_tflops\": %.1f, \"fwdbwd_tflops\": %.1f, \"fwd_flops\": %.6e, \"workspace_bytes\": "
      "%lld, \"status\": \"ok\"}\n",
      impl, prop.name, mode.c_str(), static_cast<long long>(batch), static_cast<long long>(seqlen),
      static_cast<long long>(heads), static_cast<long long>(p.heads_kv),
      static_cast<long long>(head_dim), segments.c_str(), dilations.c_str(), dtype.c_str(),
      causal ? "true" : "false", grid.c_str(), fwd, bwd, both, flops / fwd * 1e-9,
      3.5 * flops / both * 1e-9, flops, static_cast<long long>(p.workspace_bytes));
#ifdef DILATED_HOPPER_TIMELINE
  if (const char* path = std::getenv("DILATED_TIMELINE_FILE")) {
    run_forward();  // the stamps of exactly one forward call
    CHECK_CUDA(cudaDeviceSynchronize());
    std::vector<unsigned long long> stamps(
        static_cast<size_t>(dilated::cuda::hopper::kTimelineCtas) *
        dilated::cuda::hopper::kTimelineSlots);
    const int ctas = dilated::cuda::hopper::read_forward_timeline(
        stamps.data(), dilated::cuda::hopper::kTimelineCtas);
    FILE* f = std::fopen(path, "wb");
    std::fwrite(stamps.data(), 8, static_cast<size_t>(ctas) * dilated::cuda::hopper::kTimelineSlots,
                f);
    std::fclose(f);
  }
#endif
  for (void* ptr : owned) cudaFree(ptr);
  return 0;
}
