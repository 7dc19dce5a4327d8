#include "kv/codec.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/check.h"
#include "base/half.h"
#include "kv/turbo.h"

namespace slimkv::kv {
namespace {

// ---------------------------------------------------------------- element access
// Float formats are plain arrays; sub-byte and byte codes use the packing of format.h.
void PutFloat(ElemType t, uint8_t* p, size_t i, float x) {
  switch (t) {
    case ElemType::kF32: std::memcpy(p + 4 * i, &x, 4); return;
    case ElemType::kF16: { const uint16_t h = FloatToHalf(x); std::memcpy(p + 2 * i, &h, 2); return; }
    case ElemType::kBF16: { const uint16_t h = FloatToBf16(x); std::memcpy(p + 2 * i, &h, 2); return; }
    default: CHECK(false, "not a float format");
  }
}
float GetFloat(ElemType t, const uint8_t* p, size_t i) {
  switch (t) {
    case ElemType::kF32: { float x; std::memcpy(&x, p + 4 * i, 4); return x; }
    case ElemType::kF16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); return HalfToFloat(h); }
    case ElemType::kBF16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); return Bf16ToFloat(h); }
    default: CHECK(false, "not a float format");
  }
  return 0;
}

float GetHalf(const uint8_t* p, size_t i) {
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return HalfToFloat(h);
}
void PutHalf(uint8_t* p, size_t i, float x) {
  const uint16_t h = FloatToHalf(x);
  std::memcpy(p + 2 * i, &h, 2);
}

bool IsFp8(ElemType t) { return t == ElemType::kFp8E4M3 || t == ElemType::kFp8E5M2; }

// ---------------------------------------------------------------- quantizers
struct ScaleZero {
  float scale = 0, zero = 0;  // fp16-rounded
};

