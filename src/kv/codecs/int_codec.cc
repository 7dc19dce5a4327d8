#include "kv/codecs/int_codec.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "base/check.h"
#include "base/half.h"
#include "kv/codecs/packing.h"

namespace slimkv::kv {
namespace {

bool Owns(ElemType t) {
  return t == ElemType::kInt8 || t == ElemType::kInt4 || t == ElemType::kInt3 || t == ElemType::kInt2;
}

struct TypeName {
  std::string_view name;
  ElemType type;
  int bits;
};
constexpr std::array<TypeName, 4> kNames = {{{"int8", ElemType::kInt8, 8},
                                             {"int4", ElemType::kInt4, 4},
                                             {"int3", ElemType::kInt3, 3},
                                             {"int2", ElemType::kInt2, 2}}};

int Bits(const KvFormat& f) {
  for (const TypeName& n : kNames)
    if (n.type == f.type) return n.bits;
  return 0;
}
double NominalBits(const KvFormat& f) { return Bits(f); }

bool ParseType(std::string_view type, bool is_key, KvFormat* f) {
  if (type == "q8_0" || type == "q4_0") {
    f->type = type == "q8_0" ? ElemType::kInt8 : ElemType::kInt4;
    f->granularity = Granularity::kToken;
    f->group = 32;
    f->symmetric = true;
    f->ggml_rounding = true;
    return true;
  }
  for (const TypeName& n : kNames) {
    if (n.name != type) continue;
    f->type = n.type;
    f->granularity = is_key ? Granularity::kChannel : Granularity::kToken;
    return true;
  }
  return false;
}

std::optional<Status> ParseOption(std::string_view o, std::string_view spec, bool, KvFormat* f) {
  const bool mine =
      o == "channel" || o == "token" || o == "sym" || o == "asym" || o == "g32" || o == "g64" || o == "g128";
  if (!mine) return std::nullopt;
  if (f->ggml_rounding) {
    return InvalidArgument(
        "option '{}' in '{}': q8_0 and q4_0 are fixed (per token, groups of 32, symmetric)", o, spec);
  }
  if (o == "channel") {
    f->granularity = Granularity::kChannel;
    f->group = 0;
  } else if (o == "token") {
    f->granularity = Granularity::kToken;
    f->group = 0;
  } else if (o == "sym" || o == "asym") {
    f->symmetric = o == "sym";
  } else {
    f->granularity = Granularity::kToken;
    f->group = o == "g32" ? 32 : (o == "g64" ? 64 : 128);
  }
  return Status::Ok();
}

std::string Name(const KvFormat& f) {
  if (f.ggml_rounding) return f.type == ElemType::kInt8 ? "q8_0" : "q4_0";
  std::string s = "int" + std::to_string(Bits(f));
  if (f.granularity == Granularity::kChannel) s += ":channel";
  if (f.granularity == Granularity::kToken) s += f.group > 0 ? ":g" + std::to_string(f.group) : ":token";
  if (f.symmetric) s += ":sym";
  return s;
}

PartLayout Layout(const KvFormat& f, int bt, int hd, bool) {
  PartLayout p;
  p.data_bytes = static_cast<size_t>(bt) * hd * Bits(f) / 8;
  p.meta_bytes = 2 * (f.symmetric ? 1 : 2) * IntScaleCount(f, bt, hd);
  p.meta_offset = p.data_bytes;
  return p;
}

Status Check(const KvFormat& f, int hd, bool is_key) {
  if (f.granularity != Granularity::kToken) return Status::Ok();
  const int g = f.group_size(hd);
  if (g % 16 != 0 || hd % g != 0) {
    return InvalidArgument(
        "{} format {}: group of {} channels does not divide head dim {} in multiples of 16",
        is_key ? "K" : "V", Name(f), g, hd);
  }
  return Status::Ok();
}

bool ByToken(const KvFormat& f) { return f.granularity == Granularity::kToken; }

// ---------------------------------------------------------------- quantizers
struct ScaleZero {
  float scale = 0, zero = 0;  // fp16-rounded
};

// Asymmetric or symmetric scale of a group (finite values only), rounded to fp16.
ScaleZero ChooseScale(const KvFormat& f, const float* x, size_t n, size_t stride) {
  const int b = Bits(f);
  float lo = INFINITY, hi = -INFINITY, amax = 0, max_signed = 0;
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i * stride];
    if (!std::isfinite(v)) continue;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    if (std::abs(v) > amax) {
      amax = std::abs(v);
      max_signed = v;
    }
  }
  ScaleZero s;
  if (lo > hi) return s;  // no finite value: all codes decode to 0
  if (f.ggml_rounding) {
    // q8_0: d = amax / 127; q4_0: d = max / -8 (the signed value of largest magnitude).
    s.scale = f.type == ElemType::kInt8 ? amax / 127.0f : max_signed / -8.0f;
  } else if (f.symmetric) {
    s.scale = amax / static_cast<float>((1 << (b - 1)) - 1);
  } else {
    s.scale = (hi - lo) / static_cast<float>((1 << b) - 1);
    s.zero = HalfToFloat(FloatToHalf(lo));
  }
  s.scale = HalfToFloat(FloatToHalf(s.scale));
  return s;
}

