// How fast an H100 absorbs fp32 additions into global memory the way a fused dq would make them
// (docs/design.md 3d: dq accumulated inside the dk/dv kernel): every CTA adds tiles of 64 rows x
// 128 fp32 values into an accumulator of `rows` rows, rows chosen so that several CTAs hit the
// same rows over time. Three ways, next to plain stores of the same bytes:
//   red.v2  every thread, red.global.add.v2.f32 from registers (2 values per instruction)
//   red.v4  the same with 4 values per instruction
//   bulk    the tile staged in shared memory, added by the copy engine row by row
//           (cp.reduce.async.bulk .add.f32, 512 bytes each, one issuing thread)
// Prints one JSON line per way: GB/s of fp32 added. The fused dq breaks even on configuration P
// only if the additions run at ~1 TB/s beside the kernel (bench/NOTES.md).
// Usage: reduction_throughput [--rows 32768] [--tiles-per-cta 64] [--ctas 264]
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "bench_device.cuh"

namespace {

constexpr int kRows = 64, kCols = 128, kThreads = 256;

enum Way { kStore = 0, kRedV2 = 1, kRedV4 = 2, kBulk = 3 };

template <int W>
__global__ void __launch_bounds__(kThreads) add_tiles(float* acc, int64_t rows, int tiles) {
#if __CUDA_ARCH__ >= 900  // vector red and bulk reductions exist from sm_90 on; main checks
  __shared__ __align__(128) float stage[kRows * kCols];
  const int t = threadIdx.x;
  for (int i = 0; i < tiles; ++i) {
    // Rows spread over the accumulator, several CTAs hitting the same rows over time.
    const int64_t row = ((int64_t{blockIdx.x} * 7919 + i * 131) * kRows) % (rows - kRows + 1);
    float* dst = acc + row * kCols;
    const float x = 1.0f + 1e-3f * static_cast<float>(i);
    if constexpr (W == kStore || W == kRedV4) {
      for (int e = t * 4; e < kRows * kCols; e += kThreads * 4) {  // 8 x 16 bytes per thread
        if constexpr (W == kStore) {
          *reinterpret_cast<float4*>(dst + e) = make_float4(x, x, x, x);
        } else {
          asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(dst + e), "f"(x),
                       "f"(x), "f"(x), "f"(x)
                       : "memory");
        }
      }
    } else if constexpr (W == kRedV2) {
      for (int e = t * 2; e < kRows * kCols; e += kThreads * 2) {
        asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" ::"l"(dst + e), "f"(x), "f"(x)
                     : "memory");
      }
    } else {
      for (int e = t; e < kRows * kCols; e += kThreads) stage[e] = x;
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      __syncthreads();
      if (t == 0) {
        for (int r = 0; r < kRows; ++r) {
          const uint32_t src = static_cast<uint32_t>(__cvta_generic_to_shared(stage + r * kCols));
          asm volatile(
              "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;" ::"l"(
                  dst + r * kCols),
              "r"(src), "r"(kCols * 4)
              : "memory");
        }
        asm volatile("cp.async.bulk.commit_group;" ::: "memory");
        asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
      }
      __syncthreads();
    }
  }
#endif
}

template <int W>
double measure(float* acc, int64_t rows, int tiles, int ctas) {
  add_tiles<W><<<ctas, kThreads>>>(acc, rows, tiles);  // warm-up
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  CHECK_CUDA(cudaEventRecord(start));
  for (int rep = 0; rep < 5; ++rep) add_tiles<W><<<ctas, kThreads>>>(acc, rows, tiles);
  CHECK_CUDA(cudaEventRecord(stop));
  CHECK_CUDA(cudaEventSynchronize(stop));
  CHECK_CUDA(cudaGetLastError());
  float ms = 0;
  CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
  const double bytes = 5.0 * ctas * tiles * kRows * kCols * 4.0;
  return bytes / (ms * 1e-3) * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 32768;
  int tiles = 64, ctas = 264;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--rows")
      rows = std::atoll(argv[i + 1]);
    else if (a == "--tiles-per-cta")
      tiles = std::atoi(argv[i + 1]);
    else if (a == "--ctas")
      ctas = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown argument %s (--rows, --tiles-per-cta, --ctas)\n", argv[i]);
      return 2;
    }
  }
  if (rows < kRows || tiles < 1 || ctas < 1) {
    std::fprintf(stderr, "--rows must be >= %d, --tiles-per-cta and --ctas >= 1\n", kRows);
    return 2;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  if (prop.major < 9) {
    std::fprintf(stderr, "%s: compute capability %d.%d; these reductions need 9.0 or newer\n",
                 prop.name, prop.major, prop.minor);
    return 1;
  }
  float* acc = nullptr;
  CHECK_CUDA(cudaMalloc(&acc, static_cast<size_t>(rows) * kCols * 4));
  CHECK_CUDA(cudaMemset(acc, 0, static_cast<size_t>(rows) * kCols * 4));
  const char* names[] = {"store", "red.v2", "red.v4", "bulk"};
  const double rates[] = {
      measure<kStore>(acc, rows, tiles, ctas), measure<kRedV2>(acc, rows, tiles, ctas),
      measure<kRedV4>(acc, rows, tiles, ctas), measure<kBulk>(acc, rows, tiles, ctas)};
  for (int w = 0; w < 4; ++w) {
    std::printf(
        "{\"way\": \"%s\", \"gpu\": \"%s\", \"rows\": %lld, \"ctas\": %d, \"tiles_per_cta\": %d, "
        "\"gb_per_s\": %.1f}\n",
        names[w], prop.name, static_cast<long long>(rows), ctas, tiles, rates[w]);
  }
  CHECK_CUDA(cudaFree(acc));
  return 0;
}
