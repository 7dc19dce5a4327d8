// GGML tensor types as stored in GGUF files: ids, block geometry, names.
// Byte layouts of the quantized blocks are documented in dequant.h.
//
// Every type ggml can write into a GGUF file is listed, so a file using any of them opens;
// only the types with `can_dequantize` have a dequantizer (dequant.h). Ids that ggml retired
// (4, 5: Q4_2/Q4_3; 31-33, 36-38: repacked layouts that never belonged in files) are unknown.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "base/status.h"

namespace slimkv::gguf {

// Elements of a Q4_0 .. Q8_1 block, and of a K-quant / IQ super-block.
inline constexpr uint32_t kQK = 32;
inline constexpr uint32_t kQK_K = 256;

// Values are the on-disk ggml_type ids.
enum class TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
  kNVFP4 = 40,
  kQ1_0 = 41,
  kQ2_0 = 42,
};

struct TypeTraits {
  std::string_view name;  // "Q4_1"
  uint32_t block_elems;   // elements per block (1 for plain types)
  uint32_t block_bytes;   // bytes per block
  bool can_dequantize;    // slimkv has a dequantizer for it
};

// Traits of a known type id, or nullopt for an id slimkv does not know.
std::optional<TypeTraits> GetTypeTraits(uint32_t type_id);
inline std::optional<TypeTraits> GetTypeTraits(TensorType t) {
  return GetTypeTraits(static_cast<uint32_t>(t));
}
// "Q4_1"; "unknown" for an id that is not a known type.
std::string_view TypeName(TensorType t);

// Bytes of `n_elements` elements of type `t`. InvalidArgument if the type is unknown,
// n_elements is not a whole number of blocks, or the size overflows 64 bits.
Result<uint64_t> BytesFor(TensorType t, uint64_t n_elements);

}  // namespace slimkv::gguf