uint32_t Quantize(const KvFormat& f, const ScaleZero& s, float x, float ggml_inverse) {
  const int b = Bits(f);
  const int max_code = (1 << b) - 1;
  if (std::isnan(x)) x = 0;
  if (f.ggml_rounding) {
    const float v = x * ggml_inverse;
    if (f.type == ElemType::kInt8) {
      const int q = static_cast<int>(std::round(std::clamp(v, -128.0f, 127.0f)));
      return static_cast<uint32_t>(q + 128);
    }
    const int q = std::min(15, static_cast<int>(static_cast<int8_t>(std::clamp(v + 8.5f, -128.0f, 127.0f))));
    return static_cast<uint32_t>(std::max(0, q));
  }
  if (s.scale == 0) return f.symmetric ? (1u << (b - 1)) : 0;
  float q = f.symmetric ? x / s.scale + static_cast<float>(1 << (b - 1)) : (x - s.zero) / s.scale;
  q = std::round(std::clamp(q, 0.0f, static_cast<float>(max_code)));
  if (f.symmetric) q = std::max(q, 1.0f);  // symmetric levels are +-(2^(b-1) - 1) around 2^(b-1)
  return static_cast<uint32_t>(q);
}

float Dequantize(const KvFormat& f, float scale, float zero, uint32_t code) {
  if (f.symmetric) return scale * (static_cast<float>(code) - static_cast<float>(1 << (Bits(f) - 1)));
  return scale * static_cast<float>(code) + zero;
}

// Inverse scale as llama.cpp computes it: from the fp32 scale, before fp16 rounding.
float GgmlInverse(const KvFormat& f, const float* x, size_t n, size_t stride) {
  float amax = 0, max_signed = 0;
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i * stride];
    if (std::isfinite(v) && std::abs(v) > amax) {
      amax = std::abs(v);
      max_signed = v;
    }
  }
  const float d = f.type == ElemType::kInt8 ? amax / 127.0f : max_signed / -8.0f;
  return d != 0 ? 1.0f / d : 0.0f;
}

// ---------------------------------------------------------------- parts
// The scale/zero metadata of a part.
struct Meta {
  const KvFormat& f;
  uint8_t* base;  // part start + meta offset
  size_t count;   // scales stored (zeros follow unless symmetric)
  size_t ScaleIndex(bool is_key, int bt, int groups, int t, int g_or_channel) const {
    if (f.granularity == Granularity::kChannel) return g_or_channel;
    // Per-token groups: K stores [groups][tokens], V [tokens][groups].
    return is_key ? static_cast<size_t>(g_or_channel) * bt + t
                  : static_cast<size_t>(t) * groups + g_or_channel;
  }
  float scale(size_t i) const { return GetHalf(base, i); }
  float zero(size_t i) const { return f.symmetric ? 0.0f : GetHalf(base, count + i); }
  void Put(size_t i, const ScaleZero& s) {
    PutHalf(base, i, s.scale);
    if (!f.symmetric) PutHalf(base, count + i, s.zero);
  }
};

