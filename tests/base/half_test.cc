#include "base/half.h"

#include <gtest/gtest.h>
#include <immintrin.h>

#include <bit>
#include <cmath>
#include <random>

#include "hwy/targets.h"

namespace slimkv {
namespace {

// The hardware conversion (F16C) is the independent reference; every half is checked.
__attribute__((target("f16c"))) float HwHalfToFloat(uint16_t h) {
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}
__attribute__((target("f16c"))) uint16_t HwFloatToHalf(float f) {
  return static_cast<uint16_t>(_mm_cvtsi128_si32(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT)));
}

// F16C comes with every CPU Highway runs its AVX2 target on (clang 14 does not know the
// "f16c" string of __builtin_cpu_supports).
bool HasF16c() { return (hwy::SupportedTargets() & (HWY_AVX2 | HWY_AVX3 | HWY_AVX3_DL)) != 0; }

TEST(HalfTest, EveryHalfWidensExactly) {
  if (!HasF16c()) GTEST_SKIP() << "no F16C";
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = HalfToFloat(static_cast<uint16_t>(h)), b = HwHalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(b)) {
      EXPECT_TRUE(std::isnan(a)) << h;
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(a), std::bit_cast<uint32_t>(b)) << h;
    }
  }
}

TEST(HalfTest, NarrowingRoundsToNearestEvenLikeHardware) {
  if (!HasF16c()) GTEST_SKIP() << "no F16C";
  std::mt19937 rng(1);
  for (int i = 0; i < 2000000; ++i) {
    // Random bit patterns cover subnormals, overflow, ties and NaNs.
    const float f = std::bit_cast<float>(static_cast<uint32_t>(rng()));
    const uint16_t a = FloatToHalf(f), b = HwFloatToHalf(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(a))) << f;
    } else {
      ASSERT_EQ(a, b) << "f=" << f << " bits " << std::bit_cast<uint32_t>(f);
    }
  }
  // Every half and the midpoints between neighbours (exact ties).
  for (uint32_t h = 0; h < 0x7C00; ++h) {
    const float lo = HalfToFloat(static_cast<uint16_t>(h)), hi = HalfToFloat(static_cast<uint16_t>(h + 1));
    const float mid = (lo + hi) / 2;
    ASSERT_EQ(FloatToHalf(lo), h);
    ASSERT_EQ(FloatToHalf(mid), HwFloatToHalf(mid)) << h;
  }
}

TEST(HalfTest, Bf16RoundTripsAndRounds) {
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f)), 1.0f);
  EXPECT_EQ(FloatToBf16(1.0f + 1.0f / 256), 0x3F80);  // tie rounds to even
  EXPECT_EQ(FloatToBf16(1.0f + 3.0f / 256), 0x3F82);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(NAN))));
  EXPECT_TRUE(std::isinf(Bf16ToFloat(FloatToBf16(INFINITY))));
}

}  // namespace
}  // namespace slimkv
