// The CPU's fp32 FMA ceiling, measured: every bench reports efficiency against it.
#pragma once

namespace dilated::cpu {

// GFLOP/s of a register-only loop of independent vector FMAs (2 FLOPs each) on `threads`
// threads (0: all hardware threads) for about `seconds`, using the widest vectors this CPU runs.
double measure_fma_gflops(int threads, double seconds);

// Name of the SIMD target Highway picked on this CPU (e.g. "AVX3").
const char* simd_target_name();

}  // namespace dilated::cpu
