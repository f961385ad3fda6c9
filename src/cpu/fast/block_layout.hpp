// The realised union of a problem's block patterns as the fast CPU backend walks it: for each
// (sequence, query head), runs of consecutive key blocks with the same multiplicity per query
// block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "dilated/params.hpp"

namespace dilated::cpu_fast {

// Blocks first .. first + count - 1, each kept by `mult` patterns.
struct BlockRun {
  int64_t first = 0;
  int64_t count = 0;
  int32_t mult = 0;
};

struct HeadBlocks {
  int64_t blocks = 0;
  std::vector<int64_t> row_begin;  // [blocks + 1]: rows[row_begin[I] ..) are query block I's
  std::vector<BlockRun> rows;      // sorted by first
};

class BlockLayout {
 public:
  // Lists every distinct layout on `threads` workers: one per head only when random, topk or
  // a per-head mask differ between heads, one per sequence only with topk or varlen.
  BlockLayout(const Params& p, const std::vector<int64_t>& order, int threads);

  const HeadBlocks& of(int64_t b, int64_t head) const {
    return layouts_[static_cast<size_t>((per_sequence_ ? b : 0) * stride_ +
                                        (per_head_ ? head : 0))];
  }
  int64_t block_size() const { return block_size_; }
  const std::vector<HeadBlocks>& all() const { return layouts_; }

 private:
  int64_t block_size_ = 1;
  bool per_sequence_ = false, per_head_ = false;
  int64_t stride_ = 1;
  std::vector<HeadBlocks> layouts_;
};

}  // namespace dilated::cpu_fast
