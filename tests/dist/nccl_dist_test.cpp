// dilated::dist on CUDA tensors over NCCL, one process with one thread per GPU (communicators
// from one unique id, as the library builds them): every rank's shard of forward (out, lse) and
// backward (dq, dk, dv) equals the single-GPU CUDA result on the whole problem. P = 2, 3, 4
// when that many GPUs exist (skipped with the reason otherwise); both modes, causal or not,
// uneven shards that cut segments, fp32 and 16-bit. Label multigpu.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <nccl.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <sstream>
#include <thread>

#include "core/dtype_convert.hpp"
#include "cuda/device_problem.hpp"
#include "dilated/dist_nccl.hpp"
#include "dist/shard_problem.hpp"

namespace dilated::testing {
namespace {

int device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

#define REQUIRE_GPUS(p)                                                                            \
  do {                                                                                             \
    const int have = device_count();                                                               \
    if (have < (p)) GTEST_SKIP() << "needs " << (p) << " CUDA devices, this machine has " << have; \
  } while (0)

std::vector<unsigned char> encode(DType dtype, const std::vector<double>& values) {
  std::vector<unsigned char> bytes(values.size() * static_cast<size_t>(dtype_size(dtype)));
  for (size_t i = 0; i < values.size(); ++i) {
    store_element(dtype, bytes.data(), static_cast<int64_t>(i), values[i]);
  }
  return bytes;
}
std::vector<double> decode(DType dtype, const std::vector<unsigned char>& bytes) {
  std::vector<double> v(bytes.size() / static_cast<size_t>(dtype_size(dtype)));
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = load_element(dtype, bytes.data(), static_cast<int64_t>(i));
  return v;
}

// Rows [first, last) of every batch entry of a [B * N][width] array.
std::vector<double> rows_of_batches(const std::vector<double>& all, int64_t batch, int64_t n,
                                    int64_t width, int64_t first, int64_t last) {
  std::vector<double> rows;
  for (int64_t b = 0; b < batch; ++b) {
    rows.insert(rows.end(), all.begin() + (b * n + first) * width,
                all.begin() + (b * n + last) * width);
  }
  return rows;
}

// What one rank computed, as logical values (contiguous [B, rows, heads, dim]; lse [B, H, rows]).
struct RankResult {
  std::string error;  // empty when every call succeeded
  std::vector<double> out, lse, dq, dk, dv;
  bool repeat_identical = true;  // a second forward gave the same bytes (scratch reuse)
  int64_t bytes_sent = 0;
};

struct Case {
  ProblemConfig config;
  std::vector<int64_t> cuts;    // ranks + 1 entries
  int64_t exchange_budget = 0;  // 1: the ring variant whenever anything is exchanged
};

class DeviceMemory {
 public:
  explicit DeviceMemory(const std::vector<unsigned char>& host) : bytes_(host.size()) {
    cudaMalloc(&ptr_, std::max<size_t>(bytes_, 1));
    cudaMemcpy(ptr_, host.data(), bytes_, cudaMemcpyHostToDevice);
    // A copy from pageable memory may return before it lands, and the calls run on a
    // non-blocking stream that the copy does not order.
    cudaDeviceSynchronize();
  }
  ~DeviceMemory() { cudaFree(ptr_); }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  void* get() const { return ptr_; }
  std::vector<unsigned char> read() const {
    std::vector<unsigned char> host(bytes_);
    cudaMemcpy(host.data(), ptr_, bytes_, cudaMemcpyDeviceToHost);
    return host;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_;
};

Tensor contiguous(void* data, int64_t rows, int64_t heads, int64_t dim) {
  Tensor t;
  t.data = data;
  t.head_stride = dim;
  t.row_stride = heads * dim;
  t.batch_stride = rows * heads * dim;
  return t;
}

// One rank: its shard on GPU `rank`, forward then backward (from its own forward's out and
// lse), then forward again to check that reused scratch changes nothing.
void run_rank(int rank, int ranks, const ncclUniqueId& id, const Case& cs, const HostProblem& whole,
              RankResult* result) {
  const ProblemConfig& c = cs.config;
  std::unique_ptr<dist::Communicator> comm;
  if (Status s = dist::nccl_communicator_from_id(id, rank, ranks, rank, 120.0, &comm); !s.ok()) {
    result->error = s.message();
    return;
  }
  const int64_t first = cs.cuts[static_cast<size_t>(rank)],
                last = cs.cuts[static_cast<size_t>(rank) + 1];
  const int64_t rows = last - first, n = c.seqlen;
  auto shard = [&](const char* name, int64_t heads, int64_t dim) {
    return encode(c.dtype, rows_of_batches(whole.read(name), c.batch, n, heads * dim, first, last));
  };
  auto poison = [&](int64_t heads, int64_t dim) {
    return encode(c.dtype, std::vector<double>(static_cast<size_t>(c.batch * rows * heads * dim),
                                               std::numeric_limits<double>::quiet_NaN()));
  };
  {
    DeviceMemory q(shard("q", c.heads, c.head_dim)), k(shard("k", c.heads_kv, c.head_dim)),
        v(shard("v", c.heads_kv, c.head_dim_v)), dout(shard("dout", c.heads, c.head_dim_v));
    DeviceMemory out(poison(c.heads, c.head_dim_v)), dq(poison(c.heads, c.head_dim)),
        dk(poison(c.heads_kv, c.head_dim)), dv(poison(c.heads_kv, c.head_dim_v));
    std::vector<float> nan_lse(static_cast<size_t>(c.batch * c.heads * rows),
                               std::numeric_limits<float>::quiet_NaN());
    std::vector<unsigned char> lse_bytes(nan_lse.size() * sizeof(float));
    std::memcpy(lse_bytes.data(), nan_lse.data(), lse_bytes.size());
    DeviceMemory lse(lse_bytes);

    Params p = whole.params();
    p.seqlen = rows;
    p.device = Device::cuda;
    p.q = contiguous(q.get(), rows, c.heads, c.head_dim);
    p.k = contiguous(k.get(), rows, c.heads_kv, c.head_dim);
    p.v = contiguous(v.get(), rows, c.heads_kv, c.head_dim_v);
    p.dout = contiguous(dout.get(), rows, c.heads, c.head_dim_v);
    p.out = contiguous(out.get(), rows, c.heads, c.head_dim_v);
    p.dq = contiguous(dq.get(), rows, c.heads, c.head_dim);
    p.dk = contiguous(dk.get(), rows, c.heads_kv, c.head_dim);
    p.dv = contiguous(dv.get(), rows, c.heads_kv, c.head_dim_v);
    p.lse = static_cast<float*>(lse.get());
    p.workspace = nullptr;
    p.workspace_bytes = 0;

    cudaStream_t stream = nullptr;
    cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    dist::DeviceScratch scratch;
    dist::Stats stats;
    dist::Options options;
    options.backend = "cuda";
    options.stream = {stream};
    options.scratch = &scratch;
    options.stats = &stats;
    options.exchange_budget_bytes = cs.exchange_budget;
    const dist::ShardInfo info{n, first};
    Status s = dist::forward(p, info, *comm, options);
    result->bytes_sent = stats.bytes_sent;
    const std::vector<unsigned char> first_out = out.read();
    if (s.ok()) s = dist::backward(p, info, *comm, options);
    if (s.ok()) {
      result->dq = decode(c.dtype, dq.read());
      result->dk = decode(c.dtype, dk.read());
      result->dv = decode(c.dtype, dv.read());
      const std::vector<unsigned char> l = lse.read();
      std::vector<float> lf(l.size() / sizeof(float));
      std::memcpy(lf.data(), l.data(), l.size());
      result->lse.assign(lf.begin(), lf.end());
      result->out = decode(c.dtype, first_out);
      s = dist::forward(p, info, *comm, options);
      result->repeat_identical = out.read() == first_out;
    }
    if (!s.ok()) result->error = s.message();
    cudaStreamDestroy(stream);
  }
  comm.reset();  // on this thread's device
}

// Per output: the shard of the single-GPU result vs the rank's, and the bound.
//  - fp32 problems and lse (fp32 everywhere): 1e-4 of the largest element, as the CUDA tests
//    (the two sides differ in the order of float32 sums and merges only).
//  - fp16/bf16: each rank rounds a row once for its own keys and once more for each remote
//    unit that adds to it (merge, dq add, returned dk/dv: at most one per pattern), where the
//    single GPU rounds once: (patterns + 2) units of the dtype's rounding u; plus twice the
//    single GPU's own error against the float32 cpu result, since both sides' errors differ
//    in where they round.
std::string compare_rank(const Case& cs, int rank, const RankResult& r, const HostProblem& single,
                         const std::map<std::string, double>& single_error, std::string* lines) {
  const ProblemConfig& c = cs.config;
  const int64_t first = cs.cuts[static_cast<size_t>(rank)],
                last = cs.cuts[static_cast<size_t>(rank) + 1];
  const double u = c.dtype == DType::bf16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
  std::string failures;
  for (const char* name : {"out", "lse", "dq", "dk", "dv"}) {
    std::vector<double> want;
    const std::vector<double>* got = nullptr;
    const std::string s = name;
    if (s == "lse") {
      const std::vector<double> all = single.read_lse();
      for (int64_t bh = 0; bh < c.batch * c.heads; ++bh) {
        want.insert(want.end(), all.begin() + bh * c.seqlen + first,
                    all.begin() + bh * c.seqlen + last);
      }
      got = &r.lse;
    } else {
      const int64_t heads = s == "dk" || s == "dv" ? c.heads_kv : c.heads;
      const int64_t dim = s == "dq" || s == "dk" ? c.head_dim : c.head_dim_v;
      want = rows_of_batches(single.read(s), c.batch, c.seqlen, heads * dim, first, last);
      got = s == "out" ? &r.out : s == "dq" ? &r.dq : s == "dk" ? &r.dk : &r.dv;
    }
    const double error = relative_error(*got, want);
    const double bound =
        c.dtype == DType::f32 || s == "lse"
            ? 1e-4
            : (static_cast<double>(c.patterns.size()) + 2) * u + 2 * single_error.at(s);
    std::ostringstream line;
    line << "rank " << rank << " rows [" << first << ", " << last << ") " << s
         << ": error vs single GPU " << error << ", bound " << bound << "\n";
    *lines += line.str();
    if (!(error <= bound)) failures += line.str();
  }
  if (!r.repeat_identical)
    failures += "rank " + std::to_string(rank) + ": a repeated forward changed out\n";
  return failures;
}

// The single-GPU result (GPU 0) and its error against the float32 cpu backend.
void single_gpu(HostProblem& whole, std::map<std::string, double>* error) {
  cudaSetDevice(0);
  {
    DeviceProblem d(*find_backend("cuda"), whole);
    Status s = d.run(Direction::forward);
    if (s.ok()) s = d.run(Direction::backward);
    ASSERT_TRUE(s.ok()) << "single GPU: " << s.message();
    d.copy_outputs_back();
  }
  std::unique_ptr<HostProblem> exact = exact_twin(whole);
  ASSERT_TRUE(forward(exact->params(), {}, "cpu").ok());
  ASSERT_TRUE(backward(exact->params(), {}, "cpu").ok());
  for (const char* name : {"out", "dq", "dk", "dv"}) {
    (*error)[name] = relative_error(whole.read(name), exact->read(name));
  }
  (*error)["lse"] = relative_error(whole.read_lse(), exact->read_lse());
}

// Runs one case on `ranks` GPUs; false (after reporting) on a mismatch.
bool check_case(const Case& cs, int ranks, uint64_t seed) {
  const std::string what = cs.config.describe() + " seed=" + std::to_string(seed) +
                           (cs.exchange_budget > 0 ? " (ring)" : "");
  HostProblem whole(cs.config, seed);
  std::map<std::string, double> single_error;
  single_gpu(whole, &single_error);
  if (::testing::Test::HasFatalFailure()) return false;

  ncclUniqueId id;
  if (ncclGetUniqueId(&id) != ncclSuccess) {
    ADD_FAILURE() << "ncclGetUniqueId failed";
    return false;
  }
  std::vector<RankResult> results(static_cast<size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back(run_rank, r, ranks, std::cref(id), std::cref(cs), std::cref(whole),
                         &results[static_cast<size_t>(r)]);
  }
  for (std::thread& t : threads) t.join();

  std::string cuts;
  for (int64_t x : cs.cuts) cuts += std::to_string(x) + " ";
  std::string failures, lines;
  for (int r = 0; r < ranks; ++r) {
    const RankResult& res = results[static_cast<size_t>(r)];
    if (!res.error.empty()) {
      failures += "rank " + std::to_string(r) + ": " + res.error + "\n";
      continue;
    }
    failures += compare_rank(cs, r, res, whole, single_error, &lines);
  }
  EXPECT_TRUE(failures.empty()) << what << "\nshard cuts " << cuts << "\n"
                                << failures << "all:\n"
                                << lines;
  return failures.empty();
}

void sweep(int ranks, int cases) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  for (int i = 0; i < cases; ++i) {
    Case cs;
    // Alternate the modes and causal order; sizes large enough for several tensor-core tiles.
    do {
      cs.config =
          random_dist_config(rng, ranks, 900, {DType::f32, DType::f16, DType::bf16, DType::bf16});
    } while ((cs.config.mode == Mode::head_groups) != (i % 2 == 1));
    cs.config.causal = (i / 2) % 2 == 1;
    cs.cuts = shard_cuts(rng, cs.config.seqlen, ranks, i % 3 != 0);
    SCOPED_TRACE("run seed " + std::to_string(seed) + " (DILATED_TEST_SEED), case " +
                 std::to_string(i));
    if (!check_case(cs, ranks, rng())) return;
  }
}

// The tensor-core path at sizes with many tiles: bf16/fp16, D = 128 and 64, LongNet-like
// patterns with a whole-sequence one, shards cutting segments unevenly.
void tensor_core_cases(int ranks) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  int i = 0;
  for (DType dtype : {DType::bf16, DType::f16}) {
    for (Mode mode : {Mode::longnet, Mode::head_groups}) {
      for (bool causal : {false, true}) {
        Case cs;
        ProblemConfig& c = cs.config;
        c.batch = 2;
        c.seqlen = 2000;
        c.heads = 4;
        c.heads_kv = mode == Mode::longnet ? 2 : 4;
        c.head_dim = c.head_dim_v = dtype == DType::bf16 ? 128 : 64;
        c.dtype = dtype;
        c.mode = mode;
        c.causal = causal;
        c.patterns = {{256, 1}, {768, 2}, {2000, 8}};
        cs.cuts = shard_cuts(rng, c.seqlen, ranks, (i % 2) == 1);
        cs.exchange_budget = i % 4 == 3 ? 1 : 0;  // some cases as the ring (P >= 3)
        ++i;
        SCOPED_TRACE("seed " + std::to_string(seed) + " (DILATED_TEST_SEED)");
        if (!check_case(cs, ranks, rng())) return;
      }
    }
  }
}

TEST(NcclSequenceParallel, TwoGpus) {
  REQUIRE_GPUS(2);
  sweep(2, 12);
  tensor_core_cases(2);
}
TEST(NcclSequenceParallel, ThreeGpus) {
  REQUIRE_GPUS(3);
  sweep(3, 12);
  tensor_core_cases(3);
}
TEST(NcclSequenceParallel, FourGpus) {
  REQUIRE_GPUS(4);
  sweep(4, 12);
  tensor_core_cases(4);
}
// Issue 8's run (skipped below 8 GPUs).
TEST(NcclSequenceParallel, EightGpus) {
  REQUIRE_GPUS(8);
  sweep(8, 12);
  tensor_core_cases(8);
}

}  // namespace
}  // namespace dilated::testing
