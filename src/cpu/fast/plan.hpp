// How the fast CPU backend splits a problem into independent tasks and carves its scratch
// memory (one block: float32 gradient shadows, then each thread's tile buffers).
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/fast/kernels.hpp"

namespace dilated::cpu_fast {

// Hands out 64-byte aligned float buffers from one block; with a null block it only counts.
class Arena {
 public:
  explicit Arena(void* base);
  float* floats(int64_t count);
  // Bytes a block must have for everything handed out so far (alignment slack included).
  int64_t bytes() const { return used_ + 64; }
  // Buffers handed out after a mark can be handed out again after rewinding to it: for
  // phases that never run at the same time.
  int64_t mark() const { return used_; }
  void rewind(int64_t mark) { used_ = mark; }

 private:
  char* base_;
  int64_t used_ = 0;
};

struct ForwardPlan {
  TileShape shape;
  int64_t chunk = 0;  // positions per task
  int threads = 1;
  std::vector<int64_t> tasks_before;  // [batch + 1]: tasks of the sequences before b

  int64_t tasks() const { return tasks_before.back(); }
  ForwardTask task(const Params& p, int64_t index) const;
  ForwardBuffers carve(const Params& p, Arena& arena) const;  // one thread's buffers
  int64_t workspace_bytes(const Params& p) const;
};
ForwardPlan plan_forward(const Params& p);

// Query heads that share kv head, pattern and offset, hence the same keys.
struct HeadClass {
  int64_t kv_head = 0;
  HeadPattern hp{1, 1, 0};
  std::vector<int64_t> heads;
};

// The tasks of one pattern (longnet) or one head group (head_groups); passes run one after
// another because their tasks update the same gradient rows.
struct BackwardPass {
  std::vector<HeadClass> classes;
  int64_t span = 0;                   // positions per task: whole segments
  std::vector<int64_t> tasks_before;  // [batch + 1]

  int64_t tasks() const { return tasks_before.back(); }
  BackwardTask task(const Params& p, int64_t index) const;
};

// The block-pattern backward's tasks of one phase: (sequence, kv head, query super-block).
struct BlockPhases {
  int64_t super = 1;                  // blocks per super-block
  int64_t key_tiles = 0;              // key tiles packed together (one super-block's, capped)
  int64_t most_supers = 0;            // super-blocks of the longest sequence (phases)
  std::vector<int64_t> tasks_before;  // [batch + 1]

  int64_t tasks() const { return tasks_before.empty() ? 0 : tasks_before.back(); }
  // Task `index` of phase `phase`; false when its sequence has no phase that far.
  bool task(const Params& p, int64_t phase, int64_t index, BlockBackwardTask* t) const;
};

struct BackwardPlan {
  TileShape shape;
  std::vector<BackwardPass> passes;
  BlockPhases block_phases;  // without tasks when there are no block patterns
  int threads = 1;
  int64_t tokens = 0;      // rows of q, out, dout, dq (packed over the batch)
  int64_t key_tokens = 0;  // rows of k, v, dk, dv: tokens, or batch x key rows with a window
  int64_t padded_head_dim = 0;
  // float32 accumulators stand in for the outputs when those cannot accumulate in place:
  // 16-bit outputs, or (dq only) rows that are not whole vectors.
  bool dq_shadow = false;
  bool dkv_shadow = false;
  // delta = <dout, out> per row (indexed like lse) is computed once before the passes, not
  // per key tile. For 16-bit problems a stored 16-bit out gives it only to 2^-9, which alone
  // would double the gradients' rounding error: there a pre-pass recomputes the softmax output
  // in float32 (one more forward) instead of reading out.
  bool delta_pre_pass = false;
  ForwardPlan pre_pass;

  BackwardBuffers carve(const Params& p, Arena& arena) const;  // one thread's buffers
  // The job's accumulators (the outputs themselves or float32 shadows) and delta buffer;
  // returns the latter.
  float* carve_accumulators(const Params& p, Arena& arena, BackwardJob* job) const;
  // Accumulators, then per-thread buffers of the pre-pass and of the passes sharing memory.
  int64_t workspace_bytes(const Params& p) const;
};
BackwardPlan plan_backward(const Params& p);

}  // namespace dilated::cpu_fast
