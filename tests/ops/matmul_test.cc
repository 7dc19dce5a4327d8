#include "ops/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "base/half.h"
#include "hwy/targets.h"
#include "ops/ggml_blocks_util.h"
#include "ops/matmul_x.h"
#include "ops/target_util.h"
#include "test_util.h"

namespace slimkv::ops {
namespace {

constexpr float kEps = 1.1920929e-7f;

// super_group: int8 sub-scales (signed, as Q6_K's) and sub-minimums (as Q4_K's: 0..63, with a
// negative factor) times fp16 factors per super_group columns.
WeightMatrix RandomMatrix(WeightFormat f, int64_t rows, int64_t cols, int group, bool has_min, uint64_t seed,
                          bool half_scales = false, int code_offset = 0, int super_group = 0) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  WeightMatrix m = WeightMatrix::Allocate(f, rows, cols, group, has_min, super_group);
  m.code_offset = code_offset;
  if (super_group) {
    const int64_t ng = m.groups_per_row(), ns = cols / super_group;
    std::vector<int8_t> sub(ng), sub_min(ng);
    std::vector<uint16_t> super(ns), super_min(ns);
    std::vector<uint8_t> codes(m.code_bytes_per_row());
    for (int64_t r = 0; r < rows; ++r) {
      for (auto& b : codes) b = static_cast<uint8_t>(byte(rng));
      for (auto& v : sub) v = static_cast<int8_t>(byte(rng) - 128);
      for (auto& v : sub_min) v = static_cast<int8_t>(byte(rng) % 64);
      for (auto& v : super) v = FloatToHalf(0.0005f + std::abs(nd(rng)) * 0.001f);
      for (auto& v : super_min) v = FloatToHalf(-std::abs(nd(rng)) * 0.002f);
      m.SetRow(r, codes.data(), nullptr, nullptr);
      m.SetSubScales(r, sub.data(), sub_min.data(), super.data(), super_min.data());
    }
    return m;
  }
  std::vector<uint8_t> codes(m.code_bytes_per_row());
  std::vector<float> scales(m.groups_per_row()), mins(m.groups_per_row());
  // Scales that are fp16 values when the matrix is to hold them as fp16.
  auto round = [&](float v) { return half_scales ? HalfToFloat(FloatToHalf(v)) : v; };
  for (int64_t r = 0; r < rows; ++r) {
    if (f == WeightFormat::kF32) {
      for (int64_t c = 0; c < cols; ++c) reinterpret_cast<float*>(codes.data())[c] = nd(rng);
    } else if (f == WeightFormat::kF16) {
      for (int64_t c = 0; c < cols; ++c) reinterpret_cast<uint16_t*>(codes.data())[c] = FloatToHalf(nd(rng));
    } else {
      for (auto& b : codes) b = static_cast<uint8_t>(byte(rng));
      for (auto& v : scales) v = round(0.01f + std::abs(nd(rng)) * 0.05f);
      for (auto& v : mins) v = round(nd(rng) * 0.1f);
    }
    m.SetRow(r, codes.data(), scales.data(), mins.data());
  }
  if (half_scales) {
    m.CompactScales();
    EXPECT_TRUE(m.half_scales);
  }
  return m;
}

struct Case {
  WeightFormat format;
  int group;
  bool has_min;
  bool half_scales = false;
  int code_offset = 0;  // the implied minimum (Q4_0: 8, Q5_0: 16, Q6_K: 32)
  int super_group = 0;  // int8 sub-scales with fp16 factors (the K types)
};

// How the tolerance of one output is bounded from its row of weights and its x.
enum class Bound {
  kProducts,   // sum |w * x|: the kernel multiplies dequantized weights (or
               // codes) with x
  kMaxWeight,  // 2 max|w| sum |x|: the kernel also subtracts (min + offset *
               // scale) * sum(x) (kGgml)
};

// w times x ([tokens, ldx]) on every target against the double reference. The
// tolerance bounds fp32 rounding (a quarter of the worst case over `cols`
// products, which real rounding never approaches: fp32 accumulation in a
// different order from the double reference) and, for the integer decode
// kernel, x seen through its three int8 parts (ops/matmul_x.h).
void ExpectMatchesReference(ThreadPool& pool, const WeightMatrix& w, const float* xp, int64_t ldx,
                            int64_t tokens, Bound bound = Bound::kProducts) {
  const int64_t rows = w.rows, cols = w.cols, ldy = rows + 2;
  std::vector<float> want(tokens * ldy), got(tokens * ldy);
  const MatMulOutput ref{&w, want.data(), ldy};
  MatMulReference(xp, ldx, tokens, {&ref, 1});
  std::vector<float> row(cols);
  slimkv::testing::ForEachTarget([&](int64_t target) {
    constexpr float kUntouched = -12345.0f;  // columns past `rows` must keep it
    std::fill(got.begin(), got.end(), kUntouched);
    const MatMulOutput out{&w, got.data(), ldy};
    MatMul(pool, xp, ldx, tokens, {&out, 1});
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t r = rows; r < ldy; ++r)
        ASSERT_EQ(got[t * ldy + r], kUntouched) << "token " << t << " column " << r;
    }
    const bool x_parts = target == HWY_AVX3_DL && w.quantized() && tokens <= kMatMulIntegerMaxTokens;
    for (int64_t r = 0; r < rows; ++r) {
      w.DequantizeRow(r, row.data());
      float w_max = 0;
      for (float v : row) w_max = std::max(w_max, std::abs(v));
      for (int64_t t = 0; t < tokens; ++t) {
        const float* xt = xp + t * ldx;
        double mag = 0, parts = 0;
        for (int64_t k = 0; k < cols; ++k) {
          // w = s * q + m is rounded once: both terms count, not only their sum.
          const double m = (w.quantized() ? w.min(r, k / w.group) : 0.0);
          mag += bound == Bound::kProducts ? (std::abs(row[k] - m) + std::abs(m)) * std::abs(xt[k])
                                           : 2.0 * w_max * std::abs(xt[k]);
        }
        for (int64_t g = 0; x_parts && g < w.groups_per_row(); ++g) {
          double amax = 0, wsum = 0;
          for (int64_t k = g * w.group; k < (g + 1) * w.group; ++k) {
            amax = std::max<double>(amax, std::abs(xt[k]));
            wsum += std::abs(row[k] - (w.quantized() ? w.min(r, k / w.group) : 0.0));
          }
          parts += kXPartError * amax * wsum;
        }
        const double tol = 0.25 * cols * kEps * mag + parts + 1e-6;
        ASSERT_NEAR(got[t * ldy + r], want[t * ldy + r], tol) << "row " << r << " token " << t;
      }
    }
  });
}

