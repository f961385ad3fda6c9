#include "cpu/fast/plan.hpp"

#include <algorithm>

#include "core/block_sparse.hpp"

#include "cpu/fast/parallel.hpp"

namespace dilated::cpu_fast {
namespace {

int64_t round_up(int64_t x, int64_t m) {
  return ceil_div(x, m) * m;
}

// Index of the sequence whose tasks contain `index` (sequences without tasks are skipped).
int64_t sequence_of(const std::vector<int64_t>& tasks_before, int64_t index) {
  return std::upper_bound(tasks_before.begin(), tasks_before.end(), index) - tasks_before.begin() -
         1;
}

// Positions [first, last) that the backward tasks of segment length w cover in sequence b:
// whole segments, from the one that holds the first query row to the last query row (global
// positions for a windowed problem).
struct Range {
  int64_t first, last;
};
Range backward_range(const Params& p, int64_t b, int64_t w) {
  const int64_t begin = p.window.query_begin;
  return {begin / w * w, begin + seq_length(p, b)};
}

}  // namespace

Arena::Arena(void* base) : base_(static_cast<char*>(base)) {
  // Offsets below are multiples of 64 from a 64-byte aligned start (bytes() counts the slack).
  if (base_) base_ += (64 - reinterpret_cast<uintptr_t>(base_) % 64) % 64;
}

float* Arena::floats(int64_t count) {
  used_ = round_up(used_, 64);
  float* ptr = base_ ? reinterpret_cast<float*>(base_ + used_) : nullptr;
  used_ += count * static_cast<int64_t>(sizeof(float));
  return ptr;
}

ForwardPlan plan_forward(const Params& p) {
  ForwardPlan plan;
  plan.shape = tile_shape();
  // A chunk gives every pattern about one full query tile: tile * dilation positions.
  int64_t dilation = 1;
  for (int i = 0; i < p.num_patterns; ++i) dilation = std::max(dilation, p.patterns[i].dilation);
  plan.chunk = plan.shape.query_tile * std::min<int64_t>(dilation, 16);
  // Token grids: a task gathers each segment's reordered keys once for all its query tiles, so
  // tasks span a whole segment (up to 2048 positions; at least 4 query tiles per pattern).
  if (has_grid(p)) {
    int64_t segment = 0;
    for (int i = 0; i < p.num_patterns; ++i) {
      segment = std::max(segment, std::min<int64_t>(p.patterns[i].segment, 2048));
    }
    plan.chunk = std::max(plan.chunk * 4, round_up(segment, plan.shape.query_tile));
  }
  plan.chunk = std::min(plan.chunk, p.seqlen);
  // Block patterns: tasks hold whole query blocks, which share their key blocks (up to blocks
  // of 1024 positions: the per-position state of a task grows with its chunk).
  if (has_block_patterns(p) && p.blocks.block_size <= 1024) {
    plan.chunk = round_up(plan.chunk, p.blocks.block_size);
  }
  plan.tasks_before.assign(static_cast<size_t>(p.batch + 1), 0);
  for (int64_t b = 0; b < p.batch; ++b) {
    plan.tasks_before[b + 1] =
        plan.tasks_before[b] + ceil_div(seq_length(p, b), plan.chunk) * p.heads;
  }
  plan.threads = static_cast<int>(
      std::clamp<int64_t>(thread_count(p.num_threads), 1, std::max<int64_t>(1, plan.tasks())));
  return plan;
}

ForwardTask ForwardPlan::task(const Params& p, int64_t index) const {
  ForwardTask t;
  t.b = sequence_of(tasks_before, index);
  const int64_t n = seq_length(p, t.b);
  const int64_t chunks = ceil_div(n, chunk);
  const int64_t rest = index - tasks_before[t.b];
  t.head = rest / chunks;
  t.begin = rest % chunks * chunk;
  t.end = std::min(t.begin + chunk, n);
  return t;
}

ForwardBuffers ForwardPlan::carve(const Params& p, Arena& arena) const {
  const int64_t dim = p.head_dim, dim_v = p.head_dim_v, tile = shape.query_tile;
  ForwardBuffers b;
  b.q_t = arena.floats(dim * tile);
  // float32 keys and values in sequence order are read in place.
  const bool convert = p.dtype != DType::f32 || has_grid(p);
  b.k_rows = convert ? arena.floats(shape.key_tile * dim) : nullptr;
  b.v_rows = convert ? arena.floats(shape.key_tile * dim_v) : nullptr;
  b.scores = arena.floats(shape.key_tile * tile);
  b.o_t = arena.floats(dim_v * tile);
  b.state_o = arena.floats(chunk * dim_v);
  b.state_m = arena.floats(chunk);
  b.state_seen = arena.floats(chunk);
  b.lanes = arena.floats(2 * tile);
  b.row = arena.floats(std::max(dim, dim_v));
  if (has_grid(p)) {
    // The longest segment's selected keys, up to 2048 (longer ones are gathered per tile).
    int64_t keys = 0;
    for (int i = 0; i < p.num_patterns; ++i) {
      keys = std::max(keys,
                      ceil_div(std::min(p.patterns[i].segment, p.seqlen), p.patterns[i].dilation));
    }
    b.segment_keys = std::min<int64_t>(keys, 2048);
    b.segment_k = arena.floats(b.segment_keys * dim);
    b.segment_v = arena.floats(b.segment_keys * dim_v);
  }
  return b;
}

int64_t ForwardPlan::workspace_bytes(const Params& p) const {
  Arena arena(nullptr);
  for (int t = 0; t < threads; ++t) carve(p, arena);
  return arena.bytes();
}

BackwardTask BackwardPass::task(const Params& p, int64_t index) const {
  BackwardTask t;
  t.b = sequence_of(tasks_before, index);
  const Range range = backward_range(p, t.b, classes.front().hp.segment);
  const int64_t units = ceil_div(range.last - range.first, span);
  const int64_t rest = index - tasks_before[t.b];
  const HeadClass& c = classes[static_cast<size_t>(rest / units)];
  t.kv_head = c.kv_head;
  t.hp = c.hp;
  t.heads = c.heads.data();
  t.num_heads = static_cast<int64_t>(c.heads.size());
  t.begin = range.first + rest % units * span;
  t.end = std::min(t.begin + span, range.last);
  return t;
}

bool BlockPhases::task(const Params& p, int64_t phase, int64_t index, BlockBackwardTask* t) const {
  t->b = sequence_of(tasks_before, index);
  const int64_t supers = ceil_div(block_count(seq_length(p, t->b), p.blocks.block_size), super);
  if (phase >= supers) return false;  // (S + phase) mod supers would repeat a pair
  const int64_t rest = index - tasks_before[t->b];
  t->kv_head = rest / supers;
  t->query_super = rest % supers;
  t->key_super = (t->query_super + phase) % supers;
  return true;
}

namespace {

BlockPhases block_phases(const Params& p, const TileShape& shape) {
  BlockPhases phases;
  const int64_t size = p.blocks.block_size;
  // Super-blocks of up to 4096 positions: a packed key tile serves every kept query tile of
  // the query super-block, a packed query tile every kept key tile of the key super-block, so
  // larger ones pack and scatter less, the more so at low density (with 256 positions packing
  // took ~30% of a dense backward; 4096 against 1024 measured 10-40% faster backward from 20%
  // to 100% density: bench/NOTES.md). Halved while a phase would hold fewer than 2 tasks per
  // thread (tasks of a phase own disjoint rows).
  const int64_t threads = thread_count(p.num_threads);
  auto tasks_per_phase = [&](int64_t super) {
    int64_t tasks = 0;
    for (int64_t b = 0; b < p.batch; ++b) {
      tasks += ceil_div(block_count(seq_length(p, b), size), super) * p.heads_kv;
    }
    return tasks;
  };
  int64_t positions = 4096;
  while (positions > 1024 &&
         tasks_per_phase(std::max<int64_t>(1, positions / size)) < 2 * threads) {
    positions /= 2;
  }
  phases.super = std::max<int64_t>(1, positions / size);
  phases.key_tiles =
      std::min(shape.bwd_block_key_tiles, phases.super * ceil_div(size, shape.bwd_key_tile));
  phases.tasks_before.assign(static_cast<size_t>(p.batch + 1), 0);
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t supers = ceil_div(block_count(seq_length(p, b), size), phases.super);
    phases.most_supers = std::max(phases.most_supers, supers);
    phases.tasks_before[b + 1] = phases.tasks_before[b] + supers * p.heads_kv;
  }
  return phases;
}

}  // namespace

