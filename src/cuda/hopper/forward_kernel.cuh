// Hopper forward (sm_90a): the portable forward's algorithm with warpgroup matrix products
// and a producer warpgroup. A CTA takes the same 128 selected query rows of one segment of one head
// as the portable kernel (so the launch plan is shared): two consumer warpgroups of 64 rows
// each, and a producer warpgroup that streams K and V tiles of 128 selected keys into a ring of
// shared-memory stages with cp.async (any row stride: the dilation costs nothing, and token
// grids keep their row mapping), in the layout wgmma reads. Stages pass between them through
// mbarriers, so the two warpgroups are not held in step: one's softmax overlaps the other's
// matrix products. Per tile a warpgroup computes S = Q K^T (both operands in shared memory),
// the online softmax on the accumulators in registers, then O += P V with P from registers.
#pragma once

#include "cuda/hopper/barriers.cuh"
#include "cuda/hopper/wgmma.cuh"
#include "cuda/kernels/forward_rows.cuh"
#include "cuda/kernels/mma_tiles.cuh"

namespace dilated::cuda::hopper {

inline constexpr int kConsumerThreads = 256;             // two warpgroups
inline constexpr int kThreads = kConsumerThreads + 128;  // and the producer warpgroup
// Registers per thread after the split (setmaxnreg): the producer only computes addresses.
// 128 x 48 + 256 x 232 = the 64 Ki registers of an SM.
inline constexpr int kProducerRegisters = 48;
inline constexpr int kConsumerRegisters = 232;
inline constexpr int kRows = 128;  // query rows per CTA (64 per warpgroup)
inline constexpr int kKeys = 128;  // keys per tile
inline constexpr int kStages = 3;  // K/V tiles in flight

template <int D>
struct ForwardSmem {
  using QueryTile = GmmaTile<kRows, D>;
  using KeyTile = GmmaTile<kKeys, D>;
  static constexpr int kTileBytes = (QueryTile::kElements + 2 * kStages * KeyTile::kElements) * 2;
  // The tiles, a full and an empty mbarrier per stage, a word per consumer thread
  // (wgmma_wait_after), and room to round the base up to 1024.
  static constexpr int kBytes = kTileBytes + 2 * kStages * 8 + 4 * kConsumerThreads + 1024;
};

// The producer warpgroup's copy of key rows idx0 .. idx0 + kKeys - 1 of the K and V spans (the
// same positions; rows past the run are zero-filled). Each thread keeps one chunk column.
template <typename Elem, int D>
__device__ __forceinline__ void copy_key_tile(Elem* k_tile, Elem* v_tile, const RowSpan& k_span,
                                              const RowSpan& v_span) {
  using Tile = GmmaTile<kKeys, D>;
  constexpr int kRowStep = 128 / Tile::kChunks;
  const int thread = threadIdx.x % 128;
  const int chunk = thread % Tile::kChunks;
  const uint32_t k_base = smem_address(k_tile), v_base = smem_address(v_tile);
  const Elem* k_src = static_cast<const Elem*>(k_span.base) + chunk * 8;
  const Elem* v_src = static_cast<const Elem*>(v_span.base) + chunk * 8;
#pragma unroll 4
  for (int row = thread / Tile::kChunks; row < kKeys; row += kRowStep) {
    const int idx = k_span.idx0 + row;
    const bool valid = idx < k_span.count;
    const int64_t tensor_row =
        valid ? grid_row(k_span.order, k_span.first + static_cast<int64_t>(idx) * k_span.step) : 0;
    const uint32_t offset = Tile::chunk_offset(row, chunk) * 2;
    cp_async_16(k_base + offset, k_src + tensor_row * k_span.row_stride, valid);
    cp_async_16(v_base + offset, v_src + tensor_row * v_span.row_stride, valid);
  }
}

// One work item: a 128-row query tile of one segment of one head of one sequence.
struct ForwardItem {
  int64_t b, head, kv_head;
  HeadPattern hp;
  SegmentRows rows, key_rows;
  int q0, key_count, shift, num_key_tiles;  // num_key_tiles 0: nothing to do
};

// Item `index` of the pass, numbered as the portable kernel's grid (query tiles of a head
// fastest, so that CTAs running together share K and V in L2).
__device__ __forceinline__ ForwardItem forward_item(const Params& p, const PassInfo& pass,
                                                    int64_t index) {
  const int64_t tiles = pass.segments * pass.tiles_per_segment;
  ForwardItem it;
  const int64_t x = index % tiles;
  it.head = pass.head_begin + (index / tiles) % pass.head_count;
  it.b = index / (tiles * pass.head_count);
  it.hp = pass_pattern(p, pass, it.head);
  const TileCoord tc = tile_coord(pass, x);
  const SliceRows tr = slice_rows(p, it.hp, tc.segment, it.b);
  it.rows = tr.queries;
  it.key_rows = tr.keys;
  it.q0 = static_cast<int>(tc.tile) * kRows;
  it.key_count = static_cast<int>(tr.keys.count);
  it.shift = static_cast<int>(tr.shift);
  it.kv_head = kv_head_of(p, it.head);
  // Keys the tile's last row sees; none (Params::window): the rows keep out 0, lse -inf.
  const int num_keys =
      it.q0 >= it.rows.count
          ? 0
          : static_cast<int>(visible_keys(p.causal, it.key_count, it.q0 + kRows - 1, it.shift));
  it.num_key_tiles = (num_keys + kKeys - 1) / kKeys;
  return it;
}

// A persistent kernel: CTA c takes items c, c + gridDim.x, ... of the pass, so that the
// producer streams the next item's K and V while the consumers finish the current one, and
// each warpgroup loads its next Q rows as soon as its last score product has read them.
template <typename Elem, int D>
__global__ void __launch_bounds__(kThreads, 1) forward_kernel(const Params p, const PassInfo pass) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using QueryTile = GmmaTile<kRows, D>;
  using KeyTile = GmmaTile<kKeys, D>;
  constexpr int NT = kKeys / 8;  // n8 column tiles of scores
  constexpr int DT = D / 8;      // n8 column tiles of output
  constexpr uint32_t kKeyTileBytes = KeyTile::kElements * 2;
  extern __shared__ unsigned char smem_raw[];
  Elem* q_tile = reinterpret_cast<Elem*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) &
                                         ~static_cast<uintptr_t>(1023));
  Elem* k_tiles = q_tile + QueryTile::kElements;
  Elem* v_tiles = k_tiles + kStages * KeyTile::kElements;
  const uint32_t bars = smem_address(v_tiles + kStages * KeyTile::kElements);
  auto full = [&](int stage) { return bars + 8 * stage; };
  auto empty = [&](int stage) { return bars + 8 * (kStages + stage); };
  const uint32_t scratch = bars + 16 * kStages + 4 * threadIdx.x;  // see wgmma_wait_after
  const int64_t items = pass.segments * pass.tiles_per_segment * pass.head_count * p.batch;
  const int lane = threadIdx.x % 32;

  if (threadIdx.x == 0) {
    for (int stage = 0; stage < kStages; ++stage) {
      mbarrier_init(full(stage), 128);  // the producer's threads
      mbarrier_init(empty(stage), kConsumerThreads / 32);
    }
  }
  __syncthreads();

  if (threadIdx.x >= kConsumerThreads) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegisters));
    // Producer: the g-th tile of this CTA (over all its items) goes to stage g % kStages once
    // the consumers released that stage's previous tile. Each thread's copies arrive on the
    // stage's full barrier when they land (cp.async.mbarrier.arrive), so the producer runs
    // ahead as far as the stages allow, into the next item.
    int g = 0;
    for (int64_t index = blockIdx.x; index < items; index += gridDim.x) {
      const ForwardItem it = forward_item(p, pass, index);
      RowSpan k_span = make_span<Elem>(p, p.k, it.b, it.kv_head, it.hp, it.key_rows, 0, pass.order);
      RowSpan v_span = make_span<Elem>(p, p.v, it.b, it.kv_head, it.hp, it.key_rows, 0, pass.order);
      for (int t = 0; t < it.num_key_tiles; ++t, ++g) {
        const int stage = g % kStages;
        if (g >= kStages) mbarrier_wait(empty(stage), (g / kStages + 1) & 1);
        k_span.idx0 = v_span.idx0 = t * kKeys;
        copy_key_tile<Elem, D>(k_tiles + stage * KeyTile::kElements,
                               v_tiles + stage * KeyTile::kElements, k_span, v_span);
        cp_async_mbarrier_arrive(full(stage));
      }
    }
    cp_async_wait<0>();  // no copy outlives its thread
  } else {
    // (One if/else for the two roles: ptxas allocates each branch with its setmaxnreg count.)
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegisters));
    const int warpgroup = threadIdx.x / 128;
    const int wg_thread = threadIdx.x % 128;
    // This warpgroup's 64 rows of the Q tile.
    Elem* q_rows = q_tile + warpgroup * 64 * 64;
    auto load_q = [&](const ForwardItem& it) {
      using Rows = TileRows<64, D, 128, QueryTile>;
      const RowSpan span = make_span<Elem>(p, p.q, it.b, it.head, it.hp, it.rows,
                                           it.q0 + warpgroup * 64, pass.order);
      Rows located;
      located.locate(span, wg_thread);
      load_tile_rows_async<Elem>(q_rows, span, located, wg_thread);
      cp_async_commit();
    };
    auto next_item = [&](int64_t index, ForwardItem* it) {
      for (; index < items; index += gridDim.x) {
        *it = forward_item(p, pass, index);
        if (it->num_key_tiles > 0) return index;
      }
      return items;
    };

    const float scale_log2 = p.scale * kLog2e;
    const int warp_row0 = warpgroup * 64 + wg_thread / 32 * 16;
    // Descriptors of this warpgroup's Q rows and of stage 0's K and V; steps are offsets.
    const uint64_t q_desc = k_major_desc(smem_address(q_rows));
    const uint64_t k_desc = k_major_desc(smem_address(k_tiles));
    const uint64_t v_desc = n_major_desc<kKeys>(smem_address(v_tiles));
    // The two warpgroups take turns issuing their products (FlashAttention-3's ping-pong):
    // named barriers 2 and 3 (warpgroup 0's and 1's turn) make one warpgroup's products run
    // while the other computes its softmax. Barriers 4 and 5: a warpgroup's Q rows landed.
    auto wait_turn = [&]() { named_barrier_sync(2 + warpgroup, kConsumerThreads); };
    auto pass_turn = [&]() { named_barrier_arrive(3 - warpgroup, kConsumerThreads); };

    int64_t index;
    {
      ForwardItem first;
      index = next_item(blockIdx.x, &first);
      if (index < items) load_q(first);
    }
    int g = 0;  // tiles of this CTA so far: stage g % kStages, parity (g / kStages) & 1
    while (index < items) {
      cp_async_wait<0>();
      fence_proxy_async();  // Q is read by wgmma next
      named_barrier_sync(4 + warpgroup, 128);
      // Only the item's few integers stay live through the tiles (the registers are needed
      // there); the epilogue derives the rest again from the index.
      const ForwardItem it = forward_item(p, pass, index);

      int row_idx[1][2];  // selected-row index of the thread's two rows
      row_idx[0][0] = it.q0 + warp_row0 + lane / 4;
      row_idx[0][1] = row_idx[0][0] + 8;
      float o[1][DT][4] = {};
      float row_max[1][2] = {{-INFINITY, -INFINITY}};
      float row_sum[1][2] = {{0.0f, 0.0f}};   // of the exact probabilities: lse
      float row_norm[1][2] = {{0.0f, 0.0f}};  // of the rounded ones that reach o
      const int g0 = g;
      const int num_key_tiles = it.num_key_tiles;

      // S = Q K^T of tile t into s (asynchronous; committed as one group).
      auto issue_scores = [&](float(&s)[NT][4], int t) {
        const uint64_t k_stage = desc_plus(k_desc, ((g0 + t) % kStages) * kKeyTileBytes);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          wgmma_ss<Elem, kKeys>(s, desc_plus(q_desc, k_major_step<kRows>(kk)),
                                desc_plus(k_stage, k_major_step<kKeys>(kk)), kk > 0);
        }
        wgmma_commit();
      };
      // O += P V of tile t, P from registers (asynchronous; one group).
      auto issue_values = [&](const uint32_t(&pa)[NT / 2][4], int t) {
        const uint64_t v_stage = desc_plus(v_desc, ((g0 + t) % kStages) * kKeyTileBytes);
#pragma unroll
        for (int kk = 0; kk < kKeys / 16; ++kk) {
          wgmma_rs<Elem, D>(o[0], pa[kk], desc_plus(v_stage, n_major_step(kk)));
        }
        wgmma_commit();
      };
      // Scores of tile t -> probabilities; the corrections o needs are returned.
      float s[1][NT][4];
      uint32_t pa[1][1][NT / 2][4];
      float corrections[1][2];
      auto softmax = [&](int t) {
        const int key0 = t * kKeys;
        const bool needs_mask = key0 + kKeys > it.key_count ||
                                (p.causal && key0 + kKeys > it.q0 + warp_row0 + it.shift);
        if (scale_log2 > 0.0f) {  // the usual case: the scale rides in the exponent's FFMA
          mask_scores(s, needs_mask, key0, it.key_count, p.causal, row_idx, it.shift);
          softmax_scores_tile(s, row_max, row_sum, corrections, scale_log2);
        } else {
          scale_and_mask_scores(s, scale_log2, needs_mask, key0, it.key_count, p.causal, row_idx,
                                it.shift);
          softmax_scores_tile(s, row_max, row_sum, corrections);
        }
      };
      // The probabilities as the product's 16-bit A fragments, and their rounded sums.
      auto pack = [&]() {
        accumulators_to_a<Elem, 1, 1, NT / 2>(pa, s);
        float rounded[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // registers 0, 2: row lane/4; 1, 3: + 8
#pragma unroll
        for (int kk = 0; kk < NT / 2; ++kk) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float2 pair = unpack2<Elem>(pa[0][0][kk][e]);
            rounded[e] += pair.x + pair.y;
          }
        }
        row_norm[0][0] = row_norm[0][0] * corrections[0][0] + (rounded[0] + rounded[2]);
        row_norm[0][1] = row_norm[0][1] * corrections[0][1] + (rounded[1] + rounded[3]);
      };
      auto release = [&](int t) {
        __syncwarp();
        if (lane == 0) mbarrier_arrive(empty((g0 + t) % kStages));  // this warp is done with it
      };
      auto wait_full = [&](int t) {
        mbarrier_wait(full((g0 + t) % kStages), ((g0 + t) / kStages) & 1);
        fence_proxy_async();  // the producer's copies are read through the async proxy next
      };
      // After the item's last score product this warpgroup's Q rows are free: the next item's
      // start loading while the last P V and the epilogue run.
      int64_t next_index = items;
      auto prefetch_q = [&]() {
        ForwardItem next;
        next_index = next_item(index + gridDim.x, &next);
        if (next_index < items) load_q(next);
      };

      if (warpgroup == 1) pass_turn();  // warpgroup 0 goes first
      // Software pipeline (FlashAttention-3's intra-warpgroup overlap): the softmax of tile t
      // runs while the tensor cores compute tile t - 1's P V.
      wait_full(0);
      wait_turn();
      wgmma_fence();
      issue_scores(s[0], 0);
      pass_turn();
      wgmma_wait<0>();
      pin_accumulators(s[0]);
      softmax(0);
      pack();
      for (int t = 1; t < num_key_tiles; ++t) {
        wait_full(t);
        wait_turn();
        wgmma_fence();
        issue_scores(s[0], t);
        issue_values(pa[0][0], t - 1);
        pass_turn();
        wgmma_wait<1>();  // the scores (committed first) are done; P V may still run
        pin_accumulators(s[0]);
        softmax(t);
        // P V of tile t - 1 is done after this: o and pa may change, the stage is free. The
        // softmax (all of it feeds the row sums) stays before the wait, beside the P V.
        wgmma_wait_after<0>(row_sum[0][0] + row_sum[0][1], scratch);
        pin_accumulators(o[0]);
        pin_fragments(pa[0][0]);
        release(t - 1);
        rescale_outputs(o, corrections);
        pack();
      }
      wait_turn();
      wgmma_fence();
      issue_values(pa[0][0], num_key_tiles - 1);
      pass_turn();
      prefetch_q();  // beside the last P V, where the scores no longer hold registers
      if (warpgroup == 0) wait_turn();  // takes warpgroup 1's last turn: no arrival left pending
      wgmma_wait<0>();
      pin_accumulators(o[0]);
      pin_fragments(pa[0][0]);
      release(num_key_tiles - 1);
      g += num_key_tiles;

      int64_t opaque = index;
      asm volatile("" : "+l"(opaque));  // recomputed, not kept live through the tiles
      const ForwardItem done = forward_item(p, pass, opaque);
      store_forward_rows<Elem>(p, pass, done.hp, done.rows, done.key_count, done.shift, done.b,
                               done.head, row_idx, o, row_max, row_sum, row_norm);
      index = next_index;
    }
  }
#endif
}

}  // namespace dilated::cuda::hopper
