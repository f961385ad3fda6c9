#include "dist/shard_problem.hpp"

#include <algorithm>
#include <limits>

#include "core/dtype_convert.hpp"

namespace dilated::testing {
namespace {

int64_t uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

// NaN-filled contiguous [batch, rows, heads, dim] storage of `dtype`.
Buffer poisoned(DType dtype, int64_t batch, int64_t rows, int64_t heads, int64_t dim) {
  Buffer b;
  b.heads = heads;
  b.dim = dim;
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

Tensor rows_from(const Tensor& t, int64_t row, DType dtype) {
  Tensor view = t;
  view.data = static_cast<unsigned char*>(t.data) + row * t.row_stride * dtype_size(dtype);
  return view;
}

}  // namespace

ProblemConfig random_dist_config(std::mt19937_64& rng, int ranks, int64_t max_seqlen,
                                 const std::vector<DType>& dtypes) {
  RandomLimits limits;
  limits.max_seqlen = max_seqlen;
  limits.allow_varlen = false;
  limits.dtypes = dtypes;
  limits.max_batch = 2;
  ProblemConfig c = random_config(rng, limits);
  if (c.seqlen < ranks) c.seqlen = uniform(rng, ranks, std::max<int64_t>(ranks, max_seqlen));
  if (uniform(rng, 0, 2) == 0) {
    // A segment that is the whole sequence (LongNet's w = N), dilated so that each shard
    // holds a few of its rows: it spans every rank.
    const Pattern whole{c.seqlen, uniform(rng, 1, std::max<int64_t>(1, c.seqlen / 4))};
    if (c.mode == Mode::longnet) {
      c.patterns.push_back(whole);
    } else {
      c.patterns.back() = whole;
    }
  }
  return c;
}

std::vector<int64_t> shard_cuts(std::mt19937_64& rng, int64_t n, int ranks, bool uneven) {
  std::vector<int64_t> cuts;
  if (!uneven) {
    for (int r = 0; r < ranks; ++r) cuts.push_back(dist::even_shard(n, r, ranks).offset);
  } else {
    // Distinct random cut points in [1, n) (n >= ranks).
    std::vector<int64_t> points;
    for (int64_t x = 1; x < n; ++x) points.push_back(x);
    std::shuffle(points.begin(), points.end(), rng);
    cuts.assign(points.begin(), points.begin() + (ranks - 1));
    cuts.push_back(0);
    std::sort(cuts.begin(), cuts.end());
  }
  cuts.push_back(n);
  return cuts;
}

Shard::Shard(const HostProblem& whole, int64_t first, int64_t last)
    : first_(first), last_(last), config_(whole.config()) {
  const ProblemConfig& c = config_;
  const int64_t rows = last - first;
  params_ = whole.params();
  params_.seqlen = rows;
  for (Tensor* t : {&params_.q, &params_.k, &params_.v, &params_.dout}) {
    *t = rows_from(*t, first, c.dtype);
  }
  out_ = poisoned(c.dtype, c.batch, rows, c.heads, c.head_dim_v);
  dq_ = poisoned(c.dtype, c.batch, rows, c.heads, c.head_dim);
  dk_ = poisoned(c.dtype, c.batch, rows, c.heads_kv, c.head_dim);
  dv_ = poisoned(c.dtype, c.batch, rows, c.heads_kv, c.head_dim_v);
  lse_.assign(static_cast<size_t>(c.batch * c.heads * rows),
              std::numeric_limits<float>::quiet_NaN());
  params_.out = out_.view;
  params_.dq = dq_.view;
  params_.dk = dk_.view;
  params_.dv = dv_.view;
  params_.lse = lse_.data();
  info_.global_seqlen = c.seqlen;
  info_.offset = first;
}

std::vector<double> Shard::read(const std::string& name) const {
  const Buffer& b = name == "out" ? out_ : name == "dq" ? dq_ : name == "dk" ? dk_ : dv_;
  std::vector<double> values(b.bytes.size() / static_cast<size_t>(dtype_size(config_.dtype)));
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = load_element(config_.dtype, b.bytes.data(), static_cast<int64_t>(i));
  }
  return values;
}

std::vector<double> Shard::read_lse() const {
  return std::vector<double>(lse_.begin(), lse_.end());
}

void Shard::take_outputs_of(const HostProblem& whole) {
  const ProblemConfig& c = config_;
  const int64_t rows = last_ - first_;
  const Tensor from = rows_from(whole.params().out, first_, c.dtype);
  const int64_t esize = dtype_size(c.dtype);
  const std::vector<double> lse = whole.read_lse();
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t t = 0; t < rows; ++t) {
      for (int64_t h = 0; h < c.heads; ++h) {
        const auto* src =
            static_cast<const unsigned char*>(from.data) +
            (b * from.batch_stride + t * from.row_stride + h * from.head_stride) * esize;
        std::copy_n(src, c.head_dim_v * esize,
                    out_.bytes.data() + ((b * rows + t) * c.heads + h) * c.head_dim_v * esize);
      }
      for (int64_t h = 0; h < c.heads; ++h) {
        lse_[static_cast<size_t>((b * c.heads + h) * rows + t)] =
            static_cast<float>(lse[static_cast<size_t>((b * c.heads + h) * c.seqlen + first_ + t)]);
      }
    }
  }
}

std::vector<double> rows_of(const std::vector<double>& whole, const ProblemConfig& c,
                            const std::string& name, int64_t first, int64_t last) {
  std::vector<double> rows;
  if (name == "lse") {
    for (int64_t b = 0; b < c.batch; ++b) {
      for (int64_t h = 0; h < c.heads; ++h) {
        const auto begin = whole.begin() + (b * c.heads + h) * c.seqlen;
        rows.insert(rows.end(), begin + first, begin + last);
      }
    }
    return rows;
  }
  const int64_t row = static_cast<int64_t>(whole.size()) / (c.batch * c.seqlen);
  for (int64_t b = 0; b < c.batch; ++b) {
    const auto begin = whole.begin() + (b * c.seqlen) * row;
    rows.insert(rows.end(), begin + first * row, begin + last * row);
  }
  return rows;
}

Outputs oracle_outputs(HostProblem& whole) {
  return run_backend(whole, "reference");
}

std::string compare_shard(const Shard& shard, const Outputs& oracle, const ProblemConfig& c,
                          int64_t first, int64_t last, bool backward) {
  const double tol = 4 * float32_tolerance(c);
  return compare_shard(shard, oracle, c, first, last, backward,
                       [tol](const std::string&) { return tol; });
}

std::string compare_shard(const Shard& shard, const Outputs& oracle, const ProblemConfig& c,
                          int64_t first, int64_t last, bool backward,
                          const std::function<double(const std::string&)>& tolerance) {
  std::string failures;
  for (const char* name : kOutputNames) {
    const std::string n = name;
    if (!backward && (n == "dq" || n == "dk" || n == "dv")) continue;
    const std::vector<double> got = n == "lse" ? shard.read_lse() : shard.read(n);
    const std::vector<double> want = rows_of(output(oracle, n), c, n, first, last);
    const double error = output_error(got, want);
    const double tol = tolerance(n);
    if (!(error <= tol)) {
      failures += n + " error " + std::to_string(error) + " > " + std::to_string(tol) + " " +
                  first_nonfinite_mismatch(got, want) + "; ";
    }
  }
  return failures;
}

}  // namespace dilated::testing
