// Building the block pass's multiplicity matrix on the device (docs/design.md 1.1): mult[b,
// class, I, J] = how many block patterns keep (I, J) after the causal cut J <= I. Rule patterns,
// the mask and the seeded random pattern in one kernel (a warp per query-block row), then, for
// topk, fp64 block means of q and k and one CTA per row ranking its candidates. The topk scores
// are formed exactly as src/core/block_rows.cpp forms them (same fp64 sums in the same order,
// no fused multiply-add), so that every backend keeps the same blocks.
#pragma once

#include "core/block_sparse.hpp"
#include "cuda/block_plan.hpp"
#include "cuda/block_row_rules.hpp"
#include "cuda/kernels/block_pass_common.cuh"
#include "cuda/kernels/elementwise.cuh"

namespace dilated::cuda {

// mark_random_blocks (block_row_rules.hpp) by a whole warp, the same picks: Floyd's step i takes
// its draw t_i unless an earlier step took it, else j_i. The draws of 32 steps at a time are
// independent (one per lane); whether t_i was taken is read from the row's marks for the batches
// before, and settled within the batch in step order over the lanes' shuffled picks. One lane
// doing every step spent ~0.2 us a step, each waiting on the mark the one before had written
// (bench/NOTES.md, eighth session). Block indices fit 32 bits (the CUDA backend's bound).
__device__ __forceinline__ void mark_random_blocks_by_warp(uint8_t* row, const BlockPattern& pat,
                                                           int64_t head, int64_t I,
                                                           int64_t candidates, int lane) {
  const int count = static_cast<int>(pat.size < candidates ? pat.size : candidates);
  const uint64_t stream =
      mix64(mix64(mix64(pat.seed) + static_cast<uint64_t>(head)) + static_cast<uint64_t>(I));
  for (int first = 0; first < count; first += 32) {
    const int i = first + lane;
    const int steps = min(32, count - first);
    const int j = static_cast<int>(candidates) - count + i;
    int draw = 0;
    bool taken = false;
    if (i < count) {
      const uint64_t word = mix64(stream + static_cast<uint64_t>(i + 1) * 0x9e3779b97f4a7c15ull);
      draw = static_cast<int>(scale_draw(word, j + 1));
      taken = (row[draw] & 0x80) != 0;
    }
    int pick = draw;
    for (int step = 0; step < steps; ++step) {
      if (lane == step) pick = taken ? j : draw;
      const int earlier = __shfl_sync(0xffffffffu, pick, step);
      taken = taken || (lane > step && draw == earlier);
    }
    if (i < count) row[pick] = static_cast<uint8_t>(row[pick] | 0x80);
    __syncwarp();
  }
}

// One warp per row (b, class, I) of the matrix: zero it, then add every rule, mask and random
// pattern. Rows past a sequence's last block stay zero.
static __global__ void block_rule_rows_kernel(const Params p, const BlockPass bp) {
  const int64_t row_id = global_warp();
  if (row_id >= p.batch * bp.head_classes * bp.nb) return;
  const int lane = threadIdx.x % 32;
  const int64_t I = row_id % bp.nb;
  const int64_t cls = (row_id / bp.nb) % bp.head_classes;
  const int64_t b = row_id / (bp.nb * bp.head_classes);
  uint8_t* row = bp.mult + row_id * bp.nb;
  for (int64_t J = lane; J < bp.nb; J += 32) row[J] = 0;
  const int64_t nb = block_count(seq_length(p, b), bp.block);
  if (I >= nb) return;
  const int64_t last = p.causal ? I : nb - 1;  // the last key block with visible keys
  __syncwarp();
  for (int i = 0; i < p.blocks.num_patterns; ++i) {
    const BlockPattern& pat = p.blocks.patterns[i];
    switch (pat.kind) {
      case BlockKind::local:
      case BlockKind::global:
      case BlockKind::dilated:
        add_rule_or_mask(row, pat, nullptr, I, last, lane, 32);
        break;
      case BlockKind::mask: {
        const BlockMask& m = p.blocks.mask;
        const uint8_t* mask_row = m.data + ((m.heads == 1 ? 0 : cls) * m.blocks + I) * m.blocks;
        add_rule_or_mask(row, pat, mask_row, I, last, lane, 32);
        break;
      }
      case BlockKind::random:
        mark_random_blocks_by_warp(row, pat, cls, I, last + 1, lane);
        count_random_marks(row, last, lane, 32);
        break;
      default:  // topk: block_topk_kernel
        break;
    }
    __syncwarp();
  }
}

// fp64 means over each block of q (per query head) or k (per kv head): one thread per (b, head,
// block, d), summing the block's positions in order like the host.
template <typename Elem>
__global__ void block_means_kernel(const Params p, const Tensor x, int64_t heads, double* means,
                                   int64_t nb, int64_t block, const int64_t* order) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t dim = p.head_dim;
  if (i >= p.batch * heads * nb * dim) return;
  const int64_t d = i % dim;
  const int64_t J = (i / dim) % nb;
  const int64_t head = (i / (dim * nb)) % heads;
  const int64_t b = i / (dim * nb * heads);
  const int64_t n = seq_length(p, b);
  const int64_t begin = J * block;
  if (begin >= n) {
    means[i] = 0.0;
    return;
  }
  const int64_t end = begin + block < n ? begin + block : n;
  double sum = 0.0;
  for (int64_t t = begin; t < end; ++t) {
    sum = __dadd_rn(sum, static_cast<double>(load_as_float<Elem>(
                             x, row_offset(p, x, b, grid_row(order, t), head) + d)));
  }
  means[i] = __ddiv_rn(sum, static_cast<double>(end - begin));
}

