#include "kv/codecs/turbo_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <vector>

#include "base/check.h"
#include "base/half.h"
#include "kv/codecs/packing.h"

namespace slimkv::kv {
namespace {

constexpr float kHalfMax = 65504.0f;

double Pdf(double x) {
  return std::isinf(x) ? 0.0 : std::exp(-0.5 * x * x) / std::sqrt(2 * std::numbers::pi);
}
double Cdf(double x) { return 0.5 * std::erfc(-x / std::numbers::sqrt2); }

}  // namespace

Codebook ComputeLloydMax(int bits) {
  CHECK(bits >= 1 && bits <= kMaxTurboBits, "codebook bits {}", bits);
  const int n = 1 << bits;
  std::vector<double> c(n), next(n), t(n + 1);
  for (int i = 0; i < n; ++i) c[i] = -3.0 + 6.0 * (i + 0.5) / n;  // uniform start
  auto thresholds = [&] {
    t[0] = -INFINITY;
    t[n] = INFINITY;
    for (int i = 1; i < n; ++i) t[i] = 0.5 * (c[i - 1] + c[i]);
  };
  for (int it = 0; it < 100000; ++it) {
    thresholds();
    double moved = 0;
    for (int i = 0; i < n; ++i) {  // E[X | t_i < X < t_i+1]
      next[i] = (Pdf(t[i]) - Pdf(t[i + 1])) / (Cdf(t[i + 1]) - Cdf(t[i]));
      moved = std::max(moved, std::abs(next[i] - c[i]));
    }
    c.swap(next);
    if (moved < 1e-13) break;
  }
  thresholds();
  Codebook cb;
  cb.bits = bits;
  // D = E[X^2] - sum_i P_i c_i^2 (each level is its cell's mean).
  double d = 1.0;
  for (int i = 0; i < n; ++i) d -= (Cdf(t[i + 1]) - Cdf(t[i])) * c[i] * c[i];
  cb.distortion = d;
  const int half = n / 2;
  for (int m = 0; m < half; ++m) {
    cb.magnitude[m] = static_cast<float>(0.5 * (c[half + m] - c[half - 1 - m]));
    const long k = std::lround(static_cast<double>(cb.magnitude[m]) * kTurboGrid);
    CHECK(k >= 1 && k <= 127, "level {} of {} bits off the grid", cb.magnitude[m], bits);
    cb.level_code[m] = static_cast<int8_t>(k);
    cb.level[m] = static_cast<float>(k) / kTurboGrid;
  }
  for (int m = 0; m + 1 < half; ++m) cb.bound[m] = 0.5f * (cb.level[m] + cb.level[m + 1]);
  // Distortion of the stored levels: sum over cells [a, b) of E[(X - l)^2; a <= X < b] =
  // (Phi(b) - Phi(a)) (1 + l^2) + a phi(a) - b phi(b) - 2 l (phi(a) - phi(b)), both signs.
  double gd = 0;
  for (int m = 0; m < half; ++m) {
    const double a = m == 0 ? 0.0 : cb.bound[m - 1], b = m + 1 < half ? cb.bound[m] : INFINITY;
    const double l = cb.level[m];
    const double x_phi_b = std::isinf(b) ? 0.0 : b * Pdf(b);
    gd += 2 * ((Cdf(b) - Cdf(a)) * (1 + l * l) + a * Pdf(a) - x_phi_b - 2 * l * (Pdf(a) - Pdf(b)));
  }
  cb.grid_distortion = gd;
  return cb;
}

const Codebook& LloydMaxGaussian(int bits) {
  static const std::array<Codebook, kMaxTurboBits> books = [] {
    std::array<Codebook, kMaxTurboBits> b;
    for (int i = 0; i < kMaxTurboBits; ++i) b[i] = ComputeLloydMax(i + 1);
    return b;
  }();
  CHECK(bits >= 1 && bits <= kMaxTurboBits, "codebook bits {}", bits);
  return books[bits - 1];
}

float CodebookValue(const Codebook& cb, uint32_t code) {
  const uint32_t half = 1u << (cb.bits - 1);
  const float m = cb.level[code & (half - 1)];
  return (code & half) ? -m : m;
}

int CodebookGridValue(const Codebook& cb, uint32_t code) {
  const uint32_t half = 1u << (cb.bits - 1);
  const int m = cb.level_code[code & (half - 1)];
  return (code & half) ? -m : m;
}

uint32_t CodebookCode(const Codebook& cb, float u) {
  const int half = 1 << (cb.bits - 1);
  const float a = std::abs(u);
  uint32_t m = 0;
  while (static_cast<int>(m) + 1 < half && a > cb.bound[m]) ++m;
  return (std::signbit(u) ? static_cast<uint32_t>(half) : 0u) | m;
}

namespace {
// One token minus `mean` (nullptr: none) into its slot.
void EncodeToken(const KvFormat& f, bool is_key, int bt, int hd, int slot, const float* x, const float* mean,
                 uint8_t* part) {
  const TurboLayout lay = MakeTurboLayout(f, bt, hd);
  const int hi = lay.hi_channels;
  float v[512];
  CHECK(hd <= 512, "head dim {}", hd);
  double ss = 0;
  for (int d = 0; d < hd; ++d) {  // NaN -> 0, +-Inf and huge values clamp to the fp16 range
    v[d] = std::isnan(x[d]) ? 0.0f : std::clamp(x[d], -kHalfMax, kHalfMax);
    if (mean) v[d] = std::clamp(v[d] - mean[d], -kHalfMax, kHalfMax);
    ss += static_cast<double>(v[d]) * v[d];
  }
  // The norm as stored: the codes are chosen against it, so decoding reproduces the intent.
  const float norm = HalfToFloat(FloatToHalf(static_cast<float>(std::min<double>(std::sqrt(ss), kHalfMax))));
  const float inv = norm > 0 ? std::sqrt(static_cast<float>(hd)) / norm : 0.0f;
  PutHalf(part + lay.norm_offset, slot, norm);
  const Codebook& cb_lo = LloydMaxGaussian(lay.lo_bits);
  const Codebook& cb_hi = hi > 0 ? LloydMaxGaussian(lay.hi_bits) : cb_lo;
  for (int d = 0; d < hd; ++d) {
    const bool h = d < hi;
    const uint32_t code = CodebookCode(h ? cb_hi : cb_lo, v[d] * inv);
    if (h)
      PutCode(part + lay.hi_offset, CodeArray{lay.hi_bits, is_key, bt, hi}, slot, d, code);
    else
      PutCode(part + lay.lo_offset, CodeArray{lay.lo_bits, is_key, bt, hd - hi}, slot, d - hi, code);
  }
}

void EncodeTurboToken(const KvFormat& f, bool is_key, int bt, int hd, int slot, const float* x,
                      uint8_t* part) {
  CHECK(!f.tq_mean, "{} is encoded a block at a time", kTurboFamily.name(f));
  EncodeToken(f, is_key, bt, hd, slot, x, nullptr, part);
}

// n tokens [n][hd] (already rotated) into an empty part: with `:mean`, their mean (rounded
// to fp16) first, and the codes of x - mean.
void EncodeTurboPart(const KvFormat& f, bool is_key, int bt, int hd, const float* x, int n, uint8_t* part) {
  if (!f.tq_mean) {
    for (int t = 0; t < n; ++t)
      EncodeToken(f, is_key, bt, hd, t, x + static_cast<size_t>(t) * hd, nullptr, part);
    return;
  }
  const TurboLayout lay = MakeTurboLayout(f, bt, hd);
  CHECK(hd <= 512, "head dim {}", hd);
  float mean[512];
  for (int d = 0; d < hd; ++d) {  // over finite values; stored as fp16, subtracted as stored
    double sum = 0;
    int cnt = 0;
    for (int t = 0; t < n; ++t) {
      const float v = x[static_cast<size_t>(t) * hd + d];
      if (std::isfinite(v)) sum += v, ++cnt;
    }
    mean[d] =
        HalfToFloat(FloatToHalf(static_cast<float>(std::clamp(cnt ? sum / cnt : 0.0, -4096.0, 4096.0))));
    PutHalf(part + lay.mean_offset, d, mean[d]);
  }
  for (int t = 0; t < n; ++t) EncodeToken(f, is_key, bt, hd, t, x + static_cast<size_t>(t) * hd, mean, part);
}

// One token back (the mean added back for `:mean`).
void DecodeTurboToken(const KvFormat& f, bool is_key, int bt, int hd, int slot, const uint8_t* part,
                      float* out) {
  const TurboLayout lay = MakeTurboLayout(f, bt, hd);
  const int hi = lay.hi_channels;
  const float step = GetHalf(part + lay.norm_offset, slot) / std::sqrt(static_cast<float>(hd));
  const Codebook& cb_lo = LloydMaxGaussian(lay.lo_bits);
  const Codebook& cb_hi = hi > 0 ? LloydMaxGaussian(lay.hi_bits) : cb_lo;
  for (int d = 0; d < hd; ++d) {
    const uint32_t code =
        d < hi ? GetCode(part + lay.hi_offset, CodeArray{lay.hi_bits, is_key, bt, hi}, slot, d)
               : GetCode(part + lay.lo_offset, CodeArray{lay.lo_bits, is_key, bt, hd - hi}, slot, d - hi);
    out[d] = step * CodebookValue(d < hi ? cb_hi : cb_lo, code);
    if (lay.mean) out[d] += GetHalf(part + lay.mean_offset, d);
  }
}

bool Owns(ElemType t) { return t == ElemType::kTurbo; }

// "tq3", "tq2.5", "tq2.25", "tq3.75": whole bits 1..4 and quarters of the channels one bit more.
bool ParseType(std::string_view t, bool, KvFormat* f) {
  if (t.size() < 3 || !t.starts_with("tq") || t[2] < '1' || t[2] > '4') return false;
  KvFormat g;
  g.type = ElemType::kTurbo;
  g.granularity = Granularity::kVector;
  g.rotate = true;  // TurboQuant always rotates its side
  g.tq_bits = t[2] - '0';
  const std::string_view frac = t.substr(3);
  if (frac == ".25")
    g.tq_plus = 1;
  else if (frac == ".5")
    g.tq_plus = 2;
  else if (frac == ".75")
    g.tq_plus = 3;
  else if (!frac.empty())
    return false;
  if (g.tq_plus > 0 && g.tq_bits >= 4) return false;  // the extra bit makes at most 4-bit codes
  *f = g;
  return true;
}

std::optional<Status> ParseOption(std::string_view o, std::string_view spec, bool is_key, KvFormat* f) {
  if (o == "pre") {
    return InvalidArgument(
        "option 'pre' in '{}': TurboQuant rotates every key, so keys are stored after RoPE", spec);
  }
  if (o != "mean") return std::nullopt;
  if (!is_key)
    return InvalidArgument("option 'mean' in '{}': the block mean is subtracted from keys only", spec);
  f->tq_mean = true;
  return Status::Ok();
}

std::string Name(const KvFormat& f) {
  static constexpr std::string_view kFrac[] = {"", ".25", ".5", ".75"};
  const std::string s = "tq" + std::to_string(f.tq_bits) + std::string(kFrac[f.tq_plus & 3]);
  return f.tq_mean ? s + ":mean" : s;
}

int Bits(const KvFormat& f) { return f.tq_bits; }
double NominalBits(const KvFormat& f) { return f.tq_bits + 0.25 * f.tq_plus; }

PartLayout Layout(const KvFormat& f, int bt, int hd, bool) {
  const TurboLayout t = MakeTurboLayout(f, bt, hd);
  PartLayout p;
  p.data_bytes = t.data_bytes;
  p.meta_bytes = t.meta_bytes;
  p.meta_offset = t.norm_offset;
  return p;
}

Status Check(const KvFormat& f, int hd, bool is_key) {
  const char* side = is_key ? "K" : "V";
  if (hd <= 0 || (hd & (hd - 1)) != 0) {
    return InvalidArgument(
        "{} format {}: TurboQuant rotates each vector with a Hadamard transform, which needs a "
        "power-of-two head dim; this model's head dim is {}",
        side, Name(f), hd);
  }
  if (f.tq_plus > 0 && hd % 64 != 0) {
    return InvalidArgument(
        "{} format {}: a quarter of head dim {} is not a multiple of 16 channels; use whole bits", side,
        Name(f), hd);
  }
  return Status::Ok();
}

bool ByToken(const KvFormat& f) { return !f.tq_mean; }

// Vector quantization bounds the squared error of a vector (see above), not of an element.
float MaxAbsError(const KvFormat&, float, float) { return INFINITY; }

}  // namespace

TurboLayout MakeTurboLayout(const KvFormat& f, int bt, int hd) {
  CHECK(f.type == ElemType::kTurbo, "not a tq format");
  TurboLayout t;
  t.lo_bits = f.tq_bits;
  t.hi_bits = t.lo_bits + 1;
  t.hi_channels = f.tq_plus * hd / 4;
  const size_t btz = static_cast<size_t>(bt);
  t.hi_offset = 0;
  t.lo_offset = t.hi_offset + (t.hi_channels > 0 ? CodeArray{t.hi_bits, true, bt, t.hi_channels}.bytes() : 0);
  t.data_bytes = t.lo_offset + CodeArray{t.lo_bits, true, bt, hd - t.hi_channels}.bytes();
  t.norm_offset = t.data_bytes;
  t.mean = f.tq_mean;
  t.mean_offset = t.norm_offset + 2 * btz;
  t.meta_bytes = 2 * btz + (f.tq_mean ? 2 * static_cast<size_t>(hd) : 0);
  return t;
}

const CodecFamily kTurboFamily = {
    .id = "tq",
    .types = "tq1..tq4 (tq2.5: a fraction .25/.5/.75 of the channels one bit more)",
    .options = "mean (keys only)",
    .always_rotated = true,
    .owns = Owns,
    .parse_type = ParseType,
    .parse_option = ParseOption,
    .name = Name,
    .bits = Bits,
    .nominal_bits = NominalBits,
    .layout = Layout,
    .check = Check,
    .by_token = ByToken,
    .encode_token = EncodeTurboToken,
    .encode_part = EncodeTurboPart,
    .decode_token = DecodeTurboToken,
    .max_abs_error = MaxAbsError,
};

}  // namespace slimkv::kv
