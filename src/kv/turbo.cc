#include "kv/turbo.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <vector>

#include "base/check.h"
#include "base/half.h"
#include "kv/codec.h"

namespace slimkv::kv {
namespace {

constexpr float kHalfMax = 65504.0f;

double Pdf(double x) { return std::isinf(x) ? 0.0 : std::exp(-0.5 * x * x) / std::sqrt(2 * std::numbers::pi); }
double Cdf(double x) { return 0.5 * std::erfc(-x / std::numbers::sqrt2); }

float GetHalfAt(const uint8_t* p, size_t i) {
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return HalfToFloat(h);
}
void PutHalfAt(uint8_t* p, size_t i, float x) {
  const uint16_t h = FloatToHalf(x);
  std::memcpy(p + 2 * i, &h, 2);
}

// Element index of (token t, channel d) in a code array of `channels` channels.
size_t Elem(bool is_key, int bt, int channels, int t, int d) {
  return is_key ? static_cast<size_t>(d) * bt + t : static_cast<size_t>(t) * channels + d;
}

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
  PutHalfAt(part + lay.norm_offset, slot, norm);
  const Codebook& cb_lo = LloydMaxGaussian(lay.lo_bits);
  const Codebook& cb_hi = hi > 0 ? LloydMaxGaussian(lay.hi_bits) : cb_lo;
  for (int d = 0; d < hd; ++d) {
    const bool h = d < hi;
    const uint32_t code = CodebookCode(h ? cb_hi : cb_lo, v[d] * inv);
    if (h) PutCode(part + lay.hi_offset, lay.hi_bits, Elem(is_key, bt, hi, slot, d), code);
    else PutCode(part + lay.lo_offset, lay.lo_bits, Elem(is_key, bt, hd - hi, slot, d - hi), code);
  }
}

}  // namespace

void EncodeTurboToken(const KvFormat& f, bool is_key, int bt, int hd, int slot, const float* x, uint8_t* part) {
  CHECK(!f.tq_mean, "{} is encoded a block at a time", FormatName(f));
  EncodeToken(f, is_key, bt, hd, slot, x, nullptr, part);
}

void EncodeTurboPart(const KvFormat& f, bool is_key, int bt, int hd, const float* x, int n, uint8_t* part) {
  if (!f.tq_mean) {
    for (int t = 0; t < n; ++t) EncodeToken(f, is_key, bt, hd, t, x + static_cast<size_t>(t) * hd, nullptr, part);
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
    mean[d] = HalfToFloat(FloatToHalf(static_cast<float>(std::clamp(cnt ? sum / cnt : 0.0, -4096.0, 4096.0))));
    PutHalfAt(part + lay.mean_offset, d, mean[d]);
  }
  for (int t = 0; t < n; ++t) EncodeToken(f, is_key, bt, hd, t, x + static_cast<size_t>(t) * hd, mean, part);
}

void DecodeTurboToken(const KvFormat& f, bool is_key, int bt, int hd, int slot, const uint8_t* part, float* out) {
  const TurboLayout lay = MakeTurboLayout(f, bt, hd);
  const int hi = lay.hi_channels;
  const float step = GetHalfAt(part + lay.norm_offset, slot) / std::sqrt(static_cast<float>(hd));
  const Codebook& cb_lo = LloydMaxGaussian(lay.lo_bits);
  const Codebook& cb_hi = hi > 0 ? LloydMaxGaussian(lay.hi_bits) : cb_lo;
  for (int d = 0; d < hd; ++d) {
    const uint32_t code = d < hi ? GetCode(part + lay.hi_offset, lay.hi_bits, Elem(is_key, bt, hi, slot, d))
                                 : GetCode(part + lay.lo_offset, lay.lo_bits, Elem(is_key, bt, hd - hi, slot, d - hi));
    out[d] = step * CodebookValue(d < hi ? cb_hi : cb_lo, code);
    if (lay.mean) out[d] += GetHalfAt(part + lay.mean_offset, d);
  }
}

}  // namespace slimkv::kv
