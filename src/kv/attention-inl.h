// SIMD bodies of attention over stored blocks (included once per Highway target by
// attention.cc). The codec kernels read the block bytes directly:
//   score:      scores[r][t] = q_r . k_t   (K codes are channel-major: one vector holds one
//                                           channel of 16 tokens, multiplied by a broadcast
//                                           query element)
//   accumulate: acc[r][:] += sum_t p[r][t] v_t   (V codes are token-major)
// Per-channel scales are folded into the query once per block, per-token scales applied per
// token group after a partial dot of the raw codes (keys) or folded into the attention
// weights (values); zero points become one constant per row and block (keys) or group
// (values). The driver runs the online softmax over the blocks of a key range, in base 2
// (log2(e) is folded into the query scale).
//
// On AVX3_DL (AVX-512 VNNI, VBMI) integer codes are multiplied as integers (bt 32 or 64):
//   keys:   the query, channel scales folded in, is rounded to 16-bit integers q = 256 hi +
//           lo (hi, lo signed bytes); vpdpbusd multiplies 4 channels of 16 tokens per
//           instruction (codes permuted to [token][4 channels] with vpermb), one pass per
//           byte, and the passes are recombined as 256 * hi + lo.
//   values: the weights p * scale are rounded to 16-bit integers per (row, block) the same
//           way, and vpdpbusd multiplies 4 tokens of 16 channels per instruction.
// The rounding (2^-15 of the largest query element or weight) stays below 5 % of each
// format's own error (tests/kv/attention_test.cc); 8-bit integers would cost 10-40 %.
// tq parts take the same kernels with their levels as bytes (a vpermb after the code
// extraction; see "tq on the integer paths"). Other targets and formats (per-channel values,
// fp8, floats, 1-bit tq) use float FMAs.
#if defined(SLIMKV_KV_ATTENTION_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_KV_ATTENTION_INL_H_
#undef SLIMKV_KV_ATTENTION_INL_H_
#else
#define SLIMKV_KV_ATTENTION_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "base/half.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "kv/attention.h"
#include "kv/attention_scratch.h"
#include "kv/turbo-inl.h"  // TurboQuant parts: kernels on the codes (per target, like this file)

HWY_BEFORE_NAMESPACE();
namespace slimkv::kv::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// VNNI intrinsics need their target feature on every function that inlines them; Highway
// 1.0.3's AVX3_DL target string does not name avx512vnni (nor gfni, for 3-bit codes), so
// the attention functions add them.
#undef SLIMKV_KV_VNNI
#undef SLIMKV_KV_ATTR
#if HWY_TARGET == HWY_AVX3_DL
#define SLIMKV_KV_VNNI 1
#define SLIMKV_KV_ATTR __attribute__((target(HWY_TARGET_STR ",avx512vnni,gfni")))
#else
#define SLIMKV_KV_VNNI 0
#define SLIMKV_KV_ATTR
#endif

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
using DU = hn::RebindToUnsigned<DF>;
using DI = hn::RebindToSigned<DF>;

inline constexpr int kMaxRows = kMaxAttnTaskRows;
inline constexpr int kMaxBt = kMaxAttnBlockTokens;
inline constexpr int kMaxHd = kMaxAttnHeadDim;
inline constexpr size_t kLanes = hn::MaxLanes(DF());
// Tokens are scored in tiles of kTileVecs vectors (32 tokens on AVX-512).
inline constexpr int kTileVecs = kLanes >= 8 ? 2 : 4;
inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

// ------------------------------------------------------------------ element loaders
// Each loader returns N consecutive elements (e % N == 0) of a part's code array as floats.

struct F32Loader {
  HWY_INLINE VF operator()(DF d, const uint8_t* p, size_t e) const {
    return hn::LoadU(d, reinterpret_cast<const float*>(p) + e);
  }
};
struct F16Loader {
  HWY_INLINE VF operator()(DF d, const uint8_t* p, size_t e) const {
    const hn::Rebind<hwy::float16_t, DF> dh;
    return hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p) + e));
  }
};
struct BF16Loader {
  HWY_INLINE VF operator()(DF d, const uint8_t* p, size_t e) const {
    const hn::Rebind<uint16_t, DF> d16;
    const auto h = hn::PromoteTo(DU(), hn::LoadU(d16, reinterpret_cast<const uint16_t*>(p) + e));
    return hn::BitCast(d, hn::ShiftLeft<16>(h));
  }
};
// fp8 through fp32 bit patterns: sign to bit 31, exponent and mantissa to the top of the
// float's (e4m3 at bit 20, e5m2 at bit 21), then a multiply by 2^120 (e4m3) or 2^112 (e5m2)
// restores the exponent bias, exactly, subnormals included. Four operations per vector
// instead of seven through fp16.
template <bool kE4M3>
struct Fp8Loader {
  HWY_INLINE VF operator()(DF d, const uint8_t* p, size_t e) const {
    const hn::Rebind<uint8_t, DF> d8;
    const auto b = hn::PromoteTo(DU(), hn::LoadU(d8, p + e));
    const auto sign = hn::ShiftLeft<24>(hn::And(b, hn::Set(DU(), 0x80u)));
    const auto mag = hn::ShiftLeft<kE4M3 ? 20 : 21>(hn::And(b, hn::Set(DU(), 0x7Fu)));
    return hn::Mul(hn::BitCast(d, hn::Or(sign, mag)), hn::Set(d, kE4M3 ? 0x1p120f : 0x1p112f));
  }
};
// Integer codes (unsigned) packed as format.h describes.
template <int kBits>
struct CodeLoader {
  HWY_INLINE VF operator()(DF d, const uint8_t* p, size_t e) const {
    const DU du;
    const hn::Rebind<uint8_t, DF> d8;
    if constexpr (kBits == 8) {
      return hn::ConvertTo(d, hn::BitCast(DI(), hn::PromoteTo(du, hn::LoadU(d8, p + e))));
    } else if constexpr (kBits == 3) {
      const uint8_t* planes = p + (e / 16) * 6;
      const size_t j0 = e % 16;
      const auto lane = hn::Iota(du, 0);
      auto v = hn::Zero(du);
      for (int k = 0; k < 3; ++k) {
        uint32_t bits;
        uint16_t plane;
        std::memcpy(&plane, planes + 2 * k, 2);
        bits = static_cast<uint32_t>(plane) >> j0;
        const auto bit = hn::And(hn::Shr(hn::Set(du, bits), lane), hn::Set(du, 1u));
        v = hn::Or(v, hn::ShiftLeftSame(bit, k));
      }
      return hn::ConvertTo(d, hn::BitCast(DI(), v));
    } else {
      constexpr size_t kPer = 8 / kBits;
      const size_t unit = e / (16 * kPer), r = e % (16 * kPer);
      const auto bytes = hn::PromoteTo(du, hn::LoadU(d8, p + unit * 16 + r % 16));
      const auto v = hn::And(hn::ShiftRightSame(bytes, static_cast<int>((r / 16) * kBits)),
                             hn::Set(du, (1u << kBits) - 1));
      return hn::ConvertTo(d, hn::BitCast(DI(), v));
    }
  }
};

HWY_INLINE float Half(const uint8_t* p, size_t i) {
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return HalfToFloat(h);
}
HWY_INLINE VF LoadHalves(DF d, const uint8_t* p, size_t i) { return F16Loader()(d, p, i); }

HWY_INLINE float ReduceSum(DF d, VF v) { return hn::GetLane(hn::SumOfLanes(d, v)); }
HWY_INLINE float ReduceMax(DF d, VF v) { return hn::GetLane(hn::MaxOfLanes(d, v)); }

// 2^x for x <= 0 (scores minus their running maximum); -inf gives exactly 0. A degree-5
// minimax polynomial on [-1/2, 1/2] (relative error 7.5e-8, 2.4e-7 evaluated in fp32).
HWY_INLINE VF Exp2(DF d, VF x) {
#if HWY_TARGET <= HWY_AVX3
  // vscalefps multiplies by 2^n in one instruction; p * 2^-160 underflows to exactly 0.
  x = hn::Max(x, hn::Set(d, -160.0f));
#else
  x = hn::Max(x, hn::Set(d, -127.0f));  // 2^-127 has a zero exponent field: exactly 0
#endif
  const VF n = hn::Round(x);
  const VF f = hn::Sub(x, n);
  VF p = hn::Set(d, 1.327647199e-03f);
  p = hn::MulAdd(p, f, hn::Set(d, 9.675541334e-03f));
  p = hn::MulAdd(p, f, hn::Set(d, 5.550713273e-02f));
  p = hn::MulAdd(p, f, hn::Set(d, 2.402211972e-01f));
  p = hn::MulAdd(p, f, hn::Set(d, 6.931469671e-01f));
  p = hn::MulAdd(p, f, hn::Set(d, 1.000000072e+00f));
#if HWY_TARGET <= HWY_AVX3
  return VF{_mm512_scalef_ps(p.raw, n.raw)};
#else
  const auto e = hn::ShiftLeft<23>(hn::Add(hn::ConvertTo(DI(), n), hn::Set(DI(), 127)));
  return hn::Mul(p, hn::BitCast(d, e));
#endif
}

// ------------------------------------------------------------------ score (float FMAs)
// scores[r][t0 + t] = sum_d q[r][d] * k[d][t0 + t] for kRows rows and kVecs vectors of
// tokens; two accumulator sets (even/odd channels) when the tile alone is too small to
// hide the FMA latency.
template <class Loader, int kRows, int kVecs>
HWY_INLINE void ScoreTile(const Loader& load, const uint8_t* codes, int bt, int hd, int t0, const float* q,
                          int ldq, float* scores, int lds) {
  const DF d;
  const size_t N = hn::Lanes(d);
  constexpr int kSets = kRows * kVecs < 8 ? 2 : 1;
  VF acc[kSets][kRows][kVecs];
  for (int s = 0; s < kSets; ++s)
    for (int r = 0; r < kRows; ++r)
      for (int v = 0; v < kVecs; ++v) acc[s][r][v] = hn::Zero(d);
  for (int dim = 0; dim < hd; dim += kSets) {
    for (int s = 0; s < kSets; ++s) {
      VF kv[kVecs];
      for (int v = 0; v < kVecs; ++v) kv[v] = load(d, codes, static_cast<size_t>(dim + s) * bt + t0 + v * N);
      for (int r = 0; r < kRows; ++r) {
        const VF qb = hn::Set(d, q[r * ldq + dim + s]);
        for (int v = 0; v < kVecs; ++v) acc[s][r][v] = hn::MulAdd(qb, kv[v], acc[s][r][v]);
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int v = 0; v < kVecs; ++v) {
      VF a = acc[0][r][v];
      if constexpr (kSets == 2) a = hn::Add(a, acc[1][r][v]);
      hn::StoreU(a, d, scores + r * lds + t0 + v * N);
    }
  }
}

template <class Loader, int kRows>
HWY_INLINE void ScoreRows(const Loader& load, const uint8_t* codes, int bt, int hd, const float* q, int ldq,
                          int n_tok, float* scores, int lds) {
  const int N = static_cast<int>(hn::Lanes(DF()));
  int t0 = 0;
  for (; t0 + kTileVecs * N <= n_tok; t0 += kTileVecs * N)
    ScoreTile<Loader, kRows, kTileVecs>(load, codes, bt, hd, t0, q, ldq, scores, lds);
  for (; t0 < n_tok; t0 += N) ScoreTile<Loader, kRows, 1>(load, codes, bt, hd, t0, q, ldq, scores, lds);
}

// Tokens [0, n_tok) (a multiple of 16) of a channel-major part, every row.
template <class Loader>
HWY_NOINLINE void ScoreChannelMajor(const Loader& load, const uint8_t* codes, int bt, int hd, const float* q,
                                    int ldq, int rows, int n_tok, float* scores, int lds) {
  int r = 0;
  for (; r + 4 <= rows; r += 4) ScoreRows<Loader, 4>(load, codes, bt, hd, q + r * ldq, ldq, n_tok, scores + r * lds, lds);
  const float* qr = q + r * ldq;
  float* sr = scores + r * lds;
  switch (rows - r) {
    case 3: ScoreRows<Loader, 3>(load, codes, bt, hd, qr, ldq, n_tok, sr, lds); break;
    case 2: ScoreRows<Loader, 2>(load, codes, bt, hd, qr, ldq, n_tok, sr, lds); break;
    case 1: ScoreRows<Loader, 1>(load, codes, bt, hd, qr, ldq, n_tok, sr, lds); break;
    default: break;
  }
}

// Per-token quantized keys (channel groups of g): for each group, a partial dot of the raw
// codes, then score += scale[g][t] * (partial - offset * qsum[g]) + zero[g][t] * qsum[g].
template <int kBits, int kRows>
HWY_INLINE void ScoreTokenGroupRows(const uint8_t* codes, const uint8_t* meta, size_t n_scales, bool symmetric,
                                    int bt, int hd, int g, const float* q, int ldq, const float* qsum, int n_tok,
                                    float* scores, int lds) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const CodeLoader<kBits> load;
  const int groups = hd / g;
  const float offset = symmetric ? static_cast<float>(1 << (kBits - 1)) : 0.0f;
  for (int t0 = 0; t0 < n_tok; t0 += static_cast<int>(N)) {
    VF acc[kRows];
    for (int r = 0; r < kRows; ++r) acc[r] = hn::Zero(d);
    for (int gi = 0; gi < groups; ++gi) {
      VF part[kRows];
      for (int r = 0; r < kRows; ++r) part[r] = hn::Zero(d);
      for (int dim = gi * g; dim < (gi + 1) * g; ++dim) {
        const VF kv = load(d, codes, static_cast<size_t>(dim) * bt + t0);
        for (int r = 0; r < kRows; ++r) part[r] = hn::MulAdd(hn::Set(d, q[r * ldq + dim]), kv, part[r]);
      }
      const size_t i0 = static_cast<size_t>(gi) * bt + t0;
      const VF sc = LoadHalves(d, meta, i0);
      const VF zr = symmetric ? hn::Zero(d) : LoadHalves(d, meta, n_scales + i0);
      for (int r = 0; r < kRows; ++r) {
        const float qs = qsum[r * groups + gi];
        const VF centered = hn::Sub(part[r], hn::Set(d, offset * qs));
        acc[r] = hn::MulAdd(sc, centered, hn::MulAdd(zr, hn::Set(d, qs), acc[r]));
      }
    }
    for (int r = 0; r < kRows; ++r) hn::StoreU(acc[r], d, scores + r * lds + t0);
  }
}

