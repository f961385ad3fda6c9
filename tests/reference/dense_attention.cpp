#include "reference/dense_attention.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace dilated::testing {
namespace {

struct Selection {
  int64_t w, r, o;
};

// The (w, r, offset) triples that query head j uses, written from the DESIGN text.
std::vector<Selection> selections_of_head(const ProblemConfig& c, int64_t j) {
  const int64_t m = static_cast<int64_t>(c.patterns.size());
  std::vector<Selection> used;
  if (c.mode == Mode::head_groups) {
    // Group i holds H/m heads, plus one for the first H%m groups, in order.
    int64_t first_head = 0;
    for (int64_t i = 0; i < m; ++i) {
      const int64_t size = c.heads / m + (i < c.heads % m ? 1 : 0);
      if (j >= first_head && j < first_head + size) {
        const int64_t r = c.patterns[i].dilation;
        used.push_back({c.patterns[i].segment, r, i % r});
      }
      first_head += size;
    }
    return used;
  }
  for (const Pattern& pat : c.patterns) {
    const int64_t r = pat.dilation;
    int64_t o = j % r;
    if (c.head_offsets == HeadOffsets::grouped) {
      const int64_t padded_heads = (c.heads + r - 1) / r * r;  // torchscale pads heads to r
      o = j / (padded_heads / r);
    }
    used.push_back({pat.segment, r, o});
  }
  return used;
}

// The documented generator of the random block pattern (docs/design.md 1.1), written again
// from its text.
uint64_t finalise(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::vector<int64_t> random_blocks(uint64_t seed, int64_t head, int64_t I, int64_t candidates,
                                   int64_t k) {
  const int64_t count = std::min(k, candidates);
  const uint64_t stream = finalise(finalise(finalise(seed) + head) + I);
  std::vector<int64_t> chosen;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t j = candidates - count + i;
    const uint64_t word = finalise(stream + (i + 1) * 0x9e3779b97f4a7c15ull);
    const auto t = static_cast<int64_t>((static_cast<unsigned __int128>(word) * (j + 1)) >> 64);
    const bool taken = std::find(chosen.begin(), chosen.end(), t) != chosen.end();
    chosen.push_back(taken ? j : t);
  }
  return chosen;
}

// kept[I][J] += 1 for every (I, J) the block pattern keeps for query head j of a sequence whose
// curve-ordered q and k rows are given (for topk).
void add_block_pattern(const ProblemConfig& c, const BlockPattern& bp, int64_t j, int64_t n,
                       const std::vector<std::vector<double>>& q_rows,
                       const std::vector<std::vector<double>>& k_rows,
                       std::vector<std::vector<int>>& kept) {
  const int64_t b = c.block_size, nb = (n + b - 1) / b, mask_nb = (c.seqlen + b - 1) / b;
  for (int64_t I = 0; I < nb; ++I) {
    // Key blocks the pattern may choose from: all, or (causal) those not after I.
    const int64_t candidates = c.causal ? I + 1 : nb;
    std::vector<int64_t> chosen;
    if (bp.kind == BlockKind::random) chosen = random_blocks(bp.seed, j, I, candidates, bp.size);
    if (bp.kind == BlockKind::topk) {
      auto mean = [&](const std::vector<std::vector<double>>& rows, int64_t block) {
        std::vector<double> m(rows[0].size(), 0.0);
        const int64_t end = std::min(n, (block + 1) * b);
        for (int64_t t = block * b; t < end; ++t) {
          for (size_t d = 0; d < m.size(); ++d) m[d] += rows[t][d] / double(end - block * b);
        }
        return m;
      };
      const std::vector<double> q_mean = mean(q_rows, I);
      std::vector<std::pair<double, int64_t>> scored;  // (-score, J): ascending = best first
      for (int64_t J = 0; J < candidates; ++J) {
        if (J == I) continue;
        const std::vector<double> k_mean = mean(k_rows, J);
        double score = 0;
        for (size_t d = 0; d < q_mean.size(); ++d) score += q_mean[d] * k_mean[d];
        scored.push_back({-score, J});
      }
      std::sort(scored.begin(), scored.end());
      chosen.push_back(I);
      for (int64_t i = 0; i < std::min<int64_t>(bp.size, static_cast<int64_t>(scored.size()));
           ++i) {
        chosen.push_back(scored[i].second);
      }
    }
    for (int64_t J = 0; J < nb; ++J) {
      bool keep = false;
      switch (bp.kind) {
        case BlockKind::local:
          keep = std::abs(I - J) <= bp.size;
          break;
        case BlockKind::global:
          keep = I < bp.size || J < bp.size;
          break;
        case BlockKind::dilated:
          keep = (J - I) % bp.size == 0 && std::abs(J - I) / bp.size <= bp.reach;
          break;
        case BlockKind::random:
        case BlockKind::topk:
          keep = std::find(chosen.begin(), chosen.end(), J) != chosen.end();
          break;
        case BlockKind::mask:
          // The mask covers the longest sequence: [heads, ceil(seqlen / b), same].
          keep = c.block_mask[((c.mask_heads == 1 ? 0 : j) * mask_nb + I) * mask_nb + J] != 0;
          break;
      }
      if (keep) ++kept[I][J];
    }
  }
}

}  // namespace

