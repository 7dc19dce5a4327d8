#include "kv/codecs/float_codec.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "base/check.h"
#include "base/half.h"

namespace slimkv::kv {
namespace {

struct TypeName {
  std::string_view name;
  ElemType type;
};
constexpr std::array<TypeName, 8> kNames = {{{"f32", ElemType::kF32},
                                             {"fp32", ElemType::kF32},
                                             {"f16", ElemType::kF16},
                                             {"fp16", ElemType::kF16},
                                             {"bf16", ElemType::kBF16},
                                             {"fp8", ElemType::kFp8E4M3},
                                             {"fp8e4m3", ElemType::kFp8E4M3},
                                             {"fp8e5m2", ElemType::kFp8E5M2}}};

// Element (token t, channel d) of a plain array: K channel-major [hd][bt], V token-major [bt][hd].
size_t CodeIndex(bool is_key, int bt, int hd, int t, int d) {
  return is_key ? static_cast<size_t>(d) * bt + t : static_cast<size_t>(t) * hd + d;
}

bool IsFp8(ElemType t) { return t == ElemType::kFp8E4M3 || t == ElemType::kFp8E5M2; }
bool Owns(ElemType t) {
  return t == ElemType::kF32 || t == ElemType::kF16 || t == ElemType::kBF16 || IsFp8(t);
}

int Width(ElemType t) { return t == ElemType::kF32 ? 4 : (IsFp8(t) ? 1 : 2); }

bool ParseType(std::string_view type, bool, KvFormat* f) {
  for (const TypeName& n : kNames) {
    if (n.name != type) continue;
    f->type = n.type;
    f->granularity = IsFp8(n.type) ? Granularity::kBlock : Granularity::kNone;
    return true;
  }
  return false;
}

std::optional<Status> ParseOption(std::string_view, std::string_view, bool, KvFormat*) {
  return std::nullopt;
}

std::string Name(const KvFormat& f) {
  switch (f.type) {
    case ElemType::kF32:
      return "f32";
    case ElemType::kF16:
      return "f16";
    case ElemType::kBF16:
      return "bf16";
    case ElemType::kFp8E4M3:
      return "fp8e4m3";
    default:
      return "fp8e5m2";
  }
}

int Bits(const KvFormat& f) { return 8 * Width(f.type); }
double NominalBits(const KvFormat& f) { return Bits(f); }

PartLayout Layout(const KvFormat& f, int bt, int hd, bool) {
  PartLayout p;
  p.data_bytes = static_cast<size_t>(bt) * hd * Width(f.type);
  p.meta_bytes = IsFp8(f.type) ? 2 : 0;
  p.meta_offset = p.data_bytes;
  return p;
}

Status Check(const KvFormat&, int, bool) { return Status::Ok(); }
bool ByToken(const KvFormat& f) { return !IsFp8(f.type); }

void PutFloat(ElemType t, uint8_t* p, size_t i, float x) {
  switch (t) {
    case ElemType::kF32:
      std::memcpy(p + 4 * i, &x, 4);
      return;
    case ElemType::kF16:
      PutHalf(p, i, x);
      return;
    case ElemType::kBF16: {
      const uint16_t h = FloatToBf16(x);
      std::memcpy(p + 2 * i, &h, 2);
      return;
    }
    default:
      CHECK(false, "not a plain float format");
  }
}
float GetFloat(ElemType t, const uint8_t* p, size_t i) {
  switch (t) {
    case ElemType::kF32: {
      float x;
      std::memcpy(&x, p + 4 * i, 4);
      return x;
    }
    case ElemType::kF16:
      return GetHalf(p, i);
    case ElemType::kBF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return Bf16ToFloat(h);
    }
    default:
      CHECK(false, "not a plain float format");
  }
  return 0;
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
  std::frexp(a, &e);                                    // a = f * 2^e, f in [0.5, 1)
  int exp = e - 1 + bias;                               // biased exponent of a normal number
  if (exp < 1) exp = 1;                                 // subnormal: fixed exponent 1 - bias
  const float step = std::ldexp(1.0f, exp - bias - m);  // value of one mantissa ulp
  float q = std::nearbyint(a / step);                   // round half to even (default rounding mode)
  // q counts ulps from 0; q >= 2^(m+1) means the rounding carried into the next exponent.
  if (q >= static_cast<float>(2 << m)) {
    ++exp;
    q /= 2;
  }
  uint32_t mant = static_cast<uint32_t>(q);
  const uint32_t biased = (mant >= (1u << m)) ? static_cast<uint32_t>(exp) : 0;  // subnormal: no implicit bit
  mant &= (1u << m) - 1;
  return static_cast<uint8_t>(sign | (biased << m) | mant);
}

float MiniToFloat(uint8_t b, int m, int bias) {
  const float sign = (b & 0x80) ? -1.0f : 1.0f;
  const int exp = (b >> m) & ((1 << (7 - m)) - 1);
  const int mant = b & ((1 << m) - 1);
  if (exp == 0) return sign * std::ldexp(static_cast<float>(mant), 1 - bias - m);
  return sign * std::ldexp(static_cast<float>(mant + (1 << m)), exp - bias - m);
}

uint8_t ToFp8(ElemType t, float x) { return t == ElemType::kFp8E4M3 ? FloatToFp8E4M3(x) : FloatToFp8E5M2(x); }
float FromFp8(ElemType t, uint8_t c) {
  return t == ElemType::kFp8E4M3 ? Fp8E4M3ToFloat(c) : Fp8E5M2ToFloat(c);
}

void EncodeToken(const KvFormat& f, bool is_key, int bt, int hd, int slot, const float* x, uint8_t* part) {
  CHECK(!IsFp8(f.type), "{} is encoded a part at a time (one scale per part)", Name(f));
  for (int d = 0; d < hd; ++d) PutFloat(f.type, part, CodeIndex(is_key, bt, hd, slot, d), x[d]);
}

void EncodePart(const KvFormat& f, bool is_key, int bt, int hd, const float* x, int n, uint8_t* part) {
  if (!IsFp8(f.type)) {
    for (int t = 0; t < n; ++t) EncodeToken(f, is_key, bt, hd, t, x + static_cast<size_t>(t) * hd, part);
    return;
  }
  float amax = 0;
  for (int i = 0; i < n * hd; ++i)
    if (std::isfinite(x[i])) amax = std::max(amax, std::abs(x[i]));
  float scale = amax > 0 ? amax / Fp8Max(f.type) : 1.0f;
  scale = HalfToFloat(FloatToHalf(scale));
  if (scale == 0) scale = HalfToFloat(1);  // smallest subnormal half: never divide by 0
  PutHalf(part + Layout(f, bt, hd, is_key).meta_offset, 0, scale);
  for (int t = 0; t < n; ++t)
    for (int d = 0; d < hd; ++d) part[CodeIndex(is_key, bt, hd, t, d)] = ToFp8(f.type, x[t * hd + d] / scale);
}

void DecodeToken(const KvFormat& f, bool is_key, int bt, int hd, int slot, const uint8_t* part, float* out) {
  if (!IsFp8(f.type)) {
    for (int d = 0; d < hd; ++d) out[d] = GetFloat(f.type, part, CodeIndex(is_key, bt, hd, slot, d));
    return;
  }
  const float scale = GetHalf(part + Layout(f, bt, hd, is_key).meta_offset, 0);
  for (int d = 0; d < hd; ++d) out[d] = scale * FromFp8(f.type, part[CodeIndex(is_key, bt, hd, slot, d)]);
}

float MaxAbsError(const KvFormat& f, float lo, float hi) {
  const float amax = std::max(std::abs(lo), std::abs(hi));
  const float half_eps = amax * std::ldexp(1.0f, -10);  // fp16 rounding of the stored scale
  switch (f.type) {
    case ElemType::kF32:
      return 0;
    case ElemType::kF16:
      return amax * std::ldexp(1.0f, -11);
    case ElemType::kBF16:
      return amax * std::ldexp(1.0f, -8);
    case ElemType::kFp8E4M3:
      return amax * std::ldexp(1.0f, -4) + half_eps;  // 3 mantissa bits, half ulp
    default:
      return amax * std::ldexp(1.0f, -3) + half_eps;  // e5m2
  }
}

}  // namespace

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

const CodecFamily kFloatFamily = {
    .id = "float",
    .types = "f32, f16, bf16, fp8 (= fp8e4m3), fp8e4m3, fp8e5m2",
    .options = "",
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