// Asymmetric or symmetric scale of a group (finite values only), rounded to fp16.
ScaleZero ChooseScale(const KvFormat& f, const float* x, size_t n, size_t stride) {
  const int b = f.bits();
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
  const int b = f.bits();
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
  if (f.symmetric) return scale * (static_cast<float>(code) - static_cast<float>(1 << (f.bits() - 1)));
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

float Fp8Max(ElemType t) { return t == ElemType::kFp8E4M3 ? 448.0f : 57344.0f; }

// Generic float -> minifloat with `m` mantissa bits and exponent bias `bias`, round to
// nearest even, saturating at `max_finite`; NaN -> 0.
uint8_t FloatToMini(float x, int m, int bias, float max_finite) {
  if (std::isnan(x)) return 0;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  float a = std::min(std::abs(x), max_finite);
  if (a == 0) return sign;
  int e;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
  int exp = e - 1 + bias;  // biased exponent of a normal number
  if (exp < 1) exp = 1;    // subnormal: fixed exponent 1 - bias
  const float step = std::ldexp(1.0f, exp - bias - m);  // value of one mantissa ulp
  float q = std::nearbyint(a / step);  // round half to even (default rounding mode)
  // q counts ulps from 0; q >= 2^(m+1) means the rounding carried into the next exponent.
  if (q >= static_cast<float>(2 << m)) {
    ++exp;
    q /= 2;
  }
  uint32_t mant = static_cast<uint32_t>(q);
  uint32_t biased = (mant >= (1u << m)) ? static_cast<uint32_t>(exp) : 0;  // subnormal if no implicit bit
  mant &= (1u << m) - 1;
  uint8_t out = static_cast<uint8_t>(sign | (biased << m) | mant);
  return out;
}

float MiniToFloat(uint8_t b, int m, int bias) {
  const float sign = (b & 0x80) ? -1.0f : 1.0f;
  const int exp = (b >> m) & ((1 << (7 - m)) - 1);
  const int mant = b & ((1 << m) - 1);
  if (exp == 0) return sign * std::ldexp(static_cast<float>(mant), 1 - bias - m);
  return sign * std::ldexp(static_cast<float>(mant + (1 << m)), exp - bias - m);
}

// ---------------------------------------------------------------- parts
// The scale/zero metadata of a part; see format.h for the layouts.
struct Meta {
  const KvFormat& f;
  uint8_t* base;  // part start + meta offset
  size_t count;   // scales stored (zeros follow unless symmetric)
  size_t ScaleIndex(bool is_key, int bt, int groups, int t, int g_or_channel) const {
    if (f.granularity == Granularity::kChannel) return g_or_channel;
    // Per-token groups: K stores [groups][tokens], V [tokens][groups].
    return is_key ? static_cast<size_t>(g_or_channel) * bt + t : static_cast<size_t>(t) * groups + g_or_channel;
  }
  float scale(size_t i) const { return GetHalf(base, i); }
  float zero(size_t i) const { return f.symmetric || f.ggml_rounding ? 0.0f : GetHalf(base, count + i); }
  void Put(size_t i, const ScaleZero& s) {
    PutHalf(base, i, s.scale);
    if (!(f.symmetric || f.ggml_rounding)) PutHalf(base, count + i, s.zero);
  }
};

size_t ScaleCount(const KvFormat& f, int bt, int hd) {
  if (f.granularity == Granularity::kChannel) return hd;
  if (f.granularity == Granularity::kToken) return static_cast<size_t>(bt) * (hd / f.group_size(hd));
  return 1;
}

// Element index of (token t, channel d) in a part's codes.
size_t Elem(bool is_key, int bt, int hd, int t, int d) {
  return is_key ? static_cast<size_t>(d) * bt + t : static_cast<size_t>(t) * hd + d;
}

// Token `t` of a per-token (channel groups) integer part: scales and codes of each group.
void EncodeTokenGroups(bool is_key, const KvFormat& f, int bt, int hd, int t, const float* x, uint8_t* part) {
  const PartLayout lay = is_key ? KLayout(f, bt, hd) : VLayout(f, bt, hd);
  const int g = f.group_size(hd), groups = hd / g, b = f.bits();
  Meta meta{f, part + lay.meta_offset, ScaleCount(f, bt, hd)};
  for (int gi = 0; gi < groups; ++gi) {
    const float* xs = x + gi * g;
    const ScaleZero s = ChooseScale(f, xs, g, 1);
    const float inv = f.ggml_rounding ? GgmlInverse(f, xs, g, 1) : 0;
    meta.Put(meta.ScaleIndex(is_key, bt, groups, t, gi), s);
    for (int j = 0; j < g; ++j) PutCode(part, b, Elem(is_key, bt, hd, t, gi * g + j), Quantize(f, s, xs[j], inv));
  }
}

void EncodePart(bool is_key, const KvFormat& f, int bt, int hd, const float* x, int n, uint8_t* part) {
  const PartLayout lay = is_key ? KLayout(f, bt, hd) : VLayout(f, bt, hd);
  std::memset(part, 0, lay.total());
  if (f.type == ElemType::kTurbo) return EncodeTurboPart(f, is_key, bt, hd, x, n, part);
  if (f.is_float()) {
    for (int t = 0; t < n; ++t)
      for (int d = 0; d < hd; ++d) PutFloat(f.type, part, Elem(is_key, bt, hd, t, d), x[t * hd + d]);
    return;
  }
  if (IsFp8(f.type)) {
    float amax = 0;
    for (int i = 0; i < n * hd; ++i)
      if (std::isfinite(x[i])) amax = std::max(amax, std::abs(x[i]));
    float scale = amax > 0 ? amax / Fp8Max(f.type) : 1.0f;
    scale = HalfToFloat(FloatToHalf(scale));
    if (scale == 0) scale = HalfToFloat(1);  // smallest subnormal half: never divide by 0
    PutHalf(part + lay.meta_offset, 0, scale);
    for (int t = 0; t < n; ++t) {
      for (int d = 0; d < hd; ++d) {
        const float v = x[t * hd + d] / scale;
        part[Elem(is_key, bt, hd, t, d)] = f.type == ElemType::kFp8E4M3 ? FloatToFp8E4M3(v) : FloatToFp8E5M2(v);
      }
    }
    return;
  }
  const int b = f.bits();
  const int groups = f.granularity == Granularity::kToken ? hd / f.group_size(hd) : 0;
  Meta meta{f, part + lay.meta_offset, ScaleCount(f, bt, hd)};
  if (f.granularity == Granularity::kChannel) {
    for (int d = 0; d < hd; ++d) {
      const ScaleZero s = ChooseScale(f, x + d, n, hd);
      meta.Put(meta.ScaleIndex(is_key, bt, groups, 0, d), s);
      for (int t = 0; t < n; ++t) PutCode(part, b, Elem(is_key, bt, hd, t, d), Quantize(f, s, x[t * hd + d], 0));
    }
    return;
  }
  for (int t = 0; t < n; ++t) EncodeTokenGroups(is_key, f, bt, hd, t, x + t * hd, part);
}

void DecodeToken(bool is_key, const KvFormat& f, int bt, int hd, int t, const uint8_t* part, float* out) {
  if (f.type == ElemType::kTurbo) return DecodeTurboToken(f, is_key, bt, hd, t, part, out);
  const PartLayout lay = is_key ? KLayout(f, bt, hd) : VLayout(f, bt, hd);
  if (f.is_float()) {
    for (int d = 0; d < hd; ++d) out[d] = GetFloat(f.type, part, Elem(is_key, bt, hd, t, d));
    return;
  }
  if (IsFp8(f.type)) {
    const float scale = GetHalf(part + lay.meta_offset, 0);
    for (int d = 0; d < hd; ++d) {
      const uint8_t c = part[Elem(is_key, bt, hd, t, d)];
      out[d] = scale * (f.type == ElemType::kFp8E4M3 ? Fp8E4M3ToFloat(c) : Fp8E5M2ToFloat(c));
    }
    return;
  }
  const int groups = f.granularity == Granularity::kToken ? hd / f.group_size(hd) : 0;
  const int g = f.group_size(hd);
  Meta meta{f, const_cast<uint8_t*>(part) + lay.meta_offset, ScaleCount(f, bt, hd)};
  for (int d = 0; d < hd; ++d) {
    const size_t si = meta.ScaleIndex(is_key, bt, groups, t, f.granularity == Granularity::kChannel ? d : d / g);
    out[d] = Dequantize(f, meta.scale(si), meta.zero(si), GetCode(part, f.bits(), Elem(is_key, bt, hd, t, d)));
  }
}

}  // namespace

