// Warp-level tensor-core building blocks for sm_80+: asynchronous copies, swizzled
// shared-memory tiles, ldmatrix and mma.sync m16n8k16 with fp32 accumulation.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace dilated::cuda {

// ---- asynchronous global -> shared copies (16 bytes, zero-filled when !valid) ----

__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* gmem, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(src_bytes));
}
// The same for one 4-byte word (per-row statistics next to a tile).
__device__ __forceinline__ void cp_async_4(uint32_t dst, const void* gmem, bool valid) {
  const int src_bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending));
}

// ---- a [Rows x Cols] tile of 16-bit elements in shared memory ----
// Rows are stored whole; the 16-byte chunks of a row are XOR-swizzled so that the 8 rows an
// ldmatrix reads at one logical column land in 8 different bank groups. The swizzle of a row
// repeats every 8 rows, so a lane that walks rows in steps of 8 keeps its XOR pattern: the
// loops below split each address into a per-lane part and a compile-time part.
template <int Rows, int Cols>
struct SmemTile {
  static constexpr int kChunks = Cols / 8;  // 16-byte chunks per row
  static_assert(Cols % 32 == 0, "tile width must be a multiple of 32 elements");
  static constexpr int kRowsPerLine = kChunks >= 8 ? 1 : 8 / kChunks;  // rows per 128 bytes
  static constexpr int kSwizzleMask = (kChunks >= 8 ? 8 : kChunks) - 1;
  static constexpr int kElements = Rows * Cols;
  static constexpr int kRowBytes = Cols * 2;

  __device__ __forceinline__ static int swizzle(int row) {
    return (row / kRowsPerLine) & kSwizzleMask;
  }
  __device__ __forceinline__ static int chunk_offset(int row, int chunk) {
    return row * Cols + (chunk ^ swizzle(row)) * 8;
  }
};

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- ldmatrix (shared-memory byte addresses) ----
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// ---- mma.sync m16n8k16, fp32 accumulators ----
template <typename Elem>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1);

template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                         uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4],
                                                  uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as one register of two 16-bit elements (low half = x).
template <typename Elem>
__device__ __forceinline__ uint32_t pack2(float x, float y);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float x, float y) {
  __nv_bfloat162 v = __floats2bfloat162_rn(x, y);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float x, float y) {
  __half2 v = __floats2half2_rn(x, y);
  return *reinterpret_cast<uint32_t*>(&v);
}

// One register of two 16-bit elements as two floats (x = low half).
template <typename Elem>
__device__ __forceinline__ float2 unpack2(uint32_t v);
template <>
__device__ __forceinline__ float2 unpack2<__nv_bfloat16>(uint32_t v) {
  return make_float2(__uint_as_float(v << 16), __uint_as_float(v & 0xFFFF0000u));
}
template <>
__device__ __forceinline__ float2 unpack2<__half>(uint32_t v) {
  return __half22float2(*reinterpret_cast<const __half2*>(&v));
}

template <typename Elem>
__device__ __forceinline__ float to_float(Elem x) {
  if constexpr (std::is_same_v<Elem, float>) {
    return x;
  } else {
    return static_cast<float>(x);
  }
}
template <typename Elem>
__device__ __forceinline__ Elem from_float(float x) {
  if constexpr (std::is_same_v<Elem, float>) {
    return x;
  } else if constexpr (std::is_same_v<Elem, __nv_bfloat16>) {
    return __float2bfloat16_rn(x);
  } else {
    return __float2half_rn(x);
  }
}

// ---- warp GEMMs on fragments ----
// An m16n8 accumulator tile: thread t holds rows t/4 and t/4 + 8, columns 2*(t%4) + {0, 1}.
// A warp owns MT m16 row tiles; each B fragment loaded from shared memory feeds all of them.

