// Params::window (the building block of sequence parallelism) on the host backends: split a
// random problem's queries into windows and its keys into windows, run every (query window,
// key window) pair on its own, merge the pairs' forward results with the lse rule and add
// their gradients, and compare with the oracle on the whole problem.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/dtype_convert.hpp"
#include "cpu_fast/compare.hpp"
#include "support/problem.hpp"

namespace dilated::testing {
namespace {

// Row `row` onwards of a tensor, as a tensor of its own (batch and head strides unchanged).
Tensor rows_from(const Tensor& t, int64_t row, DType dtype) {
  Tensor view = t;
  view.data = static_cast<unsigned char*>(t.data) + row * t.row_stride * dtype_size(dtype);
  return view;
}

// A contiguous [batch, rows, heads, dim] buffer of `dtype`, NaN-poisoned.
struct Block {
  std::vector<unsigned char> bytes;
  Tensor view;
};
Block make_block(DType dtype, int64_t batch, int64_t rows, int64_t heads, int64_t dim) {
  Block b;
  const int64_t elements = batch * rows * heads * dim;
  b.bytes.resize(static_cast<size_t>(elements * dtype_size(dtype)));
  for (int64_t i = 0; i < elements; ++i) {
    store_element(dtype, b.bytes.data(), i, std::numeric_limits<double>::quiet_NaN());
  }
  b.view.data = b.bytes.data();
  b.view.head_stride = dim;
  b.view.row_stride = heads * dim;
  b.view.batch_stride = rows * heads * dim;
  return b;
}
double element(DType dtype, const Block& b, int64_t index) {
  return load_element(dtype, b.bytes.data(), index);
}

// Random cut points: [0, n) in `parts` contiguous non-empty pieces (fewer when n is small).
std::vector<int64_t> random_cuts(std::mt19937_64& rng, int64_t n, int parts) {
  std::vector<int64_t> cuts = {0, n};
  for (int i = 1; i < parts && static_cast<int64_t>(cuts.size()) <= n; ++i) {
    int64_t c;
    do {
      c = std::uniform_int_distribution<int64_t>(1, n - 1)(rng);
    } while (n > 1 && std::find(cuts.begin(), cuts.end(), c) != cuts.end());
    if (n > 1) cuts.push_back(c);
  }
  std::sort(cuts.begin(), cuts.end());
  return cuts;
}

struct WindowResults {
  std::vector<double> out, lse, dq, dk, dv;  // [token][head][dim] like HostProblem::read
};

// Every (query window, key window) pair through `backend`; forward results merged with the lse
// rule (in double), backward with the oracle's final out and lse, gradients summed.
void run_windows(HostProblem& problem, const std::string& backend,
                 const std::vector<int64_t>& query_cuts, const std::vector<int64_t>& key_cuts,
                 const std::vector<float>& final_lse, WindowResults& r) {
  const ProblemConfig& c = problem.config();
  const Params whole = problem.params();
  const int64_t n = c.seqlen, h = c.heads, hkv = c.heads_kv, d = c.head_dim, dv = c.head_dim_v;
  r.out.assign(c.batch * n * h * dv, 0.0);
  r.lse.assign(c.batch * h * n, -std::numeric_limits<double>::infinity());
  r.dq.assign(c.batch * n * h * d, 0.0);
  r.dk.assign(c.batch * n * hkv * d, 0.0);
  r.dv.assign(c.batch * n * hkv * dv, 0.0);
  for (size_t qi = 0; qi + 1 < query_cuts.size(); ++qi) {
    const int64_t qa = query_cuts[qi], rows = query_cuts[qi + 1] - qa;
    for (size_t ki = 0; ki + 1 < key_cuts.size(); ++ki) {
      const int64_t ka = key_cuts[ki], key_rows = key_cuts[ki + 1] - ka;
      Params p = whole;
      p.seqlen = rows;
      p.window = {n, qa, ka, key_rows};
      p.q = rows_from(whole.q, qa, c.dtype);
      p.dout = rows_from(whole.dout, qa, c.dtype);
      p.k = rows_from(whole.k, ka, c.dtype);
      p.v = rows_from(whole.v, ka, c.dtype);
      Block out = make_block(c.dtype, c.batch, rows, h, dv);
      std::vector<float> lse(c.batch * h * rows, std::numeric_limits<float>::quiet_NaN());
      p.out = out.view;
      p.lse = lse.data();
      const Status fs = forward(p, {}, backend);
      ASSERT_TRUE(fs.ok()) << fs.message();
      // Merge into the running result: o = (e^l1 o1 + e^l2 o2) / (e^l1 + e^l2).
      for (int64_t b = 0; b < c.batch; ++b) {
        for (int64_t t = 0; t < rows; ++t) {
          for (int64_t j = 0; j < h; ++j) {
            const double part = lse[(b * h + j) * rows + t];
            double& total = r.lse[(b * h + j) * n + qa + t];
            const double merged =
                std::max(part, total) == -INFINITY
                    ? -INFINITY
                    : std::max(part, total) + std::log(std::exp(part - std::max(part, total)) +
                                                       std::exp(total - std::max(part, total)));
            if (merged == -INFINITY) {
              // No key so far: a windowed row without keys must be exactly 0.
              for (int64_t e = 0; e < dv; ++e) {
                ASSERT_EQ(element(c.dtype, out, ((b * rows + t) * h + j) * dv + e), 0.0);
              }
              continue;
            }
            const double w_part = std::exp(part - merged), w_total = std::exp(total - merged);
            for (int64_t e = 0; e < dv; ++e) {
              double& o = r.out[(((b * n) + qa + t) * h + j) * dv + e];
              const double x = element(c.dtype, out, ((b * rows + t) * h + j) * dv + e);
              o = w_total * o + (w_part == 0.0 ? 0.0 : w_part * x);
            }
            total = merged;
          }
        }
      }
      // Backward with the whole problem's out and lse (what a merged forward leaves behind).
      p.out = rows_from(whole.out, qa, c.dtype);
      std::vector<float> lse_rows(c.batch * h * rows);
      for (int64_t b = 0; b < c.batch; ++b) {
        for (int64_t j = 0; j < h; ++j) {
          std::copy_n(final_lse.begin() + (b * h + j) * n + qa, rows,
                      lse_rows.begin() + (b * h + j) * rows);
        }
      }
      p.lse = lse_rows.data();
      Block dq = make_block(c.dtype, c.batch, rows, h, d);
      Block dk = make_block(c.dtype, c.batch, key_rows, hkv, d);
      Block dvb = make_block(c.dtype, c.batch, key_rows, hkv, dv);
      p.dq = dq.view;
      p.dk = dk.view;
      p.dv = dvb.view;
      const Status bs = backward(p, {}, backend);
      ASSERT_TRUE(bs.ok()) << bs.message();
      auto add = [&](std::vector<double>& to, const Block& from, int64_t first, int64_t count,
                     int64_t heads, int64_t dim) {
        for (int64_t b = 0; b < c.batch; ++b) {
          for (int64_t i = 0; i < count * heads * dim; ++i) {
            to[(b * n + first) * heads * dim + i] +=
                element(c.dtype, from, b * count * heads * dim + i);
          }
        }
      };
      add(r.dq, dq, qa, rows, h, d);
      add(r.dk, dk, ka, key_rows, hkv, d);
      add(r.dv, dvb, ka, key_rows, hkv, dv);
    }
  }
}

class WindowTest : public ::testing::TestWithParam<std::string> {};

// Random problems (every feature but varlen: windows exclude it), random windows; the merged
// windows must equal the oracle on the whole problem. Tolerance: each window's outputs are
// within float32_tolerance of exact (the fast backend's argument, compare.hpp); merging in
// double is a convex combination of those, and a gradient is a sum over at most 4 windows of
// partial sums whose terms are those of the whole sum: 4x the single-call tolerance.
TEST_P(WindowTest, MergedWindowsEqualTheWholeProblem) {
  const std::string backend = GetParam();
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  RandomLimits limits;
  limits.max_seqlen = backend == "reference" ? 60 : 130;
  limits.allow_varlen = false;
  const int cases = backend == "reference" ? 25 : 60;
  for (int i = 0; i < cases && !HasFailure(); ++i) {
    const ProblemConfig config = random_config(rng, limits);
    SCOPED_TRACE("seed " + std::to_string(seed) + " (DILATED_TEST_SEED), case " +
                 std::to_string(i) + ": " + config.describe());
    HostProblem problem(config, rng());
    const Outputs want = run_backend(problem, "reference");
    std::vector<float> final_lse = problem.lse_buffer();
    const std::vector<int64_t> query_cuts =
        random_cuts(rng, config.seqlen, std::uniform_int_distribution<int>(1, 3)(rng));
    const std::vector<int64_t> key_cuts =
        random_cuts(rng, config.seqlen, std::uniform_int_distribution<int>(1, 4)(rng));
    SCOPED_TRACE("query windows " + std::to_string(query_cuts.size() - 1) + ", key windows " +
                 std::to_string(key_cuts.size() - 1));
    WindowResults got;  // laid out like HostProblem::read and read_lse
    run_windows(problem, backend, query_cuts, key_cuts, final_lse, got);
    if (HasFatalFailure()) return;
    const double tol = 4 * float32_tolerance(config);
    EXPECT_LE(output_error(got.out, want.out), tol) << "out";
    EXPECT_LE(output_error(got.lse, want.lse), tol) << "lse";
    EXPECT_LE(output_error(got.dq, want.dq), tol) << "dq";
    EXPECT_LE(output_error(got.dk, want.dk), tol) << "dk";
    EXPECT_LE(output_error(got.dv, want.dv), tol) << "dv";
  }
}

INSTANTIATE_TEST_SUITE_P(HostBackends, WindowTest, ::testing::Values("reference", "cpu"));

// A query window whose causal rows all precede the key window: nothing to see, so out = 0 and
// lse = -inf (not the NaN of a row whose keys all score -inf).
TEST(Window, CausalRowsBeforeTheKeyWindowSeeNothing) {
  for (const char* backend : {"reference", "cpu"}) {
    ProblemConfig config;
    config.seqlen = 40;
    config.causal = true;
    config.patterns = {{40, 1}, {20, 2}};
    HostProblem problem(config, test_seed());
    Params p = problem.params();
    p.seqlen = 10;
    p.window = {40, 5, 20, 20};  // queries 5..14, keys 20..39
    problem.poison_outputs();
    ASSERT_TRUE(forward(p, {}, backend).ok());
    const std::vector<double> out = problem.read("out");
    for (int64_t t = 0; t < 10; ++t) {
      for (int64_t j = 0; j < config.heads; ++j) {
        EXPECT_EQ(problem.lse_buffer()[j * 10 + t], -INFINITY) << backend;
        for (int64_t e = 0; e < config.head_dim_v; ++e) {
          EXPECT_EQ(out[(t * config.heads + j) * config.head_dim_v + e], 0.0) << backend;
        }
      }
    }
  }
}

TEST(Window, ValidationNamesTheField) {
  ProblemConfig config;
  config.seqlen = 16;
  HostProblem problem(config, test_seed());
  Params p = problem.params();
  p.window = {16, 4, 0, 16};  // 4 + 16 query rows > 16
  Status s = validate(p, Direction::forward);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("window.query_begin = 4"), std::string::npos) << s.message();
  p.window = {32, 0, 20, 16};
  s = validate(p, Direction::forward);
  EXPECT_NE(s.message().find("window.key_begin = 20"), std::string::npos) << s.message();
  p.window = {0, 3, 0, 0};
  s = validate(p, Direction::forward);
  EXPECT_NE(s.message().find("expected all 0 when global_seqlen = 0"), std::string::npos)
      << s.message();
  p.window = {32, 0, 0, 0};
  s = validate(p, Direction::forward);
  EXPECT_NE(s.message().find("window.key_rows = 0"), std::string::npos) << s.message();
  p.window = {32, 16, 0, 32};
  EXPECT_TRUE(validate(p, Direction::forward).ok());
}

}  // namespace
}  // namespace dilated::testing
