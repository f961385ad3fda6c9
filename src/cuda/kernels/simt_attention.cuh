// Plain-arithmetic kernels for every dtype, head dim (up to 256) and stride: the fp32 path and
// the fallback for what the tensor-core kernels do not cover. One warp per selected row; lanes
// split the head dimension.
#pragma once

#include "cuda/kernels/attention_common.cuh"

namespace dilated::cuda {

inline constexpr int kSimtRowsPerBlock = 4;  // one warp per row
inline constexpr int kSimtMaxDim = 256;
inline constexpr int kSimtPerLane = kSimtMaxDim / 32;

template <typename Elem>
struct LaneRow {
  float x[kSimtPerLane];

  __device__ __forceinline__ void load(const Tensor& t, int64_t offset, int64_t dim, float factor) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < kSimtPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      x[i] = d < dim ? factor * load_as_float<Elem>(t, offset + d) : 0.0f;
    }
  }
  __device__ __forceinline__ float dot(const LaneRow& o) const {
    float s = 0;
#pragma unroll
    for (int i = 0; i < kSimtPerLane; ++i) s += x[i] * o.x[i];
    return warp_sum(s);
  }
  __device__ __forceinline__ void scale_add(float a, float b, const LaneRow& o) {
#pragma unroll
    for (int i = 0; i < kSimtPerLane; ++i) x[i] = a * x[i] + b * o.x[i];
  }
};

// Stores a row in the output dtype, or adds it to an fp32 accumulator.
template <typename Elem>
__device__ __forceinline__ void store_or_accumulate(const Params& p, const Tensor& out,
                                                    const Tensor& acc, int64_t token, int64_t head,
                                                    int64_t dim, const LaneRow<Elem>& row,
                                                    float factor) {
  const int lane = threadIdx.x % 32;
  if (acc.data) {
    float* a = static_cast<float*>(acc.data) + token_offset(p, acc, token, head);
#pragma unroll
    for (int i = 0; i < kSimtPerLane; ++i) {
      if (lane + 32 * i < dim) a[lane + 32 * i] += factor * row.x[i];
    }
  } else {
    Elem* o = static_cast<Elem*>(out.data) + token_offset(p, out, token, head);
#pragma unroll
    for (int i = 0; i < kSimtPerLane; ++i) {
      if (lane + 32 * i < dim) o[lane + 32 * i] = from_float<Elem>(factor * row.x[i]);
    }
  }
}

// The selected query row this warp handles: (batch, head) from the grid, the row from the
// (segment, tile) block index and the warp. valid is false past the segment's last row.
struct SimtQueryRow {
  bool valid;
  int64_t b, head, kv_head, token, idx;
  HeadPattern hp;
  SegmentRows rows;
};

__device__ __forceinline__ SimtQueryRow simt_query_row(const Params& p, const PassInfo& pass) {
  SimtQueryRow r;
  r.b = blockIdx.z;
  r.head = pass.head_begin + blockIdx.y;
  r.hp = pass_pattern(p, pass, r.head);
  const TileCoord tc = tile_coord(pass);
  r.rows = segment_rows(r.hp, tc.segment, seq_length(p, r.b));
  r.idx = tc.tile * kSimtRowsPerBlock + threadIdx.x / 32;
  r.valid = r.idx < r.rows.count;
  r.token = token_index(p, r.b, r.rows.first + r.idx * r.hp.dilation);
  r.kv_head = kv_head_of(p, r.head);
  return r;
}

// Forward: one selected query row per warp, online softmax over its segment's keys.
template <typename Elem>
__global__ void __launch_bounds__(32 * kSimtRowsPerBlock)
    simt_forward_kernel(const Params p, const PassInfo pass) {
  const SimtQueryRow row = simt_query_row(p, pass);
  if (!row.valid) return;
  const int64_t b = row.b, head = row.head, kv_head = row.kv_head, token = row.token, idx = row.idx;
  const HeadPattern hp = row.hp;
  const SegmentRows rows = row.rows;
  const float scale = p.scale;  // resolved by the launcher

  LaneRow<Elem> q, k, v, acc{};
  q.load(p.q, token_offset(p, p.q, token, head), p.head_dim, scale);
  float running_max = -INFINITY, sum = 0;
  const int64_t num_keys = p.causal ? idx + 1 : rows.count;
  for (int64_t j = 0; j < num_keys; ++j) {
    const int64_t key = token_index(p, b, rows.first + j * hp.dilation);
    k.load(p.k, token_offset(p, p.k, key, kv_head), p.head_dim, 1.0f);
    v.load(p.v, token_offset(p, p.v, key, kv_head), p.head_dim_v, 1.0f);
    const float s = q.dot(k);
    const float new_max = fmaxf(running_max, s);
    const float correction = exp_diff(running_max, new_max);
    const float weight = __expf(s - new_max);
    sum = sum * correction + weight;
    acc.scale_add(correction, weight, v);
    running_max = new_max;
  }
  const float lse = running_max + __logf(sum);
  const int64_t lse_at = token_lse_index(p, token, head);
  if (!pass.out_acc.data) {
    store_or_accumulate<Elem>(p, p.out, Tensor{}, token, head, p.head_dim_v, acc,
                              output_scale(p) / sum);
    if (pass.lse && threadIdx.x % 32 == 0) pass.lse[lse_at] = lse;
    return;
  }
  const MergeWeights mw = merge_weights(pass.lse[lse_at], lse);
  float* a = static_cast<float*>(pass.out_acc.data) + token_offset(p, pass.out_acc, token, head);
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < kSimtPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < p.head_dim_v) a[d] = mw.old_weight * a[d] + mw.new_weight * acc.x[i] / sum;
  }
  __syncwarp();
  if (lane == 0) pass.lse[lse_at] = mw.lse;
}