BackwardPlan plan_backward(const Params& p) {
  BackwardPlan plan;
  plan.shape = tile_shape();
  plan.tokens = p.cu_seqlens ? p.total_tokens : p.batch * p.seqlen;
  plan.key_tokens = p.cu_seqlens ? p.total_tokens : p.batch * key_length(p, 0);
  plan.padded_head_dim = round_up(p.head_dim, plan.shape.lanes);
  plan.dq_shadow = p.dtype != DType::f32 || plan.padded_head_dim != p.head_dim;
  plan.dkv_shadow = p.dtype != DType::f32;
  // (A windowed problem sees only some keys: its delta must come from the caller's out.)
  plan.delta_pre_pass = p.dtype != DType::f32 && !windowed(p);
  if (plan.delta_pre_pass) plan.pre_pass = plan_forward(p);
  int64_t most_tasks = 1;
  for (int k = 0; k < p.num_patterns; ++k) {
    BackwardPass pass;
    for (int64_t head = 0; head < p.heads; ++head) {
      if (p.mode == Mode::head_groups && head_group_of(head, p.heads, p.num_patterns) != k) {
        continue;
      }
      const HeadPattern hp = head_pattern(p, head, p.mode == Mode::head_groups ? 0 : k);
      const int64_t kv_head = kv_head_of(p, head);
      auto same = [&](const HeadClass& c) {
        return c.kv_head == kv_head && c.hp.offset == hp.offset;
      };
      auto it = std::find_if(pass.classes.begin(), pass.classes.end(), same);
      if (it == pass.classes.end()) {
        pass.classes.push_back({kv_head, hp, {}});
        it = pass.classes.end() - 1;
      }
      it->heads.push_back(head);
    }
    if (pass.classes.empty()) continue;
    // Tasks of at least ~1024 positions keep the per-task overhead small for short segments.
    const int64_t w = p.patterns[k].segment;
    pass.span = w * std::max<int64_t>(1, ceil_div(1024, w));
    pass.tasks_before.assign(static_cast<size_t>(p.batch + 1), 0);
    const auto classes = static_cast<int64_t>(pass.classes.size());
    for (int64_t b = 0; b < p.batch; ++b) {
      const Range range = backward_range(p, b, w);
      pass.tasks_before[b + 1] =
          pass.tasks_before[b] + ceil_div(range.last - range.first, pass.span) * classes;
    }
    most_tasks = std::max(most_tasks, pass.tasks());
    plan.passes.push_back(std::move(pass));
  }
  if (has_block_patterns(p)) {
    plan.block_phases = block_phases(p, plan.shape);
    most_tasks = std::max(most_tasks, plan.block_phases.tasks());
  }
  plan.threads = static_cast<int>(std::clamp<int64_t>(thread_count(p.num_threads), 1, most_tasks));
  return plan;
}

