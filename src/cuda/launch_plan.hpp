// How a problem becomes CUDA launches (host-only, no CUDA headers): the passes, where each
// pass writes (directly into the outputs, or merged/accumulated in fp32), and the workspace.
// Block patterns add one more pass after the dilated ones (block_plan.hpp); with a token grid
// the kernels map curve positions to rows through the device order (PassInfo::order).
#pragma once

#include <cstdint>

#include "core/pattern_math.hpp"
#include "dilated/params.hpp"

namespace dilated::cuda {

// One launch covers one pass: in longnet pass k runs pattern k for every head; in head_groups
// pass k runs group k's heads on pattern k. Passes run one after another on the stream, so
// later passes may read what earlier ones wrote.
struct PassInfo {
  int32_t k = 0;
  int64_t head_begin = 0;
  int64_t head_count = 0;
  // Query-outer kernels (forward, dq): blockIdx.x = (segment - first_segment) *
  // tiles_per_segment + tile, over the segments the query rows hold (of the longest sequence).
  int64_t first_segment = 0;
  int64_t segments = 0;
  int64_t tiles_per_segment = 0;
  // Key-outer kernels (dk/dv): the same over the segments the key rows hold. Without a window
  // (Params::window) both are the sequence's segments.
  int64_t key_first_segment = 0;
  int64_t key_segments = 0;
  int64_t key_tiles_per_segment = 0;
  int64_t tile_rows = 0;  // selected rows per tile
  // The pattern of the pass's first head; pattern_shared: every head of the pass sees exactly
  // this one (head_groups always; longnet where every head has the same offset), so kernels read
  // it as a constant instead of deriving it from the head (a chain of dependent loads and
  // divisions in each CTA's setup). Segment and dilation are the pass's in any case.
  HeadPattern pattern{};
  bool pattern_shared = false;
  // Token grid (docs/design.md 1.2): curve position t of a sequence is row order[t] of every
  // row-indexed buffer (device memory, [seqlen]); null: no grid.
  const int64_t* order = nullptr;

  // Forward: out_acc.data null -> write out (and lse, if any) directly; otherwise merge this
  // pass into the running fp32 (out_acc, lse) with the lse rule, and in the converting pass
  // write the merged row to out.
  Tensor out_acc;
  float* lse = nullptr;

  // Backward: delta = rowsum(dout * out), laid out like lse. A gradient whose *_acc.data is
  // null is written directly in the output dtype; otherwise added to the fp32 accumulator, or,
  // in the converting pass (the last, see converting_pass), added to what the accumulator holds
  // and written in the output dtype.
  const float* delta = nullptr;
  Tensor dq_acc, dk_acc, dv_acc;
  bool converts = false;

  // Whether the launcher cleared the fp32 accumulators (out_acc, lse, dq/dk/dv_acc) before the
  // first pass. Launches with a converting pass skip the clearing: there a row's accumulator
  // holds a value only if a pass in earlier_passes (bit k: pattern k) selected it, and every
  // other row is stored, not added to (accumulator_holds).
  bool accumulators_cleared = true;
  uint32_t earlier_passes = 0;
  // Hopper kernels: let this launch start on the SMs the previous launch's last wave leaves
  // idle (programmatic dependent launch). Only where this launch reads nothing the previous
  // launches of the same call write; it waits for them before its own writes.
  bool overlaps_previous_launch = false;
};

// Where the workspace's pieces lie (byte offsets; -1: not needed) and its size.
struct WorkspaceLayout {
  int64_t out_acc = -1;  // fp32 [tokens, H, Dv], longnet with several patterns, 16-bit dtype
  int64_t lse = -1;      // fp32 lse when the caller passed none but passes must merge
  int64_t delta = -1;    // fp32, backward
  int64_t dq_acc = -1;   // fp32 [tokens, H, D]
  int64_t dk_acc = -1;   // fp32 [tokens, Hkv, D]
  int64_t dv_acc = -1;   // fp32 [tokens, Hkv, Dv]
  // Block patterns (block_lists.hpp): key-block multiplicities and topk's block means.
  int64_t block_mult = -1;     // uint8 [B, head classes, NB, NB]
  int64_t block_means_q = -1;  // fp64 [B, H, NB, D]
  int64_t block_means_k = -1;  // fp64 [B, Hkv, NB, D]
  int64_t bytes = 0;
};

int pass_count(const Params& p);
bool forward_merges(const Params& p);
bool backward_accumulates_dq(const Params& p);
bool backward_accumulates_dkdv(const Params& p);
// The pass that can run last and write every row of out (forward) or of dq, dk and dv
// (backward) in the output dtype from the fp32 accumulators (saving the conversion passes), or
// -1. It must write each of those rows exactly once: dilation 1 (all rows of all heads, each
// seeing at least one key), longnet (every head in every pass), one query head per kv head (the
// dk/dv kernels store once per query head), no window, no block pass after it, 16-bit outputs.
// Only the tensor-core kernels take it (launch_forward, launch_backward).
int converting_pass(const Params& p);
// The pass that runs i-th of pass_count(p): in order, except that `converting` (if >= 0) is last.
int pass_in_order(const Params& p, int i, int converting);
WorkspaceLayout forward_workspace(const Params& p);
WorkspaceLayout backward_workspace(const Params& p);

// Pass k's heads and launch geometry for tiles of `tile_rows` selected rows.
PassInfo make_pass(const Params& p, int k, int64_t tile_rows);

// A contiguous fp32 [tokens, heads, dim] view of workspace memory at `offset`.
Tensor fp32_accumulator(const Params& p, int64_t offset, int64_t heads, int64_t dim);

// `p` as the key-side tensors (k, v, dk, dv) see it: seqlen = the key rows per sequence, so
// that token counts and token offsets of row-wise kernels address key rows. `p` itself
// without a window.
Params key_side(const Params& p);

}  // namespace dilated::cuda
