// Host heap accounting for `dilated bench`'s peak memory: the CLI binary replaces malloc and
// its family (host_memory.cpp), so every allocation of the library, the backends' threads and
// the C++ runtime is counted at its usable size. Memory mapped without malloc (thread stacks,
// a GPU driver's own mappings) is not seen.
#pragma once

#include <cstdint>

namespace dilated::cli {

// Bytes of heap currently allocated through malloc and friends.
int64_t host_heap_bytes();
// Highest host_heap_bytes() since the last reset_host_heap_peak().
int64_t host_heap_peak();
void reset_host_heap_peak();
// False where the replacement is compiled out (sanitizer builds): the figures are then 0.
bool host_heap_tracked();

}  // namespace dilated::cli
