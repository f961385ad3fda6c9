// Validation in one place (DESIGN 7): every message names the argument, its value and what
// was expected.
#include <cmath>
#include <string>

#include "core/block_sparse.hpp"
#include "core/text.hpp"
#include "dilated/dilated.hpp"

namespace dilated {
namespace {

template <class... Parts>
Status invalid(const Parts&... parts) {
  return Status::Invalid(concat(parts...));
}

// Largest element offset + 1 reachable through a tensor, or -1 on int64 overflow.
int64_t span_or_overflow(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_mul_overflow(a, b, &r) ? -1 : r;
}

Status check_sizes(const Params& p) {
  if (p.batch < 1) return invalid("batch = ", p.batch, ": expected >= 1");
  if (p.seqlen < 1) return invalid("seqlen = ", p.seqlen, ": expected >= 1");
  if (p.heads < 1) return invalid("heads = ", p.heads, ": expected >= 1");
  if (p.heads_kv < 1) return invalid("heads_kv = ", p.heads_kv, ": expected >= 1");
  if (p.heads % p.heads_kv != 0) {
    return invalid("heads_kv = ", p.heads_kv, ": expected a divisor of heads = ", p.heads);
  }
  if (p.head_dim < 1) return invalid("head_dim = ", p.head_dim, ": expected >= 1");
  if (p.head_dim_v < 1)
    return invalid("head_dim_v = ", p.head_dim_v, ": expected >= 1 (normally head_dim)");
  const int64_t tokens = p.cu_seqlens ? p.total_tokens : span_or_overflow(p.batch, p.seqlen);
  if (p.cu_seqlens && p.total_tokens < 1) {
    return invalid("total_tokens = ", p.total_tokens, ": expected >= 1 with cu_seqlens");
  }
  const int64_t widest = p.head_dim > p.head_dim_v ? p.head_dim : p.head_dim_v;
  const int64_t per_token = span_or_overflow(p.heads, widest);
  if (tokens < 0 || per_token < 0 || span_or_overflow(tokens, per_token) < 0 ||
      span_or_overflow(span_or_overflow(tokens, per_token), 8) < 0) {
    return invalid("batch x seqlen x heads x head_dim overflows 64-bit sizes");
  }
  return {};
}

Status check_layer(const Params& p) {
  // Block patterns alone make a layer in longnet mode; head_groups needs a pattern per group.
  const bool blocks_alone = p.blocks.num_patterns > 0 && p.mode == Mode::longnet;
  if (p.num_patterns < (blocks_alone ? 0 : 1) || p.num_patterns > kMaxPatterns) {
    return invalid("number of patterns = ", p.num_patterns, ": expected ", blocks_alone ? "0" : "1",
                   "..", kMaxPatterns,
                   blocks_alone ? "" : " (0 only with block patterns in longnet mode)");
  }
  for (int i = 0; i < p.num_patterns; ++i) {
    const Pattern& pat = p.patterns[i];
    if (pat.segment < 1) {
      return invalid("segments[", i, "] = ", pat.segment, ": expected a segment length >= 1");
    }
    if (pat.dilation < 1 || pat.dilation > pat.segment) {
      return invalid("dilations[", i, "] = ", pat.dilation,
                     ": expected 1 <= dilation <= ", "segments[", i, "] = ", pat.segment);
    }
  }
  if (p.mode != Mode::longnet && p.mode != Mode::head_groups) {
    return invalid("mode = ", static_cast<int>(p.mode), ": expected longnet or head_groups");
  }
  if (p.head_offsets != HeadOffsets::paper && p.head_offsets != HeadOffsets::grouped) {
    return invalid("head_offsets = ", static_cast<int>(p.head_offsets),
                   ": expected paper or grouped");
  }
  if (p.mode == Mode::head_groups && p.head_offsets != HeadOffsets::paper) {
    return invalid("head_offsets = grouped: applies to mode longnet only (head_groups fixes ",
                   "the offset of group i to i % r_i)");
  }
  if (p.mode == Mode::head_groups && p.heads < p.num_patterns) {
    return invalid("heads = ", p.heads, ": head_groups mode needs at least one head per ",
                   "pattern (", p.num_patterns, " patterns)");
  }
  if (!std::isnan(p.scale) && !std::isfinite(p.scale)) {
    return invalid("scale = ", p.scale, ": expected a finite number (or NaN for 1/sqrt(D))");
  }
  if (p.dtype != DType::f32 && p.dtype != DType::f16 && p.dtype != DType::bf16 &&
      p.dtype != DType::f64) {
    return invalid("dtype = ", static_cast<int>(p.dtype), ": expected f32, f16, bf16 or f64");
  }
  if (p.device != Device::host && p.device != Device::cuda) {
    return invalid("device = ", static_cast<int>(p.device), ": expected host or cuda");
  }
  if (p.num_threads < 0) return invalid("num_threads = ", p.num_threads, ": expected >= 0");
  if (p.workspace_bytes < 0 || (p.workspace_bytes > 0 && !p.workspace)) {
    return invalid("workspace_bytes = ", p.workspace_bytes, ": expected >= 0 with a workspace");
  }
  return {};
}

// Block-sparse patterns (docs/design.md 1.1); the mask lives in the problem's memory, so only
// its shape is checked here.
Status check_blocks(const Params& p) {
  const BlockSparsity& bs = p.blocks;
  if (bs.num_patterns < 0 || bs.num_patterns > kMaxBlockPatterns) {
    return invalid("number of block patterns = ", bs.num_patterns, ": expected 0..",
                   kMaxBlockPatterns);
  }
  if (bs.num_patterns == 0) return {};
  if (bs.block_size < 1) return invalid("block_size = ", bs.block_size, ": expected >= 1");
  int masks = 0;
  for (int i = 0; i < bs.num_patterns; ++i) {
    const BlockPattern& bp = bs.patterns[i];
    const char* name = block_kind_name(bp.kind);
    switch (bp.kind) {
      case BlockKind::local:
        if (bp.size < 0) {
          return invalid("block_patterns[", i, "] local window W = ", bp.size, ": expected >= 0");
        }
        break;
      case BlockKind::global:
        if (bp.size < 1) {
          return invalid("block_patterns[", i, "] global blocks g = ", bp.size, ": expected >= 1");
        }
        break;
      case BlockKind::dilated:
        if (bp.size < 1) {
          return invalid("block_patterns[", i, "] dilated_blocks stride s = ", bp.size,
                         ": expected >= 1");
        }
        if (bp.reach < 0) {
          return invalid("block_patterns[", i, "] dilated_blocks count c = ", bp.reach,
                         ": expected >= 0");
        }
        break;
      case BlockKind::random:
      case BlockKind::topk:
        if (bp.size < (bp.kind == BlockKind::random ? 1 : 0)) {
          return invalid("block_patterns[", i, "] ", name, " k = ", bp.size,
                         ": expected >= ", bp.kind == BlockKind::random ? 1 : 0);
        }
        break;
      case BlockKind::mask: {
        if (++masks > 1) return invalid("block_patterns[", i, "] mask: expected at most one mask");
        const BlockMask& m = bs.mask;
        const int64_t blocks = p.seqlen / bs.block_size + (p.seqlen % bs.block_size != 0);
        if (!m.data) return invalid("block mask: null data pointer");
        if (m.heads != 1 && m.heads != p.heads) {
          return invalid("block mask heads = ", m.heads, ": expected 1 or heads = ", p.heads);
        }
        if (m.blocks != blocks) {
          return invalid("block mask blocks = ", m.blocks,
                         ": expected ceil(seqlen / block_size) = ", blocks, " (seqlen = ", p.seqlen,
                         ", block_size = ", bs.block_size, ")");
        }
        break;
      }
      default:
        return invalid("block_patterns[", i, "] kind = ", static_cast<int>(bp.kind),
                       ": expected local, global, dilated_blocks, random, topk or mask");
    }
  }
  return {};
}

Status check_grid(const Params& p) {
  const TokenGrid& g = p.grid;
  if (g.height == 0 && g.width == 0) return {};
  if (g.height < 1 || g.width < 1) {
    return invalid("grid = ", g.height, "x", g.width, ": expected height and width >= 1");
  }
  if (p.cu_seqlens) return invalid("grid: not available with varlen problems (cu_seqlens)");
  int64_t cells;
  if (__builtin_mul_overflow(g.height, g.width, &cells) || cells != p.seqlen) {
    return invalid("grid = ", g.height, "x", g.width,
                   ": expected height * width = seqlen = ", p.seqlen);
  }
  return {};
}

Status check_tensor(const char* name, const Tensor& t) {
  if (!t.data) return invalid(name, ": null data pointer");
  if (t.row_stride < 0 || t.head_stride < 0 || t.batch_stride < 0) {
    return invalid(name, " strides (", t.batch_stride, ", ", t.row_stride, ", ", t.head_stride,
                   "): expected non-negative element strides");
  }
  return {};
}

// Host memory lets us check the varlen offsets themselves; device offsets are the caller's
// (or the device backend's) to check.
Status check_varlen(const Params& p) {
  if (!p.cu_seqlens || p.device != Device::host) return {};
  if (p.cu_seqlens[0] != 0) return invalid("cu_seqlens[0] = ", p.cu_seqlens[0], ": expected 0");
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t len = int64_t{p.cu_seqlens[b + 1]} - p.cu_seqlens[b];
    if (len < 0 || len > p.seqlen) {
      return invalid("cu_seqlens[", b + 1, "] = ", p.cu_seqlens[b + 1],
                     ": expected sequence length 0..seqlen = ", p.seqlen);
    }
  }
  if (p.cu_seqlens[p.batch] != p.total_tokens) {
    return invalid("cu_seqlens[", p.batch, "] = ", p.cu_seqlens[p.batch],
                   ": expected total_tokens = ", p.total_tokens);
  }
  return {};
}

// Params::window: both windows inside [0, global_seqlen); all zero when there is none.
Status check_window(const Params& p) {
  const SequenceWindow& w = p.window;
  if (w.global_seqlen == 0) {
    if (w.query_begin != 0 || w.key_begin != 0 || w.key_rows != 0) {
      return invalid("window (query_begin ", w.query_begin, ", key_begin ", w.key_begin,
                     ", key_rows ", w.key_rows, "): expected all 0 when global_seqlen = 0");
    }
    return {};
  }
  if (w.global_seqlen < 0) {
    return invalid("window.global_seqlen = ", w.global_seqlen, ": expected >= 0");
  }
  if (p.cu_seqlens) return invalid("window: varlen problems (cu_seqlens) cannot be windowed");
  if (has_block_patterns(p) || has_grid(p)) {
    return invalid(
        "window: block patterns and token grids cannot be windowed (sequence parallelism runs "
        "dilated patterns only)");
  }
  if (w.query_begin < 0 || w.query_begin > w.global_seqlen - p.seqlen) {
    return invalid("window.query_begin = ", w.query_begin,
                   ": expected 0..global_seqlen - seqlen = ", w.global_seqlen - p.seqlen,
                   " (global_seqlen ", w.global_seqlen, ", seqlen ", p.seqlen, ")");
  }
  if (w.key_rows < 1 || w.key_rows > w.global_seqlen) {
    return invalid("window.key_rows = ", w.key_rows,
                   ": expected 1..global_seqlen = ", w.global_seqlen);
  }
  if (w.key_begin < 0 || w.key_begin > w.global_seqlen - w.key_rows) {
    return invalid("window.key_begin = ", w.key_begin,
                   ": expected 0..global_seqlen - key_rows = ", w.global_seqlen - w.key_rows);
  }
  if (span_or_overflow(span_or_overflow(p.batch, w.key_rows),
                       span_or_overflow(p.heads_kv, p.head_dim + p.head_dim_v)) < 0) {
    return invalid("batch x window.key_rows x heads_kv x head_dim overflows 64-bit sizes");
  }
  return {};
}

}  // namespace

