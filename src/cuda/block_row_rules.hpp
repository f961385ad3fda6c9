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

// Turns the marks of bit 7 (the random pattern's picks, mark_random_blocks_by_warp in
// kernels/block_lists.cuh) into one more count each (every worker).
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
