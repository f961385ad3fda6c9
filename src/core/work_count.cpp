// DESIGN 2.6: the exact number of (query, key) pairs, with multiplicity, that every TFLOP/s
// figure divides by.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/block_rows.hpp"
#include "core/block_sparse.hpp"
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

// Pairs of one block pattern for one head: every kept (I, J) gives |I| x |J| pairs, the
// diagonal only its lower triangle when causal. topk's blocks depend on the data: its k
// off-diagonal blocks are counted as full blocks (exact when the block size divides n). A mask
// in device memory cannot be read here and counts nothing.
__int128 block_pattern_pairs(const Params& p, const BlockPattern& bp, int64_t head, int64_t n) {
  const int64_t size = p.blocks.block_size, nb = block_count(n, size);
  auto tokens = [&](int64_t block) -> __int128 { return std::min(size, n - block * size); };
  auto diagonal = [&](int64_t block) {
    const __int128 c = tokens(block);
    return p.causal ? c * (c + 1) / 2 : c * c;
  };
  if (bp.kind == BlockKind::mask && p.device != Device::host) return 0;
  __int128 total = 0;
  std::vector<int64_t> blocks;
  for (int64_t I = 0; I < nb; ++I) {
    if (bp.kind == BlockKind::topk) {
      const int64_t others = std::min(bp.size, p.causal ? I : nb - 1);
      total += diagonal(I) + others * tokens(I) * size;
      continue;
    }
    key_blocks(p, bp, head, I, nb, nullptr, &blocks);
    for (int64_t J : blocks) total += J == I ? diagonal(I) : tokens(I) * tokens(J);
  }
  return total;
}

__int128 block_pairs_of_sequence(const Params& p, int64_t n) {
  __int128 total = 0;
  for (int i = 0; i < p.blocks.num_patterns; ++i) {
    const BlockPattern& bp = p.blocks.patterns[i];
    // Only random patterns and per-head masks differ between heads.
    const bool per_head =
        bp.kind == BlockKind::random || (bp.kind == BlockKind::mask && p.blocks.mask.heads > 1);
    if (per_head) {
      for (int64_t head = 0; head < p.heads; ++head) total += block_pattern_pairs(p, bp, head, n);
    } else {
      total += p.heads * block_pattern_pairs(p, bp, 0, n);
    }
  }
  return total;
}

}  // namespace

int64_t attended_pairs(const Params& p, int64_t n) {
  const __int128 total = pairs_of_sequence(p, n) + block_pairs_of_sequence(p, n);
  return total > INT64_MAX ? INT64_MAX : static_cast<int64_t>(total);
}

double forward_flops(const Params& p, const int32_t* host_cu_seqlens) {
  double pairs = 0;
  if (p.cu_seqlens) {
    if (!host_cu_seqlens) return 0;
    for (int64_t b = 0; b < p.batch; ++b) {
      const int64_t n = host_cu_seqlens[b + 1] - host_cu_seqlens[b];
      pairs += static_cast<double>(pairs_of_sequence(p, n) + block_pairs_of_sequence(p, n));
    }
  } else {
    pairs =
        static_cast<double>(p.batch) *
        static_cast<double>(pairs_of_sequence(p, p.seqlen) + block_pairs_of_sequence(p, p.seqlen));
  }
  // 2 FLOPs per multiply-add in q.k (D) and in p.v (Dv): 4 * D * pairs when Dv == D.
  return 2.0 * static_cast<double>(p.head_dim + p.head_dim_v) * pairs;
}

}  // namespace dilated
