// What the Hopper block kernels (forward, dq, dk/dv) share: the CTA shapes, and the notes a
// producer writes beside each stage so that the consumers need not walk the multiplicity matrix
// themselves (two dependent global reads per 64-position part, on their critical path).
#pragma once

#include "cuda/hopper/warp_roles.cuh"

namespace dilated::cuda::hopper {

inline constexpr int kBlockKeys = 64;  // positions per part of a tile, the cursors' step

// A CTA's shape (CtaShape, warp_roles.cuh): one warpgroup runs two CTAs per SM (three in the
// forward at D = 64), two run one (the launch's allocation is 128 x 256 per CTA for one group,
// 168 x 384 for two, 80 x 256 for one group three to an SM).
template <int Groups, int CtasPerSm = Groups == 1 ? 2 : 1>
using BlockShape = CtaShape<Groups, CtasPerSm>;
static_assert(BlockShape<1>::kConsumerRegisters == 216 && BlockShape<2>::kConsumerRegisters == 232,
              "the block kernels' register budgets");

// A part of a stage as the producer saw it: positions first .. end - 1 of one kept block (end ==
// 0: no part; every position is masked) and its score bias log2(multiplicity); `last` (part 0
// only): kLastTile where no stage follows, kNoTile where the stage holds nothing and ends the
// stream (for a consumer that takes every other stage and would otherwise wait forever).
inline constexpr int kLastTile = 1;
inline constexpr int kNoTile = 2;
struct alignas(16) StagedPart {
  int first;
  int end;
  float bias;
  int last;
};

// Parts first_note[0], first_note[stride], ... of a stage, read by lane 0 of the warp and handed
// to the others: the lane that releases the stage is then the one that read it, which
// compute-sanitizer's racecheck can follow (it reports reads by the other lanes, ordered by
// __syncwarp before lane 0's release, as hazards).
template <int Parts>
__device__ __forceinline__ void read_staged_parts(const StagedPart* first_note, int stride,
                                                  StagedPart (&staged)[Parts]) {
#pragma unroll
  for (int part = 0; part < Parts; ++part) {
    int4 v = make_int4(0, 0, 0, 0);
    if (threadIdx.x % 32 == 0) v = *reinterpret_cast<const int4*>(first_note + part * stride);
    staged[part] = {__shfl_sync(0xffffffffu, v.x, 0), __shfl_sync(0xffffffffu, v.y, 0),
                    __int_as_float(__shfl_sync(0xffffffffu, v.z, 0)),
                    __shfl_sync(0xffffffffu, v.w, 0)};
  }
}

}  // namespace dilated::cuda::hopper
