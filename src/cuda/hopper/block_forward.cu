// Launches of the Hopper block forward (block_forward_kernel.cuh), per element type and head dim.
#include <cstdlib>
#include <cstring>

#include "cuda/hopper/block_forward_kernel.cuh"
#include "cuda/hopper/block_shape_choice.hpp"
#include "cuda/hopper/hopper_launch.hpp"
#include "cuda/hopper/instances.hpp"
#include "cuda/hopper/tensor_maps.hpp"
#include "cuda/kernel_launch.hpp"

namespace dilated::cuda::hopper {

const char* block_forward_unsupported(const Params& p, int sm) {
  const char* why = forward_unsupported(p, sm);
  if (*why) return why;
  if (p.blocks.block_size % kBlockKeys != 0) {
    return "the Hopper block forward takes blocks of a multiple of 64 positions";
  }
  const char* env = std::getenv("DILATED_CUDA_HOPPER_BLOCK");
  if (env && std::strcmp(env, "0") == 0) return "DILATED_CUDA_HOPPER_BLOCK=0";
  return "";
}

int forced_block_groups() {
  static const int forced = [] {
    const char* env = std::getenv("DILATED_CUDA_HOPPER_BLOCK_SHARED");
    return env && (std::strcmp(env, "0") == 0 || std::strcmp(env, "1") == 0) ? env[0] - '0' : -1;
  }();
  return forced;
}

namespace {

// Whether neighbouring query blocks keep nearly the same key blocks whatever the sizes: local
// and global patterns only (two rows of local(W) differ in 2 of 2W + 2 blocks).
bool neighbours_share_keys(const Params& p) {
  for (int i = 0; i < p.blocks.num_patterns; ++i) {
    const BlockKind kind = p.blocks.patterns[i].kind;
    if (kind != BlockKind::local && kind != BlockKind::global) return false;
  }
  return true;
}

// Two warpgroups per CTA sharing each stage: with blocks of a multiple of 128 (one query block
// per CTA), or at D = 128 where neighbouring blocks share their keys (two query blocks per CTA,
// streaming the blocks either keeps). At D = 64 two query blocks per CTA measured no faster than
// one warpgroup per CTA (local patterns, blocks of 64): the producer walks both rows for tiles
// that take half the time of D = 128's (bench/NOTES.md, eighth session). forced_block_groups may
// override the choice.
bool shared_stages(const Params& p, const BlockPass& bp) {
  const int forced = forced_block_groups();
  if (forced == 0) return false;
  const bool one_block = bp.block % BlockShape<2>::kRows == 0;
  if (forced == 1) return one_block || neighbours_share_keys(p);
  return one_block || (p.head_dim == 128 && neighbours_share_keys(p));
}

// One warpgroup per CTA: three CTAs to an SM at D = 64, where three consumer warpgroups keep the
// tensor pipe busier than two, as in the dense forward (forward_groups); two at D = 128.
// DILATED_CUDA_HOPPER_BLOCK_CTAS=2 keeps two at D = 64 (a benchmark knob).
bool three_ctas_per_sm() {
  const char* env = std::getenv("DILATED_CUDA_HOPPER_BLOCK_CTAS");
  return !(env && std::strcmp(env, "2") == 0);
}

template <typename Elem, int D, int Groups, int CtasPerSm = BlockShape<Groups>::kCtasPerSm>
void launch(const Params& p, const BlockPass& bp, cudaStream_t stream) {
  using Shape = BlockShape<Groups, CtasPerSm>;
  const auto kernel = block_forward_kernel<Elem, D, Groups, CtasPerSm>;
  const int smem = BlockForwardSmem<D, Groups, CtasPerSm>::kBytes;
  // Above 48 KiB a kernel must opt in; set on every launch so no launch depends on another.
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const unsigned tiles = blocks_for(p.seqlen, Shape::kRows);
  const unsigned heads = static_cast<unsigned>(p.heads);
  // Under local (and global) patterns the CTAs that run at once are better spread over the
  // heads: in query-tile order they are one head's neighbouring query blocks, which all read the
  // same few key blocks at the same time; heads first measured ~2% faster under local patterns
  // (-3.5% to +5.6% by density; global ones were not measured). Random patterns keep query-tile
  // order: spread over the heads, their K/V working set outgrew the L2 (up to 5% slower at
  // D = 128; bench/NOTES.md, thirteenth session). gridDim.y holds at most 65535 tiles.
  const bool heads_fastest = neighbours_share_keys(p) && tiles <= 65535;
  const dim3 grid = heads_fastest ? dim3(heads, tiles, static_cast<unsigned>(p.batch))
                                  : dim3(tiles, heads, static_cast<unsigned>(p.batch));
  kernel<<<grid, Shape::kThreads, smem, stream>>>(
      p, bp, position_tensor_maps(p, bp.order, p.k, p.v, p.heads_kv, kBlockKeys, true),
      position_query_maps(p, bp.order, !bp.out_acc.data, Shape::kRows), heads_fastest);
}

}  // namespace

void block_forward(const Params& p, const BlockPass& bp, cudaStream_t stream) {
  with_instance(p, [&](auto elem, auto dim) {
    using Elem = decltype(elem);
    constexpr int D = decltype(dim)::value;
    if (shared_stages(p, bp)) return launch<Elem, D, 2>(p, bp, stream);
    if constexpr (D == 64) {
      if (three_ctas_per_sm()) return launch<Elem, D, 1, 3>(p, bp, stream);
    }
    launch<Elem, D, 1>(p, bp, stream);
  });
}

}  // namespace dilated::cuda::hopper

#ifdef DILATED_HOPPER_TIMELINE
namespace dilated::cuda::hopper {
// The stamps of the last block forward launch (this file's copy, not forward.cu's).
int read_block_forward_timeline(unsigned long long* host, int ctas) {
  return copy_timeline_to_host(host, ctas);
}
}  // namespace dilated::cuda::hopper
#endif
