#include "kv/format.h"

#include <array>
#include <vector>

#include "base/check.h"

namespace slimkv::kv {
namespace {

size_t RoundUp64(size_t n) { return (n + 63) / 64 * 64; }

struct TypeName {
  std::string_view name;
  ElemType type;
};
constexpr std::array<TypeName, 9> kTypes = {{
    {"f32", ElemType::kF32},
    {"f16", ElemType::kF16},
    {"bf16", ElemType::kBF16},
    {"fp8e4m3", ElemType::kFp8E4M3},
    {"fp8e5m2", ElemType::kFp8E5M2},
    {"int8", ElemType::kInt8},
    {"int4", ElemType::kInt4},
    {"int3", ElemType::kInt3},
    {"int2", ElemType::kInt2},
}};

std::string_view TypeNameOf(ElemType t) {
  for (const auto& n : kTypes)
    if (n.type == t) return n.name;
  return "?";
}

bool IsInt(ElemType t) {
  return t == ElemType::kInt8 || t == ElemType::kInt4 || t == ElemType::kInt3 || t == ElemType::kInt2;
}

constexpr std::string_view kTypeList =
    "f32, f16, bf16, fp8, fp8e4m3, fp8e5m2, int8, int4, int3, int2, q8_0, q4_0, tq1..tq4 (tq2.5: a fraction .25/.5/.75 "
    "of the channels one bit more)";
constexpr std::string_view kOptionList = "channel, token, g32, g64, g128, sym, asym, rot, pre (keys only), mean (tq keys only)";

// "tq3", "tq2.5", "tq2.25", "tq3.75": whole bits 1..4 and quarters of the channels one bit more.
bool ParseTurbo(std::string_view t, KvFormat& f) {
  if (t.size() < 3 || !t.starts_with("tq") || t[2] < '1' || t[2] > '4') return false;
  f.type = ElemType::kTurbo;
  f.granularity = Granularity::kVector;
  f.rotate = true;  // TurboQuant always rotates its side
  f.tq_bits = t[2] - '0';
  const std::string_view frac = t.substr(3);
  if (frac.empty()) return true;
  if (frac == ".25") f.tq_plus = 1;
  else if (frac == ".5") f.tq_plus = 2;
  else if (frac == ".75") f.tq_plus = 3;
  else return false;
  return f.tq_bits < 4;  // the extra bit makes at most 4-bit codes
}

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
    {"int4", "int4:channel", "int4:token", 128, "int4, keys per channel over 64-token blocks, values per token, 128 recent tokens in fp16", 64},
    {"kivi4", "int4:channel", "int4:g32", 128, "KIVI-4: keys per channel, values per token in groups of 32, residual 128"},
    {"kivi2", "int2:channel", "int2:g32", 128, "KIVI-2: keys per channel, values per token in groups of 32, residual 128"},
    {"q8_0", "q8_0", "q8_0", 0, "llama.cpp's q8_0: per token, blocks of 32 channels, one scale"},
    {"q4_0", "q4_0", "q4_0", 0, "llama.cpp's q4_0: per token, blocks of 32 channels, one scale"},
    {"q8_0r", "q8_0:rot", "q8_0:rot", 0, "q8_0 with a Hadamard rotation, as llama.cpp does by default"},
    {"q4_0r", "q4_0:rot", "q4_0:rot", 0, "q4_0 with a Hadamard rotation, as llama.cpp does by default"},
    // TurboQuant (turbo.h): per token, rotated, a norm and Lloyd-Max codes, no calibration.
    // The 32 most recent tokens (one block) stay in fp16: without them the keys of the
    // tokens a query attends to most sharply cost tq4 +6 % and tq3 +31 % perplexity on
    // SmolLM2; 128 tokens gain only 0.1-0.3 % more (docs/DECISIONS.md). Bits per element
    // include the fp16 norms.
    {"tq4", "tq4", "tq4", 32, "TurboQuant 4 bits: norm + rotation + Lloyd-Max codes (4.25 bits with the norms at head dim 64), residual 32"},
    {"tq3", "tq3", "tq3", 32, "TurboQuant 3 bits (3.25 bits with the norms at head dim 64), residual 32"},
    {"tq2.5", "tq2.5", "tq2.5", 32, "TurboQuant 2.5 bits: a half of the channels 3 bits (2.75 with the norms at head dim 64), residual 32"},
    {"tq2", "tq2", "tq2", 32, "TurboQuant 2 bits (2.25 bits with the norms at head dim 64), residual 32"},
    {"tqk4v3", "tq4", "tq3", 32, "TurboQuant keys 4 bits, values 3 (3.75 bits with the norms at head dim 64), residual 32"},
    {"tqk3v2", "tq3", "tq2", 32, "TurboQuant keys 3 bits, values 2 (2.75 bits with the norms at head dim 64), residual 32"},
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

int KvFormat::bits() const {
  switch (type) {
    case ElemType::kTurbo: return tq_bits;
    case ElemType::kF32: return 32;
    case ElemType::kF16: case ElemType::kBF16: return 16;
    case ElemType::kFp8E4M3: case ElemType::kFp8E5M2: case ElemType::kInt8: return 8;
    case ElemType::kInt4: return 4;
    case ElemType::kInt3: return 3;
    case ElemType::kInt2: return 2;
  }
  return 0;
}

double KvFormat::nominal_bits() const {
  return type == ElemType::kTurbo ? tq_bits + 0.25 * tq_plus : static_cast<double>(bits());
}

std::string FormatName(const KvFormat& f) {
  std::string s;
  if (f.type == ElemType::kTurbo) {  // always rotated: no ":rot"
    static constexpr std::string_view kFrac[] = {"", ".25", ".5", ".75"};
    s = "tq" + std::to_string(f.tq_bits) + std::string(kFrac[f.tq_plus & 3]);
    return f.tq_mean ? s + ":mean" : s;
  }
  if (f.ggml_rounding) {
    s = f.type == ElemType::kInt8 ? "q8_0" : "q4_0";
  } else {
    s = std::string(TypeNameOf(f.type));
    if (f.granularity == Granularity::kChannel) s += ":channel";
    if (f.granularity == Granularity::kToken) s += f.group > 0 ? ":g" + std::to_string(f.group) : ":token";
    if (IsInt(f.type) && f.symmetric) s += ":sym";
  }
  if (f.rotate) s += ":rot";
  if (f.pre_rope) s += ":pre";
  return s;
}

Result<KvFormat> ParseFormat(std::string_view spec, bool is_key) {
  const auto parts = Split(spec, ':');
  KvFormat f;
  const std::string_view t = parts[0];
  bool known = false;
  if (t == "q8_0" || t == "q4_0") {
    f.type = t == "q8_0" ? ElemType::kInt8 : ElemType::kInt4;
    f.granularity = Granularity::kToken;
    f.group = 32;
    f.symmetric = true;
    f.ggml_rounding = true;
    known = true;
  } else if (t.starts_with("tq")) {
    known = ParseTurbo(t, f);
  } else {
    const std::string_view name = t == "fp8" ? "fp8e4m3" : (t == "fp16" ? "f16" : (t == "fp32" ? "f32" : t));
    for (const auto& n : kTypes) {
      if (n.name == name) {
        f.type = n.type;
        known = true;
      }
    }
    if (f.type == ElemType::kFp8E4M3 || f.type == ElemType::kFp8E5M2) f.granularity = Granularity::kBlock;
    if (IsInt(f.type)) f.granularity = is_key ? Granularity::kChannel : Granularity::kToken;
  }
  if (!known) {
    return InvalidArgument("unknown KV element type '{}' in '{}'; valid types: {}", t, spec, kTypeList);
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string_view o = parts[i];
    const bool int_only = o == "channel" || o == "token" || o == "sym" || o == "asym" || o.starts_with("g");
    if (int_only && (!IsInt(f.type) || f.ggml_rounding)) {
      return InvalidArgument("option '{}' in '{}' applies to int8/int4/int3/int2 only; valid options: {}", o,
                             spec, kOptionList);
    }
    if (f.type == ElemType::kTurbo && o == "pre") {
      return InvalidArgument("option 'pre' in '{}': TurboQuant rotates every key, so keys are stored after RoPE", spec);
    }
    if (o == "mean") {
      if (f.type != ElemType::kTurbo) return InvalidArgument("option 'mean' in '{}' applies to tq formats only", spec);
      if (!is_key) {
        return InvalidArgument("option 'mean' in '{}': the block mean is subtracted from keys only", spec);
      }
      f.tq_mean = true;
    } else if (o == "channel") {
      f.granularity = Granularity::kChannel;
      f.group = 0;
    } else if (o == "token") {
      f.granularity = Granularity::kToken;
      f.group = 0;
    } else if (o == "g32" || o == "g64" || o == "g128") {
      f.granularity = Granularity::kToken;
      f.group = o == "g32" ? 32 : (o == "g64" ? 64 : 128);
    } else if (o == "sym") {
      f.symmetric = true;
    } else if (o == "asym") {
      f.symmetric = false;
    } else if (o == "rot") {
      f.rotate = true;
    } else if (o == "pre") {
      if (!is_key) return InvalidArgument("option 'pre' in '{}': only keys can be stored before RoPE", spec);
      f.pre_rope = true;
    } else {
      return InvalidArgument("unknown option '{}' in KV format '{}'; valid options: {}", o, spec, kOptionList);
    }
  }
  if (f.rotate && f.pre_rope) {
    return InvalidArgument("'{}': a rotated key cannot be stored before RoPE (RoPE must act on the unrotated key)", spec);
  }
  return f;
}

bool KvConfig::needs_staging() const {
  auto by_token = [](const KvFormat& f) {
    return f.is_float() || f.granularity == Granularity::kToken || (f.granularity == Granularity::kVector && !f.tq_mean);
  };
  return residual > 0 ? (k.needs_staging() || v.needs_staging()) : !(by_token(k) && by_token(v));
}

KvFormat KvConfig::StagingK() const {
  return KvFormat{.type = k.type == ElemType::kF32 && v.type == ElemType::kF32 ? ElemType::kF32 : ElemType::kF16,
                  .rotate = k.rotate, .pre_rope = k.pre_rope};
}
KvFormat KvConfig::StagingV() const {
  return KvFormat{.type = k.type == ElemType::kF32 && v.type == ElemType::kF32 ? ElemType::kF32 : ElemType::kF16,
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

namespace {
PartLayout Layout(const KvFormat& f, int block_tokens, int head_dim, bool is_key) {
  PartLayout p;
  if (f.type == ElemType::kTurbo) {
    const TurboLayout t = MakeTurboLayout(f, block_tokens, head_dim);
    p.data_bytes = t.data_bytes;
    p.meta_bytes = t.meta_bytes;
    p.meta_offset = t.norm_offset;
    return p;
  }
  const size_t elems = static_cast<size_t>(block_tokens) * head_dim;
  p.data_bytes = elems * f.bits() / 8;
  const size_t meta_values = f.symmetric ? 1 : 2;  // scale (and zero)
  switch (f.granularity) {
    case Granularity::kNone: p.meta_bytes = 0; break;
    case Granularity::kBlock: p.meta_bytes = 2; break;
    case Granularity::kChannel: p.meta_bytes = 2 * meta_values * head_dim; break;
    case Granularity::kToken:
      p.meta_bytes = 2 * meta_values * static_cast<size_t>(block_tokens) * (head_dim / f.group_size(head_dim));
      break;
    case Granularity::kVector: break;  // tq: MakeTurboLayout above
  }
  (void)is_key;
  p.code_offset = 0;
  p.meta_offset = p.data_bytes;
  return p;
}
}  // namespace

PartLayout KLayout(const KvFormat& f, int block_tokens, int head_dim) {
  return Layout(f, block_tokens, head_dim, true);
}
PartLayout VLayout(const KvFormat& f, int block_tokens, int head_dim) {
  return Layout(f, block_tokens, head_dim, false);
}

Status CheckFormat(const KvFormat& f, int head_dim, bool is_key) {
  const char* side = is_key ? "K" : "V";
  if (f.granularity == Granularity::kToken) {
    const int g = f.group_size(head_dim);
    if (g % 16 != 0 || head_dim % g != 0) {
      return InvalidArgument("{} format {}: group of {} channels does not divide head dim {} in multiples of 16",
                             side, FormatName(f), g, head_dim);
    }
  }
  if (f.type == ElemType::kTurbo) {
    if (head_dim <= 0 || (head_dim & (head_dim - 1)) != 0) {
      return InvalidArgument("{} format {}: TurboQuant rotates each vector with a Hadamard transform, which needs a "
                             "power-of-two head dim; this model's head dim is {}",
                             side, FormatName(f), head_dim);
    }
    if (f.tq_plus > 0 && head_dim % 64 != 0) {
      return InvalidArgument("{} format {}: a quarter of head dim {} is not a multiple of 16 channels; use whole bits",
                             side, FormatName(f), head_dim);
    }
  }
  if (f.rotate && (head_dim & (head_dim - 1)) != 0) {
    return InvalidArgument("{} format {}: the Hadamard rotation needs a power-of-two head dim, not {}", side,
                           FormatName(f), head_dim);
  }
  return Status::Ok();
}

TurboLayout MakeTurboLayout(const KvFormat& f, int bt, int hd) {
  CHECK(f.type == ElemType::kTurbo, "not a tq format: {}", FormatName(f));
  TurboLayout t;
  t.lo_bits = f.tq_bits;
  t.hi_bits = t.lo_bits + 1;
  t.hi_channels = f.tq_plus * hd / 4;
  const size_t btz = static_cast<size_t>(bt);
  t.hi_offset = 0;
  t.lo_offset = t.hi_offset + btz * t.hi_channels * t.hi_bits / 8;
  t.data_bytes = t.lo_offset + btz * (hd - t.hi_channels) * t.lo_bits / 8;
  t.norm_offset = t.data_bytes;
  t.mean = f.tq_mean;
  t.mean_offset = t.norm_offset + 2 * btz;
  t.meta_bytes = 2 * btz + (f.tq_mean ? 2 * static_cast<size_t>(hd) : 0);
  return t;
}

double BitsPerElement(const KvConfig& c, int head_dim) {
  const PartLayout k = KLayout(c.k, c.block_tokens, head_dim), v = VLayout(c.v, c.block_tokens, head_dim);
  return 8.0 * static_cast<double>(k.data_bytes + k.meta_bytes + v.data_bytes + v.meta_bytes) /
         (2.0 * c.block_tokens * head_dim);
}

}  // namespace slimkv::kv
