// Per-CTA clock stamps of the Hopper forwards (dense and block), for a diagnosis build only
// (-DDILATED_HOPPER_TIMELINE; bench/gpu/forward_timeline.sh, block_forward_timeline.sh): where a
// CTA's fixed cost goes. Each file that stamps has its own copy of the stamps (forward.cu and
// block_forward.cu read theirs). Without the macro, stamp() is empty.
#pragma once

namespace dilated::cuda::hopper {

inline constexpr int kTimelineSlots = 14;
inline constexpr int kTimelineCtas = 1 << 14;

#ifdef DILATED_HOPPER_TIMELINE
static __device__ unsigned long long forward_timeline[kTimelineCtas * kTimelineSlots];
// Writes `value` to the CTA's slot (CTAs past kTimelineCtas keep none).
__device__ __forceinline__ void record_slot(int slot, unsigned long long value) {
  const unsigned cta = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  if (cta < kTimelineCtas) forward_timeline[cta * kTimelineSlots + slot] = value;
}
// Slot 0 holds the SM id; the others clock64() at the caller's point.
__device__ __forceinline__ void stamp(int slot) {
  unsigned long long value = clock64();
  if (slot == 0) {
    unsigned sm;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    value = sm;
  }
  record_slot(slot, value);
}
// Slot 13: cycles summed over spans (the block forward's waits for full stages in its loop); in a
// persistent dense forward CTA, the clock at its last tile's start.
struct SpanClock {
  unsigned long long total = 0, since = 0;
  __device__ __forceinline__ void begin() { since = clock64(); }
  __device__ __forceinline__ void end() { total += clock64() - since; }
  __device__ __forceinline__ void record(int slot) const { record_slot(slot, total); }
};
// This file's stamps of its last launches (CTA-major, kTimelineSlots each) into host memory;
// returns how many CTAs' stamps it copied.
static inline int copy_timeline_to_host(unsigned long long* host, int ctas) {
  const int count = ctas < kTimelineCtas ? ctas : kTimelineCtas;
  cudaMemcpyFromSymbol(host, forward_timeline, sizeof(unsigned long long) * count * kTimelineSlots);
  return count;
}
#else
__device__ __forceinline__ void stamp(int) {}
struct SpanClock {
  __device__ __forceinline__ void begin() {}
  __device__ __forceinline__ void end() {}
  __device__ __forceinline__ void record(int) const {}
};
#endif

}  // namespace dilated::cuda::hopper