// acc[MT][16 x 8*NT] += A[16*MT x K] * B^T, A rows a_row0.. of tile TA (row-major [m][k]) and
// B rows b_row0.. of tile TB (stored [n][k]): both operands read with plain ldmatrix.
template <typename Elem, int K, int MT, int NT, class TA, class TB>
__device__ __forceinline__ void warp_gemm_smem_nt(float (&acc)[MT][NT][4], const Elem* a_tile,
                                                  int a_row0, const Elem* b_tile, int b_row0) {
  static_assert(NT % 2 == 0, "two n8 tiles per ldmatrix.x4");
  const int lane = threadIdx.x % 32;
  // A: rows a_row0 + 16m + lane%16, chunk 2k + lane/16; B: rows b_row0 + 8n + lane%8 +
  // 8(lane/16), chunk 2k + (lane/8)%2. (2k + c) ^ x == 2k ^ (c ^ x) for c in {0, 1}.
  const int a_row = a_row0 + lane % 16;
  const uint32_t a_lane = smem_address(a_tile) + a_row * TA::kRowBytes;
  const int a_xor = (lane / 16) ^ TA::swizzle(a_row);
  const int b_row = b_row0 + lane % 8 + (lane / 16) * 8;
  const uint32_t b_lane = smem_address(b_tile) + b_row * TB::kRowBytes;
  const int b_xor = ((lane / 8) % 2) ^ TB::swizzle(b_row);
#pragma unroll
  for (int k = 0; k < K / 16; ++k) {
    uint32_t a[MT][4];
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      ldmatrix_x4(a[m], a_lane + m * 16 * TA::kRowBytes + ((a_xor ^ (2 * k)) << 4));
    }
#pragma unroll
    for (int n = 0; n < NT; n += 2) {
      uint32_t b[4];
      ldmatrix_x4(b, b_lane + n * 8 * TB::kRowBytes + ((b_xor ^ (2 * k)) << 4));
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        mma_16816<Elem>(acc[m][n], a[m], b[0], b[1]);
        mma_16816<Elem>(acc[m][n + 1], a[m], b[2], b[3]);
      }
    }
  }
}

// acc[MT][16 x 8*NT] += sum over parts of A_part[16*MT x 16*KT] * B, the A parts given as
// register fragments (from accumulators; several parts: a value split into 16-bit pieces) and
// B rows b_row0.. of tile TB stored [k][n] (read once with ldmatrix.trans), columns from 0.
template <typename Elem, int Parts, int MT, int KT, int NT, class TB>
__device__ __forceinline__ void warp_gemm_regs_kn(float (&acc)[MT][NT][4],
                                                  const uint32_t (&a)[Parts][MT][KT][4],
                                                  const Elem* b_tile, int b_row0) {
  static_assert(NT % 2 == 0, "two n8 tiles per ldmatrix.x4");
  const int lane = threadIdx.x % 32;
  // B rows b_row0 + 16k + lane%8 + 8((lane/8)%2), chunk n + lane/16 (n even).
  const int b_row = b_row0 + lane % 8 + ((lane / 8) % 2) * 8;
  const uint32_t b_lane = smem_address(b_tile) + b_row * TB::kRowBytes;
  const int b_xor = (lane / 16) ^ TB::swizzle(b_row);
#pragma unroll
  for (int k = 0; k < KT; ++k) {
#pragma unroll
    for (int n = 0; n < NT; n += 2) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, b_lane + k * 16 * TB::kRowBytes + ((b_xor ^ n) << 4));
#pragma unroll
      for (int part = 0; part < Parts; ++part) {
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          mma_16816<Elem>(acc[m][n], a[part][m][k], b[0], b[1]);
          mma_16816<Elem>(acc[m][n + 1], a[part][m][k], b[2], b[3]);
        }
      }
    }
  }
}

// Accumulators of MT 16 x (16*KT) tiles as A fragments for the next product (FlashAttention's
// register reuse: n8 tiles 2k and 2k+1 form k-slice k). With Parts = 2 the values are split:
// part 0 = x rounded to Elem, part 1 = (x - part 0) rounded, about 16 significant bits together.
template <typename Elem, int Parts, int MT, int KT>
__device__ __forceinline__ void accumulators_to_a(uint32_t (&a)[Parts][MT][KT][4],
                                                  const float (&s)[MT][2 * KT][4]) {
  static_assert(Parts == 1 || Parts == 2, "one or two 16-bit parts");
#pragma unroll
  for (int m = 0; m < MT; ++m) {
#pragma unroll
    for (int k = 0; k < KT; ++k) {
      const float* left = s[m][2 * k];       // n8 tile 2k: k-slice columns 0-7
      const float* right = s[m][2 * k + 1];  // n8 tile 2k+1: columns 8-15
      a[0][m][k][0] = pack2<Elem>(left[0], left[1]);
      a[0][m][k][1] = pack2<Elem>(left[2], left[3]);
      a[0][m][k][2] = pack2<Elem>(right[0], right[1]);
      a[0][m][k][3] = pack2<Elem>(right[2], right[3]);
      if constexpr (Parts == 2) {
        // The rounded part read back from its packed bits (shifts for bf16) rather than
        // converted once more: the same values in fewer instructions.
        auto rest = [](uint32_t packed, float x, float y) {
          const float2 rounded = unpack2<Elem>(packed);
          return pack2<Elem>(x - rounded.x, y - rounded.y);
        };
        a[1][m][k][0] = rest(a[0][m][k][0], left[0], left[1]);
        a[1][m][k][1] = rest(a[0][m][k][1], left[2], left[3]);
        a[1][m][k][2] = rest(a[0][m][k][2], right[0], right[1]);
        a[1][m][k][3] = rest(a[0][m][k][3], right[2], right[3]);
      }
    }
  }
}

}  // namespace dilated::cuda