uint32_t GetCode(const uint8_t* codes, int bits, size_t e) {
  if (bits == 8) return codes[e];
  if (bits == 3) {
    const uint8_t* planes = codes + (e / 16) * 6;
    const size_t j = e % 16;
    uint32_t v = 0;
    for (int k = 0; k < 3; ++k) v |= ((planes[2 * k + j / 8] >> (j % 8)) & 1u) << k;
    return v;
  }
  const size_t per_byte = 8 / bits;
  const size_t unit = e / (16 * per_byte), r = e % (16 * per_byte);
  const size_t byte = unit * 16 + r % 16, shift = (r / 16) * bits;
  return (codes[byte] >> shift) & ((1u << bits) - 1);
}

void PutCode(uint8_t* codes, int bits, size_t e, uint32_t code) {
  if (bits == 8) {
    codes[e] = static_cast<uint8_t>(code);
    return;
  }
  if (bits == 3) {
    uint8_t* planes = codes + (e / 16) * 6;
    const size_t j = e % 16;
    for (int k = 0; k < 3; ++k) {
      uint8_t& b = planes[2 * k + j / 8];
      b = static_cast<uint8_t>((b & ~(1u << (j % 8))) | (((code >> k) & 1u) << (j % 8)));
    }
    return;
  }
  const size_t per_byte = 8 / bits;
  const size_t unit = e / (16 * per_byte), r = e % (16 * per_byte);
  const size_t byte = unit * 16 + r % 16, shift = (r / 16) * bits;
  const uint32_t mask = ((1u << bits) - 1) << shift;
  codes[byte] = static_cast<uint8_t>((codes[byte] & ~mask) | ((code << shift) & mask));
}

