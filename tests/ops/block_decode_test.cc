// The SIMD block decoders (ops/block_decode-inl.h) against gguf's scalar dequantizer, which
// is itself bit-exact with gguf-py's numpy code (tests/gguf/dequant_golden_test.cc): the same
// bits on every target, for every block type with a matmul kernel.
#include "ops/block_decode.h"

#include <gtest/gtest.h>

#include <bit>
#include <vector>

#include "gguf/dequant.h"
#include "ops/ggml_blocks_util.h"
#include "ops/target_util.h"

namespace slimkv::ops {
namespace {

TEST(BlockDecodeTest, BitExactWithTheScalarDequantizerOnEveryTarget) {
  for (gguf::TensorType type : slimkv::testing::kGgmlTypes) {
    SCOPED_TRACE(gguf::TypeName(type));
    const int64_t cols = gguf::GetTypeTraits(type)->block_elems == 256 ? 768 : 96;
    const WeightMatrix w = slimkv::testing::RandomGgmlMatrix(type, 7, cols, 11, /*any_finite=*/true);
    std::vector<float> want(cols), got(cols);
    slimkv::testing::ForEachTarget([&](int64_t) {
      for (int64_t r = 0; r < w.rows; ++r) {
        ASSERT_TRUE(
            gguf::Dequantize(type, w.codes.data() + r * w.code_bytes_per_row(), want.data(), cols).ok());
        std::fill(got.begin(), got.end(), -1.0f);
        DequantizeGgmlRow(w, r, got.data());
        for (int64_t c = 0; c < cols; ++c) {
          ASSERT_EQ(std::bit_cast<uint32_t>(got[c]), std::bit_cast<uint32_t>(want[c]))
              << "row " << r << " col " << c << ": " << got[c] << " vs " << want[c];
        }
      }
    });
  }
}

TEST(BlockDecodeTest, RepackedBytesAreTheFileBytes) {
  // A kGgml matrix holds exactly the file's bytes: bits per weight as stored.
  for (gguf::TensorType type : slimkv::testing::kGgmlTypes) {
    const auto t = gguf::GetTypeTraits(type);
    const WeightMatrix w = WeightMatrix::AllocateGgml(type, 3, 512);
    EXPECT_EQ(w.bytes(), 3 * 512 / t->block_elems * t->block_bytes) << t->name;
  }
}

}  // namespace
}  // namespace slimkv::ops
