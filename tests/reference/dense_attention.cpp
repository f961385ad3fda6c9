#include "reference/dense_attention.hpp"

#include <cmath>
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
      // multiplicity[t][t'] = number of patterns whose key set for t contains t'
      std::vector<std::vector<int>> multiplicity(n, std::vector<int>(n, 0));
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
          for (int64_t d = 0; d < D; ++d) {
            s += q[((first_token + t) * H + j) * D + d] * k[((first_token + u) * Hkv + g) * D + d];
          }
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
          for (int64_t d = 0; d < Dv; ++d)
            numerator[d] += e * v[((first_token + u) * Hkv + g) * Dv + d];
        }
        const double group_share =
            c.mode == Mode::head_groups ? 1.0 / static_cast<double>(c.patterns.size()) : 1.0;
        for (int64_t d = 0; d < Dv; ++d) {
          result.out[((first_token + t) * H + j) * Dv + d] =
              group_share * numerator[d] / denominator;
        }
        const int64_t lse_at =
            p.cu_seqlens ? j * problem.tokens() + first_token + t : (b * H + j) * p.seqlen + t;
        result.lse[lse_at] = max_score + std::log(denominator);
      }
    }
    first_token += n;
  }
  return result;
}

}  // namespace dilated::testing