BackwardBuffers BackwardPlan::carve(const Params& p, Arena& arena) const {
  const int64_t dim = p.head_dim, dim_v = p.head_dim_v;
  const int64_t kt = shape.bwd_key_tile, qt = shape.bwd_query_tile;
  const int64_t group = std::max(shape.bwd_key_tiles_per_group, block_phases.key_tiles);
  BackwardBuffers b;
  b.k_t = arena.floats(group * dim * kt);
  b.v_t = arena.floats(group * dim_v * kt);
  b.k_rows = arena.floats(group * kt * padded_head_dim);
  b.dk_t = arena.floats(group * dim * kt);
  b.dv_t = arena.floats(group * dim_v * kt);
  b.q_rows = arena.floats(qt * dim);
  b.do_rows = arena.floats(qt * dim_v);
  b.probs = arena.floats(qt * kt);
  b.dscores = arena.floats(qt * kt);
  b.lse2 = arena.floats(qt);
  b.delta = arena.floats(qt);
  b.stage = arena.floats(kt * std::max(padded_head_dim, dim_v));
  return b;
}

float* BackwardPlan::carve_accumulators(const Params& p, Arena& arena, BackwardJob* job) const {
  auto shadow = [&](int64_t rows, int64_t count, int64_t heads, int64_t dim) {
    Tensor t;
    t.head_stride = dim;
    t.row_stride = heads * dim;
    t.batch_stride = rows * t.row_stride;
    t.data = arena.floats(count * heads * dim);
    return t;
  };
  auto in_place = [](const Tensor& t) { return t; };
  const int64_t key_rows = key_length(p, 0);  // (varlen: the packed tokens have no batch stride)
  job->dq = dq_shadow ? shadow(p.seqlen, tokens, p.heads, padded_head_dim) : in_place(p.dq);
  job->dk = dkv_shadow ? shadow(key_rows, key_tokens, p.heads_kv, p.head_dim) : in_place(p.dk);
  job->dv = dkv_shadow ? shadow(key_rows, key_tokens, p.heads_kv, p.head_dim_v) : in_place(p.dv);
  job->padded_head_dim = padded_head_dim;
  float* delta = arena.floats(tokens * p.heads);
  job->delta = delta;
  return delta;
}

int64_t BackwardPlan::workspace_bytes(const Params& p) const {
  Arena arena(nullptr);
  BackwardJob job;
  carve_accumulators(p, arena, &job);
  const int64_t mark = arena.mark();
  for (int t = 0; t < threads; ++t) carve(p, arena);
  const int64_t pass_bytes = arena.bytes();
  arena.rewind(mark);
  if (delta_pre_pass) {
    for (int t = 0; t < pre_pass.threads; ++t) pre_pass.carve(p, arena);
  }
  return std::max(pass_bytes, arena.bytes());
}

}  // namespace dilated::cpu_fast
