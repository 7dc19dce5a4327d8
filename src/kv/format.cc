#include "kv/format.h"

#include <array>
#include <vector>

#include "base/check.h"
#include "kv/codecs/codec_family.h"

namespace slimkv::kv {
namespace {

size_t RoundUp64(size_t n) { return (n + 63) / 64 * 64; }

struct Preset {
  std::string_view name;
  std::string_view k, v;
  int residual;
  std::string_view what;
  int block_tokens = 32;
};
// The useful combinations, by the names users will type.
constexpr std::array<Preset, 18> kPresets = {{
    {"fp16", "f16", "f16", 0, "fp16 keys and values (the baseline)"},
    {"fp32", "f32", "f32", 0, "fp32 keys and values (reference)"},
    {"bf16", "bf16", "bf16", 0, "bf16 keys and values"},
    {"fp8", "fp8e4m3", "fp8e4m3", 0, "fp8 e4m3 with a per-block scale"},
    {"int8", "int8:channel", "int8:token", 0, "int8, keys per channel, values per token"},
    // Blocks of 64: per-channel key scales over 64 tokens make int4 exactly as large as
    // llama.cpp's q4_0 (6480 bytes/token on SmolLM2), for the side-by-side comparison.
    {"int4", "int4:channel", "int4:token", 128,
     "int4, keys per channel over 64-token blocks, values per token, 128 recent tokens in fp16", 64},
    {"kivi4", "int4:channel", "int4:g32", 128,
     "KIVI-4: keys per channel, values per token in groups of 32, residual 128"},
    {"kivi2", "int2:channel", "int2:g32", 128,
     "KIVI-2: keys per channel, values per token in groups of 32, residual 128"},
    {"q8_0", "q8_0", "q8_0", 0, "llama.cpp's q8_0: per token, blocks of 32 channels, one scale"},
    {"q4_0", "q4_0", "q4_0", 0, "llama.cpp's q4_0: per token, blocks of 32 channels, one scale"},
    {"q8_0r", "q8_0:rot", "q8_0:rot", 0, "q8_0 with a Hadamard rotation, as llama.cpp does by default"},
    {"q4_0r", "q4_0:rot", "q4_0:rot", 0, "q4_0 with a Hadamard rotation, as llama.cpp does by default"},
    // TurboQuant (codecs/turbo_codec.h): per token, rotated, a norm and Lloyd-Max codes, no calibration.
    // The 32 most recent tokens (one block) stay in fp16: without them the keys of the
    // tokens a query attends to most sharply cost tq4 +6 % and tq3 +31 % perplexity on
    // SmolLM2; 128 tokens gain only 0.1-0.3 % more (docs/DECISIONS.md). Bits per element
    // include the fp16 norms.
    {"tq4", "tq4", "tq4", 32,
     "TurboQuant 4 bits: norm + rotation + Lloyd-Max codes (4.25 bits with the norms at head dim 64), "
     "residual 32"},
    {"tq3", "tq3", "tq3", 32, "TurboQuant 3 bits (3.25 bits with the norms at head dim 64), residual 32"},
    {"tq2.5", "tq2.5", "tq2.5", 32,
     "TurboQuant 2.5 bits: a half of the channels 3 bits (2.75 with the norms at head dim 64), residual 32"},
    {"tq2", "tq2", "tq2", 32, "TurboQuant 2 bits (2.25 bits with the norms at head dim 64), residual 32"},
    {"tqk4v3", "tq4", "tq3", 32,
     "TurboQuant keys 4 bits, values 3 (3.75 bits with the norms at head dim 64), residual 32"},
    {"tqk3v2", "tq3", "tq2", 32,
     "TurboQuant keys 3 bits, values 2 (2.75 bits with the norms at head dim 64), residual 32"},
}};

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

}  // namespace

int KvFormat::bits() const { return FamilyOf(type).bits(*this); }
double KvFormat::nominal_bits() const { return FamilyOf(type).nominal_bits(*this); }

std::string FormatName(const KvFormat& f) {
  const CodecFamily& fam = FamilyOf(f);
  std::string s = fam.name(f);
  if (f.rotate && !fam.always_rotated) s += ":rot";
  if (f.pre_rope) s += ":pre";
  return s;
}

Result<KvFormat> ParseFormat(std::string_view spec, bool is_key) {
  const auto parts = Split(spec, ':');
  KvFormat f;
  const CodecFamily* fam = nullptr;
  for (const CodecFamily* c : CodecFamilies()) {
    if (c->parse_type(parts[0], is_key, &f)) {
      fam = c;
      break;
    }
  }
  if (!fam) {
    std::string types;
    for (const CodecFamily* c : CodecFamilies()) types += (types.empty() ? "" : "; ") + std::string(c->types);
    return InvalidArgument("unknown KV element type '{}' in '{}'; valid types: {}", parts[0], spec, types);
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string_view o = parts[i];
    if (std::optional<Status> st = fam->parse_option(o, spec, is_key, &f)) {
      RETURN_IF_ERROR(*st);
    } else if (o == "rot") {
      f.rotate = true;
    } else if (o == "pre") {
      if (!is_key) return InvalidArgument("option 'pre' in '{}': only keys can be stored before RoPE", spec);
      f.pre_rope = true;
    } else {
      return InvalidArgument(
          "unknown option '{}' in KV format '{}'; valid options for {}: {}rot, pre (keys only)", o, spec,
          parts[0], fam->options.empty() ? "" : std::string(fam->options) + ", ");
    }
  }
  if (f.rotate && f.pre_rope) {
    return InvalidArgument(
        "'{}': a rotated key cannot be stored before RoPE (RoPE must act on the unrotated key)", spec);
  }
  return f;
}

bool KvConfig::needs_staging() const {
  auto by_token = [](const KvFormat& f) { return FamilyOf(f).by_token(f); };
  return residual > 0 ? (k.needs_staging() || v.needs_staging()) : !(by_token(k) && by_token(v));
}

KvFormat KvConfig::StagingK() const {
  return KvFormat{
      .type = k.type == ElemType::kF32 && v.type == ElemType::kF32 ? ElemType::kF32 : ElemType::kF16,
      .rotate = k.rotate,
      .pre_rope = k.pre_rope};
}
KvFormat KvConfig::StagingV() const {
  return KvFormat{
      .type = k.type == ElemType::kF32 && v.type == ElemType::kF32 ? ElemType::kF32 : ElemType::kF16,
      .rotate = v.rotate};
}

Result<KvConfig> ParsePreset(std::string_view name) {
  for (const auto& p : kPresets) {
    if (p.name == name) {
      KvConfig c;
      ASSIGN_OR_RETURN(c.k, ParseFormat(p.k, true));
      ASSIGN_OR_RETURN(c.v, ParseFormat(p.v, false));
      c.residual = p.residual;
      c.block_tokens = p.block_tokens;
      return c;
    }
  }
  return InvalidArgument("unknown KV preset '{}'; valid presets: {}", name, PresetList());
}

std::vector<std::string> PresetNames() {
  std::vector<std::string> names;
  for (const auto& p : kPresets) names.emplace_back(p.name);
  return names;
}

std::string PresetList() {
  std::string s;
  for (const auto& p : kPresets) s += (s.empty() ? "" : ", ") + std::string(p.name);
  return s;
}

Result<KvConfig> MakeConfig(std::string_view preset, std::string_view k_spec, std::string_view v_spec,
                            int residual) {
  ASSIGN_OR_RETURN(KvConfig c, ParsePreset(preset.empty() ? "fp16" : preset));
  if (!k_spec.empty()) {
    ASSIGN_OR_RETURN(c.k, ParseFormat(k_spec, true));
  }
  if (!v_spec.empty()) {
    ASSIGN_OR_RETURN(c.v, ParseFormat(v_spec, false));
  }
  if (residual >= 0) c.residual = residual;
  if (c.residual < 0) return InvalidArgument("residual window {} is negative", c.residual);
  return c;
}

std::string ConfigName(const KvConfig& c) {
  std::string s = "K " + FormatName(c.k) + ", V " + FormatName(c.v);
  if (c.needs_staging()) s += ", residual " + std::to_string(c.residual);
  return s;
}

size_t PartLayout::total() const { return RoundUp64(data_bytes + meta_bytes); }

PartLayout KLayout(const KvFormat& f, int block_tokens, int head_dim) {
  return FamilyOf(f).layout(f, block_tokens, head_dim, true);
}
PartLayout VLayout(const KvFormat& f, int block_tokens, int head_dim) {
  return FamilyOf(f).layout(f, block_tokens, head_dim, false);
}

Status CheckFormat(const KvFormat& f, int head_dim, bool is_key) {
  RETURN_IF_ERROR(FamilyOf(f).check(f, head_dim, is_key));
  if (f.rotate && (head_dim & (head_dim - 1)) != 0) {
    return InvalidArgument("{} format {}: the Hadamard rotation needs a power-of-two head dim, not {}",
                           is_key ? "K" : "V", FormatName(f), head_dim);
  }
  return Status::Ok();
}

double BitsPerElement(const KvConfig& c, int head_dim) {
  const PartLayout k = KLayout(c.k, c.block_tokens, head_dim), v = VLayout(c.v, c.block_tokens, head_dim);
  return 8.0 * static_cast<double>(k.data_bytes + k.meta_bytes + v.data_bytes + v.meta_bytes) /
         (2.0 * c.block_tokens * head_dim);
}

}  // namespace slimkv::kv
