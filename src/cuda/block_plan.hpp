// The block pass of the CUDA backend (host-only, no CUDA headers): block patterns (docs/design.md
// 1.1) become a [B, head classes, NB, NB] byte matrix of multiplicities in the workspace, built
// on the device (topk from block means of q and k), which the block attention kernels scan with
// warp ballots (query-block rows for forward and dq, key-block columns for dk/dv).
#pragma once

#include <cstdint>

#include "cuda/launch_plan.hpp"
#include "dilated/params.hpp"

namespace dilated::cuda {

// topk ranks a query block's candidates with their fp64 scores in shared memory.
inline constexpr int64_t kMaxTopkBlocks = 16384;
// The multiplicity matrix is quadratic in the blocks: beyond this the backend declines.
inline constexpr int64_t kMaxBlockMultBytes = int64_t{4} << 30;

// Query heads share one multiplicity matrix unless a pattern depends on the head (random, topk,
// a per-head mask): then each head has its own.
int64_t block_head_classes(const Params& p);
int64_t block_mult_bytes(const Params& p);
bool needs_block_means_on_device(const Params& p);
// Empty when the block pass runs p; otherwise why not.
const char* block_pass_unsupported(const Params& p);

struct BlockPass {
  uint8_t* mult = nullptr;  // mult[((b * head_classes + class) * nb + I) * nb + J]
  int64_t nb = 0;           // blocks of the longest sequence (row stride of mult)
  int64_t head_classes = 1;
  int64_t block = 1;
  double* means_q = nullptr;  // topk: [B, H, nb, D]
  double* means_k = nullptr;  // topk: [B, Hkv, nb, D]
  // Token grid: position t is row order[t] of every row-indexed buffer (PassInfo::order).
  const int64_t* order = nullptr;

  // Forward, as PassInfo: out_acc null -> write out and lse directly, else merge.
  Tensor out_acc;
  float* lse = nullptr;
  // The block pass is the forward's only pass and writes every row, a row that sees no key as
  // zeros and lse -inf, so that nothing is cleared before it (set by the forward's launcher).
  bool writes_every_row = false;
  // Backward, as PassInfo.
  const float* delta = nullptr;
  Tensor dq_acc, dk_acc, dv_acc;
};

BlockPass make_block_pass(const Params& p, const WorkspaceLayout& w);

}  // namespace dilated::cuda
