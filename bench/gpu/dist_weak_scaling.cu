// Weak scaling of dilated::dist on GPUs in one process (one thread per GPU, NCCL): for each P,
// P x tokens-per-GPU tokens, LongNet's LM patterns plus one pattern with w = N, r = N / 4096
// (issue 6). Per P: forward and forward+backward wall time per rank (median of repeats, the
// slowest rank reported), bytes each rank sent per layer, what ring attention would move for
// the same N, and the efficiency t(1) / t(P) where t(1) is the plain single-GPU CUDA backend on
// tokens-per-GPU tokens. --find-max instead steps the tokens per GPU up until a rank cannot
// allocate (or a call fails) and reports the longest N that ran forward+backward.
//
// Usage: dist_weak_scaling [--ranks 1,2,4] [--tokens-per-gpu 262144] [--batch 1] [--heads 16]
//        [--heads-kv H] [--head-dim 128] [--dtype bf16|fp16|fp32] [--mode longnet|head_groups]
//        [--causal] [--segments 2048,...] [--dilations 1,...] [--no-whole] [--repeats 5]
//        [--find-max] [--max-ranks 4] [--step 262144] [--json FILE]
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench_device.cuh"
#include "dilated/dist.hpp"
#include "dilated/dist_nccl.hpp"

namespace {

using namespace dilated;
using Clock = std::chrono::steady_clock;

struct Config {
  std::vector<int64_t> ranks = {1, 2, 4};
  int64_t tokens = 262144;  // per GPU
  int64_t batch = 1, heads = 16, heads_kv = 0, head_dim = 128;
  DType dtype = DType::bf16;
  Mode mode = Mode::longnet;
  bool causal = false;
  std::vector<int64_t> segments = {2048, 4096, 8192, 16384, 32768};
  std::vector<int64_t> dilations = {1, 2, 4, 6, 12};
  bool whole = true;  // add (N, N / 4096)
  int repeats = 5;
  bool find_max = false;
  int max_ranks = 4;
  int64_t step = 262144;
  std::string json;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "dist_weak_scaling: %s (see the comment at the top of the source)\n",
               why.c_str());
  std::exit(2);
}

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

Config parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--ranks")
      c.ranks = parse_list(value());
    else if (a == "--tokens-per-gpu")
      c.tokens = std::stoll(value());
    else if (a == "--batch")
      c.batch = std::stoll(value());
    else if (a == "--heads")
      c.heads = std::stoll(value());
    else if (a == "--heads-kv")
      c.heads_kv = std::stoll(value());
    else if (a == "--head-dim")
      c.head_dim = std::stoll(value());
    else if (a == "--dtype") {
      if (!parse_dtype(value(), &c.dtype)) usage("--dtype: expected fp32, fp16 or bf16");
    } else if (a == "--mode") {
      if (!parse_mode(value(), &c.mode)) usage("--mode: expected longnet or head_groups");
    } else if (a == "--causal")
      c.causal = true;
    else if (a == "--segments")
      c.segments = parse_list(value());
    else if (a == "--dilations")
      c.dilations = parse_list(value());
    else if (a == "--no-whole")
      c.whole = false;
    else if (a == "--repeats")
      c.repeats = std::stoi(value());
    else if (a == "--find-max")
      c.find_max = true;
    else if (a == "--max-ranks")
      c.max_ranks = std::stoi(value());
    else if (a == "--step")
      c.step = std::stoll(value());
    else if (a == "--json")
      c.json = value();
    else
      usage("unknown argument " + a);
  }
  if (c.heads_kv == 0) c.heads_kv = c.heads;
  if (c.segments.size() != c.dilations.size()) usage("--segments and --dilations differ in length");
  return c;
}

// The layer's patterns for a sequence of n tokens.
std::vector<Pattern> patterns_for(const Config& c, int64_t n) {
  std::vector<Pattern> p;
  for (size_t i = 0; i < c.segments.size(); ++i) p.push_back({c.segments[i], c.dilations[i]});
  if (c.whole) p.push_back({n, std::max<int64_t>(1, n / 4096)});
  return p;
}

