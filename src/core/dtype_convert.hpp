// Scalar conversions between float and the 16-bit storage types, round to nearest even.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "dilated/params.hpp"

namespace dilated {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float bf16_to_float(uint16_t h) {
  return bits_float(static_cast<uint32_t>(h) << 16);
}

inline uint16_t float_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

inline float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return bits_float(sign | 0x7f800000u | (mantissa << 13));
  return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline uint16_t float_to_f16(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t magnitude = u & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) {  // Inf stays Inf, NaN stays a quiet NaN
    return static_cast<uint16_t>(sign | (magnitude > 0x7f800000u ? 0x7e00u : 0x7c00u));
  }
  if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520
  if (magnitude < 0x38800000u) {  // below 2^-14: a subnormal half, units of 2^-24
    const float units = std::nearbyint(bits_float(magnitude) * 16777216.0f);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(units));
  }
  const uint32_t odd = (magnitude >> 13) & 1u;
  magnitude += 0xc8000fffu + odd;  // rebias the exponent (127 -> 15) and round to nearest even
  return static_cast<uint16_t>(sign | (magnitude >> 13));
}

inline double load_element(DType t, const void* base, int64_t i) {
  switch (t) {
    case DType::f32:
      return static_cast<const float*>(base)[i];
    case DType::f16:
      return f16_to_float(static_cast<const uint16_t*>(base)[i]);
    case DType::bf16:
      return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
    case DType::f64:
      return static_cast<const double*>(base)[i];
  }
  return 0.0;
}

inline void store_element(DType t, void* base, int64_t i, double value) {
  const float f = static_cast<float>(value);
  switch (t) {
    case DType::f32:
      static_cast<float*>(base)[i] = f;
      return;
    case DType::f16:
      static_cast<uint16_t*>(base)[i] = float_to_f16(f);
      return;
    case DType::bf16:
      static_cast<uint16_t*>(base)[i] = float_to_bf16(f);
      return;
    case DType::f64:
      static_cast<double*>(base)[i] = value;
      return;
  }
}

// The value a kernel reads after x has been stored in type t.
inline double round_through(DType t, double x) {
  unsigned char storage[sizeof(double)];
  store_element(t, storage, 0, x);
  return load_element(t, storage, 0);
}

}  // namespace dilated
