// Synchronisation between the warps of a Hopper CTA that do different jobs: shared-memory
// mbarriers (a producer fills a stage, consumers release it) and named barriers over a subset
// of the CTA's warps.
#pragma once

#include <cstdint>

namespace dilated::cuda::hopper {

__device__ __forceinline__ void mbarrier_init(uint32_t bar, int arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
}
// Arrive with release semantics: this thread's earlier writes are visible to threads that
// see the phase complete.
__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Arrives on the barrier once all of this thread's earlier cp.async copies have landed (the
// barrier's expected count includes this arrival: .noinc).
__device__ __forceinline__ void cp_async_mbarrier_arrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// Waits until the phase with this parity has completed (acquire).
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// Barrier `id` (1-15; 0 is __syncthreads) over `threads` threads, a multiple of 32.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Barrier `id` over `threads` threads that also answers whether `value` holds on all of them.
__device__ __forceinline__ bool named_barrier_all(int id, int threads, bool value) {
  uint32_t all;
  asm volatile(
      "{\n"
      ".reg .pred mine, every;\n"
      "setp.ne.u32 mine, %1, 0;\n"
      "bar.red.and.pred every, %2, %3, mine;\n"
      "selp.u32 %0, 1, 0, every;\n"
      "}\n"
      : "=r"(all)
      : "r"(static_cast<uint32_t>(value)), "r"(id), "r"(threads)
      : "memory");
  return all != 0;
}

// Arrives at barrier `id` without waiting (the waiting side calls named_barrier_sync with the
// same thread count).
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

}  // namespace dilated::cuda::hopper
