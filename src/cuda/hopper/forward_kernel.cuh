// Hopper forward (sm_90a): the portable forward's algorithm with warpgroup matrix products.
// A CTA of two warpgroups takes the same 128 selected query rows of one segment of one head as
// the portable kernel (so the launch plan is shared), 64 rows per warpgroup. K and V tiles of
// 128 selected keys stream through shared memory in the layout wgmma reads, double-buffered
// with cp.async (any row stride: the dilation costs nothing, and token grids keep their row
// mapping). Per tile: S = Q K^T with both operands in shared memory, the online softmax on the
// accumulators in registers, then O += P V with P taken from registers.
#pragma once

#include "cuda/hopper/wgmma.cuh"
#include "cuda/kernels/forward_rows.cuh"
#include "cuda/kernels/mma_tiles.cuh"

namespace dilated::cuda::hopper {

inline constexpr int kThreads = 256;  // two warpgroups
inline constexpr int kRows = 128;     // query rows per CTA (64 per warpgroup)
inline constexpr int kKeys = 128;     // keys per tile

template <int D>
struct ForwardSmem {
  using QueryTile = GmmaTile<kRows, D>;
  using KeyTile = GmmaTile<kKeys, D>;
  // Q, two K and two V buffers, and room to round the base up to 1024 bytes.
  static constexpr int kBytes = (QueryTile::kElements + 4 * KeyTile::kElements) * 2 + 1024;
};

template <typename Elem, int D>
__global__ void __launch_bounds__(kThreads, 1) forward_kernel(const Params p, const PassInfo pass) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using QueryTile = GmmaTile<kRows, D>;
  using KeyTile = GmmaTile<kKeys, D>;
  using QueryRows = TileRows<kRows, D, kThreads, QueryTile>;
  using KeyRows = TileRows<kKeys, D, kThreads, KeyTile>;
  constexpr int NT = kKeys / 8;  // n8 column tiles of scores
  constexpr int DT = D / 8;      // n8 column tiles of output
  extern __shared__ unsigned char smem_raw[];
  Elem* q_tile = reinterpret_cast<Elem*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) &
                                         ~static_cast<uintptr_t>(1023));
  Elem* k_tiles = q_tile + QueryTile::kElements;
  Elem* v_tiles = k_tiles + 2 * KeyTile::kElements;

  const int64_t b = blockIdx.z;
  const int64_t head = pass.head_begin + blockIdx.y;
  const HeadPattern hp = pass_pattern(p, pass, head);
  const TileCoord tc = tile_coord(pass);
  const SliceRows tr = slice_rows(p, hp, tc.segment, b);
  const SegmentRows rows = tr.queries, key_rows = tr.keys;
  const int q0 = static_cast<int>(tc.tile) * kRows;
  if (q0 >= rows.count) return;
  const int key_count = static_cast<int>(key_rows.count);
  const int shift = static_cast<int>(tr.shift);
  const int64_t kv_head = kv_head_of(p, head);
  // Keys the tile's last row sees; none (Params::window): the rows keep out 0, lse -inf.
  const int num_keys = static_cast<int>(visible_keys(p.causal, key_count, q0 + kRows - 1, shift));
  if (num_keys == 0) return;
  const int num_key_tiles = (num_keys + kKeys - 1) / kKeys;
  const float scale_log2 = p.scale * kLog2e;

  RowSpan k_span = make_span<Elem>(p, p.k, b, kv_head, hp, key_rows, 0, pass.order);
  RowSpan v_span = make_span<Elem>(p, p.v, b, kv_head, hp, key_rows, 0, pass.order);
  {
    QueryRows query_rows;
    const RowSpan q_span = make_span<Elem>(p, p.q, b, head, hp, rows, q0, pass.order);
    query_rows.locate(q_span);
    load_tile_rows_async<Elem>(q_tile, q_span, query_rows);
  }
  KeyRows key_rows_next;  // K and V tiles cover the same positions
  key_rows_next.locate(k_span);
  load_tile_rows_async<Elem>(k_tiles, k_span, key_rows_next);
  load_tile_rows_async<Elem>(v_tiles, v_span, key_rows_next);
  cp_async_commit();
  k_span.idx0 = v_span.idx0 = kKeys;
  key_rows_next.locate(k_span);  // tile 1, one iteration ahead

  const int warpgroup = threadIdx.x / 128;
  const int warp_row0 = warpgroup * 64 + (threadIdx.x % 128) / 32 * 16;
  const int lane = threadIdx.x % 32;
  int row_idx[1][2];  // selected-row index of the thread's two rows
  row_idx[0][0] = q0 + warp_row0 + lane / 4;
  row_idx[0][1] = row_idx[0][0] + 8;
  float o[1][DT][4] = {};
  float row_max[1][2] = {{-INFINITY, -INFINITY}};
  float row_sum[1][2] = {{0.0f, 0.0f}};
  const uint32_t q_address = smem_address(q_tile);
  const uint32_t k_address = smem_address(k_tiles);
  const uint32_t v_address = smem_address(v_tiles);
  constexpr uint32_t kKeyTileBytes = KeyTile::kElements * 2;

  for (int kt = 0; kt < num_key_tiles; ++kt) {
    const int buf = kt % 2;
    if (kt + 1 < num_key_tiles) {
      load_tile_rows_async<Elem>(k_tiles + (1 - buf) * KeyTile::kElements, k_span, key_rows_next);
      load_tile_rows_async<Elem>(v_tiles + (1 - buf) * KeyTile::kElements, v_span, key_rows_next);
      cp_async_commit();
      k_span.idx0 = v_span.idx0 = (kt + 2) * kKeys;
      key_rows_next.locate(k_span);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    fence_proxy_async();  // the copies are read by wgmma next
    __syncthreads();

    float s[1][NT][4];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      wgmma_ss<Elem, kKeys>(s[0], k_major_desc<kRows>(q_address, warpgroup * 64, kk),
                            k_major_desc<kKeys>(k_address + buf * kKeyTileBytes, 0, kk), kk > 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    pin_accumulators(s[0]);

    const int key0 = kt * kKeys;
    const bool needs_mask =
        key0 + kKeys > key_count || (p.causal && key0 + kKeys > q0 + warp_row0 + shift);
    scale_and_mask_scores(s, scale_log2, needs_mask, key0, key_count, p.causal, row_idx, shift);
    online_softmax_tile<1, NT, DT>(s, row_max, row_sum, o);
    uint32_t pa[1][1][NT / 2][4];
    accumulators_to_a<Elem, 1, 1, NT / 2>(pa, s);

    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      wgmma_rs<Elem, D>(o[0], pa[0][0][kk],
                        n_major_desc<kKeys>(v_address + buf * kKeyTileBytes, kk));
    }
    wgmma_commit();
    wgmma_wait<0>();
    pin_accumulators(o[0]);
    __syncthreads();  // the next iteration's prefetch overwrites this buffer
  }

  store_forward_rows<Elem>(p, pass, hp, rows, key_count, shift, b, head, row_idx, o, row_max,
                           row_sum);
#endif
}

}  // namespace dilated::cuda::hopper
