// Hopper (sm_90a) warpgroup building blocks: the shared-memory tile layout wgmma reads, its
// matrix descriptors, and the wgmma.mma_async / fence / commit / wait instructions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/kernels/mma.cuh"

namespace dilated::cuda::hopper {

// A [Rows x Cols] tile of 16-bit elements in the canonical 128-byte-swizzle layout: the columns
// are cut into 64-wide halves (one 128-byte line per row), each half stored as its own
// [Rows x 64] block, and the 16-byte chunks of a line XORed with row % 8. wgmma reads the same
// bytes as a K-major operand (rows = M or N, columns = K) or, transposed, as an N-major one
// (rows = K, columns = N). The tile must start at a 1024-byte boundary (the swizzle repeats
// every 8 lines).
template <int Rows, int Cols>
struct GmmaTile {
  static_assert(Cols % 64 == 0 && Rows % 8 == 0, "whole 64-column halves and 8-row groups");
  static constexpr int kChunks = Cols / 8;  // 16-byte chunks per row
  static constexpr int kElements = Rows * Cols;
  static constexpr int kRowBytes = 128;          // between rows of one half
  static constexpr int kHalfBytes = Rows * 128;  // between 64-column halves
  __device__ __forceinline__ static int chunk_offset(int row, int chunk) {
    return (chunk / 8) * Rows * 64 + row * 64 + ((chunk % 8) ^ (row % 8)) * 8;
  }
};

// The first 1024-byte boundary of dynamic shared memory (GmmaTile's alignment; the kernels ask
// for 1024 bytes more than they use).
template <typename Elem>
__device__ __forceinline__ Elem* first_tile(unsigned char* smem) {
  return reinterpret_cast<Elem*>((reinterpret_cast<uintptr_t>(smem) + 1023) &
                                 ~static_cast<uintptr_t>(1023));
}

// Matrix descriptor of a 128-byte-swizzled operand at shared address `address`:
// leading and stride byte offsets as wgmma defines them for the operand's major-ness.
__device__ __forceinline__ uint64_t make_desc(uint32_t address, uint32_t leading_bytes,
                                              uint32_t stride_bytes) {
  return static_cast<uint64_t>((address & 0x3FFFF) >> 4) |
         static_cast<uint64_t>((leading_bytes >> 4) & 0x3FFF) << 16 |
         static_cast<uint64_t>((stride_bytes >> 4) & 0x3FFF) << 32 |
         static_cast<uint64_t>(1) << 62;  // layout type 1: 128-byte swizzle
}

// A descriptor moved by `bytes` (a multiple of 16): the address field holds address / 16 in its
// low 14 bits, and shared addresses stay below 256 KiB, so a plain add cannot carry out of it.
// Kernels build one descriptor per tile and step it by compile-time offsets.
__device__ __forceinline__ uint64_t desc_plus(uint64_t desc, uint32_t bytes) {
  return desc + (bytes >> 4);
}

// K-major operand (A, or B of A * B^T) in a GmmaTile<Rows, ...>: rows at 128 bytes, 8-row
// groups at 1024 (stride offset); the leading offset is unused for swizzled K-major layouts
// (16 by convention).
__device__ __forceinline__ uint64_t k_major_desc(uint32_t tile) {
  return make_desc(tile, 16, 1024);
}
// Offset of the 16-column step kk of such a tile, from row 0.
template <int Rows>
__host__ __device__ constexpr uint32_t k_major_step(int kk) {
  return (kk / 4) * Rows * 128 + (kk % 4) * 32;
}

// N-major operand B [K x N] stored as a GmmaTile<Rows = K, N>: 8-row (K) groups at 1024 bytes
// (stride offset), 64-column (N) halves at Rows * 128 (leading offset).
template <int Rows>
__device__ __forceinline__ uint64_t n_major_desc(uint32_t tile) {
  return make_desc(tile, Rows * 128, 1024);
}
// Offset of rows 16 kk .. 16 kk + 15 (the K step kk).
__host__ __device__ constexpr uint32_t n_major_step(int kk) {
  return kk * 16 * 128;
}

// Makes this thread's ordinary (and cp.async) shared-memory writes visible to the async proxy
// that wgmma reads through; the barrier after it orders them across threads.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Orders register and shared-memory accesses before the warpgroup's next wgmma.
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int Pending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(Pending) : "memory");
}
// wgmma_wait, ordered after the computation of `after`: ptxas may sink independent work below
// a wait (it does not know the wait stalls), losing the overlap of that work with the products
// still running. Storing `after` to shared memory first pins it: the store cannot pass the
// wait, and `after` needs the work done. `scratch`: 4 bytes of shared memory per thread.
template <int Pending>
__device__ __forceinline__ void wgmma_wait_after(float after, uint32_t scratch) {
  asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(scratch), "f"(after) : "memory");
  wgmma_wait<Pending>();
}
// Keeps the compiler from moving accesses of accumulators across an asynchronous product.
template <int N>
__device__ __forceinline__ void pin_accumulators(float (&d)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
  }
}

