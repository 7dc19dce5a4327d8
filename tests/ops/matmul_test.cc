#include "ops/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "base/half.h"
#include "ops/ggml_blocks_util.h"
#include "ops/target_util.h"
#include "test_util.h"

namespace slimkv::ops {
namespace {

constexpr float kEps = 1.1920929e-7f;

WeightMatrix RandomMatrix(WeightFormat f, int64_t rows, int64_t cols, int group, bool has_min,
                          uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  WeightMatrix m = WeightMatrix::Allocate(f, rows, cols, group, has_min);
  if (f == WeightFormat::kF32) {
    auto* p = reinterpret_cast<float*>(m.codes.data());
    for (int64_t i = 0; i < rows * cols; ++i) p[i] = nd(rng);
  } else if (f == WeightFormat::kF16) {
    auto* p = reinterpret_cast<uint16_t*>(m.codes.data());
    for (int64_t i = 0; i < rows * cols; ++i) p[i] = FloatToHalf(nd(rng));
  } else {
    for (size_t i = 0; i < m.codes.size(); ++i) m.codes[i] = static_cast<uint8_t>(byte(rng));
    for (size_t i = 0; i < m.scales.size(); ++i) m.scales[i] = 0.01f + std::abs(nd(rng)) * 0.05f;
    for (size_t i = 0; i < m.mins.size(); ++i) m.mins[i] = nd(rng) * 0.1f;
  }
  return m;
}

// How the tolerance of one output is bounded from its row of weights and its x.
enum class Bound {
  kProducts,   // sum |w * x|: the kernel multiplies dequantized weights (or codes) with x
  kMaxWeight,  // 2 max|w| sum |x|: the kernel also subtracts (min + offset * scale) * sum(x)
};

// MatMul against MatMulReference for `tokens` rows of x (misaligned, with an outlier
// channel, as real activations have) on every target. fp32 accumulation over `cols` products
// errs by at most about cols * eps * magnitude (a different order from the double reference);
// a quarter of that worst case, which real rounding never approaches.
void ExpectMatchesReference(const WeightMatrix& w, int64_t tokens, Bound bound, ThreadPool& pool) {
  const int64_t rows = w.rows, cols = w.cols;
  const int64_t ldx = cols + 3;  // misaligned rows of x
  std::vector<float> x(tokens * ldx + 1);
  std::mt19937_64 rng(tokens);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : x) v = nd(rng);
  for (int64_t t = 0; t < tokens; ++t) x[1 + t * ldx + cols / 3] *= 50.0f;
  const float* xp = x.data() + 1;
  const int64_t ldy = rows + 2;
  std::vector<float> want(tokens * ldy), got(tokens * ldy), row(cols);
  const MatMulOutput ref{&w, want.data(), ldy};
  MatMulReference(xp, ldx, tokens, {&ref, 1});
  slimkv::testing::ForEachTarget([&](int64_t) {
    std::fill(got.begin(), got.end(), 0.0f);
    const MatMulOutput out{&w, got.data(), ldy};
    MatMul(pool, xp, ldx, tokens, {&out, 1});
    for (int64_t r = 0; r < rows; ++r) {
      w.DequantizeRow(r, row.data());
      float w_max = 0;
      for (float v : row) w_max = std::max(w_max, std::abs(v));
      for (int64_t t = 0; t < tokens; ++t) {
        double mag = 0;
        for (int64_t k = 0; k < cols; ++k) {
          mag += bound == Bound::kProducts ? std::abs(row[k] * xp[t * ldx + k])
                                           : 2.0 * w_max * std::abs(xp[t * ldx + k]);
        }
        const double tol = 0.25 * cols * kEps * mag + 1e-6;
        ASSERT_NEAR(got[t * ldy + r], want[t * ldy + r], tol) << "row " << r << " token " << t;
      }
    }
  });
}

struct Case {
  WeightFormat format;
  int group;
  bool has_min;
};

class MatMulTest : public ::testing::TestWithParam<Case> {};

TEST_P(MatMulTest, MatchesReferenceOnOddShapes) {
  const Case c = GetParam();
  ThreadPool pool(2);
  for (int64_t rows : {1, 3, 5, 17, 97}) {
    for (int64_t cols : {32, 96, 576}) {
      if (c.group && cols % c.group) continue;
      for (int64_t tokens : {1, 2, 3, 4, 5, 8, 11, 16, 17, 70}) {
        SCOPED_TRACE(::testing::Message() << rows << "x" << cols << " tokens " << tokens);
        const WeightMatrix w = RandomMatrix(c.format, rows, cols, c.group, c.has_min, rows * 131 + cols);
        ExpectMatchesReference(w, tokens, Bound::kProducts, pool);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, MatMulTest,
                         ::testing::Values(Case{WeightFormat::kF32, 0, false},
                                           Case{WeightFormat::kF16, 0, false},
                                           Case{WeightFormat::kQ4, 32, true},
                                           Case{WeightFormat::kQ4, 32, false},
                                           Case{WeightFormat::kQ8, 32, true},
                                           Case{WeightFormat::kQ8, 16, false}));

// GGUF's own blocks (WeightFormat::kGgml): every type, odd row counts, token counts on both
// sides of the stream/panel switch, misaligned x, on every target.
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
        // The stream kernel sums scale * raw code * x and subtracts (min + offset * scale) *
        // sum(x) per sub-block (Q4_0's offset is 8).
        ExpectMatchesReference(w, tokens, Bound::kMaxWeight, pool);
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
