#include "support/problem.hpp"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "core/dtype_convert.hpp"

namespace dilated::testing {

std::string ProblemConfig::describe() const {
  std::ostringstream s;
  s << "B=" << batch << " N=" << seqlen << " H=" << heads << " Hkv=" << heads_kv
    << " D=" << head_dim << " Dv=" << head_dim_v << " dtype=" << dtype_name(dtype)
    << " mode=" << mode_name(mode) << " offsets=" << head_offsets_name(head_offsets)
    << " causal=" << causal << " scale=" << scale << " layout=" << static_cast<int>(layout)
    << " patterns=";
  for (const Pattern& p : patterns) s << "(" << p.segment << "," << p.dilation << ")";
  if (!seq_lengths.empty()) {
    s << " varlen=";
    for (int32_t n : seq_lengths) s << n << " ";
  }
  if (!block_patterns.empty()) {
    s << " block_size=" << block_size << " blocks=";
    for (const BlockPattern& bp : block_patterns) {
      s << block_kind_name(bp.kind) << "(" << bp.size << "," << bp.reach << "," << bp.seed << ")";
    }
    if (!block_mask.empty()) s << " mask_heads=" << mask_heads;
  }
  if (grid_height > 0) s << " grid=" << grid_height << "x" << grid_width;
  return s.str();
}

HostProblem::HostProblem(const ProblemConfig& config, uint64_t seed) : config_(config) {
  if (config.seq_lengths.empty()) {
    tokens_ = config.batch * config.seqlen;
  } else {
    config_.batch = static_cast<int64_t>(config.seq_lengths.size());
    cu_seqlens_.push_back(0);
    for (int32_t n : config.seq_lengths) cu_seqlens_.push_back(cu_seqlens_.back() + n);
    tokens_ = cu_seqlens_.back();
    config_.seqlen = 1;
    for (int32_t n : config.seq_lengths) config_.seqlen = std::max<int64_t>(config_.seqlen, n);
  }
  allocate(q_, config.heads, config.head_dim);
  allocate(k_, config.heads_kv, config.head_dim);
  allocate(v_, config.heads_kv, config.head_dim_v);
  allocate(out_, config.heads, config.head_dim_v);
  allocate(dout_, config.heads, config.head_dim_v);
  allocate(dq_, config.heads, config.head_dim);
  allocate(dk_, config.heads_kv, config.head_dim);
  allocate(dv_, config.heads_kv, config.head_dim_v);
  lse_.resize(static_cast<size_t>(tokens_ * config.heads));

  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (const char* name : {"q", "k", "v", "dout"}) {
    const Buffer& buf = buffer(name);
    std::vector<double> values(static_cast<size_t>(tokens_ * buf.heads * buf.dim));
    for (double& x : values) x = normal(rng);
    set(name, values);
  }
  poison_outputs();
}

void HostProblem::allocate(Buffer& buf, int64_t heads, int64_t dim) {
  buf.heads = heads;
  buf.dim = dim;
  const bool varlen = !cu_seqlens_.empty();
  const int64_t n = varlen ? tokens_ : config_.seqlen;
  const int64_t batches = varlen ? 1 : config_.batch;
  Tensor& t = buf.view;
  switch (config_.layout) {
    case Layout::contiguous:
      t.head_stride = dim;
      t.row_stride = heads * dim;
      t.batch_stride = n * t.row_stride;
      break;
    case Layout::padded:
      t.head_stride = dim + 3;
      t.row_stride = heads * t.head_stride + 5;
      t.batch_stride = n * t.row_stride + 7;
      break;
    case Layout::head_major:
      t.row_stride = dim;
      t.head_stride = n * dim;
      t.batch_stride = heads * n * dim;
      break;
  }
  const int64_t elements =
      (batches - 1) * t.batch_stride + (n - 1) * t.row_stride + (heads - 1) * t.head_stride + dim;
  buf.bytes.assign(static_cast<size_t>(elements * dtype_size(config_.dtype)), 0);
  t.data = buf.bytes.data();
}

int64_t HostProblem::element_offset(const Buffer& buf, int64_t token, int64_t head) const {
  if (!cu_seqlens_.empty()) return token * buf.view.row_stride + head * buf.view.head_stride;
  const int64_t b = token / config_.seqlen, t = token % config_.seqlen;
  return b * buf.view.batch_stride + t * buf.view.row_stride + head * buf.view.head_stride;
}

Buffer& HostProblem::buffer(const std::string& name) {
  return const_cast<Buffer&>(static_cast<const HostProblem*>(this)->buffer(name));
}

const Buffer& HostProblem::buffer(const std::string& name) const {
  if (name == "q") return q_;
  if (name == "k") return k_;
  if (name == "v") return v_;
  if (name == "out") return out_;
  if (name == "dout") return dout_;
  if (name == "dq") return dq_;
  if (name == "dk") return dk_;
  if (name == "dv") return dv_;
  throw std::invalid_argument("no buffer named " + name);
}

const std::vector<std::string>& HostProblem::buffer_names() {
  static const std::vector<std::string> names = {"q", "k", "v", "dout", "out", "dq", "dk", "dv"};
  return names;
}

Params HostProblem::params() const {
  Params p;
  p.batch = config_.batch;
  p.seqlen = config_.seqlen;
  p.heads = config_.heads;
  p.heads_kv = config_.heads_kv;
  p.head_dim = config_.head_dim;
  p.head_dim_v = config_.head_dim_v;
  p.dtype = config_.dtype;
  p.device = Device::host;
  p.q = q_.view;
  p.k = k_.view;
  p.v = v_.view;
  p.out = out_.view;
  p.dout = dout_.view;
  p.dq = dq_.view;
  p.dk = dk_.view;
  p.dv = dv_.view;
  p.lse = const_cast<float*>(lse_.data());
  if (!cu_seqlens_.empty()) {
    p.cu_seqlens = cu_seqlens_.data();
    p.total_tokens = tokens_;
  }
  set_patterns(p, config_.patterns);
  p.mode = config_.mode;
  p.head_offsets = config_.head_offsets;
  p.causal = config_.causal;
  p.scale = config_.scale;
  set_block_patterns(p, config_.block_patterns, config_.block_size);
  if (!config_.block_mask.empty()) {
    p.blocks.mask.data = config_.block_mask.data();
    p.blocks.mask.heads = config_.mask_heads;
    p.blocks.mask.blocks = (config_.seqlen + config_.block_size - 1) / config_.block_size;
  }
  p.grid.height = config_.grid_height;
  p.grid.width = config_.grid_width;
  return p;
}

void HostProblem::poison_outputs() {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const char* name : {"out", "dq", "dk", "dv"}) {
    Buffer& buf = buffer(name);
    const int64_t n = static_cast<int64_t>(buf.bytes.size()) / dtype_size(config_.dtype);
    for (int64_t i = 0; i < n; ++i) store_element(config_.dtype, buf.bytes.data(), i, nan);
  }
  for (float& x : lse_) x = std::numeric_limits<float>::quiet_NaN();
}

