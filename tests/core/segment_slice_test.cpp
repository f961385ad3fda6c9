// The window geometry the CUDA kernels tile by (core/segment_slice.hpp) against enumeration
// of positions straight from DESIGN 2.2 and Params::window: which rows of a segment a query or
// key window holds, which keys a windowed query sees, and which segments a window touches.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "core/segment_slice.hpp"
#include "support/problem.hpp"

namespace dilated::testing {
namespace {

int64_t uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

TEST(SegmentSlice, WindowsOfRandomSegments) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed) + " (DILATED_TEST_SEED)");
  for (int c = 0; c < 3000 && !HasFailure(); ++c) {
    const int64_t n = uniform(rng, 1, 120);
    const int64_t w = uniform(rng, 1, n + 10);
    const int64_t r = uniform(rng, 1, w);
    const int64_t o = uniform(rng, 0, r - 1);
    const HeadPattern hp{w, r, o};
    const bool causal = uniform(rng, 0, 1) == 1;
    Params p;
    p.batch = 1;
    p.seqlen = uniform(rng, 1, n);
    p.window = {n, uniform(rng, 0, n - p.seqlen), 0, uniform(rng, 1, n)};
    p.window.key_begin = uniform(rng, 0, n - p.window.key_rows);
    const int64_t qb = p.window.query_begin, kb = p.window.key_begin;
    const int64_t qe = qb + p.seqlen, ke = kb + p.window.key_rows;
    SCOPED_TRACE("n " + std::to_string(n) + " w " + std::to_string(w) + " r " + std::to_string(r) +
                 " o " + std::to_string(o) + " queries [" + std::to_string(qb) + ", " +
                 std::to_string(qe) + ") keys [" + std::to_string(kb) + ", " + std::to_string(ke) +
                 ")");

    // Segments the windows touch: exactly those holding a position of the window.
    const SegmentCover qc = segment_cover(w, r, qb, p.seqlen);
    EXPECT_EQ(qc.first_segment, qb / w);
    EXPECT_EQ(qc.first_segment + qc.segments - 1, (qe - 1) / w);
    for (int64_t s = 0; s * w < n; ++s) {
      const SegmentSlice q = query_slice(p, hp, s, 0), k = key_slice(p, hp, s, 0);
      // Slices against enumeration: the selected positions of segment s inside the window.
      std::vector<int64_t> want_q, want_k;
      for (int64_t t = s * w; t < std::min(n, (s + 1) * w); ++t) {
        if (!selects(hp, t)) continue;
        if (t >= qb && t < qe) want_q.push_back(t);
        if (t >= kb && t < ke) want_k.push_back(t);
      }
      ASSERT_EQ(q.count, static_cast<int64_t>(want_q.size())) << "segment " << s;
      ASSERT_EQ(k.count, static_cast<int64_t>(want_k.size())) << "segment " << s;
      if (s >= qc.first_segment && s < qc.first_segment + qc.segments) {
        EXPECT_LE(q.count, qc.max_rows) << "segment " << s;
      } else {
        EXPECT_EQ(q.count, 0) << "segment " << s << " outside the cover has query rows";
      }
      for (int64_t i = 0; i < q.count; ++i) {
        EXPECT_EQ(q.first_row + i * r + qb, want_q[static_cast<size_t>(i)]);
      }
      for (int64_t j = 0; j < k.count; ++j) {
        EXPECT_EQ(k.first_row + j * r + kb, want_k[static_cast<size_t>(j)]);
      }
      // Which keys each query sees: key_range of DESIGN 2.2 clipped to the key window.
      const int64_t shift = causal_shift(q, k);
      for (int64_t i = 0; i < q.count; ++i) {
        const int64_t t = want_q[static_cast<size_t>(i)];
        int64_t want = 0;
        for (int64_t key : want_k) want += !causal || key <= t ? 1 : 0;
        const int64_t got = visible_keys(causal, k.count, i, shift);
        ASSERT_EQ(got, want) << "query position " << t;
        // The visible keys are a prefix of the slice: j sees iff j <= i + shift.
        for (int64_t j = 0; j < k.count; ++j) {
          const bool sees = !causal || want_k[static_cast<size_t>(j)] <= t;
          EXPECT_EQ(sees, j < got) << "query " << t << " key " << want_k[static_cast<size_t>(j)];
          EXPECT_EQ(sees, !causal || j <= i + shift);
        }
      }
      const SliceRows rows = slice_rows(p, hp, s, 0);
      EXPECT_EQ(rows.queries.first, q.first_row);
      EXPECT_EQ(rows.keys.count, k.count);
      EXPECT_EQ(rows.shift, shift);
    }
  }
}

// Without a window the slices are the whole segment, as the kernels have always tiled it.
TEST(SegmentSlice, NoWindowIsTheWholeSegment) {
  Params p;
  p.batch = 1;
  p.seqlen = 100;
  for (const HeadPattern hp :
       {HeadPattern{16, 1, 0}, HeadPattern{30, 4, 3}, HeadPattern{100, 7, 2}}) {
    for (int64_t s = 0; s * hp.segment < p.seqlen; ++s) {
      const SegmentRows all = segment_rows(hp, s, p.seqlen);
      for (const SegmentSlice x : {query_slice(p, hp, s, 0), key_slice(p, hp, s, 0)}) {
        EXPECT_EQ(x.first_row, all.first);
        EXPECT_EQ(x.count, all.count);
        EXPECT_EQ(x.first_index, 0);
      }
    }
    const SegmentCover c = segment_cover(hp.segment, hp.dilation, 0, p.seqlen);
    EXPECT_EQ(c.first_segment, 0);
    EXPECT_EQ(c.segments, ceil_div(p.seqlen, hp.segment));
  }
}

}  // namespace
}  // namespace dilated::testing
