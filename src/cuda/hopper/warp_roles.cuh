// The CTA shape every Hopper kernel shares: two consumer warpgroups that run the matrix
// products and one producer warpgroup that streams tiles into shared memory, with the register
// file moved from the producer to the consumers (setmaxnreg).
#pragma once

#include "cuda/hopper/barriers.cuh"

namespace dilated::cuda::hopper {

inline constexpr int kConsumerThreads = 256;             // two warpgroups
inline constexpr int kThreads = kConsumerThreads + 128;  // and the producer warpgroup
// Registers per thread after the split: the producer only computes addresses. The CTA holds
// 168 x 384 registers (the launch's allocation): what the producer gives up (128 x (168 - 40))
// is exactly what the consumers take (256 x (232 - 168)); a split that asks for more makes
// setmaxnreg.inc wait forever (48 / 232 hung).
inline constexpr int kProducerRegisters = 40;
inline constexpr int kConsumerRegisters = 232;

__device__ __forceinline__ bool is_producer() {
  return threadIdx.x >= kConsumerThreads;
}
// A warpgroup's registers per thread after the split (setmaxnreg): what one side gives up the
// other may take, no more.
template <int Registers>
__device__ __forceinline__ void shrink_registers_to() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(Registers));
}
template <int Registers>
__device__ __forceinline__ void grow_registers_to() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(Registers));
}
__device__ __forceinline__ void become_producer() {
  shrink_registers_to<kProducerRegisters>();
}
__device__ __forceinline__ void become_consumer() {
  grow_registers_to<kConsumerRegisters>();
}

// The two consumer warpgroups take turns issuing their products (FlashAttention-3's
// ping-pong): one warpgroup's products run while the other computes on its accumulators, whose
// exponentials would otherwise compete with them. Warpgroups that consume the same stages
// would otherwise run in step, both waiting for products at once. Named barriers 2 and 3 are
// warpgroup 0's and 1's turn; both warpgroups must take the same number of turns.
struct IssueTurns {
  int warpgroup;
  __device__ __forceinline__ void begin() const {  // warpgroup 0 goes first
    if (warpgroup == 1) pass();
  }
  __device__ __forceinline__ void wait() const {
    named_barrier_sync(2 + warpgroup, kConsumerThreads);
  }
  __device__ __forceinline__ void pass() const {
    named_barrier_arrive(3 - warpgroup, kConsumerThreads);
  }
  // Takes warpgroup 1's last turn, so that no arrival is left pending at exit.
  __device__ __forceinline__ void end() const {
    if (warpgroup == 0) wait();
  }
};

}  // namespace dilated::cuda::hopper
