// Dequantizers on hand-built blocks whose values are known, and the type table. The
// comparison against gguf-py on random blocks is dequant_golden_test.cc.
#include "gguf/dequant.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/half.h"
#include "gguf/types.h"

namespace slimkv::gguf {
namespace {

void PutHalf(std::vector<uint8_t>& b, size_t at, float v) {
  const uint16_t h = FloatToHalf(v);
  std::memcpy(b.data() + at, &h, 2);
}

std::vector<float> DequantizeBlock(TensorType type, const std::vector<uint8_t>& block, uint64_t n) {
  std::vector<float> out(n, -999.f);
  const Status st = Dequantize(type, block.data(), out.data(), n);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return out;
}

TEST(TypesTest, TraitsOfCommonTypes) {
  const auto q4_1 = GetTypeTraits(TensorType::kQ4_1);
  ASSERT_TRUE(q4_1);
  EXPECT_EQ(q4_1->name, "Q4_1");
  EXPECT_EQ(q4_1->block_elems, 32u);
  EXPECT_EQ(q4_1->block_bytes, 20u);
  EXPECT_TRUE(q4_1->can_dequantize);
  EXPECT_EQ(GetTypeTraits(TensorType::kQ8_1)->block_bytes, 36u);  // sizeof(block_q8_1)
  EXPECT_EQ(GetTypeTraits(TensorType::kQ6_K)->block_bytes, 210u);
  EXPECT_TRUE(GetTypeTraits(TensorType::kIQ4_XS)->can_dequantize);
  EXPECT_FALSE(GetTypeTraits(TensorType::kIQ2_XXS)->can_dequantize);
  EXPECT_EQ(TypeName(TensorType::kBF16), "BF16");
  for (uint32_t retired : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 43u, 0xFFFFFFFFu}) {
    EXPECT_FALSE(GetTypeTraits(retired)) << retired;
  }
  EXPECT_EQ(TypeName(static_cast<TensorType>(4)), "unknown");
}

TEST(TypesTest, BytesFor) {
  EXPECT_EQ(*BytesFor(TensorType::kF32, 7), 28u);
  EXPECT_EQ(*BytesFor(TensorType::kQ4_0, 64), 36u);
  EXPECT_EQ(*BytesFor(TensorType::kQ4_K, 512), 288u);
  EXPECT_EQ(*BytesFor(TensorType::kQ8_0, 0), 0u);
  EXPECT_EQ(BytesFor(TensorType::kQ4_0, 33).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(BytesFor(TensorType::kF32, uint64_t{1} << 62).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(BytesFor(static_cast<TensorType>(99), 32).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(DequantTest, PlainTypes) {
  const std::vector<float> src = {1.5f, -0.0f, 65504.f, 1e-7f};
  std::vector<uint8_t> f32(16), f16(8), bf16(8);
  std::memcpy(f32.data(), src.data(), 16);
  for (size_t i = 0; i < src.size(); ++i) {
    const uint16_t h = FloatToHalf(src[i]), b = FloatToBf16(src[i]);
    std::memcpy(f16.data() + 2 * i, &h, 2);
    std::memcpy(bf16.data() + 2 * i, &b, 2);
  }
  EXPECT_EQ(DequantizeBlock(TensorType::kF32, f32, 4), src);
  const auto h = DequantizeBlock(TensorType::kF16, f16, 4);
  EXPECT_EQ(h[0], 1.5f);
  EXPECT_TRUE(std::signbit(h[1]));
  EXPECT_EQ(h[2], 65504.f);
  EXPECT_EQ(h[3], 1.1920928955078125e-07f);  // nearest fp16 subnormal to 1e-7
  const auto b = DequantizeBlock(TensorType::kBF16, bf16, 4);
  EXPECT_EQ(b[0], 1.5f);
  EXPECT_EQ(b[2], 65536.f);  // bf16 has 8 mantissa bits
}

TEST(DequantTest, Q4_0AndQ4_1) {
  std::vector<uint8_t> q4_0(18), q4_1(20);
  PutHalf(q4_0, 0, 0.5f);
  PutHalf(q4_1, 0, 0.25f);
  PutHalf(q4_1, 2, -1.f);
  for (int j = 0; j < 16; ++j) {
    q4_0[2 + j] = q4_1[4 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  }
  const auto a = DequantizeBlock(TensorType::kQ4_0, q4_0, 32);
  const auto b = DequantizeBlock(TensorType::kQ4_1, q4_1, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(a[j], 0.5f * (j - 8));
    EXPECT_EQ(a[j + 16], 0.5f * (15 - j - 8));
    EXPECT_EQ(b[j], 0.25f * j - 1.f);
    EXPECT_EQ(b[j + 16], 0.25f * (15 - j) - 1.f);
  }
}

TEST(DequantTest, Q5_0AndQ5_1UseTheHighBitOfEachElement) {
  std::vector<uint8_t> q5_0(22), q5_1(24);
  PutHalf(q5_0, 0, 1.f);
  PutHalf(q5_1, 0, 1.f);
  PutHalf(q5_1, 2, 100.f);
  const uint32_t qh = 0xA5C30F81u;  // arbitrary high bits
  std::memcpy(q5_0.data() + 2, &qh, 4);
  std::memcpy(q5_1.data() + 4, &qh, 4);
  for (int j = 0; j < 16; ++j)
    q5_0[6 + j] = q5_1[8 + j] = static_cast<uint8_t>((j + 3) % 16 | (j << 4));
  const auto a = DequantizeBlock(TensorType::kQ5_0, q5_0, 32);
  const auto b = DequantizeBlock(TensorType::kQ5_1, q5_1, 32);
  for (int j = 0; j < 32; ++j) {
    const int low = j < 16 ? (j + 3) % 16 : j - 16;
    const int q = low | static_cast<int>(((qh >> j) & 1) << 4);
    EXPECT_EQ(a[j], static_cast<float>(q - 16)) << j;
    EXPECT_EQ(b[j], static_cast<float>(q) + 100.f) << j;
  }
}

TEST(DequantTest, Q8Family) {
  std::vector<uint8_t> q8_0(34), q8_1(36), q8_k(292);
  PutHalf(q8_0, 0, 2.f);
  PutHalf(q8_1, 0, 2.f);
  PutHalf(q8_1, 2, 12345.f);  // the block sum: not used for dequantization
  const float dk = 0.125f;
  std::memcpy(q8_k.data(), &dk, 4);
  for (int j = 0; j < 256; ++j) {
    const auto q = static_cast<uint8_t>(static_cast<int8_t>(j - 128));
    if (j < 32) q8_0[2 + j] = q8_1[4 + j] = q;
    q8_k[4 + j] = q;
  }
  const auto a = DequantizeBlock(TensorType::kQ8_0, q8_0, 32);
  const auto b = DequantizeBlock(TensorType::kQ8_1, q8_1, 32);
  const auto k = DequantizeBlock(TensorType::kQ8_K, q8_k, 256);
  for (int j = 0; j < 32; ++j) {
    EXPECT_EQ(a[j], 2.f * (j - 128));
    EXPECT_EQ(b[j], 2.f * (j - 128));
  }
  for (int j = 0; j < 256; ++j) EXPECT_EQ(k[j], 0.125f * (j - 128));
}

TEST(DequantTest, GetScaleMinK4) {
  // Sub-blocks 0..3 in the low 6 bits of bytes 0..7; 4..7 split across nibbles of bytes
  // 8..11 and the top bits of bytes 0..7.
  const uint8_t s[12] = {0xC1, 0x02, 0x03, 0x04, 0x85, 0x06, 0x07, 0x08, 0x9A, 0x0B, 0x0C, 0x0D};
  uint8_t sc, m;
  GetScaleMinK4(0, s, &sc, &m);
  EXPECT_EQ(sc, 1);
  EXPECT_EQ(m, 5);
  GetScaleMinK4(4, s, &sc, &m);
  EXPECT_EQ(sc, 0x0A | (3 << 4));  // low nibble of byte 8, top bits of byte 0
  EXPECT_EQ(m, 0x09 | (2 << 4));   // high nibble of byte 8, top bits of byte 4
  GetScaleMinK4(7, s, &sc, &m);
  EXPECT_EQ(sc, 0x0D);
  EXPECT_EQ(m, 0x00);
}

TEST(DequantTest, Q4_KConstantBlock) {
  // Every sub-block: scale 2, min 3; d = 0.5, dmin = 0.25; every quant 9.
  std::vector<uint8_t> b(144);
  PutHalf(b, 0, 0.5f);
  PutHalf(b, 2, 0.25f);
  for (int i = 0; i < 4; ++i) {
    b[4 + i] = 2;
    b[8 + i] = 3;
    b[12 + i] = 2 | (3 << 4);
  }
  std::fill(b.begin() + 16, b.end(), 0x99);
  for (float x : DequantizeBlock(TensorType::kQ4_K, b, 256)) EXPECT_EQ(x, 0.5f * 2 * 9 - 0.25f * 3);
}

TEST(DequantTest, Q6_KElementOrder) {
  // Each scale i = i + 1, d = 1, all quants 33 (q - 32 = 1): element e gives scale e/16 + 1.
  std::vector<uint8_t> b(210);
  std::fill(b.begin(), b.begin() + 128, 0x11);        // low nibbles 1
  std::fill(b.begin() + 128, b.begin() + 192, 0xAA);  // high bits 2 -> 32
  for (int i = 0; i < 16; ++i) b[192 + i] = static_cast<uint8_t>(i + 1);
  PutHalf(b, 208, 1.f);
  const auto y = DequantizeBlock(TensorType::kQ6_K, b, 256);
  for (int e = 0; e < 256; ++e) EXPECT_EQ(y[e], static_cast<float>(e / 16 + 1)) << e;
}

TEST(DequantTest, UnalignedSourceGivesTheSameValues) {
  std::vector<uint8_t> buf(1 + 2 * 210);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<uint8_t>(i * 37 + 11);
  PutHalf(buf, 1 + 208, 0.5f);
  PutHalf(buf, 1 + 210 + 208, -0.5f);
  std::vector<uint8_t> aligned(buf.begin() + 1, buf.end());
  std::vector<float> a(512), b(512);
  ASSERT_TRUE(Dequantize(TensorType::kQ6_K, buf.data() + 1, a.data(), 512).ok());
  ASSERT_TRUE(Dequantize(TensorType::kQ6_K, aligned.data(), b.data(), 512).ok());
  EXPECT_EQ(a, b);
}

TEST(DequantTest, RejectsPartialBlocksAndUnsupportedTypes) {
  std::vector<uint8_t> src(300);
  std::vector<float> dst(300);
  EXPECT_EQ(Dequantize(TensorType::kQ4_0, src.data(), dst.data(), 31).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Dequantize(TensorType::kQ4_K, src.data(), dst.data(), 32).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Dequantize(TensorType::kIQ2_XXS, src.data(), dst.data(), 256).code(),
            StatusCode::kUnimplemented);
  EXPECT_EQ(Dequantize(TensorType::kI32, src.data(), dst.data(), 4).code(),
            StatusCode::kUnimplemented);
  EXPECT_EQ(Dequantize(static_cast<TensorType>(5), src.data(), dst.data(), 32).code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(Dequantize(TensorType::kQ4_0, src.data(), dst.data(), 0).ok());
}

}  // namespace
}  // namespace slimkv::gguf