// All threads of one P wait for each other (host side) and agree on a flag.
class Rendezvous {
 public:
  explicit Rendezvous(int n) : n_(n) {}
  // True when every thread passed true.
  bool all(bool mine) {
    std::unique_lock<std::mutex> lock(m_);
    const int64_t gen = generation_;
    ok_ = ok_ && mine;
    if (++arrived_ == n_) {
      result_ = ok_;
      ok_ = true;
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != gen; });
    }
    return result_;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, arrived_ = 0;
  int64_t generation_ = 0;
  bool ok_ = true, result_ = true;
};

// One rank's tensors for `rows` tokens; ok() is false when an allocation failed.
class RankTensors {
 public:
  RankTensors(const Config& c, int64_t rows, uint32_t seed) {
    const int64_t es = dtype_size(c.dtype);
    const int64_t hq = c.batch * rows * c.heads * c.head_dim;
    const int64_t hk = c.batch * rows * c.heads_kv * c.head_dim;
    const int64_t sizes[] = {hq, hk, hk, hq, hq, hq, hk, hk};  // q k v out dout dq dk dv
    for (int64_t s : sizes) {
      void* p = nullptr;
      if (cudaMalloc(&p, static_cast<size_t>(s * es)) != cudaSuccess) {
        cudaGetLastError();
        ok_ = false;
        return;
      }
      ptrs_.push_back(p);
    }
    if (cudaMalloc(&lse_, static_cast<size_t>(c.batch * c.heads * rows * 4)) != cudaSuccess) {
      cudaGetLastError();
      ok_ = false;
      return;
    }
    for (int i : {0, 1, 2, 4}) bench::fill_random(c.dtype, ptrs_[i], sizes[i], seed + 17u * i);
    cudaDeviceSynchronize();
  }
  ~RankTensors() {
    for (void* p : ptrs_) cudaFree(p);
    if (lse_) cudaFree(lse_);
  }
  bool ok() const { return ok_; }

  Params params(const Config& c, int64_t rows, int64_t n) const {
    Params p;
    p.batch = c.batch;
    p.seqlen = rows;
    p.heads = c.heads;
    p.heads_kv = c.heads_kv;
    p.head_dim = p.head_dim_v = c.head_dim;
    p.dtype = c.dtype;
    p.device = Device::cuda;
    p.mode = c.mode;
    p.causal = c.causal;
    set_patterns(p, patterns_for(c, n));
    auto t = [&](int i, int64_t heads) {
      return contiguous_tensor(p, ptrs_[static_cast<size_t>(i)], heads, c.head_dim);
    };
    p.q = t(0, c.heads);
    p.k = t(1, c.heads_kv);
    p.v = t(2, c.heads_kv);
    p.out = t(3, c.heads);
    p.dout = t(4, c.heads);
    p.dq = t(5, c.heads);
    p.dk = t(6, c.heads_kv);
    p.dv = t(7, c.heads_kv);
    p.lse = static_cast<float*>(lse_);
    return p;
  }

