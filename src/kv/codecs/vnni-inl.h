// AVX-512 VNNI machinery shared by the int and tq families (int-inl.h, turbo-inl.h): codes
// of b bits (packing.h) unpacked into the byte order vpdpbusd wants, multiplied with 16-bit
// integer queries (keys) or weights (values) split into two signed bytes.
//   keys:   vpdpbusd multiplies 4 channels of 16 tokens per instruction (codes permuted to
//           [token][4 channels]), one pass per byte of the query, recombined as 256 hi + lo.
//   values: 4 tokens of 16 channels per instruction, weights p * scale as 16-bit integers.
// The rounding (2^-15 of the largest query element or weight) stays below 5 % of each
// format's own error (tests/kv/attention_test.cc); 8-bit integers would cost 10-40 %.
// Included once per Highway target; empty but for AVX3_DL.
#if defined(SLIMKV_KV_CODECS_VNNI_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_KV_CODECS_VNNI_INL_H_
#undef SLIMKV_KV_CODECS_VNNI_INL_H_
#else
#define SLIMKV_KV_CODECS_VNNI_INL_H_
#endif

#include <type_traits>

#include "kv/codecs/kernels-inl.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::kv::HWY_NAMESPACE {

// Mean of b-bit codes: the rounding compensation centres on it.
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
inline constexpr ByteIndex kK2A =
    MakeBytes([](int j) { return (j % 4 & 1) * 64 + (j % 4 >> 1) * 16 + j / 4; });
inline constexpr ByteIndex kK2B =
    MakeBytes([](int j) { return (j % 4 & 1) * 64 + (2 + (j % 4 >> 1)) * 16 + j / 4; });
// Values, [channel lane i][4 tokens k] bytes j = 4 i + k, 64 channels per step:
//   int8, level 1: [32 channels][2 tokens] of 32 channels of two tokens (bytes 0-31, 32-63);
//   level 2: [16 channels][4 tokens] from the pairs of tokens 0, 1 and 2, 3.
inline constexpr ByteIndex kV8L1 = MakeBytes([](int j) { return (j % 2) * 32 + j / 2; });
inline constexpr ByteIndex kV8L2[2] = {
    MakeBytes([](int j) { return (j % 4 / 2) * 64 + 2 * (j / 4) + j % 2; }),
    MakeBytes([](int j) { return (j % 4 / 2) * 64 + 2 * (16 + j / 4) + j % 2; })};
//   int4: 32 bytes per token (two units of 32 channels), tokens 0, 1 | 2, 3 in two vectors;
//   kV4[u] takes unit u of each token.
inline constexpr ByteIndex kV4[2] = {MakeBytes([](int j) { return 32 * (j % 4) + j / 4; }),
                                     MakeBytes([](int j) { return 32 * (j % 4) + 16 + j / 4; })};
//   int2 (and int4 with other head dims): 16 bytes of each of 4 tokens in one vector.
inline constexpr ByteIndex kV2 = MakeBytes([](int j) { return 16 * (j % 4) + j / 4; });
//   int2 rows of 32 channels: token k of 4 in unit k / 2, its bit pairs from the first
//   (k even) or second (k odd) operand.
inline constexpr ByteIndex kV2Half =
    MakeBytes([](int j) { return (j % 4 % 2) * 64 + 16 * (j % 4 / 2) + j / 4; });
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
  const __m512i planes =
      _mm512_maskz_permutexvar_epi8(0xE0E0E0E0E0E0E0E0ull, LoadIndex(kPlaneGather[stride16][h]), z);
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
          return _mm512_inserti64x4(
              _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))),
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
      const __m512i e4 = _mm512_and_si512(_mm512_srli_epi16(z, 4), m),
                    e6 = _mm512_and_si512(_mm512_srli_epi16(z, 6), m);
      const __m512i a = LoadIndex(kK2A), b = LoadIndex(kK2B);
      c[0] = _mm512_permutex2var_epi8(e0, a, e4);
      c[1] = _mm512_permutex2var_epi8(e2, a, e6);
      c[2] = _mm512_permutex2var_epi8(e0, b, e4);
      c[3] = _mm512_permutex2var_epi8(e2, b, e6);
    } else {  // bt 64: a unit is one channel, bit pair s of byte i holds token 16 s + i
      for (int h = 0; h < 2; ++h) {
        const __m512i y =
            _mm512_permutexvar_epi8(LoadIndex(kV2), _mm512_loadu_si512(codes + (o + 4 * h) * 16));
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
SLIMKV_KV_ATTR HWY_INLINE void KeyDotsAdd(const uint8_t* codes, int bt, int slab, int d0, int d1, int q0,
                                          __m512i lut, const QueryBytes& q, int row0, KeyAcc<kRows>& acc) {
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
SLIMKV_KV_ATTR HWY_INLINE void KeyDots(const uint8_t* codes, int bt, int slab, int d0, int d1,
                                       const QueryBytes& q, int row0, __m512 out[kRows][2]) {
  KeyAcc<kRows> acc;
  acc.Start(nullptr, nullptr, row0);
  KeyDotsAdd<kBits, kRows, false>(codes, bt, slab, d0, d1, 0, _mm512_setzero_si512(), q, row0, acc);
  acc.Finish(out);
}

// Codes of 4 tokens [t, t + 4) and 32 channels [d0, d0 + 32) of a token-major V part as
// [channel][4 tokens] bytes: c[j] holds channels d0 + 16 j + lane.
template <int kBits>
SLIMKV_KV_ATTR HWY_INLINE void ValueQuad(const uint8_t* codes, int hd, int t, int d0, __m512i c[2]) {
  if constexpr (kBits == 8) {
    const uint8_t* p = codes + static_cast<size_t>(t) * hd + d0;
    auto pair = [&](const uint8_t* x) {  // 32 channels of tokens x, x + 1
      return _mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))),
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
      z = _mm512_permutex2var_epi8(_mm512_loadu_si512(row), LoadIndex(kV4[d0 / 32]),
                                   _mm512_loadu_si512(row + 64));
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
      const __m512i z =
          _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + t * 8)));
      const __m512i m = _mm512_set1_epi8(3), idx = LoadIndex(kV2Half);
      const __m512i e0 = _mm512_and_si512(z, m), e2 = _mm512_and_si512(_mm512_srli_epi16(z, 2), m);
      const __m512i e4 = _mm512_and_si512(_mm512_srli_epi16(z, 4), m),
                    e6 = _mm512_and_si512(_mm512_srli_epi16(z, 6), m);
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