uint8_t FloatToFp8E4M3(float x) { return FloatToMini(x, 3, 7, 448.0f); }
float Fp8E4M3ToFloat(uint8_t b) {
  if ((b & 0x7F) == 0x7F) return NAN;  // e4m3fn has NaN but no infinity
  return MiniToFloat(b, 3, 7);
}
uint8_t FloatToFp8E5M2(float x) { return FloatToMini(x, 2, 15, 57344.0f); }
float Fp8E5M2ToFloat(uint8_t b) {
  const int exp = (b >> 2) & 31;
  if (exp == 31) return (b & 3) ? NAN : ((b & 0x80) ? -INFINITY : INFINITY);
  return MiniToFloat(b, 2, 15);
}

bool CanEncodeByToken(const KvFormat& f) {
  return f.is_float() || f.granularity == Granularity::kToken || (f.granularity == Granularity::kVector && !f.tq_mean);
}

void EncodeKToken(const KvFormat& f, int bt, int hd, int slot, const float* x, uint8_t* k_part) {
  CHECK(CanEncodeByToken(f), "token-by-token encoding needs a float or per-token format, not {}", FormatName(f));
  if (f.type == ElemType::kTurbo) return EncodeTurboToken(f, true, bt, hd, slot, x, k_part);
  if (!f.is_float()) return EncodeTokenGroups(true, f, bt, hd, slot, x, k_part);
  for (int d = 0; d < hd; ++d) PutFloat(f.type, k_part, Elem(true, bt, hd, slot, d), x[d]);
}
void EncodeVToken(const KvFormat& f, int bt, int hd, int slot, const float* x, uint8_t* v_part) {
  CHECK(CanEncodeByToken(f), "token-by-token encoding needs a float or per-token format, not {}", FormatName(f));
  if (f.type == ElemType::kTurbo) return EncodeTurboToken(f, false, bt, hd, slot, x, v_part);
  if (!f.is_float()) return EncodeTokenGroups(false, f, bt, hd, slot, x, v_part);
  for (int d = 0; d < hd; ++d) PutFloat(f.type, v_part, Elem(false, bt, hd, slot, d), x[d]);
}

void EncodeKPart(const KvFormat& f, int bt, int hd, const float* x, int n, uint8_t* k_part) {
  EncodePart(true, f, bt, hd, x, n, k_part);
}
void EncodeVPart(const KvFormat& f, int bt, int hd, const float* x, int n, uint8_t* v_part) {
  EncodePart(false, f, bt, hd, x, n, v_part);
}

void DecodeK(const KvFormat& f, int bt, int hd, int slot, const uint8_t* k_part, float* out) {
  DecodeToken(true, f, bt, hd, slot, k_part, out);
}
void DecodeV(const KvFormat& f, int bt, int hd, int slot, const uint8_t* v_part, float* out) {
  DecodeToken(false, f, bt, hd, slot, v_part, out);
}

float MaxAbsError(const KvFormat& f, float lo, float hi) {
  // Vector quantization bounds the squared error of a vector (turbo.h), not of an element.
  if (f.type == ElemType::kTurbo) return INFINITY;
  const float amax = std::max(std::abs(lo), std::abs(hi));
  // fp16 rounding of a stored scale/zero: relative 2^-11 of the values it multiplies.
  const float half_eps = amax * std::ldexp(1.0f, -10);
  switch (f.type) {
    case ElemType::kF32: return 0;
    case ElemType::kF16: return amax * std::ldexp(1.0f, -11);
    case ElemType::kBF16: return amax * std::ldexp(1.0f, -8);
    case ElemType::kFp8E4M3: return amax * std::ldexp(1.0f, -4) + half_eps;  // 3 mantissa bits, half ulp
    case ElemType::kFp8E5M2: return amax * std::ldexp(1.0f, -3) + half_eps;
    default: break;
  }
  const int b = f.bits();
  float step;
  if (f.ggml_rounding) {
    step = f.type == ElemType::kInt8 ? amax / 127.0f : amax / 8.0f;
    // q4_0 truncates (int8_t)(x*id + 8.5): one full step at worst near the clamp at 15.
    return (f.type == ElemType::kInt8 ? 0.5f : 1.0f) * step + 2 * half_eps;
  }
  step = f.symmetric ? amax / static_cast<float>((1 << (b - 1)) - 1) : (hi - lo) / static_cast<float>((1 << b) - 1);
  return 0.5f * step * (1 + std::ldexp(1.0f, -9)) + 2 * half_eps;
}

}  // namespace slimkv::kv