template <int kBits>
HWY_NOINLINE void ScoreTokenGroups(const uint8_t* codes, const uint8_t* meta, size_t n_scales, bool symmetric,
                                   int bt, int hd, int g, const float* q, int ldq, const float* qsum, int rows,
                                   int n_tok, float* scores, int lds) {
  const int groups = hd / g;
  int r = 0;
  for (; r + 4 <= rows; r += 4)
    ScoreTokenGroupRows<kBits, 4>(codes, meta, n_scales, symmetric, bt, hd, g, q + r * ldq, ldq, qsum + r * groups,
                                  n_tok, scores + r * lds, lds);
  for (; r < rows; ++r)
    ScoreTokenGroupRows<kBits, 1>(codes, meta, n_scales, symmetric, bt, hd, g, q + r * ldq, ldq, qsum + r * groups,
                                  n_tok, scores + r * lds, lds);
}

// ------------------------------------------------------------------ accumulate (float FMAs)
// acc[r][dim0 .. dim0 + kVecs*N) += sum_{t < n_tok} p[r][t] * v_t[...]
template <class Loader, int kRows, int kVecs>
HWY_INLINE void AccumRows(const Loader& load, const uint8_t* codes, int hd, int dim0, const float* p, int ldp,
                          int n_tok, float* acc, int lda) {
  const DF d;
  const size_t N = hn::Lanes(d);
  VF a[kRows][kVecs];
  for (int r = 0; r < kRows; ++r)
    for (int j = 0; j < kVecs; ++j) a[r][j] = hn::LoadU(d, acc + r * lda + dim0 + j * N);
  for (int t = 0; t < n_tok; ++t) {
    VF vv[kVecs];
    for (int j = 0; j < kVecs; ++j) vv[j] = load(d, codes, static_cast<size_t>(t) * hd + dim0 + j * N);
    for (int r = 0; r < kRows; ++r) {
      const VF pb = hn::Set(d, p[r * ldp + t]);
      for (int j = 0; j < kVecs; ++j) a[r][j] = hn::MulAdd(pb, vv[j], a[r][j]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int j = 0; j < kVecs; ++j) hn::StoreU(a[r][j], d, acc + r * lda + dim0 + j * N);
}

// Dims [dim0, dim1) of every row, in chunks of up to 4 vectors.
template <class Loader, int kRows>
HWY_INLINE void AccumRowsDims(const Loader& load, const uint8_t* codes, int hd, int dim0, int dim1, const float* p,
                              int ldp, int n_tok, float* acc, int lda) {
  const int N = static_cast<int>(hn::Lanes(DF()));
  const int vecs = (dim1 - dim0) / N;
  int j = 0;
  for (; j + 4 <= vecs; j += 4) AccumRows<Loader, kRows, 4>(load, codes, hd, dim0 + j * N, p, ldp, n_tok, acc, lda);
  switch (vecs - j) {
    case 3: AccumRows<Loader, kRows, 3>(load, codes, hd, dim0 + j * N, p, ldp, n_tok, acc, lda); break;
    case 2: AccumRows<Loader, kRows, 2>(load, codes, hd, dim0 + j * N, p, ldp, n_tok, acc, lda); break;
    case 1: AccumRows<Loader, kRows, 1>(load, codes, hd, dim0 + j * N, p, ldp, n_tok, acc, lda); break;
    default: break;
  }
}

template <class Loader>
HWY_NOINLINE void AccumTokenMajor(const Loader& load, const uint8_t* codes, int hd, int dim0, int dim1,
                                  const float* p, int ldp, int rows, int n_tok, float* acc, int lda) {
  int r = 0;
  for (; r + 4 <= rows; r += 4) AccumRowsDims<Loader, 4>(load, codes, hd, dim0, dim1, p + r * ldp, ldp, n_tok, acc + r * lda, lda);
  switch (rows - r) {
    case 3: AccumRowsDims<Loader, 3>(load, codes, hd, dim0, dim1, p + r * ldp, ldp, n_tok, acc + r * lda, lda); break;
    case 2: AccumRowsDims<Loader, 2>(load, codes, hd, dim0, dim1, p + r * ldp, ldp, n_tok, acc + r * lda, lda); break;
    case 1: AccumRowsDims<Loader, 1>(load, codes, hd, dim0, dim1, p + r * ldp, ldp, n_tok, acc + r * lda, lda); break;
    default: break;
  }
}

template <class Fn>
HWY_INLINE void WithIntBits(int bits, Fn&& fn) {
  switch (bits) {
    case 8: fn(std::integral_constant<int, 8>()); break;
    case 4: fn(std::integral_constant<int, 4>()); break;
    case 3: fn(std::integral_constant<int, 3>()); break;
    default: fn(std::integral_constant<int, 2>()); break;
  }
}

// Calls fn(loader) with the loader of a float or fp8 format.
template <class Fn>
HWY_INLINE void WithFloatLoader(ElemType t, Fn&& fn) {
  switch (t) {
    case ElemType::kF32: fn(F32Loader()); break;
    case ElemType::kF16: fn(F16Loader()); break;
    case ElemType::kBF16: fn(BF16Loader()); break;
    case ElemType::kFp8E4M3: fn(Fp8Loader<true>()); break;
    default: fn(Fp8Loader<false>()); break;
  }
}

// The scale of an fp8 part.
HWY_INLINE float Fp8Scale(const KvFormat& f, const uint8_t* meta) { return Half(meta, 0); }

// Offset of symmetric codes and the mean code, for a format of `bits` (KvFormat::bits() is
// out of line: call it once, never in a loop).
HWY_INLINE float IntOffset(const KvFormat& f, int bits) {
  return f.symmetric ? static_cast<float>(1 << (bits - 1)) : 0.0f;
}
HWY_INLINE float IntOffset(const KvFormat& f) { return IntOffset(f, f.bits()); }
HWY_INLINE constexpr float MeanCode(int bits) { return 0.5f * static_cast<float>((1 << bits) - 1); }

#if SLIMKV_KV_VNNI
// ------------------------------------------------------------------ integer kernels (AVX3_DL)
// Rounding compensation: x ~ step * xi with error e = step * xi - x; a dot sum_d x_d c_d is
// computed as step * sum_d xi_d c_d - mean_code * sum_d e_d, so only sum_d e_d (c_d -
// mean_code) is left, half of the error of the uncentred codes.

struct ByteIndex {
  alignas(64) uint8_t b[64];
};
template <class F>
constexpr ByteIndex MakeBytes(F f) {
  ByteIndex t{};
  for (int j = 0; j < 64; ++j) t.b[j] = static_cast<uint8_t>(f(j));
  return t;
}
// Keys, [token lane i][4 channels k] bytes j = 4 i + k (bt == 32):
//   int4: 4 channels are 4 units of 16 bytes; byte i holds token i (low) and 16 + i (high).
inline constexpr ByteIndex kK4 = MakeBytes([](int j) { return 16 * (j % 4) + j / 4; });
//   int8: 4 channels are 128 bytes (two vectors); tokens 0-15 and 16-31.
inline constexpr ByteIndex kK8Lo = MakeBytes([](int j) { return 32 * (j % 4) + j / 4; });
inline constexpr ByteIndex kK8Hi = MakeBytes([](int j) { return 32 * (j % 4) + 16 + j / 4; });
//   int2: 8 channels are 4 units; a unit holds 2 channels (even: bits 0-3, odd: bits 4-7),
//   extracted per bit pair first (E0 | E4 for tokens 0-15, E2 | E6 for 16-31).
inline constexpr ByteIndex kK2A = MakeBytes([](int j) { return (j % 4 & 1) * 64 + (j % 4 >> 1) * 16 + j / 4; });
inline constexpr ByteIndex kK2B = MakeBytes([](int j) { return (j % 4 & 1) * 64 + (2 + (j % 4 >> 1)) * 16 + j / 4; });
// Values, [channel lane i][4 tokens k] bytes j = 4 i + k, 64 channels per step:
//   int8, level 1: [32 channels][2 tokens] of 32 channels of two tokens (bytes 0-31, 32-63);
//   level 2: [16 channels][4 tokens] from the pairs of tokens 0, 1 and 2, 3.
inline constexpr ByteIndex kV8L1 = MakeBytes([](int j) { return (j % 2) * 32 + j / 2; });
inline constexpr ByteIndex kV8L2[2] = {MakeBytes([](int j) { return (j % 4 / 2) * 64 + 2 * (j / 4) + j % 2; }),
                                       MakeBytes([](int j) { return (j % 4 / 2) * 64 + 2 * (16 + j / 4) + j % 2; })};
//   int4: 32 bytes per token (two units of 32 channels), tokens 0, 1 | 2, 3 in two vectors;
//   kV4[u] takes unit u of each token.
inline constexpr ByteIndex kV4[2] = {MakeBytes([](int j) { return 32 * (j % 4) + j / 4; }),
                                     MakeBytes([](int j) { return 32 * (j % 4) + 16 + j / 4; })};
//   int2 (and int4 with other head dims): 16 bytes of each of 4 tokens in one vector.
inline constexpr ByteIndex kV2 = MakeBytes([](int j) { return 16 * (j % 4) + j / 4; });
//   int2 rows of 32 channels: token k of 4 in unit k / 2, its bit pairs from the first
//   (k even) or second (k odd) operand.
inline constexpr ByteIndex kV2Half = MakeBytes([](int j) { return (j % 4 % 2) * 64 + 16 * (j % 4 / 2) + j / 4; });
SLIMKV_KV_ATTR HWY_INLINE __m512i LoadIndex(const ByteIndex& t) { return _mm512_load_si512(t.b); }
// acc += dot of the unsigned bytes of u with the 4 signed bytes at p (broadcast), per dword.
// Inline assembly: GCC 12 copies accumulators of the intrinsic through spare registers in
// unrolled loops (and runs out of them), and does not fold the broadcast into the operand.
SLIMKV_KV_ATTR HWY_INLINE void Dpbusd(__m512i& acc, __m512i u, const int8_t* p) {
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*reinterpret_cast<const int32_t*>(p)));
}
// Stores the 16 integers xi as bytes: lo = xi mod 256 (signed), hi = (xi + 128) >> 8.
SLIMKV_KV_ATTR HWY_INLINE void StoreSplit(__m512i xi, int8_t* hi, int8_t* lo) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(lo), _mm512_cvtepi32_epi8(xi));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(hi),
                   _mm512_cvtepi32_epi8(_mm512_srai_epi32(_mm512_add_epi32(xi, _mm512_set1_epi32(128)), 8)));
}
// Bytes of the integer query element `o` of a row: lo, and hi 32 bytes later.
HWY_INLINE const int8_t* QueryLo(const QueryBytes& q, int row, int o) {
  return q.bytes + row * 2 * kMaxHd + (o / 32) * 64 + o % 32;
}
// Stores 32 integers x (x0: elements 0-15, x1: 16-31) as 32 lo bytes (x mod 256, signed)
// then 32 hi bytes ((x + 128) >> 8): with y = x + 128 packed to 16 bits, hi is y's high
// byte and lo its low byte minus 128.
inline constexpr ByteIndex kSplit = MakeBytes([](int j) {
  const int e = j % 32;  // packs_epi32 interleaves 4 elements of each source per 128-bit lane
  const int word = 8 * (e % 16 / 4) + (e < 16 ? 0 : 4) + e % 4;
  return 2 * word + (j < 32 ? 0 : 1);
});
SLIMKV_KV_ATTR HWY_INLINE void StoreSplit32(__m512i x0, __m512i x1, int8_t* dst) {
  const __m512i k128 = _mm512_set1_epi32(128);
  const __m512i w = _mm512_packs_epi32(_mm512_add_epi32(x0, k128), _mm512_add_epi32(x1, k128));
  const __m512i lo_sign = _mm512_set_epi64(0, 0, 0, 0, -0x7F7F7F7F7F7F7F80LL, -0x7F7F7F7F7F7F7F80LL,
                                           -0x7F7F7F7F7F7F7F80LL, -0x7F7F7F7F7F7F7F80LL);
  _mm512_storeu_si512(dst, _mm512_xor_si512(_mm512_permutexvar_epi8(LoadIndex(kSplit), w), lo_sign));
}
// The same for 32 weights in [token][group] order (x0: entries 0-15, x1: 16-31), stored in
// [group][token] order: entry (t, g) of the 32 goes to byte g * (32 / groups) + t.
constexpr ByteIndex MakeSplitGroups(int groups) {
  ByteIndex t{};
  const int tpc = 32 / groups;  // tokens per 32 entries
  for (int j = 0; j < 64; ++j) {
    const int pos = j % 32;
    const int e = (pos % tpc) * groups + pos / tpc;  // entry stored at pos
    const int word = 8 * (e % 16 / 4) + (e < 16 ? 0 : 4) + e % 4;
    t.b[j] = static_cast<uint8_t>(2 * word + (j < 32 ? 0 : 1));
  }
  return t;
}
inline constexpr ByteIndex kSplitGroups[4] = {MakeSplitGroups(1), MakeSplitGroups(2), MakeSplitGroups(4),
                                              MakeSplitGroups(8)};
