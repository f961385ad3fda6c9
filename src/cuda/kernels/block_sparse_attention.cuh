// The block pass's attention (every dtype, head dims up to 256): one warp per query row (forward,
// dq) or key row (dk/dv), lanes splitting the head dimension as in simt_attention.cuh. A row
// scans its multiplicity-matrix row (or column) 32 blocks per ballot and visits each kept block's
// keys (queries) with the weight c * exp(s - m), c the multiplicity (docs/design.md 1.1: a key
// kept by two patterns counts twice). Results merge into the same fp32 (out_acc, lse) as the
// dilated passes; gradients add, each row owned by one warp: no atomics.
#pragma once

#include "cuda/kernels/block_lists.cuh"
#include "cuda/kernels/simt_attention.cuh"

namespace dilated::cuda {

inline constexpr int kBlockRowsPerCta = 4;  // one warp per row

// Calls visit(J, multiplicity) for every kept block of entries[0], entries[stride], ... up to
// entries[(count - 1) * stride], in order; warp-uniform.
template <class Visit>
__device__ __forceinline__ void for_each_kept_block(const uint8_t* entries, int64_t stride,
                                                    int64_t first, int64_t count, Visit&& visit) {
  const int lane = threadIdx.x % 32;
  for (int64_t J0 = first; J0 < count; J0 += 32) {
    const int64_t J = J0 + lane;
    const unsigned m = J < count ? entries[J * stride] : 0u;
    unsigned live = __ballot_sync(0xffffffffu, m != 0);
    while (live) {
      const int bit = __ffs(static_cast<int>(live)) - 1;
      live &= live - 1;
      visit(J0 + bit, static_cast<float>(__shfl_sync(0xffffffffu, m, bit)));
    }
  }
}

template <typename Elem>
__global__ void __launch_bounds__(32 * kBlockRowsPerCta)
    block_forward_kernel(const Params p, const BlockPass bp) {
  const int64_t b = blockIdx.z, head = blockIdx.y;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kBlockRowsPerCta + threadIdx.x / 32;
  const int64_t n = seq_length(p, b);
  if (t >= n) return;
  const int lane = threadIdx.x % 32;
  const int64_t kv_head = kv_head_of(p, head);
  const int64_t query_row = grid_row(bp.order, t);
  const int64_t token = token_index(p, b, query_row);
  const int64_t I = t / bp.block;
  const int64_t nb = block_count(n, bp.block);
  const uint8_t* row = bp.mult + mult_row_index(bp, b, class_of_head(bp, head), I);

  LaneRow<Elem> q, k, v, acc{};
  q.load(p.q, token_offset(p, p.q, token, head), p.head_dim, p.scale);
  float running_max = -INFINITY, sum = 0;
  int64_t keys = 0;
  for_each_kept_block(row, 1, 0, p.causal ? I + 1 : nb, [&](int64_t J, float multiplicity) {
    const int64_t begin = J * bp.block;
    int64_t end = begin + bp.block < n ? begin + bp.block : n;
    if (p.causal && end > t + 1) end = t + 1;
    for (int64_t key = begin; key < end; ++key) {
      const int64_t key_token = token_index(p, b, grid_row(bp.order, key));
      k.load(p.k, token_offset(p, p.k, key_token, kv_head), p.head_dim, 1.0f);
      v.load(p.v, token_offset(p, p.v, key_token, kv_head), p.head_dim_v, 1.0f);
      const float s = q.dot(k);
      const float new_max = fmaxf(running_max, s);
      const float correction = exp_diff(running_max, new_max);
      const float weight = multiplicity * __expf(s - new_max);
      sum = sum * correction + weight;
      acc.scale_add(correction, weight, v);
      running_max = new_max;
      ++keys;
    }
  });
  const int64_t lse_at = token_lse_index(p, token, head);
  if (!bp.out_acc.data) {
    // The only pass: rows without kept keys keep the initial out = 0, lse = -inf.
    if (keys == 0) return;
    store_or_accumulate<Elem>(p, p.out, Tensor{}, b, query_row, head, p.head_dim_v, acc,
                              output_scale(p) / sum);
    if (bp.lse && lane == 0) bp.lse[lse_at] = running_max + __logf(sum);
    return;
  }
  if (keys == 0) return;  // nothing to merge
  const MergeWeights mw = merge_weights(bp.lse[lse_at], running_max + __logf(sum));
  float* a = static_cast<float*>(bp.out_acc.data) + token_offset(p, bp.out_acc, token, head);
#pragma unroll
  for (int i = 0; i < kSimtPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < p.head_dim_v) a[d] = mw.old_weight * a[d] + mw.new_weight * acc.x[i] / sum;
  }
  __syncwarp();
  if (lane == 0) bp.lse[lse_at] = mw.lse;
}

