#include "cpu/fast/block_layout.hpp"

#include <algorithm>

#include "core/block_rows.hpp"
#include "core/block_sparse.hpp"
#include "core/pattern_math.hpp"
#include "cpu/fast/parallel.hpp"

namespace dilated::cpu_fast {
namespace {

// Appends (index, mult) to runs, extending the last run when it continues it.
void append(std::vector<BlockRun>& runs, int64_t begin, int64_t index, int32_t mult) {
  if (static_cast<int64_t>(runs.size()) > begin) {
    BlockRun& last = runs.back();
    if (last.first + last.count == index && last.mult == mult) {
      ++last.count;
      return;
    }
  }
  runs.push_back({index, 1, mult});
}

HeadBlocks build(const Params& p, const std::vector<int64_t>& order, int64_t b, int64_t head) {
  HeadBlocks hb;
  const int64_t nb = block_count(seq_length(p, b), p.blocks.block_size);
  hb.blocks = nb;
  BlockMeans means;
  if (needs_block_means(p)) means = block_means(p, order, b, head);
  std::vector<int32_t> mult(static_cast<size_t>(nb), 0);
  std::vector<int64_t> touched, blocks;
  hb.row_begin.push_back(0);
  for (int64_t I = 0; I < nb; ++I) {
    touched.clear();
    for (int i = 0; i < p.blocks.num_patterns; ++i) {
      key_blocks(p, p.blocks.patterns[i], head, I, nb, &means, &blocks);
      for (int64_t J : blocks) {
        if (mult[static_cast<size_t>(J)]++ == 0) touched.push_back(J);
      }
    }
    std::sort(touched.begin(), touched.end());
    const int64_t begin = static_cast<int64_t>(hb.rows.size());
    for (int64_t J : touched) {
      append(hb.rows, begin, J, mult[static_cast<size_t>(J)]);
      mult[static_cast<size_t>(J)] = 0;
    }
    hb.row_begin.push_back(static_cast<int64_t>(hb.rows.size()));
  }
  return hb;
}

}  // namespace

BlockLayout::BlockLayout(const Params& p, const std::vector<int64_t>& order, int threads)
    : block_size_(p.blocks.block_size) {
  for (int i = 0; i < p.blocks.num_patterns; ++i) {
    const BlockKind kind = p.blocks.patterns[i].kind;
    per_head_ = per_head_ || kind == BlockKind::random || kind == BlockKind::topk ||
                (kind == BlockKind::mask && p.blocks.mask.heads > 1);
    per_sequence_ = per_sequence_ || kind == BlockKind::topk;
  }
  per_sequence_ = per_sequence_ || p.cu_seqlens != nullptr;
  stride_ = per_head_ ? p.heads : 1;
  const int64_t sequences = per_sequence_ ? p.batch : 1;
  layouts_.resize(static_cast<size_t>(sequences * stride_));
  parallel_for(threads, static_cast<int64_t>(layouts_.size()), [&](int64_t index, int) {
    layouts_[static_cast<size_t>(index)] = build(p, order, index / stride_, index % stride_);
  });
}

}  // namespace dilated::cpu_fast