// The same for A fragments an asynchronous product reads from registers: keeps them live (and
// unchanged) until after the wait that ends the product.
template <int K>
__device__ __forceinline__ void pin_fragments(uint32_t (&a)[K][4]) {
#pragma unroll
  for (int i = 0; i < K; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(a[i][e])::"memory");
  }
}

template <typename Elem, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 8][4], uint64_t a_desc, uint64_t b_desc,
                                         int accumulate);
// Register A: accumulate 0 overwrites d.
template <typename Elem, int N>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 8][4], const uint32_t (&a)[4],
                                         uint64_t b_desc, int accumulate = 1);
template <typename Elem, int N>
__device__ __forceinline__ void wgmma_rs_bk(float (&d)[N / 8][4], const uint32_t (&a)[4],
                                            uint64_t b_desc, int accumulate = 1);

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#include "cuda/hopper/wgmma_ops.inc"
#endif

// d = A B^T over a head dim of D, both operands K-major in shared memory: A from a_desc (rows of a
// GmmaTile<ARows, D>), B the N rows of a GmmaTile<N, D> b_offset bytes past b_desc (a stage).
// D / 16 asynchronous products, not committed.
template <typename Elem, int N, int ARows, int D>
__device__ __forceinline__ void wgmma_ss_over_d(float (&d)[N / 8][4], uint64_t a_desc,
                                                uint64_t b_desc, uint32_t b_offset = 0) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    wgmma_ss<Elem, N>(d, desc_plus(a_desc, k_major_step<ARows>(kk)),
                      desc_plus(b_desc, b_offset + k_major_step<N>(kk)), kk > 0);
  }
}

// The same with A in registers (load_a_fragments): d = A B^T, B K-major in shared memory.
template <typename Elem, int N, int D>
__device__ __forceinline__ void wgmma_rs_over_d(float (&d)[N / 8][4],
                                                const uint32_t (&a)[D / 16][4], uint64_t b_desc) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    wgmma_rs_bk<Elem, N>(d, a[kk], desc_plus(b_desc, k_major_step<N>(kk)), kk > 0);
  }
}

// A warp's A fragments (mma.sync's layout, which a register-sourced wgmma reads) of rows
// row0 .. row0 + 15 of a GmmaTile at shared address `tile`, every 16-column step of D: ldmatrix's
// four 8 x 8 matrices are rows 0-7 / 8-15 by columns 0-7 / 8-15 of the step.
template <class Tile, int D>
__device__ __forceinline__ void load_a_fragments(uint32_t (&a)[D / 16][4], uint32_t tile, int row0,
                                                 int lane) {
  const int matrix = lane / 8;
  const int row = row0 + (matrix % 2) * 8 + lane % 8;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    ldmatrix_x4(a[kk], tile + 2 * Tile::chunk_offset(row, 2 * kk + matrix / 2));
  }
}

}  // namespace dilated::cuda::hopper
