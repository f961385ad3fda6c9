// DESIGN 2.6: the exact number of (query, key) pairs, with multiplicity, that every TFLOP/s
// figure divides by.
#include <cstdint>

#include "core/pattern_math.hpp"
#include "dilated/dilated.hpp"

namespace dilated {
namespace {

// Pairs inside one segment of `length` tokens for one head pattern: the c selected tokens
// see each other (c^2), or only earlier ones when causal (c(c+1)/2). Counted in 128 bits:
// c^2 leaves int64 once a segment selects more than 3e9 tokens (a valid, if huge, problem).
__int128 pairs_in_segment(const HeadPattern& hp, int64_t length, bool causal) {
  const __int128 c = length > hp.offset ? (length - 1 - hp.offset) / hp.dilation + 1 : 0;
  return causal ? c * (c + 1) / 2 : c * c;
}

__int128 pairs_of_sequence(const Params& p, int64_t n) {
  __int128 total = 0;
  for (int64_t head = 0; head < p.heads; ++head) {
    for (int k = 0; k < head_pattern_count(p); ++k) {
      const HeadPattern hp = head_pattern(p, head, k);
      const int64_t full_segments = n / hp.segment;
      total += full_segments * pairs_in_segment(hp, hp.segment, p.causal) +
               pairs_in_segment(hp, n % hp.segment, p.causal);
    }
  }
  return total;
}

}  // namespace

int64_t attended_pairs(const Params& p, int64_t n) {
  const __int128 total = pairs_of_sequence(p, n);
  return total > INT64_MAX ? INT64_MAX : static_cast<int64_t>(total);
}

double forward_flops(const Params& p, const int32_t* host_cu_seqlens) {
  double pairs = 0;
  if (p.cu_seqlens) {
    if (!host_cu_seqlens) return 0;
    for (int64_t b = 0; b < p.batch; ++b) {
      pairs +=
          static_cast<double>(pairs_of_sequence(p, host_cu_seqlens[b + 1] - host_cu_seqlens[b]));
    }
  } else {
    pairs = static_cast<double>(p.batch) * static_cast<double>(pairs_of_sequence(p, p.seqlen));
  }
  // 2 FLOPs per multiply-add in q.k (D) and in p.v (Dv): 4 * D * pairs when Dv == D.
  return 2.0 * static_cast<double>(p.head_dim + p.head_dim_v) * pairs;
}

}  // namespace dilated
