// Random kGgml weight matrices for the ops tests: random code bytes with every fp16 (or
// bf16) field of a block replaced by a finite value, so both decoders compute on the same
// finite inputs.
#pragma once

#include <cmath>
#include <random>
#include <vector>

#include "base/half.h"
#include "gguf/types.h"
#include "ops/weights.h"

namespace slimkv::testing {

// The types with a kGgml kernel, as the matmul and decoder tests sweep them.
inline constexpr gguf::TensorType kGgmlTypes[] = {
    gguf::TensorType::kQ4_0, gguf::TensorType::kQ4_1, gguf::TensorType::kQ5_0,   gguf::TensorType::kQ5_1,
    gguf::TensorType::kQ8_0, gguf::TensorType::kQ2_K, gguf::TensorType::kQ3_K,   gguf::TensorType::kQ4_K,
    gguf::TensorType::kQ5_K, gguf::TensorType::kQ6_K, gguf::TensorType::kIQ4_NL, gguf::TensorType::kIQ4_XS,
    gguf::TensorType::kBF16};

// Byte offsets of the fp16 fields of a block (gguf/dequant.h).
inline std::vector<int> HalfFields(gguf::TensorType t) {
  using T = gguf::TensorType;
  switch (t) {
    case T::kQ4_1:
    case T::kQ5_1:
    case T::kQ4_K:
    case T::kQ5_K:
      return {0, 2};
    case T::kQ2_K:
      return {80, 82};
    case T::kQ3_K:
      return {108};
    case T::kQ6_K:
      return {208};
    case T::kBF16:
      return {};
    default:
      return {0};
  }
}

// `any_finite`: fp16 fields take any finite bit pattern (subnormals, zeros, up to 65504),
// as the bit-exactness test wants; otherwise scales of a plausible size (|d| in
// [1e-3, 2e-2]) so that matmul results stay in a range where tolerances mean something.
inline ops::WeightMatrix RandomGgmlMatrix(gguf::TensorType type, int64_t rows, int64_t cols, uint64_t seed,
                                          bool any_finite) {
  std::mt19937_64 rng(seed);
  ops::WeightMatrix m = ops::WeightMatrix::AllocateGgml(type, rows, cols);
  for (size_t i = 0; i < m.codes.size(); ++i) m.codes[i] = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> mag(1e-3f, 2e-2f);
  auto put16 = [](uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); };
  if (type == gguf::TensorType::kBF16) {
    std::normal_distribution<float> nd;
    for (size_t i = 0; i + 1 < m.codes.size(); i += 2) {
      uint16_t b = static_cast<uint16_t>(rng());
      if (!any_finite || (b & 0x7F80) == 0x7F80) b = FloatToBf16(nd(rng));
      put16(m.codes.data() + i, b);
    }
    return m;
  }
  const auto traits = gguf::GetTypeTraits(type);
  for (size_t off = 0; off < m.codes.size(); off += traits->block_bytes) {
    for (int f : HalfFields(type)) {
      uint16_t h = static_cast<uint16_t>(rng());
      if (!any_finite) h = FloatToHalf((rng() & 1 ? -1.0f : 1.0f) * mag(rng));
      if ((h & 0x7C00) == 0x7C00) h ^= 0x4000;  // inf/NaN -> finite
      put16(m.codes.data() + off + f, h);
    }
  }
  return m;
}

}  // namespace slimkv::testing
