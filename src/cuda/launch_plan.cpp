#include "cuda/launch_plan.hpp"

#include "core/block_sparse.hpp"
#include "core/pattern_math.hpp"
#include "core/segment_slice.hpp"
#include "cuda/block_plan.hpp"

namespace dilated::cuda {
namespace {

int64_t tokens(const Params& p) {
  return p.cu_seqlens ? p.total_tokens : p.batch * p.seqlen;
}

int64_t round_up(int64_t x) {
  return (x + 255) / 256 * 256;
}

int64_t reserve(WorkspaceLayout& w, int64_t bytes) {
  const int64_t at = w.bytes;
  w.bytes += round_up(bytes);
  return at;
}

}  // namespace

int pass_count(const Params& p) {
  return p.num_patterns;
}

// longnet rows collect keys from several passes; head_groups rows from exactly one, and the
// block pass joins both.
bool forward_merges(const Params& p) {
  const int dilated_passes = p.mode == Mode::longnet ? p.num_patterns : 1;
  return dilated_passes + (has_block_patterns(p) ? 1 : 0) > 1;
}

bool backward_accumulates_dq(const Params& p) {
  return forward_merges(p);
}

// A kv head's gradient sums over its query heads and, in longnet, over the passes.
bool backward_accumulates_dkdv(const Params& p) {
  return p.heads != p.heads_kv || forward_merges(p);
}

int converting_pass(const Params& p) {
  if (p.dtype == DType::f32 || p.mode != Mode::longnet || p.num_patterns < 2 ||
      p.heads != p.heads_kv || windowed(p) || has_block_patterns(p)) {
    return -1;
  }
  for (int k = 0; k < p.num_patterns; ++k) {
    if (p.patterns[k].dilation == 1) return k;
  }
  return -1;
}

int pass_in_order(const Params& p, int i, int converting) {
  return converting < 0 ? i : (converting + 1 + i) % pass_count(p);
}

namespace {

void reserve_block_lists(const Params& p, WorkspaceLayout& w) {
  if (!has_block_patterns(p)) return;
  w.block_mult = reserve(w, block_mult_bytes(p));
  if (!needs_block_means_on_device(p)) return;
  const int64_t means = p.batch * block_count(p.seqlen, p.blocks.block_size) * p.head_dim * 8;
  w.block_means_q = reserve(w, means * p.heads);
  w.block_means_k = reserve(w, means * p.heads_kv);
}

}  // namespace

WorkspaceLayout forward_workspace(const Params& p) {
  WorkspaceLayout w;
  reserve_block_lists(p, w);
  if (!forward_merges(p)) return w;
  if (p.dtype != DType::f32) w.out_acc = reserve(w, tokens(p) * p.heads * p.head_dim_v * 4);
  if (!p.lse) w.lse = reserve(w, tokens(p) * p.heads * 4);
  return w;
}

WorkspaceLayout backward_workspace(const Params& p) {
  WorkspaceLayout w;
  reserve_block_lists(p, w);
  w.delta = reserve(w, tokens(p) * p.heads * 4);
  if (p.dtype == DType::f32) return w;  // fp32 gradients accumulate in place
  if (backward_accumulates_dq(p)) w.dq_acc = reserve(w, tokens(p) * p.heads * p.head_dim * 4);
  if (backward_accumulates_dkdv(p)) {
    const int64_t key_tokens = tokens(key_side(p));
    w.dk_acc = reserve(w, key_tokens * p.heads_kv * p.head_dim * 4);
    w.dv_acc = reserve(w, key_tokens * p.heads_kv * p.head_dim_v * 4);
  }
  return w;
}

PassInfo make_pass(const Params& p, int k, int64_t tile_rows) {
  PassInfo pass;
  pass.k = k;
  if (p.mode == Mode::head_groups) {
    pass.head_begin = head_group_begin(k, p.heads, p.num_patterns);
    pass.head_count = head_group_begin(k + 1, p.heads, p.num_patterns) - pass.head_begin;
  } else {
    pass.head_begin = 0;
    pass.head_count = p.heads;
  }
  const Pattern pattern = p.patterns[k];
  const bool window = windowed(p);
  const SegmentCover queries =
      segment_cover(pattern.segment, pattern.dilation, window ? p.window.query_begin : 0, p.seqlen);
  const SegmentCover keys = window ? segment_cover(pattern.segment, pattern.dilation,
                                                   p.window.key_begin, p.window.key_rows)
                                   : queries;
  pass.tile_rows = tile_rows;
  const int pattern_index = p.mode == Mode::longnet ? k : 0;
  pass.pattern = head_pattern(p, pass.head_begin, pattern_index);
  pass.pattern_shared = true;
  for (int64_t h = pass.head_begin + 1; h < pass.head_begin + pass.head_count; ++h) {
    const HeadPattern hp = head_pattern(p, h, pattern_index);
    if (hp.segment != pass.pattern.segment || hp.dilation != pass.pattern.dilation ||
        hp.offset != pass.pattern.offset) {
      pass.pattern_shared = false;
      break;
    }
  }
  pass.first_segment = queries.first_segment;
  pass.segments = queries.segments;
  pass.tiles_per_segment = ceil_div(queries.max_rows, tile_rows);
  pass.key_first_segment = keys.first_segment;
  pass.key_segments = keys.segments;
  pass.key_tiles_per_segment = ceil_div(keys.max_rows, tile_rows);
  return pass;
}

Tensor fp32_accumulator(const Params& p, int64_t offset, int64_t heads, int64_t dim) {
  Tensor t;
  t.data = static_cast<char*>(p.workspace) + offset;
  t.head_stride = dim;
  t.row_stride = heads * dim;
  t.batch_stride = p.seqlen * t.row_stride;  // ignored for varlen (tokens are packed)
  return t;
}

Params key_side(const Params& p) {
  Params keys = p;
  if (windowed(p)) keys.seqlen = p.window.key_rows;
  return keys;
}

}  // namespace dilated::cuda