SLIMKV_KV_ATTR HWY_INLINE void StoreSplit32(__m512i x0, __m512i x1, const ByteIndex& idx, int8_t* dst) {
  const __m512i k128 = _mm512_set1_epi32(128);
  const __m512i w = _mm512_packs_epi32(_mm512_add_epi32(x0, k128), _mm512_add_epi32(x1, k128));
  const __m512i lo_sign = _mm512_set_epi64(0, 0, 0, 0, -0x7F7F7F7F7F7F7F80LL, -0x7F7F7F7F7F7F7F80LL,
                                           -0x7F7F7F7F7F7F7F80LL, -0x7F7F7F7F7F7F7F80LL);
  _mm512_storeu_si512(dst, _mm512_xor_si512(_mm512_permutexvar_epi8(LoadIndex(idx), w), lo_sign));
}
SLIMKV_KV_ATTR HWY_INLINE float Sum(__m512 v) { return _mm512_reduce_add_ps(v); }
SLIMKV_KV_ATTR HWY_INLINE float Max(__m512 v) { return _mm512_reduce_max_ps(v); }

// 3-bit codes (bit planes: per 16 elements, 3 x 2 bytes, bit k of element i in byte 2k +
// i/8, bit i%8). z holds 4 segments (s = 0..3) of 12 bytes, the planes of 32 elements each,
// at a stride of 12 or 16 bytes; Planes3 returns the codes of elements 16 h .. 16 h + 15 of
// every segment as bytes in [element i][segment s] order (byte 4 i + s). A masked permute
// puts the three plane bytes of 8 elements of a segment in bytes 7, 6, 5 of a qword (the
// rest zero); gf2p8affineqb with that qword as the matrix and byte j = 1 << j as the data
// transposes it (byte j, bit p = plane p, bit j: element j's code); a permute orders the
// bytes. Needs GFNI (HasGfni: every AVX-512 VNNI CPU has it, but it is checked).
constexpr ByteIndex MakePlaneGather(int stride, int h) {
  ByteIndex t{};
  for (int j = 0; j < 64; ++j) {
    const int q = j / 8, s = q / 2, hb = q % 2, plane = 7 - j % 8;
    t.b[j] = static_cast<uint8_t>(plane <= 2 ? stride * s + 6 * h + 2 * plane + hb : 0);
  }
  return t;
}
inline constexpr ByteIndex kPlaneGather[2][2] = {{MakePlaneGather(12, 0), MakePlaneGather(12, 1)},
                                                 {MakePlaneGather(16, 0), MakePlaneGather(16, 1)}};
inline constexpr ByteIndex kSegmentsToElements = MakeBytes([](int j) { return 16 * (j % 4) + j / 4; });
inline bool HasGfni() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("gfni") != 0;
  }();
  return has;
}
SLIMKV_KV_ATTR HWY_INLINE __m512i Planes3(__m512i z, bool stride16, int h) {
  const __m512i planes = _mm512_maskz_permutexvar_epi8(0xE0E0E0E0E0E0E0E0ull, LoadIndex(kPlaneGather[stride16][h]), z);
  const __m512i unit = _mm512_set1_epi64(0x8040201008040201ll);
  const __m512i codes = _mm512_gf2p8affine_epi64_epi8(unit, planes, 0);  // [segment][element]
  return _mm512_permutexvar_epi8(LoadIndex(kSegmentsToElements), codes);
}
// 4 segments of 12 bytes at p + k * stride (bytes) into lanes of 16 (masked loads: nothing
// past the 12 bytes is read).
SLIMKV_KV_ATTR HWY_INLINE __m512i LoadSegments12(const uint8_t* p, size_t stride) {
  __m512i z = _mm512_castsi128_si512(_mm_maskz_loadu_epi8(0x0FFF, p));
  z = _mm512_inserti32x4(z, _mm_maskz_loadu_epi8(0x0FFF, p + stride), 1);
  z = _mm512_inserti32x4(z, _mm_maskz_loadu_epi8(0x0FFF, p + 2 * stride), 2);
  return _mm512_inserti32x4(z, _mm_maskz_loadu_epi8(0x0FFF, p + 3 * stride), 3);
}

// Whether the integer key kernels read a channel-major K part of this block size.
HWY_INLINE bool KeyVnniOk(const KvFormat& f, int bits, int bt, int hd) {
  return (bt == 32 || bt == 64) && hd % 32 == 0 && f.group_size(hd) % 32 == 0 && (bits != 3 || HasGfni());
}

// Codes of channels [o, o + 8), tokens [32 slab, 32 slab + 32) of a channel-major K part
// (bt 32 or 64) as [token][4 channels] bytes: c[0] channels o..o+3 tokens 0-15 of the
// slab, c[1] tokens 16-31, c[2], c[3] channels o+4..o+7.
template <int kBits>
SLIMKV_KV_ATTR HWY_INLINE void KeyOctet(const uint8_t* codes, int bt, int o, int slab, __m512i c[4]) {
  if constexpr (kBits == 4) {
    // A channel's 32-token slab is one unit of 16 bytes: byte i holds token i (low), 16 + i (high).
    const __m512i m = _mm512_set1_epi8(0x0F);
    for (int h = 0; h < 2; ++h) {
      __m512i x;
      if (bt == 32) {  // 4 channels: 64 contiguous bytes
        x = _mm512_permutexvar_epi8(LoadIndex(kK4), _mm512_loadu_si512(codes + o * 16 + 64 * h));
      } else {  // bt 64: channels of 32 bytes (slab 0, slab 1), two per vector
        const uint8_t* p = codes + o * 32 + 128 * h;
        x = _mm512_permutex2var_epi8(_mm512_loadu_si512(p), LoadIndex(kV4[slab]), _mm512_loadu_si512(p + 64));
      }
      c[2 * h] = _mm512_and_si512(x, m);
      c[2 * h + 1] = _mm512_and_si512(_mm512_srli_epi16(x, 4), m);
    }
  } else if constexpr (kBits == 8) {
    const __m512i lo = LoadIndex(kK8Lo), hi = LoadIndex(kK8Hi);
    for (int h = 0; h < 2; ++h) {
      __m512i a, b;  // 32 tokens of channels (o + 4h, +1) and (+2, +3)
      const uint8_t* p = codes + static_cast<size_t>(o + 4 * h) * bt + 32 * slab;
      if (bt == 32) {
        a = _mm512_loadu_si512(p);
        b = _mm512_loadu_si512(p + 64);
      } else {
        auto pair = [&](const uint8_t* x) {
          return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))),
                                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + bt)), 1);
        };
        a = pair(p);
        b = pair(p + 2 * bt);
      }
      c[2 * h] = _mm512_permutex2var_epi8(a, lo, b);
      c[2 * h + 1] = _mm512_permutex2var_epi8(a, hi, b);
    }
  } else if constexpr (kBits == 3) {
    // A channel's slab is 12 bytes: tokens 0-15, then 16-31, 6 bytes of planes each.
    for (int h = 0; h < 2; ++h) {
      __m512i z;
      if (bt == 32) {  // 4 channels: 48 contiguous bytes
        z = _mm512_maskz_loadu_epi8(0xFFFFFFFFFFFFull, codes + (o + 4 * h) * 12);
      } else {  // bt 64: channels of 24 bytes, the slab's 12 at 12 * slab
        z = LoadSegments12(codes + (o + 4 * h) * 24 + 12 * slab, 24);
      }
      c[2 * h] = Planes3(z, bt != 32, 0);
      c[2 * h + 1] = Planes3(z, bt != 32, 1);
    }
  } else {
    static_assert(kBits == 2);
    const __m512i m = _mm512_set1_epi8(3);
    if (bt == 32) {  // a unit holds 2 channels: even in bits 0-3, odd in bits 4-7
      const __m512i z = _mm512_loadu_si512(codes + o * 8);
      const __m512i e0 = _mm512_and_si512(z, m), e2 = _mm512_and_si512(_mm512_srli_epi16(z, 2), m);
      const __m512i e4 = _mm512_and_si512(_mm512_srli_epi16(z, 4), m), e6 = _mm512_and_si512(_mm512_srli_epi16(z, 6), m);
      const __m512i a = LoadIndex(kK2A), b = LoadIndex(kK2B);
      c[0] = _mm512_permutex2var_epi8(e0, a, e4);
      c[1] = _mm512_permutex2var_epi8(e2, a, e6);
      c[2] = _mm512_permutex2var_epi8(e0, b, e4);
      c[3] = _mm512_permutex2var_epi8(e2, b, e6);
    } else {  // bt 64: a unit is one channel, bit pair s of byte i holds token 16 s + i
      for (int h = 0; h < 2; ++h) {
        const __m512i y = _mm512_permutexvar_epi8(LoadIndex(kV2), _mm512_loadu_si512(codes + (o + 4 * h) * 16));
        c[2 * h] = _mm512_and_si512(_mm512_srli_epi16(y, 4 * slab), m);
        c[2 * h + 1] = _mm512_and_si512(_mm512_srli_epi16(y, 4 * slab + 2), m);
      }
    }
  }
}

// Accumulators of the two byte passes of kRows integer queries (256 hi + lo): [row][token
// half][even/odd channel quads]. With 1 or 2 rows, even and odd quads go to separate
// accumulators to halve the dependency chains; with more, index 1 is unused.
template <int kRows>
struct KeyAcc {
  static constexpr int kOdd = kRows <= 2 ? 1 : 0;  // accumulator of the odd quads: 1, or shared
  __m512i h[kRows][2][2], l[kRows][2][2];
  // Starts every accumulator of row r at (hi[r], lo[r]) (nullptr: 0) in its first quad set.
  SLIMKV_KV_ATTR HWY_INLINE void Start(const int32_t* hi, const int32_t* lo, int row0) {
    for (int r = 0; r < kRows; ++r)
      for (int t = 0; t < 2; ++t) {
        h[r][t][0] = hi ? _mm512_set1_epi32(hi[row0 + r]) : _mm512_setzero_si512();
        l[r][t][0] = lo ? _mm512_set1_epi32(lo[row0 + r]) : _mm512_setzero_si512();
        h[r][t][1] = l[r][t][1] = _mm512_setzero_si512();
      }
  }
  // out[r][t] = 256 * hi + lo, tokens 16 t .. 16 t + 15, as floats.
  SLIMKV_KV_ATTR HWY_INLINE void Finish(__m512 out[kRows][2]) const {
    for (int r = 0; r < kRows; ++r) {
      for (int t = 0; t < 2; ++t) {
        const __m512i hh = kOdd ? _mm512_add_epi32(h[r][t][0], h[r][t][1]) : h[r][t][0];
        const __m512i ll = kOdd ? _mm512_add_epi32(l[r][t][0], l[r][t][1]) : l[r][t][0];
        out[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hh), _mm512_set1_ps(256.0f), _mm512_cvtepi32_ps(ll));
      }
    }
  }
};

