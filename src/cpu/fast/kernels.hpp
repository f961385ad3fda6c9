// What the fast CPU backend's planner (fast_backend.cpp) hands to its SIMD kernels
// (forward_kernels.cpp, backward_kernels.cpp), which are compiled once per Highway target and
// picked at run time for the CPU at hand.
#pragma once

#include <cstdint>

#include "core/pattern_math.hpp"
#include "dilated/params.hpp"

namespace dilated::cpu_fast {

// Tile sizes of the SIMD target this CPU runs; they follow the vector width.
struct TileShape {
  int64_t lanes = 0;                    // floats per vector
  int64_t query_tile = 0;               // forward: queries per tile, held in vector lanes
  int64_t key_tile = 0;                 // forward: keys per tile
  int64_t bwd_key_tile = 0;             // backward: keys per tile, held in vector lanes
  int64_t bwd_query_tile = 0;           // backward: queries per tile
  int64_t bwd_key_tiles_per_group = 0;  // backward: key tiles packed together
  int64_t bwd_block_key_tiles = 0;      // block-pattern backward: the same, at most
};
TileShape tile_shape();
// Highway's name of the target that runs.
const char* kernel_target_name();

// ---- Forward ----------------------------------------------------------------------------

// One task: every pattern of query head `head` for positions [begin, end) of sequence `b`.
// The task owns those rows of out and lse, so tasks run in any order on any thread.
struct ForwardTask {
  int64_t b = 0;
  int64_t head = 0;
  int64_t begin = 0;
  int64_t end = 0;
};

// Per-thread scratch (float32), sized by the planner from TileShape.
struct ForwardBuffers {
  float* q_t = nullptr;         // [head_dim][query_tile]: the query tile, transposed, pre-scaled
  float* k_rows = nullptr;      // [key_tile][head_dim]: 16-bit keys converted (f32 reads in place)
  float* v_rows = nullptr;      // [key_tile][head_dim_v]
  float* scores = nullptr;      // [key_tile][query_tile]: scores, then probabilities
  float* o_t = nullptr;         // [head_dim_v][query_tile]: unnormalised output of the tile
  float* state_o = nullptr;     // [chunk][head_dim_v]: normalised output so far, per position
  float* state_m = nullptr;     // [chunk]: log2-sum-exp so far (-inf: no key yet)
  float* state_seen = nullptr;  // [chunk]: 1 where the position met some key
  float* lanes = nullptr;       // [2 * query_tile]: per-query scalars
  float* row = nullptr;         // [max(head_dim, head_dim_v)]: one converted row
  // Token grids: a segment's reordered keys and values, gathered once per task and segment
  // when they number at most segment_keys (0 without a grid).
  int64_t segment_keys = 0;
  float* segment_k = nullptr;  // [segment_keys][head_dim]
  float* segment_v = nullptr;  // [segment_keys][head_dim_v]
};

class BlockLayout;

struct ForwardJob {
  const Params* p = nullptr;
  // Block patterns' union (null without block patterns) and the token order (null: positions
  // are rows; otherwise position t reads and writes row order[t]).
  const BlockLayout* blocks = nullptr;
  const int64_t* order = nullptr;
  float log2_scale = 0;  // softmax scale * log2(e): scores come out in log2 units
  float out_scale = 1;   // 1/m in head_groups
  // Backward's pre-pass for 16-bit problems: instead of out and lse, write
  // delta = <dout * out_scale, float32 softmax output> here (indexed like lse).
  float* delta = nullptr;
};

void run_forward_task(const ForwardJob& job, const ForwardTask& task, const ForwardBuffers& buf);

// ---- Backward ---------------------------------------------------------------------------

// One task: query heads `heads` (all with kv head `kv_head` and the same pattern and offset,
// so they share keys) over the whole segments in positions [begin, end) of sequence `b`.
// Within one pattern, tasks own disjoint rows of dq, dk and dv.
struct BackwardTask {
  int64_t b = 0;
  int64_t kv_head = 0;
  HeadPattern hp{1, 1, 0};
  const int64_t* heads = nullptr;
  int64_t num_heads = 0;
  int64_t begin = 0;
  int64_t end = 0;
};

struct BackwardBuffers {
  // Key tiles, max(bwd_key_tiles_per_group, the tiles of a super-block) of each:
  float* k_t = nullptr;      // [head_dim][bwd_key_tile]
  float* v_t = nullptr;      // [head_dim_v][bwd_key_tile]
  float* k_rows = nullptr;   // [bwd_key_tile][padded head_dim]
  float* dk_t = nullptr;     // [head_dim][bwd_key_tile]
  float* dv_t = nullptr;     // [head_dim_v][bwd_key_tile]
  float* q_rows = nullptr;   // [bwd_query_tile][head_dim]
  float* do_rows = nullptr;  // [bwd_query_tile][head_dim_v]: dout * out_scale
  float* probs = nullptr;    // [bwd_query_tile][bwd_key_tile]
  float* dscores = nullptr;  // [bwd_query_tile][bwd_key_tile]
  float* lse2 = nullptr;     // [bwd_query_tile]: lse in log2 units
  float* delta = nullptr;    // [bwd_query_tile]: scale * <dout, out>
  // [bwd_key_tile][max(padded head_dim, head_dim_v)]: a key tile's rows on their way between
  // the tensors and the transposed tile buffers
  float* stage = nullptr;
};

struct BackwardJob {
  const Params* p = nullptr;
  const BlockLayout* blocks = nullptr;  // as in ForwardJob
  const int64_t* order = nullptr;
  int64_t block_super = 1;  // blocks per super-block of the block-pattern backward
  float scale = 0;
  float log2_scale = 0;
  float out_scale = 1;
  // float32 gradient accumulators addressed like Params tensors (the outputs themselves for
  // float32, or float32 shadows). dq rows are updated with whole vectors, so they hold
  // padded_head_dim floats (a multiple of the vector width); dk and dv element by element.
  Tensor dq, dk, dv;
  int64_t padded_head_dim = 0;
  // Per-row delta = <dout * out_scale, softmax output> = <dout, out>, indexed like lse.
  const float* delta = nullptr;
};

void run_backward_task(const BackwardJob& job, const BackwardTask& task,
                       const BackwardBuffers& buf);

// Block patterns have no closed sets of queries and keys like segments. Their backward runs
// after the dilated passes over pairs of super-blocks (`block_super` consecutive blocks): a
// task takes the query super-block S and the key super-block T of kv head `kv_head` and adds
// every gradient of their kept (query block, key block) pairs, for all query heads of the kv
// head. Phases run one after another, phase d pairing S with T = (S + d) mod NS, so that
// within a phase tasks own disjoint dq rows (S) and dk, dv rows (T).
struct BlockBackwardTask {
  int64_t b = 0;
  int64_t kv_head = 0;
  int64_t query_super = 0;  // S
  int64_t key_super = 0;    // T
};

void run_block_backward_task(const BackwardJob& job, const BlockBackwardTask& task,
                             const BackwardBuffers& buf);

}  // namespace dilated::cpu_fast