 private:
  std::vector<void*> ptrs_;
  void* lse_ = nullptr;
  bool ok_ = true;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct RankTimes {
  std::string error;
  double forward_ms = 0, layer_ms = 0;                  // medians
  double exchange_ms = 0, local_ms = 0, remote_ms = 0;  // forward+backward, last repeat
  int64_t forward_bytes = 0, layer_bytes = 0;
};

// The plain CUDA backend on one GPU, whole problem of `tokens` tokens: t(1).
bool single_gpu(const Config& c, double* forward_ms, double* layer_ms) {
  cudaSetDevice(0);
  RankTensors t(c, c.tokens, 1u);
  if (!t.ok()) {
    std::printf("single GPU: allocation failed\n");
    return false;
  }
  Params p = t.params(c, c.tokens, c.tokens);
  int64_t fw = 0, bw = 0;
  workspace_bytes(p, Direction::forward, "cuda", &fw);
  workspace_bytes(p, Direction::backward, "cuda", &bw);
  void* ws = nullptr;
  if (cudaMalloc(&ws, static_cast<size_t>(std::max<int64_t>({fw, bw, 256}))) != cudaSuccess) {
    std::printf("single GPU: workspace allocation failed\n");
    return false;
  }
  p.workspace = ws;
  cudaEvent_t a, b, m;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventCreate(&m);
  std::vector<double> f, l;
  bool ok = true;
  for (int r = 0; r < c.repeats + 1 && ok; ++r) {
    p.workspace_bytes = fw;
    cudaEventRecord(a);
    ok = forward(p, {}, "cuda").ok();
    cudaEventRecord(m);
    p.workspace_bytes = bw;
    ok = ok && backward(p, {}, "cuda").ok();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float fm = 0, lm = 0;
    cudaEventElapsedTime(&fm, a, m);
    cudaEventElapsedTime(&lm, a, b);
    if (r > 0) {  // the first is a warm-up
      f.push_back(fm);
      l.push_back(lm);
    }
  }
  cudaFree(ws);
  if (!ok) {
    std::printf("single GPU: the CUDA backend failed\n");
    return false;
  }
  *forward_ms = median(f);
  *layer_ms = median(l);
  return true;
}

// A barrier, an all_gather and an all_to_all with every peer, one byte each.
Status warm_up(dist::Communicator& comm) {
  const int ranks = comm.size();
  void* buffer = nullptr;
  if (cudaMalloc(&buffer, static_cast<size_t>(4 * ranks)) != cudaSuccess) {
    return Status::Runtime("warm-up: cudaMalloc failed");
  }
  char* b = static_cast<char*>(buffer);
  std::vector<int64_t> one(static_cast<size_t>(ranks), 1);
  one[static_cast<size_t>(comm.rank())] = 0;
  Status s = comm.barrier();
  if (s.ok()) s = comm.all_gather(b, 1, b + ranks);
  if (s.ok()) s = comm.all_to_all(b, one.data(), b + 2 * ranks, one.data());
  cudaFree(buffer);
  return s;
}

// One rank of P: communicator, tensors, timed calls.
void run_rank(const Config& c, int rank, int ranks, const ncclUniqueId& id, Rendezvous& meet,
              RankTimes* out) {
  std::unique_ptr<dist::Communicator> comm;
  if (Status s = dist::nccl_communicator_from_id(id, rank, ranks, rank, 120.0, &comm); !s.ok()) {
    out->error = s.message();
    meet.all(false);
    return;
  }
  // NCCL sets up its connections (and their buffers) at the first collective of each kind:
  // do that before the tensors fill the memory, so that --find-max fails in an allocation
  // that every rank sees, not inside NCCL.
  if (Status s = warm_up(*comm); !s.ok()) {
    out->error = s.message();
    meet.all(false);
    return;
  }
  const int64_t n = c.tokens * ranks;
  {
    RankTensors t(c, c.tokens, 1000u + static_cast<uint32_t>(rank));
    if (!meet.all(t.ok())) {
      out->error = "allocation failed on some rank";
      return;
    }
    const Params p = t.params(c, c.tokens, n);
    const dist::ShardInfo info = dist::even_shard(n, rank, ranks);
    cudaStream_t stream = nullptr;
    cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    dist::DeviceScratch scratch;
    dist::Stats fs, bs;
    dist::Options fo, bo;
    fo.backend = bo.backend = "cuda";
    fo.stream = bo.stream = {stream};
    fo.scratch = bo.scratch = &scratch;
    fo.stats = &fs;
    bo.stats = &bs;
    std::vector<double> f, l;
    Status s;
    for (int r = 0; r < c.repeats + 1 && s.ok(); ++r) {
      comm->barrier();
      auto t0 = Clock::now();
      s = dist::forward(p, info, *comm, fo);
      const double fm = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      comm->barrier();
      t0 = Clock::now();
      if (s.ok()) s = dist::forward(p, info, *comm, fo);
      if (s.ok()) s = dist::backward(p, info, *comm, bo);
      const double lm = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      if (r > 0) {
        f.push_back(fm);
        l.push_back(lm);
      }
    }
    if (!s.ok()) out->error = s.message();
    out->forward_ms = median(f);
    out->layer_ms = median(l);
    out->forward_bytes = fs.bytes_sent;
    out->layer_bytes = fs.bytes_sent + bs.bytes_sent;
    out->exchange_ms = 1e3 * (fs.exchange_seconds + bs.exchange_seconds);
    out->local_ms = 1e3 * (fs.local_seconds + bs.local_seconds);
    out->remote_ms = 1e3 * (fs.remote_seconds + bs.remote_seconds);
    cudaStreamDestroy(stream);
  }
  comm.reset();
}

std::string patterns_text(const Config& c, int64_t n) {
  std::string s;
  for (const Pattern& p : patterns_for(c, n)) {
    s += "(" + std::to_string(p.segment) + "," + std::to_string(p.dilation) + ")";
  }
  return s;
}

int weak_scaling(const Config& c, int devices, FILE* json) {
  double t1_forward = 0, t1_layer = 0;
  if (!single_gpu(c, &t1_forward, &t1_layer)) return 1;
  std::printf(
      "single GPU (plain CUDA backend, N = %lld): forward %.2f ms, forward+backward %.2f ms\n",
      static_cast<long long>(c.tokens), t1_forward, t1_layer);
  std::printf("%3s %10s %10s %12s %10s %14s %14s %14s %14s %9s %9s\n", "P", "N", "fwd ms",
              "fwd+bwd ms", "exch ms", "sent/rank fwd", "sent fwd+bwd", "ring fwd", "ring f+b",
              "eff fwd", "eff f+b");
  int status = 0;
  for (int64_t ranks64 : c.ranks) {
    const int ranks = static_cast<int>(ranks64);
    if (ranks > devices) {
      std::printf("%3d skipped: this machine has %d GPUs\n", ranks, devices);
      continue;
    }
    ncclUniqueId id;
    ncclGetUniqueId(&id);
    Rendezvous meet(ranks);
    std::vector<RankTimes> times(static_cast<size_t>(ranks));
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r) {
      threads.emplace_back(run_rank, std::cref(c), r, ranks, std::cref(id), std::ref(meet),
                           &times[static_cast<size_t>(r)]);
    }
    for (std::thread& t : threads) t.join();
    RankTimes worst;
    for (const RankTimes& t : times) {
      if (!t.error.empty() && worst.error.empty()) worst.error = t.error;
      worst.forward_ms = std::max(worst.forward_ms, t.forward_ms);
      worst.layer_ms = std::max(worst.layer_ms, t.layer_ms);
      worst.exchange_ms = std::max(worst.exchange_ms, t.exchange_ms);
      worst.local_ms = std::max(worst.local_ms, t.local_ms);
      worst.remote_ms = std::max(worst.remote_ms, t.remote_ms);
      worst.forward_bytes = std::max(worst.forward_bytes, t.forward_bytes);
      worst.layer_bytes = std::max(worst.layer_bytes, t.layer_bytes);
    }
    const int64_t n = c.tokens * ranks;
    if (!worst.error.empty()) {
      std::printf("%3d %10lld failed: %s\n", ranks, static_cast<long long>(n), worst.error.c_str());
      status = 1;
      continue;
    }
    // Ring attention: every rank receives every other rank's k and v rows in the forward; its
    // backward moves k and v again and dk, dv back (3x the forward).
    const double ring_forward = static_cast<double>(ranks - 1) * c.tokens * c.batch * c.heads_kv *
                                2 * c.head_dim * dtype_size(c.dtype);
    const double eff_f = t1_forward / worst.forward_ms, eff_l = t1_layer / worst.layer_ms;
    std::printf("%3d %10lld %10.2f %12.2f %10.2f %14.3e %14.3e %14.3e %14.3e %8.1f%% %8.1f%%\n",
                ranks, static_cast<long long>(n), worst.forward_ms, worst.layer_ms,
                worst.exchange_ms, static_cast<double>(worst.forward_bytes),
                static_cast<double>(worst.layer_bytes), ring_forward, 3 * ring_forward, 100 * eff_f,
                100 * eff_l);
    if (json) {
      std::fprintf(
          json,
          "{\"ranks\":%d,\"tokens_per_gpu\":%lld,\"n\":%lld,\"patterns\":\"%s\","
          "\"forward_ms\":%.4f,\"layer_ms\":%.4f,\"exchange_ms\":%.4f,\"local_ms\":%.4f,"
          "\"remote_ms\":%.4f,\"bytes_sent_forward\":%lld,\"bytes_sent_layer\":%lld,"
          "\"ring_bytes_forward\":%.0f,\"ring_bytes_layer\":%.0f,\"single_forward_ms\":%.4f,"
          "\"single_layer_ms\":%.4f,\"efficiency_forward\":%.4f,\"efficiency_layer\":%.4f}\n",
          ranks, static_cast<long long>(c.tokens), static_cast<long long>(n),
          patterns_text(c, n).c_str(), worst.forward_ms, worst.layer_ms, worst.exchange_ms,
          worst.local_ms, worst.remote_ms, static_cast<long long>(worst.forward_bytes),
          static_cast<long long>(worst.layer_bytes), ring_forward, 3 * ring_forward, t1_forward,
          t1_layer, eff_f, eff_l);
      std::fflush(json);
    }
  }
  return status;
}

