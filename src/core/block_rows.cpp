#include "core/block_rows.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/block_sparse.hpp"
#include "core/dtype_convert.hpp"
#include "core/pattern_math.hpp"
#include "dilated/dilated.hpp"

namespace dilated {

std::vector<int64_t> token_order(const Params& p) {
  if (!has_grid(p)) return {};
  return hilbert_order(p.grid.height, p.grid.width);
}

bool needs_block_means(const Params& p) {
  for (int i = 0; i < p.blocks.num_patterns; ++i) {
    if (p.blocks.patterns[i].kind == BlockKind::topk) return true;
  }
  return false;
}

BlockMeans block_means(const Params& p, const std::vector<int64_t>& order, int64_t b,
                       int64_t head) {
  const int64_t n = seq_length(p, b), size = p.blocks.block_size, dim = p.head_dim;
  const int64_t kv_head = kv_head_of(p, head);
  BlockMeans m;
  m.blocks = block_count(n, size);
  m.q.assign(static_cast<size_t>(m.blocks * dim), 0.0);
  m.k.assign(static_cast<size_t>(m.blocks * dim), 0.0);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t row = token_row(order, t), block = t / size;
    const int64_t q_at = row_offset(p, p.q, b, row, head);
    const int64_t k_at = row_offset(p, p.k, b, row, kv_head);
    for (int64_t d = 0; d < dim; ++d) {
      m.q[static_cast<size_t>(block * dim + d)] += load_element(p.dtype, p.q.data, q_at + d);
      m.k[static_cast<size_t>(block * dim + d)] += load_element(p.dtype, p.k.data, k_at + d);
    }
  }
  for (int64_t block = 0; block < m.blocks; ++block) {
    const double tokens = static_cast<double>(std::min(size, n - block * size));
    for (int64_t d = 0; d < dim; ++d) {
      m.q[static_cast<size_t>(block * dim + d)] /= tokens;
      m.k[static_cast<size_t>(block * dim + d)] /= tokens;
    }
  }
  return m;
}

namespace {

// topk: the diagonal plus the k candidates of largest <mean q_I, mean k_J>; ties go to the
// smaller J and NaN scores rank below every number.
void topk_key_blocks(const Params& p, const BlockPattern& bp, int64_t I, int64_t nb,
                     const BlockMeans& means, std::vector<int64_t>* out) {
  struct Candidate {
    double score;
    int64_t block;
  };
  const int64_t dim = p.head_dim;
  std::vector<Candidate> candidates;
  const int64_t end = p.causal ? I : nb;
  for (int64_t J = 0; J < end; ++J) {
    if (J == I) continue;
    double score = 0;
    for (int64_t d = 0; d < dim; ++d) {
      score +=
          means.q[static_cast<size_t>(I * dim + d)] * means.k[static_cast<size_t>(J * dim + d)];
    }
    candidates.push_back({score, J});
  }
  auto before = [](const Candidate& a, const Candidate& b) {
    if (std::isnan(a.score) != std::isnan(b.score)) return std::isnan(b.score);
    if (a.score != b.score) return a.score > b.score;
    return a.block < b.block;
  };
  const size_t keep =
      static_cast<size_t>(std::min<int64_t>(bp.size, static_cast<int64_t>(candidates.size())));
  std::partial_sort(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(keep),
                    candidates.end(), before);
  out->push_back(I);
  for (size_t i = 0; i < keep; ++i) out->push_back(candidates[i].block);
  std::sort(out->begin(), out->end());
}

}  // namespace

void key_blocks(const Params& p, const BlockPattern& bp, int64_t head, int64_t I, int64_t nb,
                const BlockMeans* means, std::vector<int64_t>* out) {
  out->clear();
  const int64_t last = p.causal ? I : nb - 1;  // the last key block that can hold visible keys
  switch (bp.kind) {
    case BlockKind::local: {
      for (int64_t J = std::max<int64_t>(0, I - bp.size); J <= std::min(last, I + bp.size); ++J) {
        out->push_back(J);
      }
      return;
    }
    case BlockKind::global: {
      const int64_t end = I < bp.size ? last + 1 : std::min(bp.size, last + 1);
      for (int64_t J = 0; J < end; ++J) out->push_back(J);
      return;
    }
    case BlockKind::dilated: {
      for (int64_t k = -bp.reach; k <= bp.reach; ++k) {
        // I + k * s without overflow: stop once the step leaves [0, last].
        if (k < 0 && -k > I / bp.size) continue;
        if (k > 0 && k > (last - I) / bp.size) break;
        out->push_back(I + k * bp.size);
      }
      return;
    }
    case BlockKind::random: {
      const int64_t candidates = last + 1;
      out->resize(static_cast<size_t>(std::min(bp.size, candidates)));
      random_key_blocks(bp.seed, head, I, candidates, bp.size, out->data());
      return;
    }
    case BlockKind::topk:
      topk_key_blocks(p, bp, I, nb, *means, out);
      return;
    case BlockKind::mask: {
      const BlockMask& m = p.blocks.mask;
      const uint8_t* row = m.data + ((m.heads == 1 ? 0 : head) * m.blocks + I) * m.blocks;
      for (int64_t J = 0; J <= last; ++J) {
        if (row[J]) out->push_back(J);
      }
      return;
    }
  }
}

Status realised_block_mask(const Params& p, int64_t b, std::vector<uint8_t>* mask, int64_t* nb) {
  if (p.device != Device::host) {
    return Status::Invalid("realised_block_mask: the problem must be in host memory");
  }
  if (b < 0 || b >= p.batch) {
    return Status::Invalid("realised_block_mask: sequence " + std::to_string(b) + " of " +
                           std::to_string(p.batch));
  }
  const std::vector<int64_t> order = token_order(p);
  *nb = block_count(seq_length(p, b), p.blocks.block_size);
  mask->assign(static_cast<size_t>(p.heads * *nb * *nb), 0);
  std::vector<int64_t> blocks;
  for (int64_t head = 0; head < p.heads; ++head) {
    BlockMeans means;
    if (needs_block_means(p)) means = block_means(p, order, b, head);
    for (int64_t I = 0; I < *nb; ++I) {
      for (int i = 0; i < p.blocks.num_patterns; ++i) {
        key_blocks(p, p.blocks.patterns[i], head, I, *nb, &means, &blocks);
        for (int64_t J : blocks) (*mask)[static_cast<size_t>((head * *nb + I) * *nb + J)] = 1;
      }
    }
  }
  return {};
}

}  // namespace dilated
