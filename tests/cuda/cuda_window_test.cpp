// The CUDA backend on sequence windows (Params::window) against the oracle on the same windows:
// random problems, a random query window and key window each, forward (out, lse) and backward
// (dq, dk, dv from the whole problem's out and lse, as sequence parallelism gives them), every
// output NaN-poisoned first. Tolerances as in cuda_vs_reference_test.cpp (compare_with_oracle's
// rule): fp32 within 1e-4 of the float32 oracle; fp16/bf16 within 2x the error the oracle makes
// in the same dtype, both measured against the float32 oracle on the same rounded inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "core/dtype_convert.hpp"
#include "cuda/device_problem.hpp"

namespace dilated::testing {
namespace {

const Backend& cuda() {
  return *find_backend("cuda");
}

struct Window {
  int64_t query_begin, rows, key_begin, key_rows;
  std::string describe() const {
    std::ostringstream s;
    s << "query rows [" << query_begin << ", " << query_begin + rows << "), key rows [" << key_begin
      << ", " << key_begin + key_rows << ")";
    return s.str();
  }
};

// Row `row` onwards of a tensor (batch and head strides unchanged).
Tensor rows_from(const Tensor& t, int64_t row, DType dtype) {
  Tensor view = t;
  view.data = static_cast<unsigned char*>(t.data) + row * t.row_stride * dtype_size(dtype);
  return view;
}

Tensor contiguous(void* data, int64_t rows, int64_t heads, int64_t dim) {
  Tensor t;
  t.data = data;
  t.head_stride = dim;
  t.row_stride = heads * dim;
  t.batch_stride = rows * heads * dim;
  return t;
}

// A window's outputs, contiguous ([B, rows, H, D], lse [B, H, rows]), in host memory.
struct WindowOutputs {
  std::vector<unsigned char> out, dq, dk, dv;
  std::vector<float> lse;
};

std::vector<unsigned char> poisoned(DType dtype, int64_t elements) {
  std::vector<unsigned char> bytes(static_cast<size_t>(elements * dtype_size(dtype)));
  for (int64_t i = 0; i < elements; ++i) {
    store_element(dtype, bytes.data(), i, std::numeric_limits<double>::quiet_NaN());
  }
  return bytes;
}

WindowOutputs poisoned_outputs(const ProblemConfig& c, const Window& w) {
  WindowOutputs o;
  o.out = poisoned(c.dtype, c.batch * w.rows * c.heads * c.head_dim_v);
  o.dq = poisoned(c.dtype, c.batch * w.rows * c.heads * c.head_dim);
  o.dk = poisoned(c.dtype, c.batch * w.key_rows * c.heads_kv * c.head_dim);
  o.dv = poisoned(c.dtype, c.batch * w.key_rows * c.heads_kv * c.head_dim_v);
  o.lse.assign(static_cast<size_t>(c.batch * c.heads * w.rows),
               std::numeric_limits<float>::quiet_NaN());
  return o;
}

std::vector<double> values(DType dtype, const std::vector<unsigned char>& bytes) {
  std::vector<double> v(bytes.size() / static_cast<size_t>(dtype_size(dtype)));
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = load_element(dtype, bytes.data(), static_cast<int64_t>(i));
  }
  return v;
}

// The whole problem's lse rows of the query window, [B, H, rows] (the backward's given lse).
std::vector<float> lse_rows(const HostProblem& whole, const Window& w) {
  const ProblemConfig& c = whole.config();
  std::vector<float> rows(static_cast<size_t>(c.batch * c.heads * w.rows));
  const std::vector<double> all = whole.read_lse();
  for (int64_t bh = 0; bh < c.batch * c.heads; ++bh) {
    for (int64_t t = 0; t < w.rows; ++t) {
      rows[static_cast<size_t>(bh * w.rows + t)] =
          static_cast<float>(all[static_cast<size_t>(bh * c.seqlen + w.query_begin + t)]);
    }
  }
  return rows;
}

// Pointers of one run's outputs and inputs that are not views of the whole problem.
struct WindowBuffers {
  void *out, *dq, *dk, *dv;
  float* lse;        // forward output
  float* given_lse;  // backward input
};

// `whole` (host or device pointers to the whole problem, whose out holds the whole result)
// restricted to the window, writing into `buf`.
Params window_params(const Params& whole, const ProblemConfig& c, const Window& w,
                     const WindowBuffers& buf, Direction dir) {
  Params p = whole;
  p.seqlen = w.rows;
  p.window = {c.seqlen, w.query_begin, w.key_begin, w.key_rows};
  p.q = rows_from(whole.q, w.query_begin, c.dtype);
  p.dout = rows_from(whole.dout, w.query_begin, c.dtype);
  p.k = rows_from(whole.k, w.key_begin, c.dtype);
  p.v = rows_from(whole.v, w.key_begin, c.dtype);
  if (dir == Direction::forward) {
    p.out = contiguous(buf.out, w.rows, c.heads, c.head_dim_v);
    p.lse = buf.lse;
  } else {
    p.out = rows_from(whole.out, w.query_begin, c.dtype);
    p.lse = buf.given_lse;
  }
  p.dq = contiguous(buf.dq, w.rows, c.heads, c.head_dim);
  p.dk = contiguous(buf.dk, w.key_rows, c.heads_kv, c.head_dim);
  p.dv = contiguous(buf.dv, w.key_rows, c.heads_kv, c.head_dim_v);
  p.workspace = nullptr;
  p.workspace_bytes = 0;
  return p;
}

// The window on the reference backend (host memory).
WindowOutputs run_on_oracle(HostProblem& whole, const Window& w) {
  const ProblemConfig& c = whole.config();
  WindowOutputs o = poisoned_outputs(c, w);
  std::vector<float> given = lse_rows(whole, w);
  const WindowBuffers buf{o.out.data(), o.dq.data(),  o.dk.data(),
                          o.dv.data(),  o.lse.data(), given.data()};
  for (Direction dir : {Direction::forward, Direction::backward}) {
    const Status s = dir == Direction::forward
                         ? forward(window_params(whole.params(), c, w, buf, dir), {}, "reference")
                         : backward(window_params(whole.params(), c, w, buf, dir), {}, "reference");
    if (!s.ok()) throw std::runtime_error("reference: " + s.message());
  }
  return o;
}

// Device memory for one buffer, filled from host bytes, freed at the end of the scope.
class DeviceBuffer {
 public:
  DeviceBuffer(const Backend& b, const void* host, int64_t bytes) : backend_(b) {
    Status s = backend_.allocate(bytes, &ptr_);
    if (s.ok()) s = backend_.copy_to_device(ptr_, host, bytes);
    if (!s.ok()) throw std::runtime_error(s.message());
  }
  ~DeviceBuffer() { backend_.release(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  void copy_back(void* host, int64_t bytes) const {
    if (Status s = backend_.copy_to_host(host, ptr_, bytes); !s.ok()) {
      throw std::runtime_error(s.message());
    }
  }

 private:
  const Backend& backend_;
  void* ptr_ = nullptr;
};

template <typename T>
int64_t byte_size(const std::vector<T>& v) {
  return static_cast<int64_t>(v.size() * sizeof(T));
}

// The window on the CUDA backend; returns its status.
Status run_on_device(HostProblem& whole, const Window& w, WindowOutputs* o) {
  const ProblemConfig& c = whole.config();
  *o = poisoned_outputs(c, w);
  std::vector<float> given = lse_rows(whole, w);
  DeviceProblem problem(cuda(), whole);  // copies the inputs and the whole out, lse
  DeviceBuffer out(cuda(), o->out.data(), byte_size(o->out));
  DeviceBuffer dq(cuda(), o->dq.data(), byte_size(o->dq));
  DeviceBuffer dk(cuda(), o->dk.data(), byte_size(o->dk));
  DeviceBuffer dv(cuda(), o->dv.data(), byte_size(o->dv));
  DeviceBuffer lse(cuda(), o->lse.data(), byte_size(o->lse));
  DeviceBuffer given_lse(cuda(), given.data(), byte_size(given));
  const WindowBuffers buf{out.get(),
                          dq.get(),
                          dk.get(),
                          dv.get(),
                          static_cast<float*>(lse.get()),
                          static_cast<float*>(given_lse.get())};
  for (Direction dir : {Direction::forward, Direction::backward}) {
    Params p = window_params(problem.params(dir), c, w, buf, dir);
    const int64_t bytes = cuda().workspace_bytes(p, dir);
    std::vector<unsigned char> none(static_cast<size_t>(std::max<int64_t>(bytes, 1)));
    DeviceBuffer workspace(cuda(), none.data(), static_cast<int64_t>(none.size()));
    p.workspace = workspace.get();
    p.workspace_bytes = bytes;
    Status s = dir == Direction::forward ? forward(p, {}, "cuda") : backward(p, {}, "cuda");
    if (s.ok()) s = cuda().synchronize({});
    if (!s.ok()) return s;
  }
  out.copy_back(o->out.data(), byte_size(o->out));
  dq.copy_back(o->dq.data(), byte_size(o->dq));
  dk.copy_back(o->dk.data(), byte_size(o->dk));
  dv.copy_back(o->dv.data(), byte_size(o->dv));
  lse.copy_back(o->lse.data(), byte_size(o->lse));
  return {};
}

// Random window: any rows, any position (often cutting segments, sometimes disjoint).
Window random_window(std::mt19937_64& rng, int64_t n) {
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  Window w;
  w.rows = uniform(1, n);
  w.query_begin = uniform(0, n - w.rows);
  w.key_rows = uniform(1, n);
  w.key_begin = uniform(0, n - w.key_rows);
  return w;
}

double worst_ratio_seen = 0;

// Device vs oracle on one window; false (after reporting) on a mismatch.
bool check_window(const ProblemConfig& config, uint64_t seed, const Window& w) {
  const std::string what = config.describe() + " seed=" + std::to_string(seed) + " " + w.describe();
  HostProblem whole(config, seed);
  // The whole problem's result: the backward's given out and lse.
  if (Status s = forward(whole.params(), {}, "reference"); !s.ok()) {
    ADD_FAILURE() << s.message();
    return false;
  }
  std::unique_ptr<HostProblem> exact = exact_twin(whole);
  exact->set("out", whole.read("out"));
  exact->lse_buffer() = whole.lse_buffer();

  const WindowOutputs oracle = run_on_oracle(whole, w);
  const WindowOutputs exact_out = run_on_oracle(*exact, w);
  WindowOutputs device;
  const Status s = run_on_device(whole, w, &device);
  EXPECT_TRUE(s.ok()) << s.message() << "\n" << what;
  if (!s.ok()) return false;

  const DType dt = config.dtype;
  bool ok = true;
  std::string lines;
  auto compare = [&](const char* name, const std::vector<double>& got,
                     const std::vector<double>& in_dtype, const std::vector<double>& exact_values) {
    const OutputCheck c = check_output(name, got, in_dtype, exact_values, dt, *exact);
    lines += "  " + c.line + "\n";
    if (!c.ok) ok = false;
    if (c.oracle_error > 1e-4) {
      worst_ratio_seen = std::max(worst_ratio_seen, c.device_error / c.oracle_error);
    }
  };
  compare("out", values(dt, device.out), values(dt, oracle.out), values(DType::f32, exact_out.out));
  const double lse_error = relative_error({device.lse.begin(), device.lse.end()},
                                          {exact_out.lse.begin(), exact_out.lse.end()});
  lines += "  lse: device error " + std::to_string(lse_error) + ", bound 1e-4\n";
  if (!(lse_error <= 1e-4)) ok = false;
  compare("dq", values(dt, device.dq), values(dt, oracle.dq), values(DType::f32, exact_out.dq));
  compare("dk", values(dt, device.dk), values(dt, oracle.dk), values(DType::f32, exact_out.dk));
  compare("dv", values(dt, device.dv), values(dt, oracle.dv), values(DType::f32, exact_out.dv));
  EXPECT_TRUE(ok) << what << "\n" << lines;
  return ok;
}

void sweep(Mode mode, bool causal, int cases) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  RandomLimits limits;
  limits.max_seqlen = 300;
  limits.max_heads = 6;
  limits.head_dims = {16, 32, 64, 128, 64, 128};
  limits.dtypes = {DType::f32, DType::f16, DType::bf16, DType::bf16};
  limits.allow_varlen = false;  // windows exclude varlen
  int done = 0;
  while (done < cases) {
    ProblemConfig config = random_config(rng, limits);
    if (config.mode != mode) continue;
    config.causal = causal;
    const Window w = random_window(rng, config.seqlen);
    SCOPED_TRACE("run seed " + std::to_string(seed) + " (DILATED_TEST_SEED), case " +
                 std::to_string(done));
    if (!check_window(config, rng(), w)) return;
    ++done;
  }
  std::printf("%s%s: %d windows, worst 16-bit device/oracle error ratio so far %.2f\n",
              mode_name(mode), causal ? " causal" : "", cases, worst_ratio_seen);
}

TEST(CudaWindow, LongnetRandom) {
  DILATED_REQUIRE_BACKEND(cuda());
  sweep(Mode::longnet, false, 60);
}
TEST(CudaWindow, LongnetCausalRandom) {
  DILATED_REQUIRE_BACKEND(cuda());
  sweep(Mode::longnet, true, 60);
}
TEST(CudaWindow, HeadGroupsRandom) {
  DILATED_REQUIRE_BACKEND(cuda());
  sweep(Mode::head_groups, false, 40);
}
TEST(CudaWindow, HeadGroupsCausalRandom) {
  DILATED_REQUIRE_BACKEND(cuda());
  sweep(Mode::head_groups, true, 40);
}

// Tensor-core sizes: windows that cut segments in the middle of 64- and 128-row tiles, keys
// before, inside and after the queries, causal and not.
TEST(CudaWindow, TensorCoreTiles) {
  DILATED_REQUIRE_BACKEND(cuda());
  const uint64_t seed = test_seed();
  const Window windows[] = {
      {300, 400, 0, 700},    // queries in the middle, every key
      {0, 700, 170, 333},    // every query, keys from the middle
      {450, 250, 37, 400},   // keys before the queries (causal: all visible)
      {100, 200, 350, 350},  // keys after the queries (causal: none visible)
      {129, 301, 65, 500},   // overlapping, unaligned
  };
  // (head dim, dtype) pairs rather than the product: the oracle on these sizes takes seconds.
  for (const auto& [d, dtype] : {std::pair<int64_t, DType>{128, DType::bf16}, {64, DType::f16}}) {
    for (bool causal : {false, true}) {
      for (const Window& w : windows) {
        ProblemConfig c;
        c.batch = 2;
        c.seqlen = 700;
        c.heads = 4;
        c.heads_kv = 2;
        c.head_dim = c.head_dim_v = d;
        c.dtype = dtype;
        c.causal = causal;
        c.patterns = {{256, 1}, {512, 2}, {700, 3}};
        c.mode = causal ? Mode::longnet : Mode::head_groups;
        if (!check_window(c, seed, w)) return;
      }
    }
  }
}

// Queries whose causal keys all lie after them: out exactly 0, lse -inf, dq 0; keys no query
// sees: dk, dv 0 (nothing may stay NaN from the poison).
TEST(CudaWindow, NothingVisibleGivesZerosAndMinusInfinity) {
  DILATED_REQUIRE_BACKEND(cuda());
  for (DType dtype : {DType::f32, DType::bf16}) {
    ProblemConfig c;
    c.seqlen = 400;
    c.heads = 2;
    c.head_dim = c.head_dim_v = 64;
    c.dtype = dtype;
    c.causal = true;
    c.patterns = {{400, 1}, {200, 2}};
    HostProblem whole(c, test_seed());
    ASSERT_TRUE(forward(whole.params(), {}, "reference").ok());
    const Window w{10, 150, 200, 200};
    WindowOutputs o;
    const Status s = run_on_device(whole, w, &o);
    ASSERT_TRUE(s.ok()) << s.message();
    for (float x : o.lse) ASSERT_EQ(x, -INFINITY) << dtype_name(dtype);
    for (const auto* bytes : {&o.out, &o.dq, &o.dk, &o.dv}) {
      for (double x : values(dtype, *bytes)) ASSERT_EQ(x, 0.0) << dtype_name(dtype);
    }
  }
}

}  // namespace
}  // namespace dilated::testing