// Adds the products of kRows integer queries with the codes of channels [d0, d1) of one
// channel-major code array, tokens [32 slab, 32 slab + 32); query channel q0 + d for code
// channel d. kLut: codes index the bytes of `lut` (tq levels), else they multiply as they are.
// Each partial sum stays below 2^24 (exact as a float).
template <int kBits, int kRows, bool kLut>
SLIMKV_KV_ATTR HWY_INLINE void KeyDotsAdd(const uint8_t* codes, int bt, int slab, int d0, int d1, int q0, __m512i lut,
                                          const QueryBytes& q, int row0, KeyAcc<kRows>& acc) {
  constexpr int kOdd = KeyAcc<kRows>::kOdd;
  for (int o = d0; o < d1; o += 8) {
    __m512i c[4];
    KeyOctet<kBits>(codes, bt, o, slab, c);
    if constexpr (kLut)
      for (int i = 0; i < 4; ++i) c[i] = _mm512_permutexvar_epi8(c[i], lut);
    for (int r = 0; r < kRows; ++r) {
      const int8_t* lo = QueryLo(q, row0 + r, q0 + o);
      const int8_t* hi = lo + 32;
      Dpbusd(acc.h[r][0][0], c[0], hi);
      Dpbusd(acc.h[r][1][0], c[1], hi);
      Dpbusd(acc.h[r][0][kOdd], c[2], hi + 4);
      Dpbusd(acc.h[r][1][kOdd], c[3], hi + 4);
      Dpbusd(acc.l[r][0][0], c[0], lo);
      Dpbusd(acc.l[r][1][0], c[1], lo);
      Dpbusd(acc.l[r][0][kOdd], c[2], lo + 4);
      Dpbusd(acc.l[r][1][kOdd], c[3], lo + 4);
    }
  }
}

// Dots of kRows integer queries with the codes of channels [d0, d1), tokens 0-31 of the
// slab, as floats.
template <int kBits, int kRows>
SLIMKV_KV_ATTR HWY_INLINE void KeyDots(const uint8_t* codes, int bt, int slab, int d0, int d1, const QueryBytes& q,
                                       int row0, __m512 out[kRows][2]) {
  KeyAcc<kRows> acc;
  acc.Start(nullptr, nullptr, row0);
  KeyDotsAdd<kBits, kRows, false>(codes, bt, slab, d0, d1, 0, _mm512_setzero_si512(), q, row0, acc);
  acc.Finish(out);
}

// Per-channel keys: scores[r][t] = step[r] * dot + bias[r], tokens [0, 32 * n_slabs).
template <int kBits, int kRows>
SLIMKV_KV_ATTR HWY_INLINE void ScoreChannelVnniRows(const uint8_t* codes, int bt, int n_slabs, int hd,
                                                    const QueryBytes& q, int row0, float* scores, int lds) {
  for (int slab = 0; slab < n_slabs; ++slab) {
    __m512 dots[kRows][2];
    KeyDots<kBits, kRows>(codes, bt, slab, 0, hd, q, row0, dots);
    for (int r = 0; r < kRows; ++r) {
      const int i = (row0 + r) * (kMaxHd / 16);
      const __m512 step = _mm512_set1_ps(q.step[i]), bias = _mm512_set1_ps(q.bias[i]);
      for (int h = 0; h < 2; ++h)
        _mm512_storeu_ps(scores + r * lds + 32 * slab + 16 * h, _mm512_fmadd_ps(dots[r][h], step, bias));
    }
  }
}

// Rows in tiles of 4 or 3 (16 or 12 accumulators), then 2 or 1.
template <int kBits>
SLIMKV_KV_ATTR HWY_NOINLINE void ScoreChannelVnni(const uint8_t* codes, int bt, int n_slabs, int hd,
                                                  const QueryBytes& q, int rows, float* scores, int lds) {
  int r = 0;
  if (rows % 3 != 0)
    for (; r + 4 <= rows; r += 4) ScoreChannelVnniRows<kBits, 4>(codes, bt, n_slabs, hd, q, r, scores + r * lds, lds);
  for (; r + 3 <= rows; r += 3) ScoreChannelVnniRows<kBits, 3>(codes, bt, n_slabs, hd, q, r, scores + r * lds, lds);
  if (rows - r == 2) ScoreChannelVnniRows<kBits, 2>(codes, bt, n_slabs, hd, q, r, scores + r * lds, lds);
  if (rows - r == 1) ScoreChannelVnniRows<kBits, 1>(codes, bt, n_slabs, hd, q, r, scores + r * lds, lds);
}

// Per-token groups: score += scale[g][t] * (step[r][g] * dot + bias[r][g]) + zero[g][t] * qsum[r][g]
// (bias: minus the offset of the codes times the query's sum, and the rounding compensation).
template <int kBits, int kRows>
SLIMKV_KV_ATTR HWY_INLINE void ScoreTokenVnniRows(const uint8_t* codes, const uint8_t* meta, int bt, int slab,
                                                  size_t n_scales, bool has_zero, int hd, int g, const QueryBytes& q,
                                                  const float* qsum, int row0, float* scores, int lds) {
  const DF d;
  const int groups = hd / g;
  VF acc[kRows][2];
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = hn::Zero(d);
  for (int gi = 0; gi < groups; ++gi) {
    __m512 dots[kRows][2];
    KeyDots<kBits, kRows>(codes, bt, slab, gi * g, (gi + 1) * g, q, row0, dots);
    for (int h = 0; h < 2; ++h) {
      const size_t i0 = static_cast<size_t>(gi) * bt + 32 * slab + 16 * h;
      const VF sc = LoadHalves(d, meta, i0);
      const VF zr = has_zero ? LoadHalves(d, meta, n_scales + i0) : hn::Zero(d);
      for (int r = 0; r < kRows; ++r) {
        const int rg = (row0 + r) * (kMaxHd / 16) + gi;
        const VF x = hn::MulAdd(VF{dots[r][h]}, hn::Set(d, q.step[rg]), hn::Set(d, q.bias[rg]));
        acc[r][h] = hn::MulAdd(sc, x, hn::MulAdd(zr, hn::Set(d, qsum[(row0 + r) * groups + gi]), acc[r][h]));
      }
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int h = 0; h < 2; ++h) hn::StoreU(acc[r][h], d, scores + r * lds + 32 * slab + 16 * h);
}

template <int kBits>
SLIMKV_KV_ATTR HWY_NOINLINE void ScoreTokenVnni(const uint8_t* codes, const uint8_t* meta, int bt, int n_slabs,
                                                size_t n_scales, bool has_zero, int hd, int g, const QueryBytes& q,
                                                const float* qsum, int rows, float* scores, int lds) {
  for (int slab = 0; slab < n_slabs; ++slab) {
    int r = 0;
    if (rows % 3 != 0)
      for (; r + 4 <= rows; r += 4)
        ScoreTokenVnniRows<kBits, 4>(codes, meta, bt, slab, n_scales, has_zero, hd, g, q, qsum, r, scores + r * lds, lds);
    for (; r + 3 <= rows; r += 3)
      ScoreTokenVnniRows<kBits, 3>(codes, meta, bt, slab, n_scales, has_zero, hd, g, q, qsum, r, scores + r * lds, lds);
    if (rows - r == 2)
      ScoreTokenVnniRows<kBits, 2>(codes, meta, bt, slab, n_scales, has_zero, hd, g, q, qsum, r, scores + r * lds, lds);
    if (rows - r == 1)
      ScoreTokenVnniRows<kBits, 1>(codes, meta, bt, slab, n_scales, has_zero, hd, g, q, qsum, r, scores + r * lds, lds);
  }
}

// Per-channel keys, per block: q[r][d] * scale[d] as integers with step[r] = max|q[r]| *
// max|scale| / kIntLevels (a bound: no pass over the products is needed; it costs the bits
// by which the largest product falls short of it), and bias[r] = sum_d q[r][d] * (zero[d] -
// offset * scale[d]) less the rounding compensation. s.qn holds q * kIntLevels / max|q|.
template <int kBits>
SLIMKV_KV_ATTR inline void PrepareChannelQuery(const KvFormat& f, const uint8_t* meta, int hd, int rows,
                                               BlockScratch& s) {
  constexpr float mean = MeanCode(kBits);
  const float offset = IntOffset(f, kBits);
  __m512 vmax = _mm512_setzero_ps();
  for (int j = 0; j < hd; j += 16) {
    const __m512 sc = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(meta + 2 * j)));
    __m512 zo = _mm512_mul_ps(sc, _mm512_set1_ps(mean - offset));
    if (!f.symmetric)
      zo = _mm512_add_ps(zo, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(meta + 2 * (hd + j)))));
    _mm512_store_ps(s.channel_scale + j, sc);
    _mm512_store_ps(s.channel_zero + j, zo);
    vmax = _mm512_max_ps(vmax, _mm512_abs_ps(sc));
  }
  const float smax = Max(vmax);
  const __m512 inv_smax = _mm512_set1_ps(smax > 0 ? 1.0f / smax : 0.0f);
  for (int j = 0; j < hd; j += 16)
    _mm512_store_ps(s.channel_scale + j, _mm512_mul_ps(_mm512_load_ps(s.channel_scale + j), inv_smax));
  QueryBytes& qb = s.block_query;
  for (int r = 0; r < rows; ++r) {
    const float* q = s.qp + r * hd;
    const float* qn = s.qn + r * hd;
    const float step = s.qmax[r] * smax / kIntLevels;
    __m512 vb = _mm512_setzero_ps();
    __m512i vsum = _mm512_setzero_si512();
    for (int j = 0; j < hd; j += 32) {
      __m512i qi[2];
      for (int h = 0; h < 2; ++h) {
        const int jj = j + 16 * h;
        qi[h] = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_load_ps(qn + jj), _mm512_load_ps(s.channel_scale + jj)));
        vsum = _mm512_add_epi32(vsum, qi[h]);
        vb = _mm512_fmadd_ps(_mm512_load_ps(q + jj), _mm512_load_ps(s.channel_zero + jj), vb);
      }
      StoreSplit32(qi[0], qi[1], qb.bytes + r * 2 * kMaxHd + 2 * j);
    }
    vb = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(vsum), _mm512_set1_ps(mean * step), vb);
    qb.step[r * (kMaxHd / 16)] = step;
    qb.bias[r * (kMaxHd / 16)] = Sum(vb);
  }
}

// Per-token-group keys, per task: each (row, group) of the query as integers.
template <int kBits>
SLIMKV_KV_ATTR inline void PrepareTokenQuery(const KvFormat& f, int hd, int rows, BlockScratch& s) {
  const int g = f.group_size(hd), groups = hd / g;
  const float offset = IntOffset(f, kBits);
  constexpr float mean = MeanCode(kBits);
  QueryBytes& qb = s.task_query;
  for (int r = 0; r < rows; ++r) {
    for (int gi = 0; gi < groups; ++gi) {
      const float* q = s.qp + r * hd + gi * g;
      __m512 vmax = _mm512_setzero_ps();
      for (int j = 0; j < g; j += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_load_ps(q + j)));
      const float step = Max(vmax) / kIntLevels;
      const __m512 inv = _mm512_set1_ps(step > 0 ? 1.0f / step : 0.0f);
      // step * dot + bias = sum_d q_d (code_d - offset), less the rounding compensation:
      // bias = -offset * step * sum qi - (mean - offset) * sum (step * qi - q).
      __m512 vb = _mm512_setzero_ps();
      for (int j = 0; j < g; j += 32) {
        __m512i qi[2];
        for (int h = 0; h < 2; ++h) {
          const __m512 x = _mm512_load_ps(q + j + 16 * h);
          qi[h] = _mm512_cvtps_epi32(_mm512_mul_ps(x, inv));
          const __m512 qs = _mm512_mul_ps(_mm512_cvtepi32_ps(qi[h]), _mm512_set1_ps(step));
          vb = _mm512_fmadd_ps(qs, _mm512_set1_ps(-mean), vb);
          vb = _mm512_fmadd_ps(x, _mm512_set1_ps(mean - offset), vb);
        }
        StoreSplit32(qi[0], qi[1], qb.bytes + r * 2 * kMaxHd + 2 * (gi * g + j));
      }
      const int rg = r * (kMaxHd / 16) + gi;
      qb.step[rg] = step;
      qb.bias[rg] = Sum(vb);
    }
  }
}

