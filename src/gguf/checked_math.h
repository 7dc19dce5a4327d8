// Overflow-checked unsigned arithmetic for sizes and offsets read from files: every value a
// file claims goes through these before it is used to index or allocate.
#pragma once

#include <cstdint>
#include <optional>

namespace slimkv::gguf {

inline std::optional<uint64_t> CheckedAdd(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

inline std::optional<uint64_t> CheckedMul(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// Rounds `x` up to a multiple of `alignment` (a power of two).
inline std::optional<uint64_t> CheckedAlignUp(uint64_t x, uint64_t alignment) {
  const auto sum = CheckedAdd(x, alignment - 1);
  if (!sum) return std::nullopt;
  return *sum & ~(alignment - 1);
}

inline bool IsPowerOfTwo(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

}  // namespace slimkv::gguf
