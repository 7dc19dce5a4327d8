// KV storage formats and the byte layout of a block.
//
// A block holds `block_tokens` consecutive token slots of ONE stream (one layer, one KV
// head): first the K part, then the V part, each laid out by its format's codec:
//
//   f32 / f16 K part: [head_dim][block_tokens] elements (channel-major: a score kernel
//                     loads one channel of many tokens as one vector)
//   f32 / f16 V part: [block_tokens][head_dim] elements (token-major: an accumulate kernel
//                     adds p_t * v_t row by row)
//
// Invariants: block_tokens % 16 == 0; bytes(K part) and bytes(V part) are multiples of 64,
// so every part starts on a cache line when blocks are 64-byte aligned.
// docs/KV_FORMATS.md mirrors this.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "base/status.h"

namespace slimkv::kv {

enum class ElemType { kF32, kF16 };

struct KvFormat {
  ElemType type = ElemType::kF16;
  bool operator==(const KvFormat&) const = default;
};

std::string FormatName(const KvFormat& f);  // "f16"
// Parses one side's spec ("f16", "fp16", "f32", "fp32"); the error lists the valid choices.
Result<KvFormat> ParseFormat(std::string_view spec);

struct KvConfig {
  KvFormat k, v;
  int block_tokens = 32;
};

// A named combination of K and V formats ("fp16", "fp32"); the error lists the presets.
Result<KvConfig> ParsePreset(std::string_view name);
std::string PresetList();

// Bytes of one side of a block.
struct PartLayout {
  size_t data_bytes = 0;  // the values themselves
  size_t meta_bytes = 0;  // scales, zero points, norms (none for float formats)
  size_t total() const { return data_bytes + meta_bytes; }
};
PartLayout KLayout(const KvFormat& f, int block_tokens, int head_dim);
PartLayout VLayout(const KvFormat& f, int block_tokens, int head_dim);

}  // namespace slimkv::kv
