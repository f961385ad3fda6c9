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

// Stores row `row` of sequence b in the output dtype, or adds it to an fp32 accumulator.
template <typename Elem>
__device__ __forceinline__ void store_or_accumulate(const Params& p, const Tensor& out,
                                                    const Tensor& acc, int64_t b, int64_t row,
                                                    int64_t head, int64_t dim,
                                                    const LaneRow<Elem>& x, float factor) {
  const int lane = threadIdx.x % 32;
  if (acc.data) {
    float* a = static_cast<float*>(acc.data) + row_offset(p, acc, b, row, head);
#pragma unroll
    for (int i = 0; i < kSimtPerLane; ++i) {
      if (lane + 32 * i < dim) a[lane + 32 * i] += factor * x.x[i];
    }
  } else {
    Elem* o = static_cast<Elem*>(out.data) + row_offset(p, out, b, row, head);
#pragma unroll
    for (int i = 0; i < kSimtPerLane; ++i) {
      if (lane + 32 * i < dim) o[lane + 32 * i] = from_float<Elem>(factor * x.x[i]);
    }
  }
}

// The selected query row this warp handles: (batch, head) from the grid, the row from the
// (segment, tile) block index and the warp. valid is false past the slice's last row; the
// row sees key slice rows [0, num_keys).
struct SimtQueryRow {
  bool valid;
  int64_t b, head, kv_head, row, token, idx, num_keys;
  HeadPattern hp;
  SegmentSlice keys;
};

__device__ __forceinline__ SimtQueryRow simt_query_row(const Params& p, const PassInfo& pass) {
  SimtQueryRow r;
  r.b = blockIdx.z;
  r.head = pass.head_begin + blockIdx.y;
  r.hp = pass_pattern(p, pass, r.head);
  const TileCoord tc = tile_coord(pass);
  const SegmentSlice queries = query_slice(p, r.hp, tc.segment, r.b);
  r.keys = key_slice(p, r.hp, tc.segment, r.b);
  r.idx = tc.tile * kSimtRowsPerBlock + threadIdx.x / 32;
  r.valid = r.idx < queries.count;
  r.row = r.valid ? grid_row(pass.order, queries.first_row + r.idx * r.hp.dilation) : 0;
  r.token = token_index(p, r.b, r.row);
  r.kv_head = kv_head_of(p, r.head);
  r.num_keys = visible_keys(p.causal, r.keys.count, r.idx, causal_shift(queries, r.keys));
  return r;
}

// Element offset of key slice row j of (b, kv_head) in key-side tensor t.
__device__ __forceinline__ int64_t key_offset(const Params& p, const PassInfo& pass,
                                              const Tensor& t, int64_t b, const SegmentSlice& keys,
                                              const HeadPattern& hp, int64_t j, int64_t kv_head) {
  return row_offset(p, t, b, grid_row(pass.order, keys.first_row + j * hp.dilation), kv_head);
}

