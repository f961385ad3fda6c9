// The block-sparse patterns (docs/design.md 1.1) as rules every backend shares: block counts,
// the rule patterns (local, global, dilated blocks) and the seeded generator of the random
// pattern. Compiled into host code and CUDA kernels alike, so every backend and every rank of a
// sequence-parallel run draws the same random blocks.
#pragma once

#include <cstdint>

#include "core/host_device.hpp"
#include "dilated/params.hpp"

namespace dilated {

// Blocks of a sequence of n tokens (the last one may be partial).
DILATED_HD int64_t block_count(int64_t n, int64_t block) {
  return n / block + (n % block != 0 ? 1 : 0);
}

// Whether a rule pattern (local, global or dilated) keeps (I, J), before the causal cut.
DILATED_HD bool rule_keeps(const BlockPattern& bp, int64_t I, int64_t J) {
  const int64_t distance = I > J ? I - J : J - I;
  switch (bp.kind) {
    case BlockKind::local:
      return distance <= bp.size;
    case BlockKind::global:
      return I < bp.size || J < bp.size;
    case BlockKind::dilated:
      return distance % bp.size == 0 && distance / bp.size <= bp.reach;
    default:
      return false;
  }
}

// splitmix64's finaliser: a bijection of 64-bit words that mixes every input bit.
DILATED_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// floor(word * m / 2^64): a draw in [0, m) from one 64-bit word.
DILATED_HD int64_t scale_draw(uint64_t word, int64_t m) {
#if defined(__CUDA_ARCH__)
  return static_cast<int64_t>(__umul64hi(word, static_cast<uint64_t>(m)));
#else
  return static_cast<int64_t>((static_cast<unsigned __int128>(word) * static_cast<uint64_t>(m)) >>
                              64);
#endif
}

// The random pattern's key blocks of query block I of query head `head`: min(k, candidates)
// distinct blocks of [0, candidates) (candidates = NB, or I + 1 when causal), written sorted to
// `out`; returns their number. The generator (normative, docs/design.md 1.1):
//   stream = mix64(mix64(mix64(seed) + head) + I)
//   word_i = mix64(stream + (i + 1) * 0x9e3779b97f4a7c15)
// and Floyd's sampling: for i = 0 .. k'-1, j = candidates - k' + i, t = floor(word_i * (j + 1)
// / 2^64); take t unless already taken, else j.
DILATED_HD int64_t random_key_blocks(uint64_t seed, int64_t head, int64_t I, int64_t candidates,
                                     int64_t k, int64_t* out) {
  const int64_t count = k < candidates ? k : candidates;
  const uint64_t stream =
      mix64(mix64(mix64(seed) + static_cast<uint64_t>(head)) + static_cast<uint64_t>(I));
  for (int64_t i = 0; i < count; ++i) {
    const int64_t j = candidates - count + i;
    const uint64_t word = mix64(stream + static_cast<uint64_t>(i + 1) * 0x9e3779b97f4a7c15ull);
    int64_t pick = scale_draw(word, j + 1);
    for (int64_t c = 0; c < i; ++c) {
      if (out[c] == pick) {
        pick = j;  // j itself was never a candidate before this step
        break;
      }
    }
    // Insertion keeps out[0..i] sorted.
    int64_t at = i;
    while (at > 0 && out[at - 1] > pick) {
      out[at] = out[at - 1];
      --at;
    }
    out[at] = pick;
  }
  return count;
}

// Whether any block pattern or a token grid is set (backends that run neither decline these).
DILATED_HD bool has_block_patterns(const Params& p) {
  return p.blocks.num_patterns > 0;
}
DILATED_HD bool has_grid(const Params& p) {
  return p.grid.height > 0 || p.grid.width > 0;
}

}  // namespace dilated