inline constexpr int kTopkThreads = 256;

// One CTA per (query block I, head, b): scores <mean q_I, mean k_J> of the candidates J (J < I
// when causal, every J != I otherwise) in shared memory; each topk pattern keeps the diagonal
// and the candidates of rank below k.
static __global__ void __launch_bounds__(kTopkThreads)
    block_topk_kernel(const Params p, const BlockPass bp) {
  extern __shared__ double scores[];
  const int64_t I = blockIdx.x, head = blockIdx.y, b = blockIdx.z;
  const int64_t nb = block_count(seq_length(p, b), bp.block);
  if (I >= nb) return;
  const int64_t dim = p.head_dim;
  const int64_t kv_head = kv_head_of(p, head);
  const double* mq = bp.means_q + ((b * p.heads + head) * bp.nb + I) * dim;
  const double* mk = bp.means_k + (b * p.heads_kv + kv_head) * bp.nb * dim;
  const int64_t end = p.causal ? I : nb;
  for (int64_t J = threadIdx.x; J < end; J += kTopkThreads) {
    double s = 0.0;
    for (int64_t d = 0; d < dim; ++d) s = __dadd_rn(s, __dmul_rn(mq[d], mk[J * dim + d]));
    scores[J] = s;
  }
  __syncthreads();
  const int64_t candidates = end - (I < end ? 1 : 0);
  uint8_t* row = bp.mult + mult_row_index(bp, b, class_of_head(bp, head), I);
  for (int i = 0; i < p.blocks.num_patterns; ++i) {
    const BlockPattern& pat = p.blocks.patterns[i];
    if (pat.kind != BlockKind::topk) continue;
    const int64_t keep = pat.size < candidates ? pat.size : candidates;
    for (int64_t J = threadIdx.x; J < end; J += kTopkThreads) {
      if (J == I) continue;
      int64_t rank = 0;
      for (int64_t J2 = 0; J2 < end && rank < keep; ++J2) {
        if (J2 != I && topk_before(scores[J2], J2, scores[J], J)) ++rank;
      }
      if (rank < keep) row[J] += 1;
    }
    if (threadIdx.x == 0) row[I] += 1;
  }
}

}  // namespace dilated::cuda