// Codes of 4 tokens [t, t + 4) and 32 channels [d0, d0 + 32) of a token-major V part as
// [channel][4 tokens] bytes: c[j] holds channels d0 + 16 j + lane.
template <int kBits>
SLIMKV_KV_ATTR HWY_INLINE void ValueQuad(const uint8_t* codes, int hd, int t, int d0, __m512i c[2]) {
  if constexpr (kBits == 8) {
    const uint8_t* p = codes + static_cast<size_t>(t) * hd + d0;
    auto pair = [&](const uint8_t* x) {  // 32 channels of tokens x, x + 1
      return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))),
                                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + hd)), 1);
    };
    const __m512i r01 = pair(p), r23 = pair(p + 2 * hd);
    const __m512i a = LoadIndex(kV8L1);
    const __m512i x = _mm512_permutexvar_epi8(a, r01), y = _mm512_permutexvar_epi8(a, r23);
    c[0] = _mm512_permutex2var_epi8(x, LoadIndex(kV8L2[0]), y);
    c[1] = _mm512_permutex2var_epi8(x, LoadIndex(kV8L2[1]), y);
  } else if constexpr (kBits == 4) {  // the unit of channels [d0, d0 + 32): byte i holds d0 + i, d0 + 16 + i
    const int rb = hd / 2;
    const uint8_t* p = codes + static_cast<size_t>(t) * rb + d0 / 2;
    __m512i z;
    if (rb == 32) {  // four tokens are 128 contiguous bytes
      const uint8_t* row = p - d0 / 2;
      z = _mm512_permutex2var_epi8(_mm512_loadu_si512(row), LoadIndex(kV4[d0 / 32]), _mm512_loadu_si512(row + 64));
    } else {
      z = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + rb)), 1);
      z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * rb)), 2);
      z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 3 * rb)), 3);
      z = _mm512_permutexvar_epi8(LoadIndex(kV2), z);
    }
    const __m512i m = _mm512_set1_epi8(0x0F);
    c[0] = _mm512_and_si512(z, m);
    c[1] = _mm512_and_si512(_mm512_srli_epi16(z, 4), m);
  } else if constexpr (kBits == 3) {  // a token's channels [d0, d0 + 32) are 12 bytes of planes
    const size_t rb = static_cast<size_t>(hd) / 16 * 6;
    const uint8_t* p = codes + static_cast<size_t>(t) * rb + d0 / 16 * 6;
    const bool contiguous = rb == 12;
    const __m512i z = contiguous ? _mm512_maskz_loadu_epi8(0xFFFFFFFFFFFFull, p) : LoadSegments12(p, rb);
    c[0] = Planes3(z, !contiguous, 0);
    c[1] = Planes3(z, !contiguous, 1);
  } else {  // int2: the unit of 64 channels holding [d0, d0 + 32); bit pair s of byte i: channel 16 s + i
    static_assert(kBits == 2);
    const int rb = hd / 4;
    if (hd == 32) {  // rows of 32 channels: a unit holds two tokens (bit pairs 0, 1 and 2, 3)
      const __m512i z = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + t * 8)));
      const __m512i m = _mm512_set1_epi8(3), idx = LoadIndex(kV2Half);
      const __m512i e0 = _mm512_and_si512(z, m), e2 = _mm512_and_si512(_mm512_srli_epi16(z, 2), m);
      const __m512i e4 = _mm512_and_si512(_mm512_srli_epi16(z, 4), m), e6 = _mm512_and_si512(_mm512_srli_epi16(z, 6), m);
      c[0] = _mm512_permutex2var_epi8(e0, idx, e4);
      c[1] = _mm512_permutex2var_epi8(e2, idx, e6);
      return;
    }
    const uint8_t* p = codes + static_cast<size_t>(t) * rb + (d0 & ~63) / 4;
    __m512i z;
    if (rb == 16) {
      z = _mm512_loadu_si512(p);
    } else {
      z = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + rb)), 1);
      z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * rb)), 2);
      z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 3 * rb)), 3);
    }
    const __m512i y = _mm512_permutexvar_epi8(LoadIndex(kV2), z), m = _mm512_set1_epi8(3);
    const int s0 = d0 % 64 ? 4 : 0;
    c[0] = _mm512_and_si512(_mm512_srli_epi16(y, s0), m);
    c[1] = _mm512_and_si512(_mm512_srli_epi16(y, s0 + 2), m);
  }
}

// acc[r][:] += vstep[r] * sum_t w[r][t] code[t][:] for tokens [0, n_tok) (a multiple of 16)
// of a token-major code array of `width` channels (acc rows `lda` apart); weights w = 256
// hi + lo as PrepareValueWeights stores them. TurboLut (tq values): codes index the bytes
// of `lut` (128 + the level's grid value) and the accumulators start at s.tq_woff (minus
// 128 times each byte pass's weight sum), which leaves sum_t w[r][t] level[t][:] exactly.
struct NoLut {};
struct TurboLut {
  const ByteIndex* table;
};
template <int kBits, int kRows, class Lut>
SLIMKV_KV_ATTR HWY_INLINE void AccumValueVnniRows(const uint8_t* codes, int width, int g, int n_tok, const BlockScratch& s,
                                                  int row0, float* acc, int lda, Lut lut) {
  constexpr bool kTurbo = std::is_same_v<Lut, TurboLut>;
  constexpr int kWRow = 2 * kIntBt * kMaxGroups;
  constexpr int kVecs = 2;
  const int groups = width / g, tpc = 32 / groups;
  const int log_tpc = __builtin_ctz(tpc);
  __m512i table = _mm512_setzero_si512();
  if constexpr (kTurbo) table = LoadIndex(*lut.table);
  for (int d0 = 0; d0 < width; d0 += 16 * kVecs) {
    __m512i ah[kRows][kVecs], al[kRows][kVecs];
    for (int r = 0; r < kRows; ++r) {
      for (int j = 0; j < kVecs; ++j) {
        if constexpr (kTurbo) {
          ah[r][j] = _mm512_set1_epi32(s.tq_woff[2 * (row0 + r)]);
          al[r][j] = _mm512_set1_epi32(s.tq_woff[2 * (row0 + r) + 1]);
        } else {
          ah[r][j] = al[r][j] = _mm512_setzero_si512();
        }
      }
    }
    int goff[kVecs];
    for (int j = 0; j < kVecs; ++j) goff[j] = (d0 + 16 * j) / g * tpc;
    for (int t = 0; t < n_tok; t += 4) {
      __m512i c[kVecs];
      ValueQuad<kBits>(codes, width, t, d0, c);
      if constexpr (kTurbo)
        for (int j = 0; j < kVecs; ++j) c[j] = _mm512_permutexvar_epi8(c[j], table);
      const int base = ((t >> log_tpc) << 6) + (t & (tpc - 1));
      for (int r = 0; r < kRows; ++r) {
        const int8_t* lo = s.wbytes + (row0 + r) * kWRow + base;
        const int8_t* hi = lo + 32;
        for (int j = 0; j < kVecs; ++j) {
          Dpbusd(ah[r][j], c[j], hi + goff[j]);
          Dpbusd(al[r][j], c[j], lo + goff[j]);
        }
      }
    }
    for (int r = 0; r < kRows; ++r) {
      const __m512 step = _mm512_set1_ps(s.vstep[row0 + r]);
      for (int j = 0; j < kVecs; ++j) {
        float* a = acc + (row0 + r) * lda + d0 + 16 * j;
        const __m512i x = _mm512_add_epi32(_mm512_slli_epi32(ah[r][j], 8), al[r][j]);
        _mm512_storeu_ps(a, _mm512_fmadd_ps(_mm512_cvtepi32_ps(x), step, _mm512_loadu_ps(a)));
      }
    }
  }
}

template <int kBits, class Lut = NoLut>
SLIMKV_KV_ATTR HWY_NOINLINE void AccumValueVnni(const uint8_t* codes, int width, int g, int rows, int n_tok,
                                                const BlockScratch& s, float* acc, int lda, Lut lut = {}) {
  int r = 0;
  if (rows % 3 != 0)
    for (; r + 4 <= rows; r += 4) AccumValueVnniRows<kBits, 4>(codes, width, g, n_tok, s, r, acc, lda, lut);
  for (; r + 3 <= rows; r += 3) AccumValueVnniRows<kBits, 3>(codes, width, g, n_tok, s, r, acc, lda, lut);
  if (rows - r == 2) AccumValueVnniRows<kBits, 2>(codes, width, g, n_tok, s, r, acc, lda, lut);
  if (rows - r == 1) AccumValueVnniRows<kBits, 1>(codes, width, g, n_tok, s, r, acc, lda, lut);
}

// Weights of one block for the integer value kernel, tokens [0, n_valid) of n_tok (a
// multiple of 16; slots past n_valid weigh 0 whatever their metadata holds):
//   w[r][t][g] = p[r][t] * scale[t][g] as integers with vstep[r] = pmax[r] * max|scale| /
//   levels (pmax[r]: the row's largest weight in the block, so the bound is tight up to the
//   spread of the scales), stored as bytes in [chunk][group][token] order;
//   vconst[r][g] = sum_t p[r][t] * (zero[t][g] - offset * scale[t][g]) less the rounding
//   compensation, added to the accumulators at the end of the task.
template <int kBits>
SLIMKV_KV_ATTR inline void PrepareValueWeights(const KvFormat& f, const uint8_t* meta, int bt, int hd, const float* p,
                                               int ldp, int rows, int n_tok, int n_valid, BlockScratch& s) {
  constexpr int kWRow = 2 * kIntBt * kMaxGroups;
  const int g = f.group_size(hd), groups = hd / g;
  const int log_groups = __builtin_ctz(groups);
  const size_t n_scales = static_cast<size_t>(bt) * groups;
  const float offset = IntOffset(f, kBits);
  constexpr float mean = MeanCode(kBits);
  const int nv = n_tok * groups / 16;  // vectors of 16 (token, group) entries
  const __m512i lane_token = _mm512_srli_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                               log_groups);
  __m512 smax = _mm512_setzero_ps();
  for (int v = 0; v < nv; ++v) {
    const int t0 = (v * 16) >> log_groups;
    const __m512 sc = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(meta + 32 * v)));
    __m512 zo = _mm512_mul_ps(sc, _mm512_set1_ps(mean - offset));
    if (!f.symmetric)
      zo = _mm512_add_ps(zo, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(meta + 2 * n_scales + 32 * v))));
    __mmask16 keep = 0xFFFF;
    if (t0 + (16 >> log_groups) > n_valid)
      keep = _mm512_cmplt_epi32_mask(_mm512_add_epi32(lane_token, _mm512_set1_epi32(t0)), _mm512_set1_epi32(n_valid));
    _mm512_store_ps(s.vscale + v * 16, _mm512_maskz_mov_ps(keep, sc));
    _mm512_store_ps(s.vzero + v * 16, _mm512_maskz_mov_ps(keep, zo));
    smax = _mm512_mask_max_ps(smax, keep, smax, _mm512_abs_ps(sc));
  }
  const float scale_max = Max(smax);
  // The rows' largest weights: 2^(block max - running max).
  for (int r = 0; r < rows; r += 16) {
    const DF d;
    hn::Store(Exp2(d, hn::Load(d, s.dm + r)), d, s.pmax + r);
  }
  const ByteIndex& split = kSplitGroups[log_groups];
  for (int r = 0; r < rows; ++r) {
    const float* pr = p + r * ldp;
    const float step = s.pmax[r] * scale_max / kIntLevels;
    s.vstep[r] = step;
    const __m512 inv = _mm512_set1_ps(step > 0 ? 1.0f / step : 0.0f);
    __m512 vc = _mm512_setzero_ps();
    __m512i vsum = _mm512_setzero_si512();
    int8_t* dst = s.wbytes + r * kWRow;
    for (int v = 0; v < nv; v += 2) {
      __m512i wi[2];
      for (int h = 0; h < 2; ++h) {
        if (v + h >= nv) {
          wi[h] = _mm512_setzero_si512();
          continue;
        }
        const int vv = v + h;
        __m512 pe;
        if (groups == 1) {
          pe = _mm512_loadu_ps(pr + 16 * vv);
        } else {  // the weights of tokens t0 .. t0 + 16/groups, each repeated for its groups
          const int t0 = (vv * 16) >> log_groups;
          pe = _mm512_permutexvar_ps(_mm512_add_epi32(lane_token, _mm512_set1_epi32(t0 & 15)),
                                     _mm512_loadu_ps(pr + (t0 & ~15)));
        }
        wi[h] = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_mul_ps(pe, inv), _mm512_load_ps(s.vscale + vv * 16)));
        vsum = _mm512_add_epi32(vsum, wi[h]);
        vc = _mm512_fmadd_ps(pe, _mm512_load_ps(s.vzero + vv * 16), vc);
      }
      StoreSplit32(wi[0], wi[1], split, dst + 32 * v);
    }
    // The rounding error of the weights times the mean code comes out of the constant:
    // vzero holds zero + (mean - offset) * scale, so vc - mean * step * sum(wi) is left.
    vc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(vsum), _mm512_set1_ps(mean * step), vc);
    if (groups == 1) {
      s.vconst[r * kMaxGroups] = Sum(vc);
      continue;
    }
    // Lane l of vc holds group l % groups: fold to lanes [0, groups).
    for (int half = 8; half >= groups; half /= 2) {
      const __m512i rot = _mm512_and_si512(
          _mm512_add_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(half)),
          _mm512_set1_epi32(15));
      vc = _mm512_add_ps(vc, _mm512_permutexvar_ps(rot, vc));
    }
    _mm512_storeu_ps(s.vconst + r * kMaxGroups, vc);
  }
}

