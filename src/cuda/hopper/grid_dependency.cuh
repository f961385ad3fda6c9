// Programmatic dependent launch (compute capability 9.0). A pass kernel lets the next launch of
// the same call start as soon as all of its own CTAs are running, so the next pass's CTAs take
// the SMs its last wave leaves idle; it waits for the launches before it only where it writes
// what they may also write (out, lse, the fp32 accumulators). Both instructions are no-ops in a
// kernel launched without the attribute (PassInfo::overlaps_previous_launch).
#pragma once

namespace dilated::cuda::hopper {

__device__ __forceinline__ void let_next_launch_start() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

// Returns once the previous launches have finished and their writes are visible.
__device__ __forceinline__ void wait_for_previous_launches() {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
}

}  // namespace dilated::cuda::hopper
