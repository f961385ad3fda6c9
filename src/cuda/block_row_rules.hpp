// One row (query block I) of the block pass's multiplicity matrix, pattern by pattern, as the
// device builds it (kernels/block_lists.cuh) and as host tests check it against the core's
// key_blocks(): `lane` of `lanes` workers each take every lanes-th key block. Compiled into host
// code and CUDA kernels alike.
#pragma once

#include <cstdint>

#include "core/block_sparse.hpp"
#include "core/host_device.hpp"
#include "dilated/params.hpp"

namespace dilated::cuda {

// Adds 1 to row[J], J <= last, for every J a rule pattern (local, global, dilated) or the mask
// keeps; `mask_row` is the mask's row of this head and I (null for rule patterns).
DILATED_HD void add_rule_or_mask(uint8_t* row, const BlockPattern& pat, const uint8_t* mask_row,
                                 int64_t I, int64_t last, int lane, int lanes) {
  for (int64_t J = lane; J <= last; J += lanes) {
    const bool kept = pat.kind == BlockKind::mask ? mask_row[J] != 0 : rule_keeps(pat, I, J);
    if (kept) row[J] = static_cast<uint8_t>(row[J] + 1);
  }
}

// Marks the random pattern's picks of this row with bit 7 (one worker): Floyd's sampling with
// the generator of random_key_blocks (block_sparse.hpp), which lists the same picks sorted.
DILATED_HD void mark_random_blocks(uint8_t* row, const BlockPattern& pat, int64_t head, int64_t I,
                                   int64_t candidates) {
  const int64_t count = pat.size < candidates ? pat.size : candidates;
  const uint64_t stream =
      mix64(mix64(mix64(pat.seed) + static_cast<uint64_t>(head)) + static_cast<uint64_t>(I));
  for (int64_t i = 0; i < count; ++i) {
    const int64_t j = candidates - count + i;
    const uint64_t word = mix64(stream + static_cast<uint64_t>(i + 1) * 0x9e3779b97f4a7c15ull);
    int64_t pick = scale_draw(word, j + 1);
    if (row[pick] & 0x80) pick = j;  // j itself was never a candidate before this step
    row[pick] = static_cast<uint8_t>(row[pick] | 0x80);
  }
}

// Turns the marks of bit 7 into one more count each (after mark_random_blocks, every worker).
DILATED_HD void count_random_marks(uint8_t* row, int64_t last, int lane, int lanes) {
  for (int64_t J = lane; J <= last; J += lanes) {
    if (row[J] & 0x80) row[J] = static_cast<uint8_t>((row[J] & 0x7f) + 1);
  }
}

// Whether topk candidate (a, ja) ranks before (b, jb): larger score first, NaN after every
// number, ties to the smaller block (the order of block_rows.cpp).
DILATED_HD bool topk_before(double a, int64_t ja, double b, int64_t jb) {
  const bool a_nan = a != a, b_nan = b != b;
  if (a_nan != b_nan) return b_nan;
  if (a != b) return a > b;
  return ja < jb;
}

}  // namespace dilated::cuda