// Whether the integer value kernel handles a per-token-group V format.
inline bool ValueVnniOk(const KvFormat& f, int bits, int bt, int hd) {
  const int groups = hd / f.group_size(hd);
  return bt <= kIntBt && hd % 64 == 0 && (groups & (groups - 1)) == 0 && groups <= kMaxGroups &&
         (bits != 3 || HasGfni());
}

// ------------------------------------------------------------------ tq on the integer paths
// TurboQuant levels are bytes on a grid (turbo.h: level = grid value / kTurboGrid), so tq
// parts use the integer kernels above with a table lookup after the code extraction: codes
// become 128 + grid value (unsigned, as vpdpbusd wants), and the accumulators start at
// -128 times the sum of the other operand's bytes of each pass, so they end at exactly
// sum grid value * operand. Keys: the rotated query as 16-bit integers per task (one step
// per row: the levels need no per-channel scale), score = dot * step * norm[t]; values: the
// weights p * norm[t] as 16-bit integers per block, in the rotated domain like the float path.

// vpermb table of a width: byte code = 128 + grid value of the code (codes < 2^bits).
inline const ByteIndex& TurboLevelBytes(int bits) {
  static const std::array<ByteIndex, kMaxTurboBits + 1> tables = [] {
    std::array<ByteIndex, kMaxTurboBits + 1> t{};
    for (int b = 1; b <= kMaxTurboBits; ++b) {
      for (int j = 0; j < 64; ++j) t[b].b[j] = 128;
      for (uint32_t c = 0; c < (1u << b); ++c)
        t[b].b[c] = static_cast<uint8_t>(128 + CodebookGridValue(LloydMaxGaussian(b), c));
    }
    return t;
  }();
  return tables[bits];
}

// Whether a tq K part takes the integer path: 2-4 bit codes (1-bit parts are tiny and stay
// on the float path), code arrays of whole 32-channel units, no block mean.
HWY_INLINE bool TurboKeyVnniOk(const KvFormat& f, int bt, int hd) {
  if (f.type != ElemType::kTurbo || f.tq_mean || (bt != 32 && bt != 64) || f.tq_bits < 2) return false;
  const int hi = f.tq_plus * hd / 4;
  const bool three = f.tq_bits == 3 || (hi > 0 && f.tq_bits == 2);
  return hi % 32 == 0 && (hd - hi) % 32 == 0 && (!three || HasGfni());
}
// Values: rows of whole 32-channel units (hi codes have 3 or 4 bits).
HWY_INLINE bool TurboValueVnniOk(const KvFormat& f, int bt, int hd) {
  if (f.type != ElemType::kTurbo || bt > kIntBt || f.tq_bits < 2) return false;
  const int hi = f.tq_plus * hd / 4, lo = hd - hi;
  if ((f.tq_bits == 3 || (hi > 0 && f.tq_bits == 2)) && !HasGfni()) return false;
  // 2-bit rows: whole 64-channel units, or exactly 32 channels (ValueQuad<2>).
  const bool lo_ok = f.tq_bits == 2 ? lo % 64 == 0 || lo == 32 : lo % 32 == 0;
  return hi % 32 == 0 && lo_ok;
}

// The tq widths the integer paths take, as 10 * lo bits + hi bits (hi 0: no hi channels):
// 20, 23, 30, 34, 40.
HWY_INLINE int TurboBitsKey(const TurboLayout& lay) {
  return 10 * lay.lo_bits + (lay.hi_channels > 0 ? lay.hi_bits : 0);
}

// Per task: each row of s.qp (rotated, softmax scale folded in) as 16-bit integers with
// step max|q| / levels; q.step holds step / (kTurboGrid sqrt(hd)), so that step * dot *
// norm[t] is the score.
SLIMKV_KV_ATTR inline void PrepareTurboQuery(int hd, int rows, BlockScratch& s) {
  QueryBytes& qb = s.task_query;
  const float unit = 1.0f / (kTurboGrid * std::sqrt(static_cast<float>(hd)));
  for (int r = 0; r < rows; ++r) {
    const float* q = s.qp + r * hd;
    __m512 vmax = _mm512_setzero_ps();
    for (int j = 0; j < hd; j += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_load_ps(q + j)));
    const float step = Max(vmax) / kIntLevels;
    const __m512 inv = _mm512_set1_ps(step > 0 ? 1.0f / step : 0.0f);
    __m512i hsum = _mm512_setzero_si512(), lsum = _mm512_setzero_si512();
    for (int j = 0; j < hd; j += 32) {
      __m512i qi[2];
      for (int h = 0; h < 2; ++h) {
        qi[h] = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_load_ps(q + j + 16 * h), inv));
        const __m512i hi = _mm512_srai_epi32(_mm512_add_epi32(qi[h], _mm512_set1_epi32(128)), 8);
        hsum = _mm512_add_epi32(hsum, hi);
        lsum = _mm512_add_epi32(lsum, _mm512_sub_epi32(qi[h], _mm512_slli_epi32(hi, 8)));
      }
      StoreSplit32(qi[0], qi[1], qb.bytes + r * 2 * kMaxHd + 2 * j);
    }
    s.tq_qoff_hi[r] = -128 * _mm512_reduce_add_epi32(hsum);
    s.tq_qoff_lo[r] = -128 * _mm512_reduce_add_epi32(lsum);
    qb.step[r * (kMaxHd / 16)] = step * unit;
  }
}

template <int kLoBits, int kHiBits, int kRows>
SLIMKV_KV_ATTR HWY_INLINE void ScoreTurboVnniRows(const TurboLayout& lay, const uint8_t* kpart, int bt, int slab, int hd,
                                                  const BlockScratch& s, int row0, float* scores, int lds) {
  const QueryBytes& q = s.task_query;
  KeyAcc<kRows> acc;
  acc.Start(s.tq_qoff_hi, s.tq_qoff_lo, row0);
  const int hi = lay.hi_channels;
  if constexpr (kHiBits > 0)
    KeyDotsAdd<kHiBits, kRows, true>(kpart + lay.hi_offset, bt, slab, 0, hi, 0, LoadIndex(TurboLevelBytes(kHiBits)), q,
                                     row0, acc);
  KeyDotsAdd<kLoBits, kRows, true>(kpart + lay.lo_offset, bt, slab, 0, hd - hi, hi, LoadIndex(TurboLevelBytes(kLoBits)),
                                   q, row0, acc);
  __m512 dots[kRows][2];
  acc.Finish(dots);
  for (int h = 0; h < 2; ++h) {
    const __m512 norm = _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kpart + lay.norm_offset + 2 * (32 * slab + 16 * h))));
    for (int r = 0; r < kRows; ++r) {
      const __m512 step = _mm512_set1_ps(q.step[(row0 + r) * (kMaxHd / 16)]);
      _mm512_storeu_ps(scores + r * lds + 32 * slab + 16 * h, _mm512_mul_ps(_mm512_mul_ps(dots[r][h], step), norm));
    }
  }
}

// scores[r][t] for tokens [0, 32 * n_slabs) of a tq K part (PrepareTurboQuery done).
// (Functions, not lambdas, below: clang compiles a lambda without its caller's target
// attribute, so it could not inline the VNNI kernels.)
template <int kLo, int kHi>
SLIMKV_KV_ATTR HWY_NOINLINE void ScoreTurboVnniBits(const TurboLayout& lay, const uint8_t* kpart, int bt, int hd,
                                                    int rows, int n_slabs, const BlockScratch& s, float* scores, int lds) {
  for (int slab = 0; slab < n_slabs; ++slab) {
    int r = 0;
    if (rows % 3 != 0)
      for (; r + 4 <= rows; r += 4) ScoreTurboVnniRows<kLo, kHi, 4>(lay, kpart, bt, slab, hd, s, r, scores + r * lds, lds);
    for (; r + 3 <= rows; r += 3) ScoreTurboVnniRows<kLo, kHi, 3>(lay, kpart, bt, slab, hd, s, r, scores + r * lds, lds);
    if (rows - r == 2) ScoreTurboVnniRows<kLo, kHi, 2>(lay, kpart, bt, slab, hd, s, r, scores + r * lds, lds);
    if (rows - r == 1) ScoreTurboVnniRows<kLo, kHi, 1>(lay, kpart, bt, slab, hd, s, r, scores + r * lds, lds);
  }
}
SLIMKV_KV_ATTR inline void ScoreTurboVnni(const KvFormat& f, const uint8_t* kpart, int bt, int hd, int rows,
                                          int n_slabs, const BlockScratch& s, float* scores, int lds) {
  const TurboLayout lay = MakeTurboLayout(f, bt, hd);
  switch (TurboBitsKey(lay)) {
    case 20: ScoreTurboVnniBits<2, 0>(lay, kpart, bt, hd, rows, n_slabs, s, scores, lds); break;
    case 23: ScoreTurboVnniBits<2, 3>(lay, kpart, bt, hd, rows, n_slabs, s, scores, lds); break;
    case 30: ScoreTurboVnniBits<3, 0>(lay, kpart, bt, hd, rows, n_slabs, s, scores, lds); break;
    case 34: ScoreTurboVnniBits<3, 4>(lay, kpart, bt, hd, rows, n_slabs, s, scores, lds); break;
    default: ScoreTurboVnniBits<4, 0>(lay, kpart, bt, hd, rows, n_slabs, s, scores, lds); break;
  }
}

// acc[r] += sum_t p[r][t] v_t for a tq V part (rotated domain), tokens [0, n_valid) of
// n_tok: weights w = p * norm[t] as integers with step pmax[r] * max norm / levels (norms
// of slots past n_valid count as 0), vstep = step / (kTurboGrid sqrt(hd)).
SLIMKV_KV_ATTR HWY_NOINLINE void AccumulateTurboVnni(const KvFormat& f, const uint8_t* vpart, int bt, int hd,
                                                     const float* p, int ldp, int rows, int n_tok, int n_valid,
                                                     float* acc, BlockScratch& s) {
  constexpr int kWRow = 2 * kIntBt * kMaxGroups;
  const TurboLayout lay = MakeTurboLayout(f, bt, hd);
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  float* norm = s.vscale;  // [n_tok]
  __m512 nmax = _mm512_setzero_ps();
  for (int t0 = 0; t0 < n_tok; t0 += 16) {
    const __mmask16 keep = _mm512_cmplt_epi32_mask(_mm512_add_epi32(lane, _mm512_set1_epi32(t0)), _mm512_set1_epi32(n_valid));
    const __m512 nv = _mm512_maskz_mov_ps(
        keep, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(vpart + lay.norm_offset + 2 * t0))));
    _mm512_store_ps(norm + t0, nv);
    nmax = _mm512_max_ps(nmax, _mm512_abs_ps(nv));
  }
  const float norm_max = Max(nmax);
  for (int r = 0; r < rows; r += 16) {
    const DF d;
    hn::Store(Exp2(d, hn::Load(d, s.dm + r)), d, s.pmax + r);
  }
  const float unit = 1.0f / (kTurboGrid * std::sqrt(static_cast<float>(hd)));
  const int nv = n_tok / 16;
  for (int r = 0; r < rows; ++r) {
    const float step = s.pmax[r] * norm_max / kIntLevels;
    const __m512 inv = _mm512_set1_ps(step > 0 ? 1.0f / step : 0.0f);
    __m512i hsum = _mm512_setzero_si512(), lsum = _mm512_setzero_si512();
    int8_t* dst = s.wbytes + r * kWRow;
    for (int v = 0; v < nv; v += 2) {
      __m512i wi[2];
      for (int h = 0; h < 2; ++h) {
        if (v + h >= nv) {
          wi[h] = _mm512_setzero_si512();
          continue;
        }
        const int t0 = 16 * (v + h);
        const __m512 w = _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(p + r * ldp + t0), inv), _mm512_load_ps(norm + t0));
        wi[h] = _mm512_cvtps_epi32(w);
        const __m512i hi = _mm512_srai_epi32(_mm512_add_epi32(wi[h], _mm512_set1_epi32(128)), 8);
        hsum = _mm512_add_epi32(hsum, hi);
        lsum = _mm512_add_epi32(lsum, _mm512_sub_epi32(wi[h], _mm512_slli_epi32(hi, 8)));
      }
      StoreSplit32(wi[0], wi[1], kSplitGroups[0], dst + 32 * v);
    }
    s.tq_woff[2 * r] = -128 * _mm512_reduce_add_epi32(hsum);
    s.tq_woff[2 * r + 1] = -128 * _mm512_reduce_add_epi32(lsum);
    s.vstep[r] = step * unit;
  }
  const int h = lay.hi_channels;
  auto part = [&](int bits, size_t offset, int width, float* a) {
    const TurboLut lut{&TurboLevelBytes(bits)};
    switch (bits) {
      case 2: AccumValueVnni<2>(vpart + offset, width, width, rows, n_tok, s, a, hd, lut); break;
      case 3: AccumValueVnni<3>(vpart + offset, width, width, rows, n_tok, s, a, hd, lut); break;
      default: AccumValueVnni<4>(vpart + offset, width, width, rows, n_tok, s, a, hd, lut); break;
    }
  };
  if (h > 0) part(lay.hi_bits, lay.hi_offset, h, acc);
  part(lay.lo_bits, lay.lo_offset, hd - h, acc + h);
}

