// The 16-bit conversions: exact round trips and round-to-nearest-even on ties.
#include <gtest/gtest.h>

#include <cmath>

#include "core/dtype_convert.hpp"

namespace dilated {
namespace {

TEST(DtypeConvert, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(f))));
      continue;
    }
    EXPECT_EQ(float_to_f16(f), h) << "half bits " << h;
  }
}

TEST(DtypeConvert, EveryBfloatRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(float_to_bf16(f), h) << "bf16 bits " << h;
  }
}

TEST(DtypeConvert, TiesRoundToEven) {
  // 1 + 2^-11 lies halfway between halves 1 and 1 + 2^-10: rounds to the even one (1).
  EXPECT_EQ(f16_to_float(float_to_f16(1.0f + std::ldexp(1.0f, -11))), 1.0f);
  EXPECT_EQ(f16_to_float(float_to_f16(1.0f + 3 * std::ldexp(1.0f, -11))),
            1.0f + std::ldexp(1.0f, -9));
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  EXPECT_EQ(f16_to_float(float_to_f16(65519.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(f16_to_float(float_to_f16(65520.0f))));
  EXPECT_EQ(f16_to_float(float_to_f16(std::ldexp(1.0f, -25))), 0.0f);  // tie to even (0)
  EXPECT_EQ(f16_to_float(float_to_f16(std::ldexp(3.0f, -26))), std::ldexp(1.0f, -24));
}

}  // namespace
}  // namespace dilated