// `tokens` rows of x [tokens, cols + 3] (misaligned rows), normal, with an
// outlier channel as real activations have; x() points one float into the buffer (misaligned start).
struct RandomX {
  RandomX(int64_t tokens, int64_t cols) : ldx(cols + 3), buf(tokens * ldx + 1) {
    std::mt19937_64 rng(tokens);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& v : buf) v = nd(rng);
    for (int64_t t = 0; t < tokens; ++t) buf[1 + t * ldx + cols / 3] *= 50.0f;
  }
  const float* x() const { return buf.data() + 1; }
  int64_t ldx;
  std::vector<float> buf;
};

class MatMulTest : public ::testing::TestWithParam<Case> {};

TEST_P(MatMulTest, MatchesReferenceOnOddShapes) {
  const Case c = GetParam();
  ThreadPool pool(2);
  for (int64_t rows : {1, 3, 5, 17, 97}) {
    for (int64_t cols : {32, 96, 576, 768}) {
      if (c.group && cols % c.group) continue;
      if (c.super_group && cols % c.super_group) continue;
      for (int64_t tokens : {1, 2, 3, 4, 5, 8, 11, 16, 17, 70}) {
        SCOPED_TRACE(::testing::Message() << rows << "x" << cols << " tokens " << tokens);
        WeightMatrix w =
            RandomMatrix(c.format, rows, cols, c.group, c.has_min, rows * 131 + cols, c.half_scales, c.code_offset,
                         c.super_group);
        const RandomX x(tokens, cols);
        ExpectMatchesReference(pool, w, x.x(), x.ldx, tokens);
        if (HasFatalFailure()) return;
      }
    }
  }
}