#endif  // SLIMKV_KV_VNNI

// ------------------------------------------------------------------ per block dispatch
// The K part of `block` as fp32 [hd][bt] with its RoPE applied (keys stored before RoPE).
inline void DecodeRopeTile(const BlockKind& kind, const uint8_t* kpart, int bt, int hd, int first_pos,
                           const RopeTables& rope, float* tile) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const KvFormat& f = kind.k;
  const uint8_t* meta = kpart + kind.k_layout.meta_offset;
  if (f.is_float() || f.granularity == Granularity::kBlock) {
    const float s = f.granularity == Granularity::kBlock ? Fp8Scale(f, meta) : 1.0f;
    WithFloatLoader(f.type, [&](auto load) {
      for (size_t e = 0; e < static_cast<size_t>(hd) * bt; e += N) hn::StoreU(hn::Mul(load(d, kpart, e), hn::Set(d, s)), d, tile + e);
    });
  } else {
    const size_t n_scales = f.granularity == Granularity::kChannel ? hd : static_cast<size_t>(bt) * (hd / f.group_size(hd));
    const float offset = IntOffset(f);
    WithIntBits(f.bits(), [&](auto bits) {
      const CodeLoader<decltype(bits)::value> load;
      for (int dim = 0; dim < hd; ++dim) {
        for (int t = 0; t < bt; t += static_cast<int>(N)) {
          const size_t e = static_cast<size_t>(dim) * bt + t;
          VF s, z;
          if (f.granularity == Granularity::kChannel) {
            s = hn::Set(d, Half(meta, dim));
            z = hn::Set(d, f.symmetric ? 0.0f : Half(meta, n_scales + dim));
          } else {
            const size_t si = static_cast<size_t>(dim / f.group_size(hd)) * bt + t;
            s = LoadHalves(d, meta, si);
            z = f.symmetric ? hn::Zero(d) : LoadHalves(d, meta, n_scales + si);
          }
          const VF code = hn::Sub(load(d, kpart, e), hn::Set(d, offset));
          hn::StoreU(hn::MulAdd(code, s, z), d, tile + e);
        }
      }
    });
  }
  const int half = rope.rope_dim / 2;
  for (int i = 0; i < half; ++i) {
    const int a = rope.style == ops::RopeStyle::kNormal ? 2 * i : i;
    const int b = rope.style == ops::RopeStyle::kNormal ? 2 * i + 1 : i + half;
    for (int t = 0; t < bt; t += static_cast<int>(N)) {
      const VF c = hn::LoadU(d, rope.cos + i * rope.stride + first_pos + t);
      const VF s = hn::LoadU(d, rope.sin + i * rope.stride + first_pos + t);
      const VF x0 = hn::LoadU(d, tile + a * bt + t), x1 = hn::LoadU(d, tile + b * bt + t);
      hn::StoreU(hn::NegMulAdd(x1, s, hn::Mul(x0, c)), d, tile + a * bt + t);
      hn::StoreU(hn::MulAdd(x0, s, hn::Mul(x1, c)), d, tile + b * bt + t);
    }
  }
}

// scores[r][t] for tokens [0, n_tok) (a multiple of 16) of a block, from the prepared
// queries s.qp [rows][hd] (and, for per-token integer keys, s.qsum and s.task_query).
SLIMKV_KV_ATTR inline void ScoreBlock(const BlockKind& kind, const uint8_t* kpart, int bt, int hd, int rows,
                                      int n_tok, const RopeTables* rope, int first_pos, bool int_query,
                                      float* scores, int lds, BlockScratch& s) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const KvFormat& f = kind.k;
  const int bits = kind.k_bits;
  const uint8_t* meta = kpart + kind.k_layout.meta_offset;
  if (rope) {
    DecodeRopeTile(kind, kpart, bt, hd, first_pos, *rope, s.tile);
    ScoreChannelMajor(F32Loader(), reinterpret_cast<const uint8_t*>(s.tile), bt, hd, s.qp, hd, rows, n_tok, scores, lds);
    return;
  }
  if (f.is_float()) {
    WithFloatLoader(f.type, [&](auto load) { ScoreChannelMajor(load, kpart, bt, hd, s.qp, hd, rows, n_tok, scores, lds); });
    return;
  }
  if (f.type == ElemType::kTurbo) {
#if SLIMKV_KV_VNNI
    if (int_query) {  // TurboKeyVnniOk: the driver prepared the integer query
      ScoreTurboVnni(f, kpart, bt, hd, rows, (n_tok + 31) / 32, s, scores, lds);
      return;
    }
#endif
    turbo::ScoreTurboBlock(f, kpart, bt, hd, s.qp, hd, rows, n_tok, scores, lds);
    return;
  }
  if (f.granularity == Granularity::kBlock) {  // fp8: fold the part's scale into the query
    const VF sc = hn::Set(d, Fp8Scale(f, meta));
    for (int i = 0; i < rows * hd; i += static_cast<int>(N)) hn::Store(hn::Mul(hn::Load(d, s.qp + i), sc), d, s.q2 + i);
    WithFloatLoader(f.type, [&](auto load) { ScoreChannelMajor(load, kpart, bt, hd, s.q2, hd, rows, n_tok, scores, lds); });
    return;
  }
  if (f.granularity == Granularity::kChannel) {
#if SLIMKV_KV_VNNI
    if (KeyVnniOk(f, bits, bt, hd)) {
      WithIntBits(bits, [&](auto bits) {
        constexpr int kBits = decltype(bits)::value;
        PrepareChannelQuery<kBits>(f, meta, hd, rows, s);
        ScoreChannelVnni<kBits>(kpart, bt, (n_tok + 31) / 32, hd, s.block_query, rows, scores, lds);
      });
      return;
    }
#endif
    // q2[r][d] = q[r][d] * scale[d]; constant per row: sum_d q[r][d] * (zero[d] - offset * scale[d]).
    const float offset = IntOffset(f, bits);
    for (int j = 0; j < hd; j += static_cast<int>(N)) {
      const VF sc = LoadHalves(d, meta, j);
      VF zo = hn::Mul(sc, hn::Set(d, -offset));
      if (!f.symmetric) zo = hn::Add(zo, LoadHalves(d, meta, hd + j));
      hn::Store(sc, d, s.channel_scale + j);
      hn::Store(zo, d, s.channel_zero + j);
    }
    for (int r = 0; r < rows; ++r) {
      VF c = hn::Zero(d);
      for (int j = 0; j < hd; j += static_cast<int>(N)) {
        const VF q = hn::Load(d, s.qp + r * hd + j);
        hn::Store(hn::Mul(q, hn::Load(d, s.channel_scale + j)), d, s.q2 + r * hd + j);
        c = hn::MulAdd(q, hn::Load(d, s.channel_zero + j), c);
      }
      s.cst[r] = ReduceSum(d, c);
    }
    WithIntBits(bits, [&](auto bits) {
      ScoreChannelMajor(CodeLoader<decltype(bits)::value>(), kpart, bt, hd, s.q2, hd, rows, n_tok, scores, lds);
    });
    for (int r = 0; r < rows; ++r) {
      const VF c = hn::Set(d, s.cst[r]);
      for (int t = 0; t < n_tok; t += static_cast<int>(N)) hn::StoreU(hn::Add(hn::LoadU(d, scores + r * lds + t), c), d, scores + r * lds + t);
    }
    return;
  }
  const int g = f.group_size(hd);
  const size_t n_scales = static_cast<size_t>(bt) * (hd / g);
#if SLIMKV_KV_VNNI
  if (int_query) {
    WithIntBits(bits, [&](auto bits) {
      ScoreTokenVnni<decltype(bits)::value>(kpart, meta, bt, (n_tok + 31) / 32, n_scales, !f.symmetric, hd, g,
                                             s.task_query, s.qsum, rows, scores, lds);
    });
    return;
  }
#endif
  (void)int_query;
  WithIntBits(bits, [&](auto bits) {
    ScoreTokenGroups<decltype(bits)::value>(kpart, meta, n_scales, f.symmetric, bt, hd, g, s.qp, hd, s.qsum, rows,
                                            n_tok, scores, lds);
  });
}

// acc[r] += sum_t p[r][t] v_t for tokens [0, n_valid) of one block's V part; p holds
// weights for tokens [0, n_tok) (n_tok a multiple of 16, zero past n_valid).
SLIMKV_KV_ATTR inline void AccumulateBlock(const BlockKind& kind, const uint8_t* vpart, int bt, int hd, const float* p,
                                           int ldp, int rows, int n_valid, int n_tok, float* acc, BlockScratch& s) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const KvFormat& f = kind.v;
  const int bits = kind.v_bits;
  const uint8_t* meta = vpart + kind.v_layout.meta_offset;
  if (f.is_float()) {
    WithFloatLoader(f.type, [&](auto load) { AccumTokenMajor(load, vpart, hd, 0, hd, p, ldp, rows, n_valid, acc, hd); });
    return;
  }
  if (f.type == ElemType::kTurbo) {  // rotated domain: the cache rotates each head's output back
#if SLIMKV_KV_VNNI
    if (TurboValueVnniOk(f, bt, hd)) {
      AccumulateTurboVnni(f, vpart, bt, hd, p, ldp, rows, n_tok, n_valid, acc, s);
      return;
    }
#endif
    turbo::AccumulateTurboBlock(f, vpart, bt, hd, p, ldp, rows, n_valid, n_tok, acc, s.p2);
    return;
  }
  if (f.granularity == Granularity::kBlock) {  // fp8: fold the part's scale into the weights
    const VF sc = hn::Set(d, Fp8Scale(f, meta));
    for (int r = 0; r < rows; ++r)
      for (int t = 0; t < n_tok; t += static_cast<int>(N))
        hn::Store(hn::Mul(hn::LoadU(d, p + r * ldp + t), sc), d, s.p2 + r * kMaxBt + t);
    WithFloatLoader(f.type, [&](auto load) { AccumTokenMajor(load, vpart, hd, 0, hd, s.p2, kMaxBt, rows, n_valid, acc, hd); });
    return;
  }
  const float offset = IntOffset(f, bits);
  if (f.granularity == Granularity::kChannel) {
    // acc[r][d] += scale[d] * sum_t p[r][t] code[t][d] + (zero[d] - offset * scale[d]) * sum_t p[r][t]
    std::fill(s.part, s.part + rows * hd, 0.0f);
    WithIntBits(bits, [&](auto bits) {
      AccumTokenMajor(CodeLoader<decltype(bits)::value>(), vpart, hd, 0, hd, p, ldp, rows, n_valid, s.part, hd);
    });
    for (int r = 0; r < rows; ++r) {
      VF ps = hn::Zero(d);
      for (int t = 0; t < n_tok; t += static_cast<int>(N)) ps = hn::Add(ps, hn::LoadU(d, p + r * ldp + t));
      const VF psum = hn::Set(d, ReduceSum(d, ps));
      for (int j = 0; j < hd; j += static_cast<int>(N)) {
        const VF sc = LoadHalves(d, meta, j);
        VF zo = hn::Mul(sc, hn::Set(d, -offset));
        if (!f.symmetric) zo = hn::Add(zo, LoadHalves(d, meta, hd + j));
        const VF a = hn::MulAdd(sc, hn::Load(d, s.part + r * hd + j), hn::LoadU(d, acc + r * hd + j));
        hn::StoreU(hn::MulAdd(zo, psum, a), d, acc + r * hd + j);
      }
    }
    return;
  }
