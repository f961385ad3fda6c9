// Hopper block dk/dv (sm_90a): the block pass's dk/dv (block_sparse_mma.cuh) on warpgroup
// products. CTA: KeyGroups x 64 keys, all in one key block J, K and V held in shared memory, and
// a consumer warpgroup per 64 keys and turn: with QueryTurns = 2 two warpgroups hold the same
// keys and take every other query tile, adding their dk and dv at the end (at D = 128 one
// warpgroup's dk, dv, S^T and dP^T do not fit the registers of a CTA that shares its SM: ptxas
// spilled and serialised the products). The producer warpgroup walks the column J of the
// multiplicity matrix for every query head of the kv head (QueryWalk) and streams the kept query
// blocks' tiles of 64 rows (Q, dO, their lse and delta) into a ring of stages, writing each tile's
// rows and multiplicity (StagedPart) beside it. Keys are the M dimension of every product, as in
// the dense Hopper dk/dv: S^T = K Q^T and dP^T = V dO^T (operands in shared memory), P^T and dS^T
// on the accumulators, then dv += P^T dO and dk += dS^T Q with the A operand from registers in two
// 16-bit parts and dO, Q read N-major. Each dk/dv row is owned by one CTA: no atomics.
#pragma once

#include "cuda/hopper/backward_products.cuh"
#include "cuda/hopper/block_shape.cuh"
#include "cuda/hopper/stage_ring.cuh"
#include "cuda/hopper/wgmma.cuh"
#include "cuda/kernels/block_pass_common.cuh"
#include "cuda/kernels/mma_backward.cuh"

