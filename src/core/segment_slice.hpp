// The part of one segment that a problem's query rows or key rows hold (Params::window), in the
// terms the segment-tiled CUDA kernels use: local tensor rows, a count, and the segment's
// selected index of the first row (causal order compares those indices). Without a window both
// slices are the whole segment (segment_rows), with first_index 0.
#pragma once

#include <cstdint>

#include "core/pattern_math.hpp"

namespace dilated {

struct SegmentSlice {
  int64_t first_row;    // local row (in the tensor) of slice row 0
  int64_t count;        // selected rows of the segment that the tensor holds
  int64_t first_index;  // the segment's selected index of slice row 0
};

// Selected rows of `segment` (pattern length n) at global positions [begin, end), for a tensor
// whose row 0 is global position tensor_begin.
DILATED_HD SegmentSlice segment_slice(const HeadPattern& hp, int64_t segment, int64_t n,
                                      int64_t begin, int64_t end, int64_t tensor_begin) {
  const SegmentRows all = segment_rows(hp, segment, n);
  const KeyRange in = clip_key_range({all.first, hp.dilation, all.count}, begin, end);
  return {in.first - tensor_begin, in.count, small_quotient(in.first - all.first, hp.dilation)};
}

// Without a window a slice is all of the segment's selected rows: segment_slice without its
// clipping, whose divisions were most of a CUDA tile's setup (bench/NOTES.md, tenth session).
DILATED_HD SegmentSlice whole_segment(const HeadPattern& hp, int64_t segment, int64_t n) {
  const SegmentRows all = segment_rows(hp, segment, n);
  return {all.first, all.count, 0};
}
// The segment's rows among the query rows (q, out, lse, dout, dq) of sequence b.
DILATED_HD SegmentSlice query_slice(const Params& p, const HeadPattern& hp, int64_t segment,
                                    int64_t b) {
  if (!windowed(p)) return whole_segment(hp, segment, seq_length(p, b));
  const int64_t begin = p.window.query_begin;
  return segment_slice(hp, segment, pattern_length(p, b), begin, begin + seq_length(p, b), begin);
}

// The segment's rows among the key rows (k, v, dk, dv) of sequence b.
DILATED_HD SegmentSlice key_slice(const Params& p, const HeadPattern& hp, int64_t segment,
                                  int64_t b) {
  if (!windowed(p)) return whole_segment(hp, segment, seq_length(p, b));
  const int64_t begin = p.window.key_begin;
  return segment_slice(hp, segment, pattern_length(p, b), begin, begin + key_length(p, b), begin);
}

// Causal order between slices: query slice row i sees key slice row j iff j <= i + shift.
DILATED_HD int64_t causal_shift(const SegmentSlice& queries, const SegmentSlice& keys) {
  return queries.first_index - keys.first_index;
}

// How many leading key slice rows query slice row i sees (all of them when not causal; may be
// 0 with a window: then the row gets out 0, lse -inf from this problem).
DILATED_HD int64_t visible_keys(bool causal, int64_t key_count, int64_t i, int64_t shift) {
  if (!causal) return key_count;
  const int64_t upto = i + shift + 1;
  return upto < 0 ? 0 : (upto < key_count ? upto : key_count);
}

// A segment's query and key rows as the tile kernels address them.
struct SliceRows {
  SegmentRows queries;  // first: local row of slice row 0 in q, out, dout, dq; count
  SegmentRows keys;     // the same in k, v, dk, dv
  int64_t shift;        // causal_shift(queries, keys)
};
DILATED_HD SliceRows slice_rows(const Params& p, const HeadPattern& hp, int64_t segment,
                                int64_t b) {
  const SegmentSlice q = query_slice(p, hp, segment, b), k = key_slice(p, hp, segment, b);
  return {{q.first_row, q.count}, {k.first_row, k.count}, causal_shift(q, k)};
}

// The segments holding positions [begin, begin + rows) of a pattern with segment length w, and
// a bound on the selected rows one of them has there (tiles of a pass cover that many rows).
struct SegmentCover {
  int64_t first_segment;
  int64_t segments;
  int64_t max_rows;
};
DILATED_HD SegmentCover segment_cover(int64_t w, int64_t r, int64_t begin, int64_t rows) {
  if (rows <= 0) return {0, 0, 0};
  const int64_t first = begin / w, last = (begin + rows - 1) / w;
  // A residue class mod r has at most ceil(L / r) members in L consecutive positions.
  const int64_t in_segment = ceil_div(w, r), in_rows = ceil_div(rows, r);
  return {first, last - first + 1, in_segment < in_rows ? in_segment : in_rows};
}

}  // namespace dilated