void HostProblem::set(const std::string& name, const std::vector<double>& values) {
  Buffer& buf = buffer(name);
  size_t i = 0;
  for (int64_t token = 0; token < tokens_; ++token) {
    for (int64_t h = 0; h < buf.heads; ++h) {
      const int64_t base = element_offset(buf, token, h);
      for (int64_t d = 0; d < buf.dim; ++d) {
        store_element(config_.dtype, buf.bytes.data(), base + d, values.at(i++));
      }
    }
  }
}

std::vector<double> HostProblem::read(const std::string& name) const {
  const Buffer& buf = buffer(name);
  std::vector<double> values;
  values.reserve(static_cast<size_t>(tokens_ * buf.heads * buf.dim));
  for (int64_t token = 0; token < tokens_; ++token) {
    for (int64_t h = 0; h < buf.heads; ++h) {
      const int64_t base = element_offset(buf, token, h);
      for (int64_t d = 0; d < buf.dim; ++d) {
        values.push_back(load_element(config_.dtype, buf.bytes.data(), base + d));
      }
    }
  }
  return values;
}

std::vector<double> HostProblem::read_lse() const {
  return {lse_.begin(), lse_.end()};
}

ProblemConfig random_config(std::mt19937_64& rng, const RandomLimits& limits) {
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  ProblemConfig c;
  c.batch = uniform(1, limits.max_batch);
  c.seqlen = uniform(1, limits.max_seqlen);
  c.heads_kv = uniform(1, 3);
  c.heads = c.heads_kv * uniform(1, std::max<int64_t>(1, limits.max_heads / c.heads_kv));
  c.head_dim = limits.head_dims[uniform(0, static_cast<int64_t>(limits.head_dims.size()) - 1)];
  c.head_dim_v = c.head_dim;
  if (limits.allow_dv && uniform(0, 7) == 0) c.head_dim_v = uniform(1, 40);
  c.dtype = limits.dtypes[uniform(0, static_cast<int64_t>(limits.dtypes.size()) - 1)];
  c.mode = uniform(0, 1) ? Mode::head_groups : Mode::longnet;
  const int64_t max_patterns = c.mode == Mode::head_groups
                                   ? std::min<int64_t>(limits.max_patterns, c.heads)
                                   : limits.max_patterns;
  c.patterns.clear();
  for (int64_t i = uniform(1, max_patterns); i > 0; --i) {
    // Segments around N (some longer than N, some not dividing it), dilations up to w.
    const int64_t w = uniform(1, std::max<int64_t>(2, c.seqlen + c.seqlen / 4));
    c.patterns.push_back({w, uniform(1, std::min<int64_t>(w, 9))});
  }
  if (c.mode == Mode::longnet && uniform(0, 3) == 0) c.head_offsets = HeadOffsets::grouped;
  c.causal = uniform(0, 1) == 1;
  if (uniform(0, 4) == 0) c.scale = static_cast<float>(uniform(1, 20)) / 16.0f;
  if (limits.allow_layouts) c.layout = static_cast<Layout>(uniform(0, 2));
  if (limits.allow_varlen && uniform(0, 4) == 0) {
    c.seq_lengths.clear();
    for (int64_t b = 0; b < c.batch; ++b) {
      c.seq_lengths.push_back(static_cast<int32_t>(uniform(0, c.seqlen)));
    }
    c.seq_lengths.back() = static_cast<int32_t>(c.seqlen);  // at least one token in total
  }
  if (limits.allow_grid && c.seq_lengths.empty() && uniform(0, 2) == 0) {
    c.grid_height = uniform(1, 13);
    c.grid_width = uniform(1, std::max<int64_t>(1, limits.max_seqlen / c.grid_height));
    c.seqlen = c.grid_height * c.grid_width;
  }
  if (limits.allow_blocks && uniform(0, 1) == 0) {
    // Blocks of 1..24 tokens, so that short sequences still have several.
    c.block_size = uniform(1, 24);
    const int64_t nb = (c.seqlen + c.block_size - 1) / c.block_size;
    for (int64_t i = uniform(1, 3); i > 0; --i) {
      BlockPattern bp;
      bp.kind = static_cast<BlockKind>(uniform(0, 5));
      bp.size = uniform(bp.kind == BlockKind::local || bp.kind == BlockKind::topk ? 0 : 1, 4);
      bp.reach = uniform(0, 3);
      bp.seed = static_cast<uint64_t>(uniform(0, 1000));
      if (bp.kind == BlockKind::mask) {
        if (!c.block_mask.empty()) continue;
        c.mask_heads = uniform(0, 1) ? c.heads : 1;
        c.block_mask.resize(static_cast<size_t>(c.mask_heads * nb * nb));
        for (uint8_t& bit : c.block_mask) bit = uniform(0, 2) == 0;
      }
      c.block_patterns.push_back(bp);
    }
    // Sometimes no dilated pattern at all (longnet only: head_groups needs its groups).
    if (c.mode == Mode::longnet && uniform(0, 3) == 0) c.patterns.clear();
  }
  return c;
}

double relative_error(const std::vector<double>& got, const std::vector<double>& ref) {
  if (got.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(ref[i]) != std::isnan(got[i]) || std::isinf(ref[i]) != std::isinf(got[i])) {
      return std::numeric_limits<double>::infinity();
    }
    if (!std::isfinite(ref[i])) {
      if (std::isinf(ref[i]) && ref[i] != got[i]) return std::numeric_limits<double>::infinity();
      continue;
    }
    max_diff = std::max(max_diff, std::fabs(got[i] - ref[i]));
    max_ref = std::max(max_ref, std::fabs(ref[i]));
  }
  return max_ref > 0 ? max_diff / max_ref : max_diff;
}

uint64_t test_seed() {
  if (const char* env = std::getenv("DILATED_TEST_SEED")) return std::strtoull(env, nullptr, 10);
  return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}

}  // namespace dilated::testing
