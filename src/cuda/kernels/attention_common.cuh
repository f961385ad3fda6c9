// Pieces every attention kernel shares: the pass's view of a head, the rows of a segment, and
// the row epilogues (direct write, or the lse merge / fp32 accumulation across passes).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/pattern_math.hpp"
#include "core/segment_slice.hpp"
#include "cuda/kernels/mma.cuh"
#include "cuda/launch_plan.hpp"
#include "dilated/params.hpp"

namespace dilated::cuda {

// Token grids (docs/design.md 1.2): the kernels work on curve positions, and position t of a
// sequence is row order[t] of every row-indexed buffer (q, k, v, out, lse, dout, the gradients,
// delta and the fp32 accumulators). A null order is the identity: problems without a grid pay a
// uniform branch. Grids never meet windows or varlen (validate refuses both).
__device__ __forceinline__ int64_t grid_row(const int64_t* order, int64_t t) {
  return order ? __ldg(order + t) : t;
}

// The pattern (with this head's offset) that `head` runs in pass `pass`.
__device__ __forceinline__ HeadPattern pass_pattern(const Params& p, const PassInfo& pass,
                                                    int64_t head) {
  if (pass.pattern_shared) return pass.pattern;
  return head_pattern(p, head, p.mode == Mode::longnet ? pass.k : 0);
}

// Whether the fp32 accumulator of `head`'s row at curve position `position` holds a value this
// pass adds to: always where the launcher cleared the accumulators, otherwise only where a pass
// that ran earlier selected the row (PassInfo::accumulators_cleared). Rows without one are
// stored, and their accumulator is never read.
__device__ __forceinline__ bool accumulator_holds(const Params& p, const PassInfo& pass,
                                                  int64_t head, int64_t position) {
  if (pass.accumulators_cleared) return true;
  for (int k = 0; k < p.num_patterns; ++k) {
    if ((pass.earlier_passes >> k & 1u) && selects(head_pattern(p, head, k), position)) return true;
  }
  return false;
}

// blockIdx.x numbers (segment, tile) pairs of the pass: segments the query rows hold for
// query-outer kernels, those the key rows hold for key-outer ones. Tile t covers rows
// [t * tile_rows, (t + 1) * tile_rows) of the segment's slice (segment_slice.hpp).
struct TileCoord {
  int64_t segment;
  int64_t tile;
};
__device__ __forceinline__ TileCoord tile_coord(const PassInfo& pass, uint32_t x = blockIdx.x) {
  return {pass.first_segment + small_quotient(x, pass.tiles_per_segment),
          small_remainder(x, pass.tiles_per_segment)};
}
__device__ __forceinline__ TileCoord key_tile_coord(const PassInfo& pass) {
  return {pass.key_first_segment + small_quotient(blockIdx.x, pass.key_tiles_per_segment),
          small_remainder(blockIdx.x, pass.key_tiles_per_segment)};
}

template <typename Elem>
__device__ __forceinline__ float load_as_float(const Tensor& t, int64_t offset) {
  return to_float(static_cast<const Elem*>(t.data)[offset]);
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// exp(a - b) where b may be -inf (then the weight of a is zero).
__device__ __forceinline__ float exp_diff(float a, float b) {
  return b == -INFINITY ? 0.0f : __expf(a - b);
}

// Merge weights of the running (lse_old) and this pass's (lse_new_part) results.
struct MergeWeights {
  float old_weight;
  float new_weight;
  float lse;
};
__device__ __forceinline__ MergeWeights merge_weights(float lse_old, float lse_part) {
  if (isnan(lse_old) || isnan(lse_part)) return {NAN, NAN, NAN};  // NaN inputs propagate
  const float hi = fmaxf(lse_old, lse_part);
  if (hi == -INFINITY) return {0.0f, 0.0f, -INFINITY};
  const float lse = hi + log1pf(__expf(fminf(lse_old, lse_part) - hi));
  return {exp_diff(lse_old, lse), exp_diff(lse_part, lse), lse};
}

}  // namespace dilated::cuda