// Token `t` of a per-token (channel groups) part: scales and codes of each group.
void EncodeTokenGroups(const KvFormat& f, bool is_key, int bt, int hd, int t, const float* x, uint8_t* part) {
  const int g = f.group_size(hd), groups = hd / g, b = Bits(f);
  Meta meta{f, part + Layout(f, bt, hd, is_key).meta_offset, IntScaleCount(f, bt, hd)};
  for (int gi = 0; gi < groups; ++gi) {
    const float* xs = x + gi * g;
    const ScaleZero s = ChooseScale(f, xs, g, 1);
    const float inv = f.ggml_rounding ? GgmlInverse(f, xs, g, 1) : 0;
    meta.Put(meta.ScaleIndex(is_key, bt, groups, t, gi), s);
    for (int j = 0; j < g; ++j)
      PutCode(part, CodeArray{b, is_key, bt, hd}, t, gi * g + j, Quantize(f, s, xs[j], inv));
  }
}

void EncodeToken(const KvFormat& f, bool is_key, int bt, int hd, int slot, const float* x, uint8_t* part) {
  CHECK(ByToken(f), "{} is encoded a part at a time (scales over the block's tokens)", Name(f));
  EncodeTokenGroups(f, is_key, bt, hd, slot, x, part);
}

void EncodePart(const KvFormat& f, bool is_key, int bt, int hd, const float* x, int n, uint8_t* part) {
  if (f.granularity == Granularity::kToken) {
    for (int t = 0; t < n; ++t)
      EncodeTokenGroups(f, is_key, bt, hd, t, x + static_cast<size_t>(t) * hd, part);
    return;
  }
  const int b = Bits(f);
  Meta meta{f, part + Layout(f, bt, hd, is_key).meta_offset, IntScaleCount(f, bt, hd)};
  for (int d = 0; d < hd; ++d) {
    const ScaleZero s = ChooseScale(f, x + d, n, hd);
    meta.Put(meta.ScaleIndex(is_key, bt, 0, 0, d), s);
    for (int t = 0; t < n; ++t)
      PutCode(part, CodeArray{b, is_key, bt, hd}, t, d, Quantize(f, s, x[t * hd + d], 0));
  }
}

void DecodeToken(const KvFormat& f, bool is_key, int bt, int hd, int t, const uint8_t* part, float* out) {
  const bool per_channel = f.granularity == Granularity::kChannel;
  const int g = f.group_size(hd), groups = per_channel ? 0 : hd / g;
  Meta meta{f, const_cast<uint8_t*>(part) + Layout(f, bt, hd, is_key).meta_offset, IntScaleCount(f, bt, hd)};
  for (int d = 0; d < hd; ++d) {
    const size_t si = meta.ScaleIndex(is_key, bt, groups, t, per_channel ? d : d / g);
    out[d] =
        Dequantize(f, meta.scale(si), meta.zero(si), GetCode(part, CodeArray{Bits(f), is_key, bt, hd}, t, d));
  }
}

float MaxAbsError(const KvFormat& f, float lo, float hi) {
  const float amax = std::max(std::abs(lo), std::abs(hi));
  const float half_eps = amax * std::ldexp(1.0f, -10);  // fp16 rounding of a stored scale/zero
  const int b = Bits(f);
  if (f.ggml_rounding) {
    const float step = f.type == ElemType::kInt8 ? amax / 127.0f : amax / 8.0f;
    // q4_0 truncates (int8_t)(x*id + 8.5): one full step at worst near the clamp at 15.
    return (f.type == ElemType::kInt8 ? 0.5f : 1.0f) * step + 2 * half_eps;
  }
  const float step = f.symmetric ? amax / static_cast<float>((1 << (b - 1)) - 1)
                                 : (hi - lo) / static_cast<float>((1 << b) - 1);
  return 0.5f * step * (1 + std::ldexp(1.0f, -9)) + 2 * half_eps;
}

}  // namespace

size_t IntScaleCount(const KvFormat& f, int bt, int hd) {
  if (f.granularity == Granularity::kChannel) return hd;
  return static_cast<size_t>(bt) * (hd / f.group_size(hd));
}

const CodecFamily kIntFamily = {
    .id = "int",
    .types = "int8, int4, int3, int2, q8_0, q4_0",
    .options = "channel, token, g32, g64, g128, sym, asym",
    .owns = Owns,
    .parse_type = ParseType,
    .parse_option = ParseOption,
    .name = Name,
    .bits = Bits,
    .nominal_bits = NominalBits,
    .layout = Layout,
    .check = Check,
    .by_token = ByToken,
    .encode_token = EncodeToken,
    .encode_part = EncodePart,
    .decode_token = DecodeToken,
    .max_abs_error = MaxAbsError,
};

}  // namespace slimkv::kv
