// SIMD helpers shared by the forward and backward kernels, compiled once per Highway target
// (included from files that go through hwy/foreach_target.h).
#if defined(DILATED_CPU_FAST_SIMD_COMMON_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef DILATED_CPU_FAST_SIMD_COMMON_INL_H_
#undef DILATED_CPU_FAST_SIMD_COMMON_INL_H_
#else
#define DILATED_CPU_FAST_SIMD_COMMON_INL_H_
#endif

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/dtype_convert.hpp"
#include "dilated/params.hpp"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace dilated::cpu_fast::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
using DI = hn::RebindToSigned<DF>;

// Register blocking. AVX-512 (and the Arm targets) have 32 vector registers: a 6 x 4 block of
// accumulators plus 4 operand vectors and a broadcast fits. With 16 registers (AVX2, SSE4) a
// 5 x 2 block does.
#if (HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3) || !HWY_ARCH_X86
inline constexpr int kBlockRows = 6;
inline constexpr int kBlockVectors = 4;
#else
inline constexpr int kBlockRows = 5;
inline constexpr int kBlockVectors = 2;
#endif
// Backward query tile: long enough to amortise loading the dk/dv accumulators per tile.
inline constexpr int64_t kBackwardQueryTile = 64;
// Backward key tiles that share one packed query tile (packing it per key tile cost ~15%).
inline constexpr int64_t kKeyTilesPerGroup = 4;
// Block-pattern backward: key tiles of a super-block packed together, at most.
inline constexpr int64_t kBlockKeyTiles = 16;

// Calls f(std::integral_constant<int, c>{}) for the runtime count 1 <= c <= kMax, so that
// partial register blocks get their own fully unrolled code.
template <int kMax, class F>
HWY_INLINE void WithCount(int64_t count, const F& f) {
  if constexpr (kMax > 1) {
    if (count < kMax) return WithCount<kMax - 1>(count, f);
  }
  f(std::integral_constant<int, kMax>{});
}

// 2^x for x <= ~0: x = n + f with n an integer, |f| <= 1/2; 2^f from a degree-5 polynomial
// (Chebyshev interpolation, relative error 1.1e-7), and n added to the exponent bits.
// x < -125 gives exactly 0 (also -inf: masked scores); NaN stays NaN.
HWY_INLINE VF Exp2(VF x) {
  const DF df;
  const DI di;
  const VF magic = hn::Set(df, 12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const VF shifted = hn::Add(x, magic);
  const VF f = hn::Sub(x, hn::Sub(shifted, magic));
  VF poly = hn::Set(df, 1.3390864e-3f);
  poly = hn::MulAdd(poly, f, hn::Set(df, 9.6760318e-3f));
  poly = hn::MulAdd(poly, f, hn::Set(df, 5.5503570e-2f));
  poly = hn::MulAdd(poly, f, hn::Set(df, 2.4022107e-1f));
  poly = hn::MulAdd(poly, f, hn::Set(df, 6.9314718e-1f));
  poly = hn::MulAdd(poly, f, hn::Set(df, 1.0000001f));
  // The low mantissa bits of `shifted` hold n; shifted left by 23 they land in the exponent
  // (the constant part of `magic` shifts out).
  const auto exponent = hn::ShiftLeft<23>(hn::BitCast(di, shifted));
  const VF result = hn::BitCast(df, hn::Add(hn::BitCast(di, poly), exponent));
  return hn::IfThenZeroElse(hn::Lt(x, hn::Set(df, -125.0f)), result);
}

// Lanes [0, count) of a vector whose first lane has index `first`: count may be <= 0 or
// beyond the vector.
HWY_INLINE hn::Mask<DF> LanesBelow(int64_t first, int64_t count) {
  const DF df;
  const int64_t n = count - first;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  return hn::FirstN(df, static_cast<size_t>(n < 0 ? 0 : (n > lanes ? lanes : n)));
}

// dst[i] = mul * src[i] for i < count, src of any storage type.
HWY_INLINE void LoadRow(DType dtype, const void* base, int64_t offset, int64_t count, float mul,
                        float* HWY_RESTRICT dst) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const VF m = hn::Set(df, mul);
  int64_t i = 0;
  if (dtype == DType::f32) {
    const float* src = static_cast<const float*>(base) + offset;
    for (; i + lanes <= count; i += lanes)
      hn::StoreU(hn::Mul(hn::LoadU(df, src + i), m), df, dst + i);
    for (; i < count; ++i) dst[i] = src[i] * mul;
  } else if (dtype == DType::bf16) {
    const hn::Rebind<hwy::bfloat16_t, DF> dbf;
    const hwy::bfloat16_t* src = static_cast<const hwy::bfloat16_t*>(base) + offset;
    for (; i + lanes <= count; i += lanes) {
      hn::StoreU(hn::Mul(hn::PromoteTo(df, hn::LoadU(dbf, src + i)), m), df, dst + i);
    }
    const uint16_t* bits = static_cast<const uint16_t*>(base) + offset;
    for (; i < count; ++i) dst[i] = bf16_to_float(bits[i]) * mul;
  } else {
    const hn::Rebind<hwy::float16_t, DF> dh;
    const hwy::float16_t* src = static_cast<const hwy::float16_t*>(base) + offset;
    for (; i + lanes <= count; i += lanes) {
      hn::StoreU(hn::Mul(hn::PromoteTo(df, hn::LoadU(dh, src + i)), m), df, dst + i);
    }
    const uint16_t* bits = static_cast<const uint16_t*>(base) + offset;
    for (; i < count; ++i) dst[i] = f16_to_float(bits[i]) * mul;
  }
}

// Stores mul * src[i] for i < count into storage of `dtype` (round to nearest even).
HWY_INLINE void StoreRow(DType dtype, const float* HWY_RESTRICT src, int64_t count, float mul,
                         void* base, int64_t offset) {
  if (dtype == DType::f32) {
    const DF df;
    const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
    const VF m = hn::Set(df, mul);
    float* dst = static_cast<float*>(base) + offset;
    int64_t i = 0;
    for (; i + lanes <= count; i += lanes)
      hn::StoreU(hn::Mul(hn::LoadU(df, src + i), m), df, dst + i);
    for (; i < count; ++i) dst[i] = src[i] * mul;
    return;
  }
  uint16_t* dst = static_cast<uint16_t*>(base) + offset;
  if (dtype == DType::bf16) {
    for (int64_t i = 0; i < count; ++i) dst[i] = float_to_bf16(src[i] * mul);
  } else {
    for (int64_t i = 0; i < count; ++i) dst[i] = float_to_f16(src[i] * mul);
  }
}

}  // namespace dilated::cpu_fast::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard toggled per target
