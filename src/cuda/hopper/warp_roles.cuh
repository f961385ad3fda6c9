// The CTA shapes the Hopper kernels share: consumer warpgroups of 64 rows that run the matrix
// products and one producer warpgroup that streams tiles into shared memory, with the register
// file moved from the producer to the consumers (setmaxnreg).
#pragma once

#include "cuda/hopper/barriers.cuh"

namespace dilated::cuda::hopper {

// Groups consumer warpgroups (64 rows each: query rows, keys for dk/dv), a producer warpgroup,
// CtasPerSm CTAs per SM, and the register split. The launch's allocation per thread is what the
// SM's 64K registers leave (a multiple of 8); what the producer gives up is at least what the
// consumers take (a split that asks for more makes setmaxnreg.inc wait forever: 48 / 232 hung).
// The producer only computes addresses: 40 registers (its 64-bit row indices spilled), 32 where
// three consumer warpgroups need 160 (the split FlashAttention-3 uses for that shape), 24 where
// three CTAs of one consumer warpgroup share an SM (80 registers a thread at launch).
template <int Groups, int CtasPerSm = 1>
struct CtaShape {
  static constexpr int kGroups = Groups;
  static constexpr int kRows = 64 * Groups;
  static constexpr int kConsumerThreads = 128 * Groups;
  static constexpr int kThreads = kConsumerThreads + 128;
  static constexpr int kCtasPerSm = CtasPerSm;
  static constexpr int kLaunchRegisters = 65536 / (kThreads * CtasPerSm) / 8 * 8;
  static constexpr int kProducerRegisters = Groups == 3 ? 32 : (CtasPerSm == 3 ? 24 : 40);
  static constexpr int kConsumerRegisters =
      (kLaunchRegisters * kThreads - 128 * kProducerRegisters) / kConsumerThreads / 8 * 8;
  static_assert(kConsumerRegisters <= 255 - 255 % 8, "setmaxnreg's range");
};

// The dense kernels' shape (forward at D = 128, backward): two consumer warpgroups, 232 registers
// each (the forward at D = 64 takes three: forward_kernel.cuh).
using DenseShape = CtaShape<2>;
static_assert(DenseShape::kConsumerRegisters == 232, "the dense kernels' register budget");
inline constexpr int kConsumerThreads = DenseShape::kConsumerThreads;
inline constexpr int kThreads = DenseShape::kThreads;

// Named barriers: 1 is every consumer thread; 2 .. 1 + warpgroups the issue turns (IssueTurns);
// from kOutputBarrier one per warpgroup for its output rows (output_rows.cuh).
inline constexpr int kOutputBarrier = 5;

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
  shrink_registers_to<DenseShape::kProducerRegisters>();
}
__device__ __forceinline__ void become_consumer() {
  grow_registers_to<DenseShape::kConsumerRegisters>();
}

// The consumer warpgroups take turns issuing their products (FlashAttention-3's ping-pong), in
// a round 0, 1, .., Groups - 1: one warpgroup's products run while the others compute on their
// accumulators, whose exponentials would otherwise compete with them. Warpgroups that consume
// the same stages would otherwise run in step, all waiting for products at once. Named barrier
// 2 + g is warpgroup g's turn, passed on by its predecessor; every warpgroup must take the same
// number of turns.
template <int Groups = 2>
struct IssueTurns {
  static_assert(2 + Groups <= kOutputBarrier, "the turns' barriers");
  int warpgroup;
  __device__ __forceinline__ void begin() const {  // warpgroup 0 goes first
    if (warpgroup == Groups - 1) pass();
  }
  __device__ __forceinline__ void wait() const { named_barrier_sync(2 + warpgroup, 256); }
  __device__ __forceinline__ void pass() const {
    named_barrier_arrive(2 + (warpgroup + 1) % Groups, 256);
  }
  // Takes the last warpgroup's last turn, so that no arrival is left pending at exit.
  __device__ __forceinline__ void end() const {
    if (warpgroup == 0) wait();
  }
};

}  // namespace dilated::cuda::hopper