// Steps the tokens per GPU up on max_ranks GPUs until a rank cannot allocate or a call fails.
int find_max(Config c, int devices, FILE* json) {
  const int ranks = std::min(c.max_ranks, devices);
  c.repeats = 0;  // one warm-up run: forward, forward+backward
  int64_t best = 0;
  double best_ms = 0;
  std::string last_error;
  for (int64_t tokens = c.tokens;; tokens += c.step) {
    c.tokens = tokens;
    ncclUniqueId id;
    ncclGetUniqueId(&id);
    Rendezvous meet(ranks);
    std::vector<RankTimes> times(static_cast<size_t>(ranks));
    std::vector<std::thread> threads;
    const auto start = Clock::now();
    for (int r = 0; r < ranks; ++r) {
      threads.emplace_back(run_rank, std::cref(c), r, ranks, std::cref(id), std::ref(meet),
                           &times[static_cast<size_t>(r)]);
    }
    for (std::thread& t : threads) t.join();
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    last_error.clear();
    for (const RankTimes& t : times) {
      if (!t.error.empty()) last_error = t.error;
    }
    std::printf("P=%d tokens/GPU %lld (N %lld): %s (%.0f ms with set-up)\n", ranks,
                static_cast<long long>(tokens), static_cast<long long>(tokens * ranks),
                last_error.empty() ? "forward+backward ran" : last_error.c_str(), ms);
    std::fflush(stdout);
    if (!last_error.empty()) break;
    best = tokens;
    best_ms = ms;
  }
  std::printf("longest N that ran forward+backward on %d GPUs: %lld (%lld tokens per GPU)\n", ranks,
              static_cast<long long>(best * ranks), static_cast<long long>(best));
  if (json) {
    std::fprintf(json,
                 "{\"find_max\":true,\"ranks\":%d,\"longest_n\":%lld,\"tokens_per_gpu\":%lld,"
                 "\"wall_ms_with_setup\":%.1f,\"stopped_by\":\"%s\"}\n",
                 ranks, static_cast<long long>(best * ranks), static_cast<long long>(best), best_ms,
                 last_error.c_str());
  }
  return best > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const Config c = parse(argc, argv);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("dist_weak_scaling: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("%d x %s; B=%lld H=%lld Hkv=%lld D=%lld %s %s%s; patterns (for N): %s\n", devices,
              prop.name, static_cast<long long>(c.batch), static_cast<long long>(c.heads),
              static_cast<long long>(c.heads_kv), static_cast<long long>(c.head_dim),
              dtype_name(c.dtype), mode_name(c.mode), c.causal ? " causal" : "",
              patterns_text(c, c.tokens).c_str());
  FILE* json = c.json.empty() ? nullptr : std::fopen(c.json.c_str(), "a");
  const int status = c.find_max ? find_max(c, devices, json) : weak_scaling(c, devices, json);
  if (json) std::fclose(json);
  return status;
}