// Integer weights of one chunk for AccumValueVnni: per row, per 32 (token, group) entries,
// 32 lo bytes then 32 hi bytes, in [group][token] order within the 32 (MakeSplitGroups).
struct ValueWeights {
  static constexpr int kRow = 2 * kChunkTokens * kMaxGroups;  // bytes per row
  alignas(64) int8_t bytes[kMaxRows * kRow];
  float step[kMaxRows];       // value of one unit of row r's weights
  int32_t off[2 * kMaxRows];  // tq: the accumulators' start in the hi and lo passes of row r
};

// acc[r][:] += step[r] * sum_t w[r][t] code[t][:] over the chunk's tokens [0, c.n_tok) (the
// codes at byte `codes` of each block's part, a token-major array of `width` channels in
// groups of g; acc rows lda apart). TurboLut (tq values): codes index the bytes of `lut`
// (128 + the level's grid value) and the accumulators start at w.off (minus 128 times each
// byte pass's weight sum), which leaves sum_t w[r][t] level[t][:] exactly.
struct NoLut {};
struct TurboLut {
  const ByteIndex* table;
};
template <int kBits, int kRows, class Lut>
SLIMKV_KV_ATTR HWY_INLINE void AccumValueVnniRows(const ChunkView& c, size_t codes, int bt, int width, int g,
                                                  const ValueWeights& w, int row0, float* acc, int lda,
                                                  Lut lut) {
  constexpr bool kTurbo = std::is_same_v<Lut, TurboLut>;
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
          ah[r][j] = _mm512_set1_epi32(w.off[2 * (row0 + r)]);
          al[r][j] = _mm512_set1_epi32(w.off[2 * (row0 + r) + 1]);
        } else {
          ah[r][j] = al[r][j] = _mm512_setzero_si512();
        }
      }
    }
    int goff[kVecs];
    for (int j = 0; j < kVecs; ++j) goff[j] = (d0 + 16 * j) / g * tpc;
    for (int b = 0; b < c.n_blocks; ++b) {
      const int n = BlockShare(b, bt, c.n_tok);
      const uint8_t* part = c.blocks[b] + codes;
      for (int t = 0; t < n; t += 4) {
        __m512i cv[kVecs];
        ValueQuad<kBits>(part, width, t, d0, cv);
        if constexpr (kTurbo)
          for (int j = 0; j < kVecs; ++j) cv[j] = _mm512_permutexvar_epi8(cv[j], table);
        const int tc = b * bt + t;  // token of the chunk
        const int base = ((tc >> log_tpc) << 6) + (tc & (tpc - 1));
        for (int r = 0; r < kRows; ++r) {
          const int8_t* lo = w.bytes + (row0 + r) * ValueWeights::kRow + base;
          const int8_t* hi = lo + 32;
          for (int j = 0; j < kVecs; ++j) {
            Dpbusd(ah[r][j], cv[j], hi + goff[j]);
            Dpbusd(al[r][j], cv[j], lo + goff[j]);
          }
        }
      }
    }
    for (int r = 0; r < kRows; ++r) {
      const __m512 step = _mm512_set1_ps(w.step[row0 + r]);
      for (int j = 0; j < kVecs; ++j) {
        float* a = acc + (row0 + r) * lda + d0 + 16 * j;
        const __m512i x = _mm512_add_epi32(_mm512_slli_epi32(ah[r][j], 8), al[r][j]);
        _mm512_storeu_ps(a, _mm512_fmadd_ps(_mm512_cvtepi32_ps(x), step, _mm512_loadu_ps(a)));
      }
    }
  }
}

// Every row, in tiles of 4 or 3 rows (16 or 12 accumulator pairs), then 2 or 1.
template <int kBits, class Lut = NoLut>
SLIMKV_KV_ATTR HWY_NOINLINE void AccumValueVnni(const ChunkView& c, size_t codes, int bt, int width, int g,
                                                int rows, const ValueWeights& w, float* acc, int lda,
                                                Lut lut = {}) {
  int r = 0;
  if (rows % 3 != 0)
    for (; r + 4 <= rows; r += 4) AccumValueVnniRows<kBits, 4>(c, codes, bt, width, g, w, r, acc, lda, lut);
  for (; r + 3 <= rows; r += 3) AccumValueVnniRows<kBits, 3>(c, codes, bt, width, g, w, r, acc, lda, lut);
  if (rows - r == 2) AccumValueVnniRows<kBits, 2>(c, codes, bt, width, g, w, r, acc, lda, lut);
  if (rows - r == 1) AccumValueVnniRows<kBits, 1>(c, codes, bt, width, g, w, r, acc, lda, lut);
}

#endif  // SLIMKV_KV_VNNI

}  // namespace slimkv::kv::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
