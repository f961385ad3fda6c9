// Tensor-core forward (FlashAttention-2 structure): a CTA of 4 warps takes 64 selected query
// rows of one segment of one head; K and V tiles of 64 selected keys stream through shared
// memory, double-buffered with cp.async; each warp keeps 16 rows' running max, sum and output.
#pragma once

#include "cuda/kernels/mma_tiles.cuh"

namespace dilated::cuda {

inline constexpr int kMmaThreads = 128;
inline constexpr int kMmaRows = 64;  // query rows per CTA, keys per tile

template <typename Elem, int D>
struct ForwardSmem {
  using Tile = SmemTile<kMmaRows, D>;
  static constexpr int kBytes = 5 * Tile::kElements * static_cast<int>(sizeof(Elem));  // Q, 2K, 2V
};

template <typename Elem, int D>
__global__ void __launch_bounds__(kMmaThreads)
    mma_forward_kernel(const Params p, const PassInfo pass) {
  using Tile = SmemTile<kMmaRows, D>;
  constexpr int NT = kMmaRows / 8;  // n8 tiles of scores per warp row block
  constexpr int DT = D / 8;         // n8 tiles of output
  extern __shared__ __align__(128) unsigned char smem_raw[];
  Elem* q_tile = reinterpret_cast<Elem*>(smem_raw);
  Elem* k_tiles = q_tile + Tile::kElements;
  Elem* v_tiles = k_tiles + 2 * Tile::kElements;

  const int64_t b = blockIdx.z;
  const int64_t head = pass.head_begin + blockIdx.y;
  const HeadPattern hp = pass_pattern(p, pass, head);
  const TileCoord tc = tile_coord(pass);
  const SegmentRows rows = segment_rows(hp, tc.segment, seq_length(p, b));
  const int64_t q0 = tc.tile * kMmaRows;
  if (q0 >= rows.count) return;
  const int64_t kv_head = kv_head_of(p, head);
  const int64_t num_keys = p.causal ? min(rows.count, q0 + kMmaRows) : rows.count;
  const int num_key_tiles = static_cast<int>((num_keys + kMmaRows - 1) / kMmaRows);
  const float scale = isnan(p.scale) ? rsqrtf(static_cast<float>(p.head_dim)) : p.scale;
  const float scale_log2 = scale * kLog2e;

  const RowSpan q_span = make_span<Elem>(p, p.q, b, head, hp, rows, q0);
  RowSpan k_span = make_span<Elem>(p, p.k, b, kv_head, hp, rows, 0);
  RowSpan v_span = make_span<Elem>(p, p.v, b, kv_head, hp, rows, 0);
  load_tile_async<Elem, kMmaRows, D, kMmaThreads>(q_tile, q_span);
  load_tile_async<Elem, kMmaRows, D, kMmaThreads>(k_tiles, k_span);
  load_tile_async<Elem, kMmaRows, D, kMmaThreads>(v_tiles, v_span);
  cp_async_commit();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // This thread's two rows (in the CTA tile) and their selected-row indices.
  const int64_t row_idx[2] = {q0 + warp * 16 + lane / 4, q0 + warp * 16 + lane / 4 + 8};
  float o[DT][4] = {};
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};

  for (int kt = 0; kt < num_key_tiles; ++kt) {
    const int buf = kt % 2;
    if (kt + 1 < num_key_tiles) {
      k_span.idx0 = v_span.idx0 = static_cast<int64_t>(kt + 1) * kMmaRows;
      load_tile_async<Elem, kMmaRows, D, kMmaThreads>(k_tiles + (1 - buf) * Tile::kElements,
                                                      k_span);
      load_tile_async<Elem, kMmaRows, D, kMmaThreads>(v_tiles + (1 - buf) * Tile::kElements,
                                                      v_span);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    float s[NT][4] = {};
    warp_gemm_smem_nt<Elem, D, NT, Tile, Tile>(s, q_tile, warp * 16,
                                               k_tiles + buf * Tile::kElements, 0);
    const int64_t key0 = static_cast<int64_t>(kt) * kMmaRows;
    const bool needs_mask = key0 + kMmaRows > rows.count || (p.causal && key0 + kMmaRows > q0);
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[n][e] * scale_log2;
        if (needs_mask) {
          const int64_t key = key0 + n * 8 + 2 * (lane % 4) + (e % 2);
          if (key >= rows.count || (p.causal && key > row_idx[e / 2])) x = -INFINITY;
        }
        s[n][e] = x;
      }
    }
    // Online softmax for the thread's two rows; a row is spread over a quad of lanes.
    float correction[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float m = row_max[r];
#pragma unroll
      for (int n = 0; n < NT; ++n) m = fmaxf(m, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
      const float ref = m == -INFINITY ? 0.0f : m;  // a fully masked row so far
      correction[r] = fast_exp2(row_max[r] - ref);
      row_max[r] = m;
      float sum = 0;
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        s[n][2 * r] = fast_exp2(s[n][2 * r] - ref);
        s[n][2 * r + 1] = fast_exp2(s[n][2 * r + 1] - ref);
        sum += s[n][2 * r] + s[n][2 * r + 1];
      }
      row_sum[r] = row_sum[r] * correction[r] + sum;
    }
#pragma unroll
    for (int d = 0; d < DT; ++d) {
      o[d][0] *= correction[0];
      o[d][1] *= correction[0];
      o[d][2] *= correction[1];
      o[d][3] *= correction[1];
    }
    uint32_t pa[NT / 2][4];
    accumulators_to_a<Elem, NT / 2>(pa, s);
    warp_gemm_regs_kn<Elem, NT / 2, DT, Tile>(o, pa, v_tiles + buf * Tile::kElements, 0, 0);
    __syncthreads();  // the next iteration's prefetch overwrites this buffer
  }

  // Epilogue: rows -> out (or the running fp32 merge) and lse.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float sum = row_sum[r];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const float lse = (row_max[r] + __log2f(sum)) * kLn2;
    const bool valid = row_idx[r] < rows.count;
    const int64_t token = token_index(p, b, rows.first + row_idx[r] * hp.dilation);
    const int64_t lse_at = valid ? token_lse_index(p, token, head) : 0;
    const float inv = 1.0f / sum;
    if (!pass.out_acc.data) {
      if (valid) {
        Elem* out = static_cast<Elem*>(p.out.data) + token_offset(p, p.out, token, head);
        const float f = inv * output_scale(p);
#pragma unroll
        for (int d = 0; d < DT; ++d) {
          *reinterpret_cast<uint32_t*>(out + d * 8 + 2 * (lane % 4)) =
              pack2<Elem>(o[d][2 * r] * f, o[d][2 * r + 1] * f);
        }
        if (pass.lse && lane % 4 == 0) pass.lse[lse_at] = lse;
      }
      continue;
    }
    const MergeWeights mw = merge_weights(valid ? pass.lse[lse_at] : 0.0f, lse);
    __syncwarp();
    if (valid) {
      float* acc =
          static_cast<float*>(pass.out_acc.data) + token_offset(p, pass.out_acc, token, head);
      const float f = mw.new_weight * inv;
#pragma unroll
      for (int d = 0; d < DT; ++d) {
        float2* a = reinterpret_cast<float2*>(acc + d * 8 + 2 * (lane % 4));
        const float2 old = *a;
        *a = make_float2(mw.old_weight * old.x + f * o[d][2 * r],
                         mw.old_weight * old.y + f * o[d][2 * r + 1]);
      }
      if (lane % 4 == 0) pass.lse[lse_at] = mw.lse;
    }
  }
}

}  // namespace dilated::cuda