// Forward: one selected query row per warp, online softmax over its segment's keys.
template <typename Elem>
__global__ void __launch_bounds__(32 * kSimtRowsPerBlock)
    simt_forward_kernel(const Params p, const PassInfo pass) {
  const SimtQueryRow row = simt_query_row(p, pass);
  // A row without keys here (Params::window) keeps out 0, lse -inf (or the running merge).
  if (!row.valid || row.num_keys == 0) return;
  const int64_t b = row.b, head = row.head, kv_head = row.kv_head, token = row.token;
  const HeadPattern hp = row.hp;
  const float scale = p.scale;  // resolved by the launcher

  LaneRow<Elem> q, k, v, acc{};
  q.load(p.q, token_offset(p, p.q, token, head), p.head_dim, scale);
  float running_max = -INFINITY, sum = 0;
  for (int64_t j = 0; j < row.num_keys; ++j) {
    k.load(p.k, key_offset(p, pass, p.k, b, row.keys, hp, j, kv_head), p.head_dim, 1.0f);
    v.load(p.v, key_offset(p, pass, p.v, b, row.keys, hp, j, kv_head), p.head_dim_v, 1.0f);
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
    store_or_accumulate<Elem>(p, p.out, Tensor{}, b, row.row, head, p.head_dim_v, acc,
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
  // Without keys the row's dq stays as zeroed (direct) or accumulated so far.
  if (!row.valid || row.num_keys == 0) return;
  const int64_t b = row.b, head = row.head, kv_head = row.kv_head, token = row.token;
  const HeadPattern hp = row.hp;
  const float scale = p.scale;  // resolved by the launcher

  LaneRow<Elem> q, dout, k, v, dq{};
  q.load(p.q, token_offset(p, p.q, token, head), p.head_dim, scale);
  dout.load(p.dout, token_offset(p, p.dout, token, head), p.head_dim_v, output_scale(p));
  const float lse = p.lse[token_lse_index(p, token, head)];
  const float delta = pass.delta[token_lse_index(p, token, head)];
  for (int64_t j = 0; j < row.num_keys; ++j) {
    k.load(p.k, key_offset(p, pass, p.k, b, row.keys, hp, j, kv_head), p.head_dim, 1.0f);
    v.load(p.v, key_offset(p, pass, p.v, b, row.keys, hp, j, kv_head), p.head_dim_v, 1.0f);
    const float prob = __expf(q.dot(k) - lse);
    const float ds = prob * (dout.dot(v) - delta);
    dq.scale_add(1.0f, ds, k);
  }
  store_or_accumulate<Elem>(p, p.dq, pass.dq_acc, b, row.row, head, p.head_dim, dq, scale);
}

// Backward dk, dv: one selected key row per warp for each query head of its kv head that runs
// in this pass; each head's sum is flushed before the next, so no two warps share a row.
template <typename Elem>
__global__ void __launch_bounds__(32 * kSimtRowsPerBlock)
    simt_backward_dkdv_kernel(const Params p, const PassInfo pass) {
  const int64_t b = blockIdx.z;
  const int64_t kv_head = blockIdx.y;
  const TileCoord tc = key_tile_coord(pass);
  const int64_t idx = tc.tile * kSimtRowsPerBlock + threadIdx.x / 32;
  const int64_t group = p.heads / p.heads_kv;
  const float scale = p.scale;  // resolved by the launcher
  const int64_t head_end = pass.head_begin + pass.head_count;
  for (int64_t head = kv_head * group; head < (kv_head + 1) * group; ++head) {
    if (head < pass.head_begin || head >= head_end) continue;
    const HeadPattern hp = pass_pattern(p, pass, head);
    const SegmentSlice keys = key_slice(p, hp, tc.segment, b);
    if (idx >= keys.count) continue;
    const SegmentSlice queries = query_slice(p, hp, tc.segment, b);
    // Query slice row j sees this key iff j >= idx - shift (causal).
    const int64_t first_query = p.causal ? max(idx - causal_shift(queries, keys), int64_t{0}) : 0;
    const int64_t key_row = grid_row(pass.order, keys.first_row + idx * hp.dilation);
    LaneRow<Elem> k, v, q, dout, dk{}, dv{};
    k.load(p.k, row_offset(p, p.k, b, key_row, kv_head), p.head_dim, scale);
    v.load(p.v, row_offset(p, p.v, b, key_row, kv_head), p.head_dim_v, 1.0f);
    for (int64_t j = first_query; j < queries.count; ++j) {
      const int64_t token =
          token_index(p, b, grid_row(pass.order, queries.first_row + j * hp.dilation));
      q.load(p.q, token_offset(p, p.q, token, head), p.head_dim, 1.0f);
      dout.load(p.dout, token_offset(p, p.dout, token, head), p.head_dim_v, output_scale(p));
      const float prob = __expf(q.dot(k) - p.lse[token_lse_index(p, token, head)]);
      const float ds = prob * (dout.dot(v) - pass.delta[token_lse_index(p, token, head)]);
      dv.scale_add(1.0f, prob, dout);
      dk.scale_add(1.0f, ds, q);
    }
    store_or_accumulate<Elem>(p, p.dk, pass.dk_acc, b, key_row, kv_head, p.head_dim, dk, scale);
    store_or_accumulate<Elem>(p, p.dv, pass.dv_acc, b, key_row, kv_head, p.head_dim_v, dv, 1.0f);
    __syncwarp();
  }
}

}  // namespace dilated::cuda