Status validate(const Params& p, Direction dir) {
  for (Status s :
       {check_sizes(p), check_layer(p), check_blocks(p), check_grid(p), check_window(p)}) {
    if (!s.ok()) return s;
  }
  const std::pair<const char*, const Tensor*> forward_tensors[] = {
      {"q", &p.q}, {"k", &p.k}, {"v", &p.v}, {"out", &p.out}};
  for (const auto& [name, t] : forward_tensors) {
    if (Status s = check_tensor(name, *t); !s.ok()) return s;
  }
  if (dir == Direction::backward) {
    const std::pair<const char*, const Tensor*> backward_tensors[] = {
        {"dout", &p.dout}, {"dq", &p.dq}, {"dk", &p.dk}, {"dv", &p.dv}};
    for (const auto& [name, t] : backward_tensors) {
      if (Status s = check_tensor(name, *t); !s.ok()) return s;
    }
    if (!p.lse) return invalid("lse: null pointer; backward reads the forward's lse");
  }
  return check_varlen(p);
}

float softmax_scale(const Params& p) {
  return std::isnan(p.scale) ? 1.0f / std::sqrt(static_cast<float>(p.head_dim)) : p.scale;
}

Status set_patterns(Params& p, const std::vector<Pattern>& patterns) {
  // None is a valid list with block patterns (validate() decides).
  if (patterns.size() > static_cast<size_t>(kMaxPatterns)) {
    return invalid("number of patterns = ", patterns.size(), ": expected 0..", kMaxPatterns);
  }
  p.num_patterns = static_cast<int32_t>(patterns.size());
  for (size_t i = 0; i < patterns.size(); ++i) p.patterns[i] = patterns[i];
  return {};
}

Status set_block_patterns(Params& p, const std::vector<BlockPattern>& patterns,
                          int64_t block_size) {
  if (patterns.size() > static_cast<size_t>(kMaxBlockPatterns)) {
    return invalid("number of block patterns = ", patterns.size(), ": expected 0..",
                   kMaxBlockPatterns);
  }
  p.blocks.block_size = block_size;
  p.blocks.num_patterns = static_cast<int32_t>(patterns.size());
  for (size_t i = 0; i < patterns.size(); ++i) p.blocks.patterns[i] = patterns[i];
  return {};
}

Tensor contiguous_tensor(const Params& p, void* data, int64_t heads, int64_t dim) {
  Tensor t;
  t.data = data;
  t.head_stride = dim;
  t.row_stride = heads * dim;
  t.batch_stride = p.seqlen * t.row_stride;
  return t;
}

}  // namespace dilated
