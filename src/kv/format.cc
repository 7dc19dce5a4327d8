#include "kv/format.h"

#include <array>

namespace slimkv::kv {
namespace {

size_t ElemBytes(ElemType t) { return t == ElemType::kF32 ? 4 : 2; }

size_t RoundUp64(size_t n) { return (n + 63) / 64 * 64; }

struct Preset {
  std::string_view name;
  ElemType k, v;
};
constexpr std::array<Preset, 2> kPresets = {{
    {"fp16", ElemType::kF16, ElemType::kF16},
    {"fp32", ElemType::kF32, ElemType::kF32},
}};

}  // namespace

std::string FormatName(const KvFormat& f) { return f.type == ElemType::kF32 ? "f32" : "f16"; }

Result<KvFormat> ParseFormat(std::string_view spec) {
  if (spec == "f16" || spec == "fp16") return KvFormat{ElemType::kF16};
  if (spec == "f32" || spec == "fp32") return KvFormat{ElemType::kF32};
  return InvalidArgument("unknown KV format '{}'; valid formats: f16, f32", spec);
}

Result<KvConfig> ParsePreset(std::string_view name) {
  for (const auto& p : kPresets) {
    if (p.name == name) return KvConfig{KvFormat{p.k}, KvFormat{p.v}};
  }
  return InvalidArgument("unknown KV preset '{}'; valid presets: {}", name, PresetList());
}

std::string PresetList() {
  std::string s;
  for (const auto& p : kPresets) s += (s.empty() ? "" : ", ") + std::string(p.name);
  return s;
}

PartLayout KLayout(const KvFormat& f, int block_tokens, int head_dim) {
  return {RoundUp64(ElemBytes(f.type) * block_tokens * head_dim), 0};
}
PartLayout VLayout(const KvFormat& f, int block_tokens, int head_dim) {
  return {RoundUp64(ElemBytes(f.type) * block_tokens * head_dim), 0};
}

}  // namespace slimkv::kv