// Groups of x the int8 parts find hard: all zero, one non-zero value, values
// near the smallest normal float, huge values, constant values, and a sign flip at the maximum.
TEST_P(MatMulTest, ZeroTinyAndHugeActivations) {
  const Case c = GetParam();
  ThreadPool pool(2);
  const int64_t rows = 33, cols = c.super_group ? 256 : 192, tokens = 3;
  WeightMatrix w =
      RandomMatrix(c.format, rows, cols, c.group, c.has_min, 5, c.half_scales, c.code_offset, c.super_group);
  std::vector<float> x(tokens * cols);
  std::mt19937_64 rng(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    float* xt = x.data() + t * cols;
    for (int64_t k = 0; k < cols; ++k) {
      switch (k / 32) {
        case 0:
          xt[k] = 0.0f;
          break;
        case 1:
          xt[k] = k == 40 ? -3.0f : 0.0f;
          break;
        case 2:
          xt[k] = nd(rng) * 1e-37f;
          break;
        case 3:
          xt[k] = nd(rng) * 1e30f;
          break;
        case 4:
          xt[k] = 0.75f;
          break;
        default:
          xt[k] = (k % 2 ? 1.0f : -1.0f) * (1.0f - k * 1e-4f);
          break;
      }
    }
  }
  ExpectMatchesReference(pool, w, x.data(), cols, tokens);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, MatMulTest,
    ::testing::Values(Case{WeightFormat::kF32, 0, false}, Case{WeightFormat::kF16, 0, false},
                      Case{WeightFormat::kQ4, 32, true}, Case{WeightFormat::kQ4, 32, false},
                      Case{WeightFormat::kQ8, 32, true}, Case{WeightFormat::kQ8, 16, false},
                      Case{WeightFormat::kQ4, 32, true, true}, Case{WeightFormat::kQ8, 32, false, true},
                      Case{WeightFormat::kQ8, 16, true, true}, Case{WeightFormat::kQ4, 32, false, true, 8},
                      Case{WeightFormat::kQ5, 32, false, false, 16}, Case{WeightFormat::kQ5, 32, true},
                      Case{WeightFormat::kQ5, 32, false, true, 16}, Case{WeightFormat::kQ5, 32, true, true},
                      Case{WeightFormat::kQ6, 16, false, true, 32}, Case{WeightFormat::kQ6, 16, false, false, 32},
                      Case{WeightFormat::kQ6, 16, false, false, 32, 256}, Case{WeightFormat::kQ4, 32, true, false, 0, 256},
                      Case{WeightFormat::kQ5, 32, true, false, 0, 256}, Case{WeightFormat::kIQ4, 32, false, true},
                      Case{WeightFormat::kIQ4, 32, false, false, 0, 256}, Case{WeightFormat::kQ3, 16, false, false, 4},
                      Case{WeightFormat::kQ3, 16, true, true}, Case{WeightFormat::kQ3, 16, false, false, 4, 256}));

// GGUF's own blocks (WeightFormat::kGgml): every type, odd row counts, token
// counts on both sides of the stream/panel switch, misaligned x, on every target.
class GgmlMatMulTest : public ::testing::TestWithParam<gguf::TensorType> {};

TEST_P(GgmlMatMulTest, MatchesReferenceOnOddShapes) {
  const gguf::TensorType type = GetParam();
  ThreadPool pool(2);
  const int64_t block = GgmlMatMulColumns(type);  // BF16 is read 32 columns at a time
  for (int64_t rows : {1, 5, 17, 97}) {
    // 17 blocks of 32: a whole chunk of scales converted together and a tail.
    for (int64_t cols : {block, 3 * block, block == 32 ? 17 * block : 2 * block}) {
      for (int64_t tokens : {1, 2, 3, 5, 8, 11, 17, 70}) {
        SCOPED_TRACE(::testing::Message()
                     << gguf::TypeName(type) << " " << rows << "x" << cols << " tokens " << tokens);
        const WeightMatrix w =
            slimkv::testing::RandomGgmlMatrix(type, rows, cols, rows * 131 + cols, /*any_finite=*/false);
        // The stream kernel sums scale * raw code * x and subtracts (min +
        // offset * scale) * sum(x) per sub-block (Q4_0's offset is 8).
        const RandomX x(tokens, cols);
        ExpectMatchesReference(pool, w, x.x(), x.ldx, tokens, Bound::kMaxWeight);
        if (HasFatalFailure()) return;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, GgmlMatMulTest, ::testing::ValuesIn(slimkv::testing::kGgmlTypes),
                         [](const ::testing::TestParamInfo<gguf::TensorType>& i) {
                           return std::string(gguf::TypeName(i.param));
                         });

TEST(MatMulTest, SeveralOutputsShareOneRegion) {
  ThreadPool pool(2);
  WeightMatrix a = RandomMatrix(WeightFormat::kQ4, 37, 64, 32, true, 1);
  WeightMatrix b = RandomMatrix(WeightFormat::kQ8, 11, 64, 16, false, 2);
  std::vector<float> x = slimkv::testing::RandomNormal(3 * 64, 7);
  std::vector<float> ya(3 * 37), yb(3 * 11), ra(3 * 37), rb(3 * 11);
  const MatMulOutput outs[] = {{&a, ya.data(), 37}, {&b, yb.data(), 11}};
  const MatMulOutput refs[] = {{&a, ra.data(), 37}, {&b, rb.data(), 11}};
  MatMul(pool, x.data(), 64, 3, outs);
  MatMulReference(x.data(), 64, 3, refs);
  for (size_t i = 0; i < ya.size(); ++i) EXPECT_NEAR(ya[i], ra[i], 1e-3);
  for (size_t i = 0; i < yb.size(); ++i) EXPECT_NEAR(yb[i], rb[i], 1e-3);
}

}  // namespace
}  // namespace slimkv::ops
