// AVX-512 VNNI machinery shared by the int and tq families (int-inl.h, turbo-inl.h): codes
// of b bits (packing.h) unpacked into the byte order vpdpbusd wants, multiplied with 16-bit
// integer queries (keys) or weights (values) split into two signed bytes.
//   keys:   vpdpbusd multiplies 4 channels of 16 tokens per instruction (a K tile, packing.h:
//           a load and a mask per tile, no permutes), one pass per byte of the query,
//           recombined as 256 hi + lo.
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
SLIMKV_KV_ATTR HWY_INLINE __m512i LoadIndex(const ByteIndex& t) { return _mm512_load_si512(t.b); }
// acc += dot of the unsigned bytes of u with the 4 signed bytes at p (broadcast), per dword.
// Inline assembly: GCC 12 copies accumulators of the intrinsic through spare registers in
// unrolled loops (and runs out of them), and does not fold the broadcast into the operand.
SLIMKV_KV_ATTR HWY_INLINE void Dpbusd(__m512i& acc, __m512i u, const int8_t* p) {
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*reinterpret_cast<const int32_t*>(p)));
}
// The same with the 4 signed bytes already broadcast to every dword of w: a broadcast load
// feeds several multiplies (an embedded broadcast costs a load per instruction and runs at
// 3/4 the rate of the register form on this machine's cores).
SLIMKV_KV_ATTR HWY_INLINE void Dpbusd(__m512i& acc, __m512i u, __m512i w) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(w));
}
SLIMKV_KV_ATTR HWY_INLINE __m512i Broadcast4(const int8_t* p) {
  int32_t x;
  std::memcpy(&x, p, 4);
  return _mm512_set1_epi32(x);
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

// Codes of tile slice `slice` of a unit (packing.h) as bytes, one per element: the unit's
// 64 bytes are z; 3-bit units carry their high bits as 64-bit planes after them (`unit`).
template <int kBits>
SLIMKV_KV_ATTR HWY_INLINE __m512i Slice(__m512i z, const uint8_t* unit, int slice) {
  if constexpr (kBits == 8) {
    return z;
  } else if constexpr (kBits == 4) {
    const __m512i m = _mm512_set1_epi8(0x0F);
    return _mm512_and_si512(_mm512_srl_epi16(z, _mm_cvtsi32_si128(4 * slice)), m);
  } else if constexpr (kBits == 2) {
    return _mm512_and_si512(_mm512_srl_epi16(z, _mm_cvtsi32_si128(2 * slice)), _mm512_set1_epi8(3));
  } else {
    static_assert(kBits == 3);
    const __m512i lo =
        _mm512_and_si512(_mm512_srl_epi16(z, _mm_cvtsi32_si128(2 * slice)), _mm512_set1_epi8(3));
    uint64_t plane;
    std::memcpy(&plane, unit + 64 + 8 * slice, 8);
    return _mm512_mask_add_epi8(lo, _cvtu64_mask64(plane), lo, _mm512_set1_epi8(4));
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

// Adds the products of kRows integer queries with the codes of channels [d0, d1) (a multiple
// of a unit's channels) of one K code array of `width` channels, tokens [32 slab, 32 slab +
// 32); query channel q0 + d for code channel d. A unit holds 4 S channels of 16 tokens: one
// load per unit and token half, then a mask (and shift) per slice. kLut: codes index the bytes
// of `lut` (tq levels), else they multiply as they are. Each partial sum stays below 2^24
// (exact as a float).
template <int kBits, int kRows, bool kLut>
SLIMKV_KV_ATTR HWY_INLINE void KeyDotsAdd(const uint8_t* codes, int width, int slab, int d0, int d1, int q0,
                                          __m512i lut, const QueryBytes& q, int row0, KeyAcc<kRows>& acc) {
  constexpr int kOdd = KeyAcc<kRows>::kOdd;
  constexpr unsigned kS = SlicesPerUnit(kBits), kUnit = UnitBytes(kBits), kChannels = 4 * kS;
  const size_t group_bytes = static_cast<unsigned>(width) / kChannels * kUnit;  // 16 tokens
  const uint8_t* p0 =
      codes + 2 * static_cast<unsigned>(slab) * group_bytes + static_cast<unsigned>(d0) / kChannels * kUnit;
  const uint8_t* p1 = p0 + group_bytes;
  const int8_t* query[kRows];
  for (int r = 0; r < kRows; ++r) query[r] = q.bytes + (row0 + r) * 2 * kMaxHd;
  for (unsigned o = static_cast<unsigned>(q0 + d0), end = static_cast<unsigned>(q0 + d1); o < end;
       o += kChannels, p0 += kUnit, p1 += kUnit) {
    const __m512i z0 = _mm512_loadu_si512(p0), z1 = _mm512_loadu_si512(p1);
#pragma GCC unroll 2
    for (unsigned sl = 0; sl < kS; ++sl) {
      __m512i c0 = Slice<kBits>(z0, p0, sl), c1 = Slice<kBits>(z1, p1, sl);
      if constexpr (kLut) {
        c0 = _mm512_permutexvar_epi8(c0, lut);
        c1 = _mm512_permutexvar_epi8(c1, lut);
      }
      const int set = kOdd ? (sl & 1) : 0;
      const unsigned x = o + 4 * sl;       // query channel of the slice's 4 channels
      const unsigned at = x + (x & ~31u);  // its lo byte: (x / 32) * 64 + x % 32 (QueryLo)
      for (int r = 0; r < kRows; ++r) {
        const __m512i h = Broadcast4(query[r] + at + 32), l = Broadcast4(query[r] + at);
        Dpbusd(acc.h[r][0][set], c0, h);
        Dpbusd(acc.h[r][1][set], c1, h);
        Dpbusd(acc.l[r][0][set], c0, l);
        Dpbusd(acc.l[r][1][set], c1, l);
      }
    }
  }
}

// Dots of kRows integer queries with the codes of channels [d0, d1), tokens 0-31 of the
// slab, as floats.
template <int kBits, int kRows>
SLIMKV_KV_ATTR HWY_INLINE void KeyDots(const uint8_t* codes, int width, int slab, int d0, int d1,
                                       const QueryBytes& q, int row0, __m512 out[kRows][2]) {
  KeyAcc<kRows> acc;
  acc.Start(nullptr, nullptr, row0);
  KeyDotsAdd<kBits, kRows, false>(codes, width, slab, d0, d1, 0, _mm512_setzero_si512(), q, row0, acc);
  acc.Finish(out);
}

// Codes of 4 tokens [t, t + 4) and 16 kVecs channels [d0, d0 + 16 kVecs) of a V code array
// of `width` channels as [channel][4 tokens] bytes: c[j] holds channels d0 + 16 j + lane
// (t % 4 == 0, d0 and width multiples of 16 kVecs: the tiles of a unit are loaded once).
template <int kBits, int kVecs>
SLIMKV_KV_ATTR HWY_INLINE void ValueQuad(const uint8_t* codes, int width, int t, int d0, __m512i c[kVecs]) {
  constexpr int kS = SlicesPerUnit(kBits), kUnit = UnitBytes(kBits);
  constexpr int kPer = kVecs < kS ? kVecs : kS;  // tiles taken from one unit
  const int tile0 = (t / 4) * (width / 16) + d0 / 16;
  for (int u = 0; u < kVecs / kPer; ++u) {
    const int tile = tile0 + u * kPer;
    const uint8_t* unit = codes + static_cast<size_t>(tile / kS) * kUnit;
    const __m512i z = _mm512_loadu_si512(unit);
    for (int j = 0; j < kPer; ++j) c[u * kPer + j] = Slice<kBits>(z, unit, tile % kS + j);
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
// codes at byte `codes` of each block's part, a V array of `width` channels in
// groups of g; acc rows lda apart). TurboLut (tq values): codes index the bytes of `lut`
// (128 + the level's grid value) and the accumulators start at w.off (minus 128 times each
// byte pass's weight sum), which leaves sum_t w[r][t] level[t][:] exactly. Rows [row0, row0 +
// kRows), 16 kVecs channels per pass (width a multiple of 16 kVecs).
struct NoLut {};
struct TurboLut {
  const ByteIndex* table;
};
template <int kBits, int kRows, int kVecs, class Lut>
SLIMKV_KV_ATTR HWY_INLINE void AccumValueVnniRows(const ChunkView& c, size_t codes, int bt, int width, int g,
                                                  const ValueWeights& w, int row0, float* acc, int lda,
                                                  Lut lut) {
  constexpr bool kTurbo = std::is_same_v<Lut, TurboLut>;
  constexpr int kRow = ValueWeights::kRow;
  const int groups = width / g, tpc = 32 / groups;
  const int log_tpc = __builtin_ctz(tpc);
  __m512i table = _mm512_setzero_si512();
  if constexpr (kTurbo) table = LoadIndex(*lut.table);
  // Row r's weights start kRow bytes after row r - 1's: one pointer serves every row.
  const int8_t* const rows = w.bytes + static_cast<size_t>(row0) * kRow;
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
        ValueQuad<kBits, kVecs>(part, width, t, d0, cv);
        if constexpr (kTurbo)
          for (int j = 0; j < kVecs; ++j) cv[j] = _mm512_permutexvar_epi8(cv[j], table);
        const int tc = b * bt + t;  // token of the chunk
        const int8_t* lo = rows + ((tc >> log_tpc) << 6) + (tc & (tpc - 1));
        for (int r = 0; r < kRows; ++r) {
          const int8_t* lr = lo + r * kRow;
          // Vectors of channels in the same group weigh a token alike: one broadcast each.
          __m512i wh = _mm512_setzero_si512(), wl = wh;
          for (int j = 0; j < kVecs; ++j) {
            if (j == 0 || goff[j] != goff[j - 1]) {
              wh = Broadcast4(lr + 32 + goff[j]);
              wl = Broadcast4(lr + goff[j]);
            }
            Dpbusd(ah[r][j], cv[j], wh);
            Dpbusd(al[r][j], cv[j], wl);
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

// Every row in tiles. 64 channels per pass when the width allows, which gives a token quad's
// address, codes and weights twice the multiplies: tiles of 3 rows (24 accumulator pairs),
// else of 2 and a last 1 — with 4 or more rows only for 4- and 8-bit codes, cheap enough to
// unpack once per 2 rows (2- and 3-bit codes lost up to ~10 % that way, BENCHMARKS). Otherwise 32
// channels per pass in tiles of 4 or 3 rows (16 or 12 pairs), then 2 or 1.
template <int kBits, class Lut = NoLut>
SLIMKV_KV_ATTR HWY_NOINLINE void AccumValueVnni(const ChunkView& c, size_t codes, int bt, int width, int g,
                                                int rows, const ValueWeights& w, float* acc, int lda,
                                                Lut lut = {}) {
  int r = 0;
  if (width % 64 == 0 && (rows % 3 == 0 || rows < 4 || kBits >= 4)) {
    if (rows % 3 == 0)
      for (; r < rows; r += 3) AccumValueVnniRows<kBits, 3, 4>(c, codes, bt, width, g, w, r, acc, lda, lut);
    for (; r + 2 <= rows; r += 2) AccumValueVnniRows<kBits, 2, 4>(c, codes, bt, width, g, w, r, acc, lda, lut);
    if (r < rows) AccumValueVnniRows<kBits, 1, 4>(c, codes, bt, width, g, w, r, acc, lda, lut);
    return;
  }
  if (rows % 3 != 0)
    for (; r + 4 <= rows; r += 4) AccumValueVnniRows<kBits, 4, 2>(c, codes, bt, width, g, w, r, acc, lda, lut);
  for (; r + 3 <= rows; r += 3) AccumValueVnniRows<kBits, 3, 2>(c, codes, bt, width, g, w, r, acc, lda, lut);
  if (rows - r == 2) AccumValueVnniRows<kBits, 2, 2>(c, codes, bt, width, g, w, r, acc, lda, lut);
  if (rows - r == 1) AccumValueVnniRows<kBits, 1, 2>(c, codes, bt, width, g, w, r, acc, lda, lut);
}

#endif  // SLIMKV_KV_VNNI

}  // namespace slimkv::kv::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
