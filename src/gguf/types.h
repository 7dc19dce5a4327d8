// GGML tensor types as stored in GGUF files: ids, block geometry, names.
// Byte layouts of the quantized blocks are documented in dequant.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "base/status.h"

namespace slimkv::gguf {

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
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
};

struct TypeTraits {
  std::string_view name;   // "Q4_1"
  uint32_t block_elems;    // elements per block (1 for plain types)
  uint32_t block_bytes;    // bytes per block
  bool can_dequantize;     // slimkv has a dequantizer for it
};

// Traits of a known type id, or nullopt for an id slimkv does not know.
std::optional<TypeTraits> GetTypeTraits(uint32_t type_id);
inline std::optional<TypeTraits> GetTypeTraits(TensorType t) {
  return GetTypeTraits(static_cast<uint32_t>(t));
}
std::string_view TypeName(TensorType t);

// Bytes of `n_elements` elements of type `t`; fails if n_elements is not a whole number of
// blocks or the size overflows 64 bits.
Result<uint64_t> BytesFor(TensorType t, uint64_t n_elements);

}  // namespace slimkv::gguf