// dq of one query row over its kept blocks, with the final union lse (additive per pass).
template <typename Elem>
__global__ void __launch_bounds__(32 * kBlockRowsPerCta)
    block_backward_dq_kernel(const Params p, const BlockPass bp) {
  const int64_t b = blockIdx.z, head = blockIdx.y;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kBlockRowsPerCta + threadIdx.x / 32;
  const int64_t n = seq_length(p, b);
  if (t >= n) return;
  const int64_t kv_head = kv_head_of(p, head);
  const int64_t query_row = grid_row(bp.order, t);
  const int64_t token = token_index(p, b, query_row);
  const int64_t I = t / bp.block;
  const int64_t nb = block_count(n, bp.block);
  const uint8_t* row = bp.mult + mult_row_index(bp, b, class_of_head(bp, head), I);
  const float scale = p.scale;

  LaneRow<Elem> q, dout, k, v, dq{};
  q.load(p.q, token_offset(p, p.q, token, head), p.head_dim, scale);
  dout.load(p.dout, token_offset(p, p.dout, token, head), p.head_dim_v, output_scale(p));
  const int64_t lse_at = token_lse_index(p, token, head);
  const float lse = p.lse[lse_at];
  const float delta = bp.delta[lse_at];
  for_each_kept_block(row, 1, 0, p.causal ? I + 1 : nb, [&](int64_t J, float multiplicity) {
    const int64_t begin = J * bp.block;
    int64_t end = begin + bp.block < n ? begin + bp.block : n;
    if (p.causal && end > t + 1) end = t + 1;
    for (int64_t key = begin; key < end; ++key) {
      const int64_t key_token = token_index(p, b, grid_row(bp.order, key));
      k.load(p.k, token_offset(p, p.k, key_token, kv_head), p.head_dim, 1.0f);
      v.load(p.v, token_offset(p, p.v, key_token, kv_head), p.head_dim_v, 1.0f);
      const float prob = multiplicity * __expf(q.dot(k) - lse);
      const float ds = prob * (dout.dot(v) - delta);
      dq.scale_add(1.0f, ds, k);
    }
  });
  store_or_accumulate<Elem>(p, p.dq, bp.dq_acc, b, query_row, head, p.head_dim, dq, scale);
}

// dk, dv of one key row: for every query head of its kv head, the column of its key block
// (query blocks keeping it), summed in registers and stored once.
template <typename Elem>
__global__ void __launch_bounds__(32 * kBlockRowsPerCta)
    block_backward_dkdv_kernel(const Params p, const BlockPass bp) {
  const int64_t b = blockIdx.z, kv_head = blockIdx.y;
  const int64_t t_key = static_cast<int64_t>(blockIdx.x) * kBlockRowsPerCta + threadIdx.x / 32;
  const int64_t n = seq_length(p, b);
  if (t_key >= n) return;
  const int64_t key_row = grid_row(bp.order, t_key);
  const int64_t key_token = token_index(p, b, key_row);
  const int64_t J = t_key / bp.block;
  const int64_t nb = block_count(n, bp.block);
  const int64_t group = p.heads / p.heads_kv;
  const float scale = p.scale;

  LaneRow<Elem> k, v, q, dout, dk{}, dv{};
  k.load(p.k, token_offset(p, p.k, key_token, kv_head), p.head_dim, scale);
  v.load(p.v, token_offset(p, p.v, key_token, kv_head), p.head_dim_v, 1.0f);
  for (int64_t head = kv_head * group; head < (kv_head + 1) * group; ++head) {
    const uint8_t* column = bp.mult + mult_row_index(bp, b, class_of_head(bp, head), 0) + J;
    for_each_kept_block(column, bp.nb, p.causal ? J : 0, nb, [&](int64_t I, float multiplicity) {
      int64_t begin = I * bp.block;
      const int64_t end = begin + bp.block < n ? begin + bp.block : n;
      if (p.causal && begin < t_key) begin = t_key;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t token = token_index(p, b, grid_row(bp.order, t));
        q.load(p.q, token_offset(p, p.q, token, head), p.head_dim, 1.0f);
        dout.load(p.dout, token_offset(p, p.dout, token, head), p.head_dim_v, output_scale(p));
        const int64_t lse_at = token_lse_index(p, token, head);
        const float prob = multiplicity * __expf(q.dot(k) - p.lse[lse_at]);
        const float ds = prob * (dout.dot(v) - bp.delta[lse_at]);
        dv.scale_add(1.0f, prob, dout);
        dk.scale_add(1.0f, ds, q);
      }
    });
  }
  store_or_accumulate<Elem>(p, p.dk, bp.dk_acc, b, key_row, kv_head, p.head_dim, dk, scale);
  store_or_accumulate<Elem>(p, p.dv, bp.dv_acc, b, key_row, kv_head, p.head_dim_v, dv, 1.0f);
}

}  // namespace dilated::cuda