// Backward dq: one selected query row per warp (FlashAttention-2's P, dP, dS with the final
// union lse, so that each pass's contribution simply adds).
template <typename Elem>
__global__ void __launch_bounds__(32 * kSimtRowsPerBlock)
    simt_backward_dq_kernel(const Params p, const PassInfo pass) {
  const SimtQueryRow row = simt_query_row(p, pass);
  if (!row.valid) return;
  const int64_t b = row.b, head = row.head, kv_head = row.kv_head, token = row.token, idx = row.idx;
  const HeadPattern hp = row.hp;
  const SegmentRows rows = row.rows;
  const float scale = p.scale;  // resolved by the launcher

  LaneRow<Elem> q, dout, k, v, dq{};
  q.load(p.q, token_offset(p, p.q, token, head), p.head_dim, scale);
  dout.load(p.dout, token_offset(p, p.dout, token, head), p.head_dim_v, output_scale(p));
  const float lse = p.lse[token_lse_index(p, token, head)];
  const float delta = pass.delta[token_lse_index(p, token, head)];
  const int64_t num_keys = p.causal ? idx + 1 : rows.count;
  for (int64_t j = 0; j < num_keys; ++j) {
    const int64_t key = token_index(p, b, rows.first + j * hp.dilation);
    k.load(p.k, token_offset(p, p.k, key, kv_head), p.head_dim, 1.0f);
    v.load(p.v, token_offset(p, p.v, key, kv_head), p.head_dim_v, 1.0f);
    const float prob = __expf(q.dot(k) - lse);
    const float ds = prob * (dout.dot(v) - delta);
    dq.scale_add(1.0f, ds, k);
  }
  store_or_accumulate<Elem>(p, p.dq, pass.dq_acc, token, head, p.head_dim, dq, scale);
}

// Backward dk, dv: one selected key row per warp for each query head of its kv head that runs
// in this pass; each head's sum is flushed before the next, so no two warps share a row.
template <typename Elem>
__global__ void __launch_bounds__(32 * kSimtRowsPerBlock)
    simt_backward_dkdv_kernel(const Params p, const PassInfo pass) {
  const int64_t b = blockIdx.z;
  const int64_t kv_head = blockIdx.y;
  const TileCoord tc = tile_coord(pass);
  const int64_t idx = tc.tile * kSimtRowsPerBlock + threadIdx.x / 32;
  const int64_t n = seq_length(p, b);
  const int64_t group = p.heads / p.heads_kv;
  const float scale = p.scale;  // resolved by the launcher
  const int64_t head_end = pass.head_begin + pass.head_count;
  for (int64_t head = kv_head * group; head < (kv_head + 1) * group; ++head) {
    if (head < pass.head_begin || head >= head_end) continue;
    const HeadPattern hp = pass_pattern(p, pass, head);
    const SegmentRows rows = segment_rows(hp, tc.segment, n);
    if (idx >= rows.count) continue;
    const int64_t key = token_index(p, b, rows.first + idx * hp.dilation);
    LaneRow<Elem> k, v, q, dout, dk{}, dv{};
    k.load(p.k, token_offset(p, p.k, key, kv_head), p.head_dim, scale);
    v.load(p.v, token_offset(p, p.v, key, kv_head), p.head_dim_v, 1.0f);
    for (int64_t j = p.causal ? idx : 0; j < rows.count; ++j) {
      const int64_t token = token_index(p, b, rows.first + j * hp.dilation);
      q.load(p.q, token_offset(p, p.q, token, head), p.head_dim, 1.0f);
      dout.load(p.dout, token_offset(p, p.dout, token, head), p.head_dim_v, output_scale(p));
      const float prob = __expf(q.dot(k) - p.lse[token_lse_index(p, token, head)]);
      const float ds = prob * (dout.dot(v) - pass.delta[token_lse_index(p, token, head)]);
      dv.scale_add(1.0f, prob, dout);
      dk.scale_add(1.0f, ds, q);
    }
    store_or_accumulate<Elem>(p, p.dk, pass.dk_acc, key, kv_head, p.head_dim, dk, scale);
    store_or_accumulate<Elem>(p, p.dv, pass.dv_acc, key, kv_head, p.head_dim_v, dv, 1.0f);
    __syncwarp();
  }
}

}  // namespace dilated::cuda