namespace dilated::cuda::hopper {

inline constexpr int kBlockDkdvQueries = 64;  // query rows per streamed tile

template <int D, int KeyGroups, int QueryTurns>
struct BlockDkdvSmem {
  using Shape = BlockShape<KeyGroups * QueryTurns>;
  static constexpr int kKeys = 64 * KeyGroups;
  using KeyTile = GmmaTile<kKeys, D>;
  using QueryTile = GmmaTile<kBlockDkdvQueries, D>;
  // As many stages as the CTAs of an SM leave room for.
  static constexpr int kStages = D == 64 || Shape::kCtasPerSm == 1 ? 4 : 2;
  static constexpr int kStatBytes = 2 * kBlockDkdvQueries * 4;  // lse, delta of a tile's rows
  static constexpr int kBytes =
      (2 * KeyTile::kElements + 2 * kStages * QueryTile::kElements) * 2 + kStages * kStatBytes +
      kStages * static_cast<int>(sizeof(StagedPart)) + StageRing<kStages>::kBytes + 1024;
  static_assert(Shape::kCtasPerSm * (kBytes + 1024) <= 228 * 1024, "the CTAs of an SM");
  // The second turn's dk and dv (fp32, in the accumulators' order) fit the spent stages.
  static_assert(QueryTurns == 1 || 2 * kKeys * D * 4 <= 2 * kStages * QueryTile::kElements * 2,
                "the partial sums");
};

template <typename Elem, int D, int KeyGroups, int QueryTurns>
__global__ void __launch_bounds__(BlockShape<KeyGroups * QueryTurns>::kThreads,
                                  BlockShape<KeyGroups * QueryTurns>::kCtasPerSm)
    block_dkdv_kernel(const Params p, const BlockPass bp, const __grid_constant__ TensorMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Smem = BlockDkdvSmem<D, KeyGroups, QueryTurns>;
  using Shape = typename Smem::Shape;
  using KeyTile = typename Smem::KeyTile;
  using QueryTile = typename Smem::QueryTile;
  constexpr int kStages = Smem::kStages;
  constexpr int BQ = kBlockDkdvQueries;
  constexpr int QT = BQ / 8;  // n8 column tiles of queries
  constexpr int DT = D / 8;
  constexpr uint32_t kQueryTileBytes = QueryTile::kElements * 2;
  extern __shared__ unsigned char smem_raw[];
  Elem* k_tile = first_tile<Elem>(smem_raw);
  Elem* v_tile = k_tile + KeyTile::kElements;
  Elem* q_tiles = v_tile + KeyTile::kElements;
  Elem* do_tiles = q_tiles + kStages * QueryTile::kElements;
  // Per stage: lse (natural log) then delta of the tile's rows.
  float* stats = reinterpret_cast<float*>(do_tiles + kStages * QueryTile::kElements);
  StagedPart* notes = reinterpret_cast<StagedPart*>(stats + kStages * 2 * BQ);
  const StageRing<kStages> ring{smem_address(notes + kStages)};

  const int64_t b = blockIdx.z, kv_head = blockIdx.y;
  const int64_t n = seq_length(p, b);
  const int k0 = static_cast<int>(blockIdx.x) * Smem::kKeys;
  if (k0 >= n) return;
  const int count = static_cast<int>(n);
  const int64_t group_size = p.heads / p.heads_kv;
  // The CTA's keys lie in one block (the launcher's shape); its column, head after head.
  const QueryWalk walk{
      p, bp, b, k0 / bp.block, block_count(n, bp.block), n, (kv_head + 1) * group_size, k0};
  const QueryTileCursor first = walk.find(kv_head * group_size, p.causal ? walk.J : 0);

  // A stage is read by the threads of one turn, each releasing it.
  if (threadIdx.x == 0) ring.init(Shape::kConsumerThreads / QueryTurns, 1, 1);
  __syncthreads();

  if (threadIdx.x >= Shape::kConsumerThreads) {
    shrink_registers_to<Shape::kProducerRegisters>();
    const int thread = threadIdx.x % 128;
    QueryTileCursor c = first;
    int t = 0;
    for (; c.head < walk.head_end; ++t) {
      ring.wait_empty(t);
      const int stage = t % kStages;
      const RowSpan q_span = position_span<Elem>(p, bp, p.q, b, c.head, c.query0, c.end);
      const RowSpan do_span = position_span<Elem>(p, bp, p.dout, b, c.head, c.query0, c.end);
      if (thread < BQ) {  // lse and delta of row query0 + thread (zeros past the block)
        const int idx = c.query0 + thread;
        const bool valid = idx < c.end;
        const int64_t at = valid ? lse_index(p, b, c.head, grid_row(bp.order, idx)) : 0;
        float* stage_stats = stats + stage * 2 * BQ;
        cp_async_4(smem_address(stage_stats + thread), p.lse + at, valid);  // ln units
        cp_async_4(smem_address(stage_stats + BQ + thread), bp.delta + at, valid);
      }
      ProducerRows<BQ> rows;
      rows.locate(maps, q_span, c.query0);
      produce_row_tiles<Elem, BQ, D>(maps, q_span, do_span, rows, c.head, b,
                                     q_tiles + stage * QueryTile::kElements,
                                     do_tiles + stage * QueryTile::kElements, ring.full(t));
      // The next tile is found while this one's copies are in flight.
      const QueryTileCursor next = walk.next<BQ>(c);
      if (thread == 0) {
        notes[stage] = {c.query0, c.end, c.bias, next.head >= walk.head_end ? kLastTile : 0};
        mbarrier_arrive(ring.full(t));
      }
      c = next;
    }
    if (QueryTurns == 2 && t > 0) {  // the turn after the last tile's waits for a stage: none
      ring.wait_empty(t);
      if (thread == 0) {
        notes[t % kStages] = {0, 0, 0.0f, kNoTile};
        mbarrier_arrive(ring.full(t));
      }
      mbarrier_arrive(ring.full(t));
    }
    cp_async_wait<0>();  // no copy outlives its thread
    return;
  }

  grow_registers_to<Shape::kConsumerRegisters>();
  load_tile_async<Elem, Smem::kKeys, D, Shape::kConsumerThreads, KeyTile>(
      k_tile, position_span<Elem>(p, bp, p.k, b, kv_head, k0, count));
  load_tile_async<Elem, Smem::kKeys, D, Shape::kConsumerThreads, KeyTile>(
      v_tile, position_span<Elem>(p, bp, p.v, b, kv_head, k0, count));
  cp_async_commit();

  const int lane = threadIdx.x % 32;
  const int key_group = threadIdx.x / 128 % KeyGroups;
  const int turn = threadIdx.x / 128 / KeyGroups;
  const int warp_key0 = k0 + key_group * 64 + threadIdx.x % 128 / 32 * 16;  // the warp's first key
  const int key_idx[2] = {warp_key0 + lane / 4, warp_key0 + lane / 4 + 8};
  const bool key_ok[2] = {key_idx[0] < count, key_idx[1] < count};
  const bool warp_keys_inside = warp_key0 + 16 <= count;
  const float scale_log2 = p.scale * kLog2e;
  const float dout_scale = output_scale(p);
  cp_async_wait<0>();
  fence_proxy_async();
  named_barrier_sync(1, Shape::kConsumerThreads);

  const uint64_t k_desc = k_major_desc(smem_address(k_tile) + key_group * 64 * 128);
  const uint64_t v_desc = k_major_desc(smem_address(v_tile) + key_group * 64 * 128);
  const uint64_t q_desc = k_major_desc(smem_address(q_tiles));         // S^T = K Q^T
  const uint64_t do_desc = k_major_desc(smem_address(do_tiles));       // dP^T = V dO^T
  const uint64_t qn_desc = n_major_desc<BQ>(smem_address(q_tiles));    // dk += dS^T Q
  const uint64_t don_desc = n_major_desc<BQ>(smem_address(do_tiles));  // dv += P^T dO
  float dk[DT][4] = {}, dv[DT][4] = {};
  bool more = first.head < walk.head_end;
  for (int t = turn; more; t += QueryTurns) {
    const uint32_t stage = (t % kStages) * kQueryTileBytes;
    const float* lse_rows = stats + (t % kStages) * 2 * BQ;
    const float* delta_rows = lse_rows + BQ;
    ring.wait_full(t);
    StagedPart staged[1];
    read_staged_parts(notes + t % kStages, 1, staged);
    const StagedPart& c = staged[0];
    if (c.last == kNoTile) {
      ring.release_by_thread(t);
      break;
    }
    more = c.last != kLastTile;
    float st[1][QT][4], dpt[1][QT][4];  // this warpgroup's 64 keys x the tile's queries
    wgmma_fence();
    wgmma_ss_over_d<Elem, BQ, Smem::kKeys, D>(st[0], k_desc, q_desc, stage);
    wgmma_ss_over_d<Elem, BQ, Smem::kKeys, D>(dpt[0], v_desc, do_desc, stage);
    wgmma_commit();
    wgmma_wait<0>();
    pin_accumulators(st[0]);
    pin_accumulators(dpt[0]);

    // P^T and dS^T in place (bias log2(c)), then the mask where the tile needs it: queries past
    // the block, keys past the sequence, and (causal) keys after the query.
#pragma unroll
    for (int j = 0; j < QT; ++j) {
#pragma unroll
      for (int col = 0; col < 2; ++col) {
        const int q = j * 8 + 2 * (lane % 4) + col;
        const float lse_col = lse_rows[q] * kLog2e - c.bias;
        const float delta_col = delta_rows[q];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int e = 2 * r + col;
          const float prob = fast_exp2(st[0][j][e] * scale_log2 - lse_col);
          st[0][j][e] = prob;                                             // P^T
          dpt[0][j][e] = prob * (dpt[0][j][e] * dout_scale - delta_col);  // dS^T
        }
      }
    }
    const bool needs_mask =
        c.first + BQ > c.end || !warp_keys_inside || (p.causal && c.first < warp_key0 + 16);
    if (needs_mask) {
#pragma unroll
      for (int j = 0; j < QT; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e / 2;
          const int query = c.first + j * 8 + 2 * (lane % 4) + e % 2;
          const bool visible = query < c.end && key_ok[r] && !(p.causal && key_idx[r] > query);
          st[0][j][e] = visible ? st[0][j][e] : 0.0f;
          dpt[0][j][e] = visible ? dpt[0][j][e] : 0.0f;
        }
      }
    }
    accumulate_dv_dk<Elem, D, QT>(dv, dk, st, dpt, don_desc, qn_desc, stage);
    ring.release_by_thread(t);
  }
  if constexpr (QueryTurns == 2) {
    // The second turn's sums join the first's through the spent stages: the ring is done once
    // both turns are (no copy is in flight; every product has completed).
    named_barrier_sync(1, Shape::kConsumerThreads);
    float* partial = reinterpret_cast<float*>(q_tiles) + threadIdx.x % 128;
    if (turn == 1) {
#pragma unroll
      for (int d = 0; d < DT; ++d) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          partial[(d * 4 + e) * 128] = dk[d][e];
          partial[((DT + d) * 4 + e) * 128] = dv[d][e];
        }
      }
    }
    named_barrier_sync(1, Shape::kConsumerThreads);
    if (turn == 1) return;
#pragma unroll
    for (int d = 0; d < DT; ++d) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        dk[d][e] += partial[(d * 4 + e) * 128];
        dv[d][e] += partial[((DT + d) * 4 + e) * 128];
      }
    }
  }
  int64_t key_row[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) key_row[r] = key_ok[r] ? grid_row(bp.order, key_idx[r]) : 0;
  store_gradient_tile<Elem, D>(p, p.dk, bp.dk_acc, b, key_row, key_ok, {true, true}, kv_head, dk,
                               p.scale, false);
  store_gradient_tile<Elem, D>(p, p.dv, bp.dv_acc, b, key_row, key_ok, {true, true}, kv_head, dv,
                               dout_scale, false);
#endif
}

}  // namespace dilated::cuda::hopper