DenseResult dense_attention(const HostProblem& problem) {
  const ProblemConfig& c = problem.config();
  const Params p = problem.params();
  const std::vector<double> q = problem.read("q"), k = problem.read("k"), v = problem.read("v");
  const int64_t H = c.heads, Hkv = c.heads_kv, D = c.head_dim, Dv = c.head_dim_v;
  // The scale is a float parameter: 1/sqrt(D) rounded to float unless given.
  const double scale = std::isnan(c.scale)
                           ? static_cast<double>(1.0f / std::sqrt(static_cast<float>(D)))
                           : static_cast<double>(c.scale);
  DenseResult result;
  result.out.assign(static_cast<size_t>(problem.tokens() * H * Dv), 0.0);
  result.lse.assign(static_cast<size_t>(problem.tokens() * H),
                    -std::numeric_limits<double>::infinity());
  int64_t first_token = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t n = p.cu_seqlens ? p.cu_seqlens[b + 1] - p.cu_seqlens[b] : p.seqlen;
    for (int64_t j = 0; j < H; ++j) {
      const int64_t g = j / (H / Hkv);
      // Curve position t reads and writes token first_token + order[t] (the identity
      // without a grid).
      std::vector<int64_t> order(n);
      for (int64_t t = 0; t < n; ++t) order[t] = t;
      if (c.grid_height > 0) order = hilbert_order(c.grid_height, c.grid_width);
      auto q_at = [&](int64_t t, int64_t d) {
        return q[((first_token + order[t]) * H + j) * D + d];
      };
      auto k_at = [&](int64_t t, int64_t d) {
        return k[((first_token + order[t]) * Hkv + g) * D + d];
      };
      auto v_at = [&](int64_t t, int64_t d) {
        return v[((first_token + order[t]) * Hkv + g) * Dv + d];
      };
      // multiplicity[t][t'] = number of patterns whose key set for t contains t'
      std::vector<std::vector<int>> multiplicity(n, std::vector<int>(n, 0));
      if (!c.block_patterns.empty() && n > 0) {
        std::vector<std::vector<double>> q_rows(n, std::vector<double>(D)), k_rows = q_rows;
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t d = 0; d < D; ++d) {
            q_rows[t][d] = q_at(t, d);
            k_rows[t][d] = k_at(t, d);
          }
        }
        const int64_t nb = (n + c.block_size - 1) / c.block_size;
        for (const BlockPattern& bp : c.block_patterns) {
          std::vector<std::vector<int>> kept(nb, std::vector<int>(nb, 0));
          add_block_pattern(c, bp, j, n, q_rows, k_rows, kept);
          for (int64_t t = 0; t < n; ++t) {
            for (int64_t u = 0; u <= (c.causal ? t : n - 1); ++u) {
              multiplicity[t][u] += kept[t / c.block_size][u / c.block_size];
            }
          }
        }
      }
      for (const Selection& s : selections_of_head(c, j)) {
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t u = 0; u < n; ++u) {
            const bool same_segment = t / s.w == u / s.w;
            const bool t_selected = (t - s.w * (t / s.w)) % s.r == s.o;
            const bool u_selected = (u - s.w * (u / s.w)) % s.r == s.o;
            const bool visible = !c.causal || u <= t;
            if (same_segment && t_selected && u_selected && visible) ++multiplicity[t][u];
          }
        }
      }
      for (int64_t t = 0; t < n; ++t) {
        std::vector<double> scores(n, -std::numeric_limits<double>::infinity());
        double max_score = -std::numeric_limits<double>::infinity();
        for (int64_t u = 0; u < n; ++u) {
          if (!multiplicity[t][u]) continue;
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += q_at(t, d) * k_at(u, d);
          scores[u] = scale * s;
          max_score = std::max(max_score, scores[u]);
        }
        if (std::isinf(max_score)) continue;  // selected by no pattern: out 0, lse -inf
        double denominator = 0;
        std::vector<double> numerator(Dv, 0.0);
        for (int64_t u = 0; u < n; ++u) {
          if (!multiplicity[t][u]) continue;
          const double e = multiplicity[t][u] * std::exp(scores[u] - max_score);
          denominator += e;
          for (int64_t d = 0; d < Dv; ++d) numerator[d] += e * v_at(u, d);
        }
        const double group_share =
            c.mode == Mode::head_groups ? 1.0 / static_cast<double>(c.patterns.size()) : 1.0;
        for (int64_t d = 0; d < Dv; ++d) {
          result.out[((first_token + order[t]) * H + j) * Dv + d] =
              group_share * numerator[d] / denominator;
        }
        const int64_t row = order[t];
        const int64_t lse_at =
            p.cu_seqlens ? j * problem.tokens() + first_token + row : (b * H + j) * p.seqlen + row;
        result.lse[lse_at] = max_score + std::log(denominator);
      }
    }
    first_token += n;
  }
  return result;
}

}  // namespace dilated::testing
