#include "cuda/block_plan.hpp"

#include "core/block_sparse.hpp"

namespace dilated::cuda {

int64_t block_head_classes(const Params& p) {
  for (int i = 0; i < p.blocks.num_patterns; ++i) {
    const BlockKind kind = p.blocks.patterns[i].kind;
    if (kind == BlockKind::random || kind == BlockKind::topk) return p.heads;
    if (kind == BlockKind::mask && p.blocks.mask.heads > 1) return p.heads;
  }
  return 1;
}

int64_t block_mult_bytes(const Params& p) {
  const int64_t nb = block_count(p.seqlen, p.blocks.block_size);
  return p.batch * block_head_classes(p) * nb * nb;
}

bool needs_block_means_on_device(const Params& p) {
  for (int i = 0; i < p.blocks.num_patterns; ++i) {
    if (p.blocks.patterns[i].kind == BlockKind::topk) return true;
  }
  return false;
}

const char* block_pass_unsupported(const Params& p) {
  if (!has_block_patterns(p)) return "";
  const int64_t nb = block_count(p.seqlen, p.blocks.block_size);
  // In double: batch * classes * nb * nb may overflow int64 for absurd sizes.
  const double bytes = static_cast<double>(p.batch) * static_cast<double>(block_head_classes(p)) *
                       static_cast<double>(nb) * static_cast<double>(nb);
  if (bytes > static_cast<double>(kMaxBlockMultBytes)) {
    return "block patterns: the CUDA backend keeps a batch x heads x NB x NB byte matrix of "
           "kept blocks, more than 4 GiB here: use a larger block_size";
  }
  if (needs_block_means_on_device(p) && nb > kMaxTopkBlocks) {
    return "topk block pattern: the CUDA backend ranks at most 16384 blocks per sequence: use a "
           "larger block_size";
  }
  return "";
}

BlockPass make_block_pass(const Params& p, const WorkspaceLayout& w) {
  BlockPass bp;
  char* base = static_cast<char*>(p.workspace);
  bp.mult = reinterpret_cast<uint8_t*>(base + w.block_mult);
  bp.nb = block_count(p.seqlen, p.blocks.block_size);
  bp.head_classes = block_head_classes(p);
  bp.block = p.blocks.block_size;
  if (w.block_means_q >= 0) {
    bp.means_q = reinterpret_cast<double*>(base + w.block_means_q);
    bp.means_k = reinterpret_cast<double*>(base + w.block_means_k);
  }
  return bp;
}

}  // namespace dilated::cuda
