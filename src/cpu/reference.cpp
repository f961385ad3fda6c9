// The oracle: DESIGN 2.3-2.5 and docs/design.md 1.1-1.2 (block patterns, token order) computed
// literally, one query row at a time, in double.
// Every other backend is tested against this file; keep it short and obvious, never fast.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/backend_list.hpp"
#include "core/block_rows.hpp"
#include "core/block_sparse.hpp"
#include "core/dtype_convert.hpp"
#include "core/host_backend.hpp"
#include "core/pattern_math.hpp"
#include "dilated/dilated.hpp"

namespace dilated {
namespace {

// One sequence and query head as the oracle walks it: positions t are in curve order (the
// identity without a grid) and read and write token row order[t]; topk's block means.
struct Walk {
  const Params& p;
  std::vector<int64_t> order;
  int64_t b = 0, head = 0;
  BlockMeans means;

  Walk(const Params& params, int64_t seq, int64_t h)
      : p(params), order(token_order(p)), b(seq), head(h) {
    if (needs_block_means(p)) means = block_means(p, order, b, head);
  }
  int64_t row(int64_t t) const { return token_row(order, t); }
};

// The keys of query position t, once per pattern that selects t (multiplicity counts): the
// dilated patterns' keys, then every key of each block pattern's kept key blocks. With a
// window (never combined with blocks or grids), t is a row of the query window, patterns see
// global positions, and keys are rows of the key window: only its keys count.
std::vector<int64_t> keys_of(const Walk& w, int64_t t) {
  const Params& p = w.p;
  const int64_t n = seq_length(p, w.b);
  std::vector<int64_t> keys;
  const int64_t position = query_position(p, t);
  for (int i = 0; i < head_pattern_count(p); ++i) {
    const HeadPattern hp = head_pattern(p, w.head, i);
    if (!selects(hp, position)) continue;
    const KeyRange r = window_keys(p, key_range(hp, position, pattern_length(p, w.b), p.causal));
    for (int64_t c = 0; c < r.count; ++c) keys.push_back(key_row(p, r.first + c * r.step));
  }
  const int64_t size = p.blocks.block_size;
  std::vector<int64_t> blocks;
  for (int i = 0; i < p.blocks.num_patterns; ++i) {
    key_blocks(p, p.blocks.patterns[i], w.head, t / size, block_count(n, size), &w.means, &blocks);
    for (int64_t J : blocks) {
      for (int64_t key = J * size; key < std::min((J + 1) * size, n); ++key) {
        if (!p.causal || key <= t) keys.push_back(key);
      }
    }
  }
  return keys;
}

// Row `row` (a token, not a curve position) of tensor x.
std::vector<double> load_row(const Params& p, const Tensor& x, int64_t b, int64_t row, int64_t head,
                             int64_t dim) {
  std::vector<double> values(dim);
  const int64_t base = row_offset(p, x, b, row, head);
  for (int64_t d = 0; d < dim; ++d) values[d] = load_element(p.dtype, x.data, base + d);
  return values;
}

// head_groups divides each group's softmax by the number of groups (DESIGN 2.4), in double.
double group_share(const Params& p) {
  return p.mode == Mode::head_groups ? 1.0 / p.num_patterns : 1.0;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// One query row: its keys, their softmax weights (with multiplicity), output and lse.
struct Row {
  std::vector<int64_t> keys;
  std::vector<double> weights;  // exp(s - lse), one per entry of keys
  std::vector<double> out;      // the softmax average of v, before head_groups' 1/m
  double lse = -std::numeric_limits<double>::infinity();
};

Row attend(const Walk& w, int64_t t) {
  const Params& p = w.p;
  Row row;
  row.keys = keys_of(w, t);
  row.out.assign(p.head_dim_v, 0.0);
  if (row.keys.empty()) return row;
  const int64_t kv_head = kv_head_of(p, w.head);
  const std::vector<double> q = load_row(p, p.q, w.b, w.row(t), w.head, p.head_dim);
  std::vector<double> scores;
  for (int64_t key : row.keys) {
    scores.push_back(softmax_scale(p) *
                     dot(q, load_row(p, p.k, w.b, w.row(key), kv_head, p.head_dim)));
  }
  double max_score = -std::numeric_limits<double>::infinity();
  for (double s : scores) max_score = std::fmax(max_score, s);
  double sum = 0;
  for (double s : scores) sum += std::exp(s - max_score);
  row.lse = max_score + std::log(sum);
  for (size_t i = 0; i < row.keys.size(); ++i) {
    row.weights.push_back(std::exp(scores[i] - row.lse));
    const std::vector<double> v = load_row(p, p.v, w.b, w.row(row.keys[i]), kv_head, p.head_dim_v);
    for (int64_t d = 0; d < p.head_dim_v; ++d) row.out[d] += row.weights[i] * v[d];
  }
  return row;
}

Status reference_forward(const Params& p) {
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t head = 0; head < p.heads; ++head) {
      const Walk w(p, b, head);
      for (int64_t t = 0; t < seq_length(p, b); ++t) {
        const Row row = attend(w, t);
        const int64_t base = row_offset(p, p.out, b, w.row(t), head);
        for (int64_t d = 0; d < p.head_dim_v; ++d) {
          store_element(p.dtype, p.out.data, base + d, row.out[d] * group_share(p));
        }
        if (p.lse) p.lse[lse_index(p, b, head, w.row(t))] = static_cast<float>(row.lse);
      }
    }
  }
  return {};
}

// Gradients of sum(out * dout) (DESIGN 2.5), accumulated in double, then stored.
Status reference_backward(const Params& p) {
  // Key rows, packed: (b, key row) -> token.
  const int64_t tokens = p.cu_seqlens ? p.total_tokens : p.batch * key_length(p, 0);
  std::vector<double> dk(tokens * p.heads_kv * p.head_dim, 0.0);
  std::vector<double> dv(tokens * p.heads_kv * p.head_dim_v, 0.0);
  auto token = [&](int64_t b, int64_t t) {
    return (p.cu_seqlens ? p.cu_seqlens[b] : b * key_length(p, b)) + t;
  };
  const double scale = softmax_scale(p);
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t head = 0; head < p.heads; ++head) {
      const int64_t kv_head = kv_head_of(p, head);
      const Walk w(p, b, head);
      for (int64_t t = 0; t < seq_length(p, b); ++t) {
        const Row row = attend(w, t);
        // DESIGN 2.5: delta = <dout, out> with the forward's stored out (what the backward
        // receives); in head_groups dout/m meets the softmax average m * out: the same value.
        const std::vector<double> stored_out = load_row(p, p.out, b, w.row(t), head, p.head_dim_v);
        std::vector<double> dout = load_row(p, p.dout, b, w.row(t), head, p.head_dim_v);
        const double delta = dot(dout, stored_out);
        for (double& x : dout) x *= group_share(p);  // d(loss)/d(softmax average)
        const std::vector<double> q = load_row(p, p.q, b, w.row(t), head, p.head_dim);
        std::vector<double> dq(p.head_dim, 0.0);
        // A window sees some of the row's keys only: its weights divide by the lse given
        // (the softmax over every window), not by the window's own sum.
        const double rescale = windowed(p) && !row.keys.empty()
                                   ? std::exp(row.lse - p.lse[lse_index(p, b, head, t)])
                                   : 1.0;
        for (size_t i = 0; i < row.keys.size(); ++i) {
          const int64_t key = w.row(row.keys[i]);
          const std::vector<double> k = load_row(p, p.k, b, key, kv_head, p.head_dim);
          const std::vector<double> v = load_row(p, p.v, b, key, kv_head, p.head_dim_v);
          const double weight = row.weights[i] * rescale;
          const double ds = weight * (dot(dout, v) - delta);
          double* dk_row = &dk[(token(b, key) * p.heads_kv + kv_head) * p.head_dim];
          double* dv_row = &dv[(token(b, key) * p.heads_kv + kv_head) * p.head_dim_v];
          for (int64_t d = 0; d < p.head_dim_v; ++d) dv_row[d] += weight * dout[d];
          for (int64_t d = 0; d < p.head_dim; ++d) {
            dq[d] += scale * ds * k[d];
            dk_row[d] += scale * ds * q[d];
          }
        }
        const int64_t base = row_offset(p, p.dq, b, w.row(t), head);
        for (int64_t d = 0; d < p.head_dim; ++d) store_element(p.dtype, p.dq.data, base + d, dq[d]);
      }
    }
  }
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t t = 0; t < key_length(p, b); ++t) {
      for (int64_t kv_head = 0; kv_head < p.heads_kv; ++kv_head) {
        const int64_t k_base = row_offset(p, p.dk, b, t, kv_head);
        const int64_t v_base = row_offset(p, p.dv, b, t, kv_head);
        const int64_t row = token(b, t) * p.heads_kv + kv_head;
        for (int64_t d = 0; d < p.head_dim; ++d) {
          store_element(p.dtype, p.dk.data, k_base + d, dk[row * p.head_dim + d]);
        }
        for (int64_t d = 0; d < p.head_dim_v; ++d) {
          store_element(p.dtype, p.dv.data, v_base + d, dv[row * p.head_dim_v + d]);
        }
      }
    }
  }
  return {};
}

class ReferenceBackend final : public HostBackend {
 public:
  const char* name() const override { return "reference"; }
  const char* description() const override {
    return "the oracle: literal DESIGN 2, double accumulation, one thread (slow)";
  }
  std::string unsupported_reason(const Params&, Direction) const override { return {}; }
  Status run_forward(const Params& p, Stream) const override { return reference_forward(p); }
  Status run_backward(const Params& p, Stream) const override { return reference_backward(p); }
};

}  // namespace

const Backend& reference_backend() {
  static const ReferenceBackend backend;
  return backend;
}

}  // namespace dilated
