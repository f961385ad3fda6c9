// Which queries a pattern selects and which keys they see (DESIGN 2.2-2.4), shared by every
// backend. Positions are relative to the start of their sequence.
#pragma once

#include <cstdint>

#include "core/host_device.hpp"
#include "dilated/params.hpp"

namespace dilated {

// A pattern as one query head sees it: segment length, dilation and that head's offset.
struct HeadPattern {
  int64_t segment;
  int64_t dilation;
  int64_t offset;
};

// Selected keys of one query: first, first + step, ..., count of them.
struct KeyRange {
  int64_t first;
  int64_t step;
  int64_t count;
};

// For a >= 0, b > 0; never forms a + b (a dilation may be close to INT64_MAX).
DILATED_HD int64_t ceil_div(int64_t a, int64_t b) {
  return a / b + (a % b != 0 ? 1 : 0);
}

// head_groups: heads form num_groups contiguous groups; the first heads % num_groups groups
// hold one head more than the others (dilated-attention-pytorch's split).
DILATED_HD int64_t head_group_of(int64_t head, int64_t heads, int64_t num_groups) {
  const int64_t base = small_quotient(heads, num_groups);
  const int64_t big_groups = small_remainder(heads, num_groups);
  const int64_t heads_in_big = big_groups * (base + 1);
  return head < heads_in_big ? small_quotient(head, base + 1)
                             : big_groups + small_quotient(head - heads_in_big, base);
}

// First head of group `group` in head_groups mode.
DILATED_HD int64_t head_group_begin(int64_t group, int64_t heads, int64_t num_groups) {
  const int64_t base = heads / num_groups;
  const int64_t big_groups = heads % num_groups;
  return group * base + (group < big_groups ? group : big_groups);
}

// How many patterns a query head uses: all of them in longnet, its group's one in head_groups.
DILATED_HD int head_pattern_count(const Params& p) {
  return p.mode == Mode::longnet ? p.num_patterns : 1;
}

// The k-th pattern (k < head_pattern_count) that query head `head` uses, with its offset.
DILATED_HD HeadPattern head_pattern(const Params& p, int64_t head, int k) {
  if (p.mode == Mode::head_groups) {
    const int64_t group = head_group_of(head, p.heads, p.num_patterns);
    const Pattern pat = p.patterns[group];
    return {pat.segment, pat.dilation, small_remainder(group, pat.dilation)};
  }
  const Pattern pat = p.patterns[k];
  const int64_t offset = p.head_offsets == HeadOffsets::paper
                             ? small_remainder(head, pat.dilation)
                             : small_quotient(head, ceil_div(p.heads, pat.dilation));
  return {pat.segment, pat.dilation, offset};
}

DILATED_HD bool selects(const HeadPattern& hp, int64_t t) {
  return small_remainder(small_remainder(t, hp.segment), hp.dilation) == hp.offset;
}

// Keys of selected query t in a sequence of length n: the selected positions of t's segment
// (the last segment may be short), up to t when causal.
DILATED_HD KeyRange key_range(const HeadPattern& hp, int64_t t, int64_t n, bool causal) {
  const int64_t segment_begin = t - small_remainder(t, hp.segment);
  const int64_t segment_end = segment_begin + hp.segment < n ? segment_begin + hp.segment : n;
  const int64_t first = segment_begin + hp.offset;
  const int64_t last = causal ? t : segment_end - 1;
  const int64_t count = last >= first ? small_quotient(last - first, hp.dilation) + 1 : 0;
  return {first, hp.dilation, count};
}

// head_groups divides the single-pattern softmax by the number of groups (DESIGN 2.4).
DILATED_HD float output_scale(const Params& p) {
  return p.mode == Mode::head_groups ? 1.0f / static_cast<float>(p.num_patterns) : 1.0f;
}

DILATED_HD int64_t kv_head_of(const Params& p, int64_t head) {
  return small_quotient(head, small_quotient(p.heads, p.heads_kv));
}

// Varlen problems pack sequences along the token dimension; others have one per batch entry.
DILATED_HD int64_t seq_length(const Params& p, int64_t b) {
  return p.cu_seqlens ? p.cu_seqlens[b + 1] - p.cu_seqlens[b] : p.seqlen;
}

// Element offset of row (b, t, head) of tensor x.
DILATED_HD int64_t row_offset(const Params& p, const Tensor& x, int64_t b, int64_t t,
                              int64_t head) {
  const int64_t base = p.cu_seqlens ? p.cu_seqlens[b] * x.row_stride : b * x.batch_stride;
  return base + t * x.row_stride + head * x.head_stride;
}

// The selected positions of one segment of a head pattern: first, first + dilation, ...
struct SegmentRows {
  int64_t first;
  int64_t count;
};

DILATED_HD SegmentRows segment_rows(const HeadPattern& hp, int64_t segment, int64_t n) {
  const int64_t begin = segment * hp.segment;
  const int64_t length = n - begin < hp.segment ? n - begin : hp.segment;
  const int64_t count =
      length > hp.offset ? small_quotient(length - 1 - hp.offset, hp.dilation) + 1 : 0;
  return {begin + hp.offset, count};
}

// Token index of (b, t): b * N + t, or the packed index for varlen problems.
DILATED_HD int64_t token_index(const Params& p, int64_t b, int64_t t) {
  return p.cu_seqlens ? p.cu_seqlens[b] + t : b * p.seqlen + t;
}

// Element offset of (token, head) of tensor x, token as token_index() numbers them.
DILATED_HD int64_t token_offset(const Params& p, const Tensor& x, int64_t token, int64_t head) {
  if (p.cu_seqlens) return token * x.row_stride + head * x.head_stride;
  return (token / p.seqlen) * x.batch_stride + (token % p.seqlen) * x.row_stride +
         head * x.head_stride;
}

// Index of (token, head) in the float32 lse.
DILATED_HD int64_t token_lse_index(const Params& p, int64_t token, int64_t head) {
  if (p.cu_seqlens) return head * p.total_tokens + token;
  return ((token / p.seqlen) * p.heads + head) * p.seqlen + token % p.seqlen;
}

// Index of (b, head, t) in the float32 lse: [B, H, N], or [H, T] for varlen.
DILATED_HD int64_t lse_index(const Params& p, int64_t b, int64_t head, int64_t t) {
  return p.cu_seqlens ? head * p.total_tokens + p.cu_seqlens[b] + t
                      : (b * p.heads + head) * p.seqlen + t;
}

// ---- Sequence windows (Params::window) ---------------------------------------------------
// Query rows and key rows are local to their tensors; patterns see global positions.

DILATED_HD bool windowed(const Params& p) {
  return p.window.global_seqlen > 0;
}

// Length of sequence b as segments and causal order see it.
DILATED_HD int64_t pattern_length(const Params& p, int64_t b) {
  return windowed(p) ? p.window.global_seqlen : seq_length(p, b);
}

// Rows of k, v, dk and dv in sequence b.
DILATED_HD int64_t key_length(const Params& p, int64_t b) {
  return windowed(p) ? p.window.key_rows : seq_length(p, b);
}

// Global position of query row t, and key row of global position `position`.
DILATED_HD int64_t query_position(const Params& p, int64_t t) {
  return p.window.query_begin + t;
}
DILATED_HD int64_t key_row(const Params& p, int64_t position) {
  return position - p.window.key_begin;
}

// The keys of a range that lie in [begin, end), as a range (positions stay global).
DILATED_HD KeyRange clip_key_range(const KeyRange& r, int64_t begin, int64_t end) {
  const int64_t skip = begin > r.first ? ceil_div(begin - r.first, r.step) : 0;
  const int64_t below_end = end > r.first ? ceil_div(end - r.first, r.step) : 0;
  const int64_t last = below_end < r.count ? below_end : r.count;
  return {r.first + skip * r.step, r.step, last > skip ? last - skip : 0};
}

// The keys of `r` in the problem's key window (all of them without a window).
DILATED_HD KeyRange window_keys(const Params& p, const KeyRange& r) {
  if (!windowed(p)) return r;
  return clip_key_range(r, p.window.key_begin, p.window.key_begin + p.window.key_rows);
}

}  // namespace dilated