#if SLIMKV_KV_VNNI
  if (ValueVnniOk(f, bits, bt, hd)) {
    const int g = f.group_size(hd), groups = hd / g;
    WithIntBits(bits, [&](auto bits) {
      constexpr int kBits = decltype(bits)::value;
      PrepareValueWeights<kBits>(f, meta, bt, hd, p, ldp, rows, n_tok, n_valid, s);
      AccumValueVnni<kBits>(vpart, hd, g, rows, n_tok, s, acc, hd);
    });
    for (int r = 0; r < rows; ++r)
      for (int gi = 0; gi < groups; ++gi) s.vconst_sum[r * kMaxGroups + gi] += s.vconst[r * kMaxGroups + gi];
    return;
  }
#endif
  // Per-token groups: p2[r][t] = p[r][t] * scale[t][g]; acc[r][group] += sum_t p2 code + const.
  const int g = f.group_size(hd), groups = hd / g;
  const size_t n_scales = static_cast<size_t>(bt) * groups;
  for (int gi = 0; gi < groups; ++gi) {
    for (int r = 0; r < rows; ++r) {
      float c = 0;
      for (int t = 0; t < n_valid; ++t) {
        const float sc = Half(meta, static_cast<size_t>(t) * groups + gi);
        const float z = (f.symmetric ? 0.0f : Half(meta, n_scales + static_cast<size_t>(t) * groups + gi)) - offset * sc;
        s.p2[r * kMaxBt + t] = p[r * ldp + t] * sc;
        c += p[r * ldp + t] * z;
      }
      s.cst[r] = c;
    }
    WithIntBits(bits, [&](auto bits) {
      AccumTokenMajor(CodeLoader<decltype(bits)::value>(), vpart, hd, gi * g, (gi + 1) * g, s.p2, kMaxBt, rows,
                      n_valid, acc, hd);
    });
    for (int r = 0; r < rows; ++r) {
      const VF c = hn::Set(d, s.cst[r]);
      for (int dim = gi * g; dim < (gi + 1) * g; dim += static_cast<int>(N))
        hn::StoreU(hn::Add(hn::LoadU(d, acc + r * hd + dim), c), d, acc + r * hd + dim);
    }
  }
}

// ------------------------------------------------------------------ driver
// Blocks are scattered in the pool and the hardware prefetchers stop at page boundaries, so
// the driver prefetches the blocks it will read next (a sweep of distances on the decode
// benchmark chose the value, bench/README.md).
inline constexpr int kPrefetchBlocks = 2;
HWY_INLINE void PrefetchBlock(const uint8_t* p, size_t bytes) {
  for (size_t o = 0; o < bytes; o += 64) hwy::Prefetch(p + o);
}

// Online softmax of one task over the blocks of its key range.
SLIMKV_KV_ATTR inline void AttnTaskImpl(const AttnTask& t, AttnPartial out, BlockScratch& s) {
  const DF d;
  const DI di;
  const size_t N = hn::Lanes(d);
  const int G = t.group;
  const int rows = t.n_q_tokens * G;
  const int bt = t.block_tokens;
  const int hd = t.head_dim;
  float* scores = s.scores;
  const int lds = bt;
  const float kNegInf = -std::numeric_limits<float>::infinity();
  // Prepare the queries once: contiguous rows, softmax scale and log2(e) folded in (the
  // softmax runs in base 2), rotated with the keys.
  const VF qscale = hn::Set(d, t.scale * kLog2e);
  for (int i = 0; i < t.n_q_tokens; ++i) {
    for (int h = 0; h < G; ++h) {
      const int r = i * G + h;
      const float* src = t.q + i * t.ldq + h * hd;
      for (int j = 0; j < hd; j += static_cast<int>(N)) hn::Store(hn::Mul(hn::LoadU(d, src + j), qscale), d, s.qp + r * hd + j);
      if (t.k_rotation) t.k_rotation->Apply(s.qp + r * hd);
    }
  }
  // Integer keys: per-token groups need the query's sum over each channel group, and on
  // VNNI the query as integers (once per task); per-channel keys on VNNI need max |q|.
  const KvFormat& kf = t.sealed->k;
  bool int_query = false;
  if (!t.rope && kf.granularity == Granularity::kToken) {
    const int g = kf.group_size(hd), groups = hd / g;
    for (int r = 0; r < rows; ++r) {
      for (int gi = 0; gi < groups; ++gi) {
        VF sum = hn::Zero(d);
        for (int j = gi * g; j < (gi + 1) * g; j += static_cast<int>(N)) sum = hn::Add(sum, hn::Load(d, s.qp + r * hd + j));
        s.qsum[r * groups + gi] = ReduceSum(d, sum);
      }
    }
#if SLIMKV_KV_VNNI
    if (KeyVnniOk(kf, t.sealed->k_bits, bt, hd)) {
      WithIntBits(t.sealed->k_bits, [&](auto bits) { PrepareTokenQuery<decltype(bits)::value>(kf, hd, rows, s); });
      int_query = true;
    }
#endif
  }
#if SLIMKV_KV_VNNI
  if (!t.rope && TurboKeyVnniOk(kf, bt, hd)) {
    PrepareTurboQuery(hd, rows, s);
    int_query = true;
  }
#endif
  if (kf.granularity == Granularity::kChannel) {
    for (int r = 0; r < rows; ++r) {
      VF amax = hn::Zero(d);
      for (int j = 0; j < hd; j += static_cast<int>(N)) amax = hn::Max(amax, hn::Abs(hn::Load(d, s.qp + r * hd + j)));
      s.qmax[r] = ReduceMax(d, amax);
      const VF norm = hn::Set(d, s.qmax[r] > 0 ? kIntLevels / s.qmax[r] : 0.0f);
      for (int j = 0; j < hd; j += static_cast<int>(N))
        hn::Store(hn::Mul(hn::Load(d, s.qp + r * hd + j), norm), d, s.qn + r * hd + j);
    }
  }
  // Per-(row, group) constants of the integer value kernel, summed over blocks.
  const KvFormat& vf = t.sealed->v;
  const int v_groups = vf.granularity == Granularity::kToken ? hd / vf.group_size(hd) : 0;
  std::fill(s.vconst_sum, s.vconst_sum + rows * kMaxGroups, 0.0f);
  for (int r = rows; r < rows + 16; ++r) s.dm[r] = kNegInf;
  if (t.scores_out) {
    std::fill(t.scores_out,
              t.scores_out + static_cast<int64_t>(t.n_q_tokens - t.mass_first_token) * G * (t.key_end - t.key_begin),
              kNegInf);
  }
  float m[kMaxRows];  // running maximum of each row, base 2
  for (int r = 0; r < rows; ++r) {
    m[r] = kNegInf;
    hn::Store(hn::Zero(d), d, s.lsum + r * 16);
    std::fill(out.acc + r * hd, out.acc + (r + 1) * hd, 0.0f);
  }
  // Visible key range of query token i: [lo(i), hi(i)).
  auto lo_of = [&](int i) {
    const int sl = t.first_q_slot + i;
    return std::max(t.key_begin, t.window > 0 ? sl - t.window + 1 : 0);
  };
  auto hi_of = [&](int i) { return std::min(t.key_end, t.first_q_slot + i + 1); };
  const int first_block = t.key_begin / bt, last_block = t.key_end > t.key_begin ? (t.key_end - 1) / bt : -1;
  for (int b = first_block + 1; b < first_block + kPrefetchBlocks && b <= last_block; ++b) {
    const BlockKind& kind = b < t.n_sealed ? *t.sealed : *t.staged;
    PrefetchBlock(t.blocks[b], kind.v_offset + kind.v_layout.total());
  }
  for (int b = first_block; b <= last_block; ++b) {
    const int b0 = b * bt;
    // Tokens are sorted by slot, so the union of visible ranges in this block is
    // [lo(0), hi(last)) clipped to the block.
    const int tok_lo = std::max(lo_of(0), b0) - b0;
    const int tok_hi = std::min(hi_of(t.n_q_tokens - 1), b0 + bt) - b0;
    if (tok_hi <= tok_lo) continue;
    const int n_tok = (tok_hi + 15) / 16 * 16;
    const uint8_t* block = t.blocks[b];
    const BlockKind& kind = b < t.n_sealed ? *t.sealed : *t.staged;
    if (b + kPrefetchBlocks <= last_block) {
      const int bp = b + kPrefetchBlocks;
      const BlockKind& next = bp < t.n_sealed ? *t.sealed : *t.staged;
      PrefetchBlock(t.blocks[bp], next.v_offset + next.v_layout.total());
    }
    ScoreBlock(kind, block, bt, hd, rows, n_tok, t.rope, b0, int_query, scores, lds, s);
    // Mask, then update the running softmax of each row; scores become weights.
    for (int i = 0; i < t.n_q_tokens; ++i) {
      const int lo = std::max(lo_of(i), b0) - b0, hi = std::min(hi_of(i), b0 + bt) - b0;
      const bool masked = lo > 0 || hi < n_tok;
      for (int h = 0; h < G; ++h) {
        const int r = i * G + h;
        float* sr = scores + r * lds;
        if (hi <= lo) {
          for (int c = 0; c < n_tok; c += static_cast<int>(N)) hn::StoreU(hn::Zero(d), d, sr + c);
          s.dm[r] = kNegInf;
          continue;
        }
        VF vmax = hn::Set(d, kNegInf);
        if (masked) {
          for (int c = 0; c < n_tok; c += static_cast<int>(N)) {
            const auto idx = hn::Iota(di, c);
            const auto keep = hn::RebindMask(d, hn::And(hn::Gt(idx, hn::Set(di, lo - 1)), hn::Lt(idx, hn::Set(di, hi))));
            const VF v = hn::IfThenElse(keep, hn::LoadU(d, sr + c), hn::Set(d, kNegInf));
            hn::StoreU(v, d, sr + c);
            vmax = hn::Max(vmax, v);
          }
        } else {
          for (int c = 0; c < n_tok; c += static_cast<int>(N)) vmax = hn::Max(vmax, hn::LoadU(d, sr + c));
        }
        const float bmax = ReduceMax(d, vmax);
        if (t.scores_out && i >= t.mass_first_token) {
          // The masked scores, for the eviction policies' attention mass (natural-log units).
          const int range = t.key_end - t.key_begin;
          float* so = t.scores_out + static_cast<int64_t>((i - t.mass_first_token) * G + h) * range + (b0 - t.key_begin);
          for (int c = std::max(0, t.key_begin - b0); c < std::min(bt, t.key_end - b0); ++c)
            so[c] = c < n_tok ? sr[c] * kLn2 : kNegInf;
        }
        if (bmax > m[r]) {
          if (m[r] != kNegInf) {  // rescale what was accumulated under the old maximum
            const VF corr = hn::Set(d, hn::GetLane(Exp2(d, hn::Set(d, m[r] - bmax))));
            hn::Store(hn::Mul(hn::Load(d, s.lsum + r * 16), corr), d, s.lsum + r * 16);
            float* a = out.acc + r * hd;
            for (int j = 0; j < hd; j += static_cast<int>(N)) hn::StoreU(hn::Mul(hn::LoadU(d, a + j), corr), d, a + j);
            const float c = hn::GetLane(corr);
            for (int gi = 0; gi < v_groups; ++gi) s.vconst_sum[r * kMaxGroups + gi] *= c;
          }
          m[r] = bmax;
        }
        s.dm[r] = bmax - m[r];
        const VF vm = hn::Set(d, m[r]);
        VF sum = hn::Load(d, s.lsum + r * 16);
        for (int c = 0; c < n_tok; c += static_cast<int>(N)) {
          const VF p = Exp2(d, hn::Sub(hn::LoadU(d, sr + c), vm));  // masked: exp2(-inf) = 0
          hn::StoreU(p, d, sr + c);
          sum = hn::Add(sum, p);
        }
        hn::Store(sum, d, s.lsum + r * 16);
      }
    }
    AccumulateBlock(kind, block + kind.v_offset, bt, hd, scores, lds, rows, tok_hi, n_tok, out.acc, s);
  }
  for (int r = 0; r < rows; ++r) {
    out.m[r] = m[r] == kNegInf ? kNegInf : m[r] * kLn2;
    out.l[r] = ReduceSum(d, hn::Load(d, s.lsum + r * 16));
    if (v_groups > 0) {
      const int g = hd / v_groups;
      for (int j = 0; j < hd; j += static_cast<int>(N)) {
        float* a = out.acc + r * hd + j;
        hn::StoreU(hn::Add(hn::LoadU(d, a), hn::Set(d, s.vconst_sum[r * kMaxGroups + j / g])), d, a);
      }
    }
  }
}

}  // namespace slimkv::kv::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
