#include "gguf/types.h"

#include <array>

#include "gguf/checked_math.h"

namespace slimkv::gguf {
namespace {


struct TypeEntry {
  uint32_t id;
  TypeTraits traits;
};

// Geometry from ggml-common.h (sizeof of each block struct). Q8_1 is 36 bytes (fp16 d and s);
// gguf-py's GGML_QUANT_SIZES says 40, which is wrong but harmless there: Q8_1 is a ggml
// scratch type that converters never write.
constexpr std::array kTypes = {
    TypeEntry{0, {"F32", 1, 4, true}},
    TypeEntry{1, {"F16", 1, 2, true}},
    TypeEntry{2, {"Q4_0", 32, 2 + 16, true}},
    TypeEntry{3, {"Q4_1", 32, 2 + 2 + 16, true}},
    TypeEntry{6, {"Q5_0", 32, 2 + 4 + 16, true}},
    TypeEntry{7, {"Q5_1", 32, 2 + 2 + 4 + 16, true}},
    TypeEntry{8, {"Q8_0", 32, 2 + 32, true}},
    TypeEntry{9, {"Q8_1", 32, 2 + 2 + 32, true}},
    TypeEntry{10, {"Q2_K", kQK_K, kQK_K / 16 + kQK_K / 4 + 2 + 2, true}},
    TypeEntry{11, {"Q3_K", kQK_K, kQK_K / 8 + kQK_K / 4 + 12 + 2, true}},
    TypeEntry{12, {"Q4_K", kQK_K, 2 + 2 + 12 + kQK_K / 2, true}},
    TypeEntry{13, {"Q5_K", kQK_K, 2 + 2 + 12 + kQK_K / 8 + kQK_K / 2, true}},
    TypeEntry{14, {"Q6_K", kQK_K, kQK_K / 2 + kQK_K / 4 + kQK_K / 16 + 2, true}},
    TypeEntry{15, {"Q8_K", kQK_K, 4 + kQK_K + kQK_K / 16 * 2, true}},
    TypeEntry{16, {"IQ2_XXS", kQK_K, 2 + kQK_K / 4, false}},
    TypeEntry{17, {"IQ2_XS", kQK_K, 2 + kQK_K / 4 + kQK_K / 32, false}},
    TypeEntry{18, {"IQ3_XXS", kQK_K, 2 + kQK_K / 4 + kQK_K / 8, false}},
    TypeEntry{19, {"IQ1_S", kQK_K, 2 + kQK_K / 8 + kQK_K / 16, false}},
    TypeEntry{20, {"IQ4_NL", 32, 2 + 16, true}},
    TypeEntry{21, {"IQ3_S", kQK_K, 2 + kQK_K / 4 + kQK_K / 8 + kQK_K / 32 + 4, false}},
    TypeEntry{22, {"IQ2_S", kQK_K, 2 + kQK_K / 4 + kQK_K / 16, false}},
    TypeEntry{23, {"IQ4_XS", kQK_K, 2 + 2 + kQK_K / 2 + kQK_K / 64, true}},
    TypeEntry{24, {"I8", 1, 1, false}},
    TypeEntry{25, {"I16", 1, 2, false}},
    TypeEntry{26, {"I32", 1, 4, false}},
    TypeEntry{27, {"I64", 1, 8, false}},
    TypeEntry{28, {"F64", 1, 8, false}},
    TypeEntry{29, {"IQ1_M", kQK_K, kQK_K / 8 + kQK_K / 16 + kQK_K / 32, false}},
    TypeEntry{30, {"BF16", 1, 2, true}},
    TypeEntry{34, {"TQ1_0", kQK_K, 2 + 4 * 13, false}},
    TypeEntry{35, {"TQ2_0", kQK_K, 2 + 64, false}},
    TypeEntry{39, {"MXFP4", 32, 1 + 16, false}},
    TypeEntry{40, {"NVFP4", 64, 4 + 32, false}},
    TypeEntry{41, {"Q1_0", 128, 2 + 16, false}},
    TypeEntry{42, {"Q2_0", 64, 2 + 16, false}},
};

}  // namespace

std::optional<TypeTraits> GetTypeTraits(uint32_t type_id) {
  for (const TypeEntry& e : kTypes) {
    if (e.id == type_id) return e.traits;
  }
  return std::nullopt;
}

std::string_view TypeName(TensorType t) {
  const auto traits = GetTypeTraits(t);
  return traits ? traits->name : std::string_view("unknown");
}

Result<uint64_t> BytesFor(TensorType t, uint64_t n_elements) {
  const auto traits = GetTypeTraits(t);
  if (!traits) return InvalidArgument("unknown tensor type id {}", static_cast<uint32_t>(t));
  if (n_elements % traits->block_elems != 0) {
    return InvalidArgument("{} elements are not a whole number of {} blocks ({} elements each)",
                           n_elements, traits->name, traits->block_elems);
  }
  const auto bytes = CheckedMul(n_elements / traits->block_elems, traits->block_bytes);
  if (!bytes) {
    return InvalidArgument("{} elements of {} overflow a 64-bit byte count", n_elements,
                           traits->name);
  }
  return *bytes;
}

}  // namespace slimkv::gguf
