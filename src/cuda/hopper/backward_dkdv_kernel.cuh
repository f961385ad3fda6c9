// Hopper dk/dv (sm_90a): the portable key-outer kernel's algebra (kernels/mma_backward.cuh) on
// warpgroup products. CTA: 128 selected keys of one segment of one kv head, 64 per consumer
// warpgroup, K and V held in shared memory; the producer warpgroup streams tiles of 64 query
// rows (Q, dO and their lse and delta) of each query head of the kv head through the stage
// ring. Keys are the M dimension of every product: S^T = K Q^T and dP^T = V dO^T (operands in
// shared memory), P^T and dS^T = P^T (dP^T - delta) on the accumulators, then dv += P^T dO and
// dk += dS^T Q with the A operand from registers (two 16-bit parts, as in mma_backward.cuh)
// and dO, Q read N-major. Each dk/dv row is owned by one CTA per pass: no atomics.
#pragma once

#include "cuda/hopper/backward_products.cuh"
#include "cuda/hopper/forward_kernel.cuh"
#include "cuda/hopper/stage_ring.cuh"
#include "cuda/hopper/warp_roles.cuh"
#include "cuda/hopper/wgmma.cuh"
#include "cuda/kernels/mma_backward.cuh"

namespace dilated::cuda::hopper {

inline constexpr int kDkdvQueries = 64;  // query rows per streamed tile
inline constexpr int kDkdvStages = 3;

template <int D>
struct DkdvSmem {
  using KeyTile = GmmaTile<kKeys, D>;
  using QueryTile = GmmaTile<kDkdvQueries, D>;
  static constexpr int kStatBytes = 2 * kDkdvQueries * 4;  // lse, delta of a tile's rows
  static constexpr int kBytes =
      (2 * KeyTile::kElements + 2 * kDkdvStages * QueryTile::kElements) * 2 +
      kDkdvStages * kStatBytes + StageRing<kDkdvStages>::kBytes + 1024;
};

// What a key CTA does for query head `head`: the query tiles (from first_q) that see its keys.
struct KeyTileWork {
  HeadPattern hp;
  SegmentRows rows, key_rows;
  int shift;
  int first_q;
  int num_query_tiles;  // 0: nothing (keys past the slice, or no query sees them)
};
__device__ __forceinline__ KeyTileWork key_tile_work(const Params& p, const PassInfo& pass,
                                                     int64_t head, int64_t segment, int64_t b,
                                                     int64_t k0) {
  KeyTileWork w;
  w.hp = pass_pattern(p, pass, head);
  const SliceRows tr = slice_rows(p, w.hp, segment, b);
  w.rows = tr.queries;
  w.key_rows = tr.keys;
  w.shift = static_cast<int>(tr.shift);
  // Causal: query slice row i sees key row j iff i >= j - shift.
  const int64_t first_q =
      p.causal ? max(k0 - tr.shift, int64_t{0}) / kDkdvQueries * kDkdvQueries : 0;
  w.first_q = static_cast<int>(first_q);
  w.num_query_tiles =
      k0 >= w.key_rows.count || first_q >= w.rows.count
          ? 0
          : static_cast<int>((w.rows.count - first_q + kDkdvQueries - 1) / kDkdvQueries);
  return w;
}

// Squares: `maps` are a token grid's squares (TensorMaps::square_width). Whole query tiles of one
// square come through the copy engine with their rows in the square's order; their lse and delta
// follow the same order, computed from the square's corner (no order[] read). The consumers see
// no row order: such tiles are whole and the pass is not causal (tensor_maps.cu). A kernel of its
// own, as in forward_kernel.
template <typename Elem, int D, bool Squares>
__global__ void __launch_bounds__(kThreads, 1)
    backward_dkdv_kernel(const Params p, const PassInfo pass,
                         const __grid_constant__ TensorMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using KeyTile = GmmaTile<kKeys, D>;
  using QueryTile = GmmaTile<kDkdvQueries, D>;
  using Smem = DkdvSmem<D>;
  constexpr int QT = kDkdvQueries / 8;  // n8 column tiles of queries
  constexpr int DT = D / 8;
  constexpr uint32_t kQueryTileBytes = QueryTile::kElements * 2;
  extern __shared__ unsigned char smem_raw[];
  Elem* k_tile = first_tile<Elem>(smem_raw);
  Elem* v_tile = k_tile + KeyTile::kElements;
  Elem* q_tiles = v_tile + KeyTile::kElements;
  Elem* do_tiles = q_tiles + kDkdvStages * QueryTile::kElements;
  // Per stage: lse (natural log) then delta of the tile's rows.
  float* stats = reinterpret_cast<float*>(do_tiles + kDkdvStages * QueryTile::kElements);
  const StageRing<kDkdvStages> ring{smem_address(stats + kDkdvStages * 2 * kDkdvQueries)};

  const int64_t b = blockIdx.z;
  const int64_t kv_head = blockIdx.y;
  const TileCoord tc = key_tile_coord(pass);
  const int64_t k0 = tc.tile * kKeys;
  const int64_t group = p.heads / p.heads_kv;
  const int64_t head_first = max(kv_head * group, pass.head_begin);
  const int64_t head_last = min((kv_head + 1) * group, pass.head_begin + pass.head_count);

  let_next_launch_start();
  // Every consumer thread reads a stage's row statistics with ordinary loads and releases the
  // stage itself: compute-sanitizer's racecheck follows a read to the producer's next copy into
  // the stage only through the reading thread's own arrival (stage_ring.cuh).
  if (threadIdx.x == 0) ring.init(kConsumerThreads);
  __syncthreads();

  if (is_producer()) {
    become_producer();
    const int thread = threadIdx.x % 128;
    int t = 0;  // the stream's item: (head, query tile) in the consumers' order
    for (int64_t head = head_first; head < head_last; ++head) {
      const KeyTileWork w = key_tile_work(p, pass, head, tc.segment, b, k0);
      RowSpan q_span = make_span<Elem>(p, p.q, b, head, w.hp, w.rows, 0, pass.order);
      RowSpan do_span = make_span<Elem>(p, p.dout, b, head, w.hp, w.rows, 0, pass.order);
      ProducerRows<kDkdvQueries> rows;  // located one tile ahead
      rows.locate(maps, q_span, w.first_q);
      for (int qt = 0; qt < w.num_query_tiles; ++qt, ++t) {
        ring.wait_empty(t);
        const int stage = t % kDkdvStages;
        q_span.idx0 = do_span.idx0 = w.first_q + qt * kDkdvQueries;
        const bool square = Squares && copy_engine_squares<kDkdvQueries>(maps, q_span, q_span.idx0);
        if (thread < kDkdvQueries) {  // lse and delta of tile row `thread` (zeros past the slice)
          const int idx = q_span.idx0 + thread;
          const bool valid = idx < q_span.count;
          // A row past the slice is not located: with a grid its order[] entry may lie past the
          // curve's allocation (compute-sanitizer memcheck; bench/NOTES.md, fourteenth session).
          int64_t at = 0;
          if (valid) {
            int64_t row;
            if (square) {  // row `thread` of the tile's one square
              const int cell = square_cell_at(maps.square_cells, q_span.first + q_span.idx0);
              row = square_row(square_corner(cell, maps.square_width), thread, maps.square_width);
            } else {
              row = grid_row(pass.order, w.rows.first + idx * w.hp.dilation);
            }
            at = lse_index(p, b, head, row);
          }
          float* stage_stats = stats + stage * 2 * kDkdvQueries;
          cp_async_4(smem_address(stage_stats + thread), p.lse + at, valid);  // ln units
          cp_async_4(smem_address(stage_stats + kDkdvQueries + thread), pass.delta + at, valid);
        }
        Elem* q_stage = q_tiles + stage * QueryTile::kElements;
        Elem* do_stage = do_tiles + stage * QueryTile::kElements;
        if constexpr (Squares) {
          produce_square_tiles<Elem, kDkdvQueries, D>(maps, q_span, do_span, rows, head, b, q_stage,
                                                      do_stage, ring.full(t));
        } else {
          produce_row_tiles<Elem, kDkdvQueries, D>(maps, q_span, do_span, rows, head, b, q_stage,
                                                   do_stage, ring.full(t));
        }
        if (qt + 1 < w.num_query_tiles) {
          rows.locate(maps, q_span, w.first_q + (qt + 1) * kDkdvQueries);
        }
      }
    }
    cp_async_wait<0>();  // no copy outlives its thread
    return;
  }

  become_consumer();
  const int lane = threadIdx.x % 32;
  const int warpgroup = threadIdx.x / 128;
  const int warp_key0 = warpgroup * 64 + (threadIdx.x % 128) / 32 * 16;  // in the CTA's keys
  const float scale_log2 = p.scale * kLog2e;
  const float dout_scale = output_scale(p);
  const uint64_t k_desc = k_major_desc(smem_address(k_tile) + warpgroup * 64 * 128);
  const uint64_t v_desc = k_major_desc(smem_address(v_tile) + warpgroup * 64 * 128);
  const uint64_t q_desc = k_major_desc(smem_address(q_tiles));                   // S^T = K Q^T
  const uint64_t do_desc = k_major_desc(smem_address(do_tiles));                 // dP^T = V dO^T
  const uint64_t qn_desc = n_major_desc<kDkdvQueries>(smem_address(q_tiles));    // dk += dS^T Q
  const uint64_t don_desc = n_major_desc<kDkdvQueries>(smem_address(do_tiles));  // dv += P^T dO
  int t = 0;
  for (int64_t head = head_first; head < head_last; ++head) {
    const KeyTileWork w = key_tile_work(p, pass, head, tc.segment, b, k0);
    if (w.num_query_tiles == 0) continue;
    // K and V of this head's key rows (the pattern's phase may differ between heads), once both
    // warpgroups are done with the previous head's.
    named_barrier_sync(1, kConsumerThreads);
    load_tile_async<Elem, kKeys, D, kConsumerThreads, KeyTile>(
        k_tile,
        make_span<Elem>(p, p.k, b, kv_head, w.hp, w.key_rows, static_cast<int>(k0), pass.order));
    load_tile_async<Elem, kKeys, D, kConsumerThreads, KeyTile>(
        v_tile,
        make_span<Elem>(p, p.v, b, kv_head, w.hp, w.key_rows, static_cast<int>(k0), pass.order));
    cp_async_commit();
    cp_async_wait<0>();
    fence_proxy_async();
    named_barrier_sync(1, kConsumerThreads);

    const int count = static_cast<int>(w.rows.count);
    const int key_count = static_cast<int>(w.key_rows.count);
    const int key_base = static_cast<int>(k0) + warp_key0 + lane / 4;
    const bool key_real[2] = {key_base < key_count, key_base + 8 < key_count};
    const int first_seeing[2] = {key_base - w.shift, key_base + 8 - w.shift};
    // Query tiles from here on see every key of the warp; the warp's keys are all real.
    const int unmasked_from = static_cast<int>(k0) + warp_key0 + 16 - w.shift;
    const bool warp_keys_inside = static_cast<int>(k0) + warp_key0 + 16 <= key_count;
    float dk[DT][4] = {}, dv[DT][4] = {};
    for (int qt = 0; qt < w.num_query_tiles; ++qt, ++t) {
      const uint32_t stage = (t % kDkdvStages) * kQueryTileBytes;
      const float* lse_rows = stats + (t % kDkdvStages) * 2 * kDkdvQueries;
      const float* delta_rows = lse_rows + kDkdvQueries;
      ring.wait_full(t);
      float st[1][QT][4], dpt[1][QT][4];  // this warpgroup's 64 keys x the tile's queries
      wgmma_fence();
      wgmma_ss_over_d<Elem, kDkdvQueries, kKeys, D>(st[0], k_desc, q_desc, stage);
      wgmma_ss_over_d<Elem, kDkdvQueries, kKeys, D>(dpt[0], v_desc, do_desc, stage);
      wgmma_commit();
      wgmma_wait<0>();
      pin_accumulators(st[0]);
      pin_accumulators(dpt[0]);

      const int query0 = w.first_q + qt * kDkdvQueries;
      const bool needs_mask = query0 + kDkdvQueries > count || !warp_keys_inside ||
                              (p.causal && query0 < unmasked_from);
      // P^T and dS^T in place; tiles that need no mask take a loop without the visibility test
      // (with it, ptxas branched around every exponential).
#pragma unroll
      for (int j = 0; j < QT; ++j) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int col = j * 8 + 2 * (lane % 4) + c;
          const float lse_col = lse_rows[col] * kLog2e;
          const float delta_col = delta_rows[col];
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int e = 2 * r + c;
            const float prob = fast_exp2(st[0][j][e] * scale_log2 - lse_col);
            st[0][j][e] = prob;                                             // P^T
            dpt[0][j][e] = prob * (dpt[0][j][e] * dout_scale - delta_col);  // dS^T
          }
        }
      }
      if (needs_mask) {
#pragma unroll
        for (int j = 0; j < QT; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = e / 2;
            const int query = query0 + j * 8 + 2 * (lane % 4) + e % 2;
            const bool visible =
                query < count && key_real[r] && !(p.causal && query < first_seeing[r]);
            st[0][j][e] = visible ? st[0][j][e] : 0.0f;
            dpt[0][j][e] = visible ? dpt[0][j][e] : 0.0f;
          }
        }
      }
      accumulate_dv_dk<Elem, D, QT>(dv, dk, st, dpt, don_desc, qn_desc, stage);
      ring.release_by_thread(t);
    }
    const int64_t key_row[2] = {
        key_real[0] ? grid_row(pass.order, w.key_rows.first + key_base * w.hp.dilation) : 0,
        key_real[1] ? grid_row(pass.order, w.key_rows.first + (key_base + 8) * w.hp.dilation) : 0};
    bool holds[2];
    rows_held(p, pass, head, w.key_rows.first, w.hp.dilation, {key_base, key_base + 8}, key_real,
              holds);
    wait_for_previous_launches();
    store_gradient_tile<Elem, D>(p, p.dk, pass.dk_acc, b, key_row, key_real, holds, kv_head, dk,
                                 p.scale, pass.converts);
    store_gradient_tile<Elem, D>(p, p.dv, pass.dv_acc, b, key_row, key_real, holds, kv_head, dv,
                                 dout_scale, pass.converts);
  }
#endif
}

}  // namespace dilated::cuda::hopper
