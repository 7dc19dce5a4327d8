// Attention kernels of the tq family (turbo_codec.h), included once per Highway target
// through codecs/registry-inl.h.
//
// The query is rotated once per task with the keys' rotation (the driver does it for every
// rotated K side), so a key's score needs no per-key rotation and no decompression:
//   score[r][t] = norm[t] / sqrt(d) * sum_d q[r][d] * C[code[d][t]]   (+ q[r] . mean, `:mean` keys)
// Values accumulate in the rotated domain:
//   acc[r][d] += sum_t (p[r][t] * norm[t] / sqrt(d)) * C[code[t][d]]
// and the cache rotates each head's output back once, after merging.
//   AVX3_DL (vnni-inl.h): the levels are bytes on a grid, so codes are extracted like the
//     int codes, a vpermb maps each to 128 + its grid value, and vpdpbusd multiplies them
//     with the query (per task) or the weights (per chunk) as 16-bit integers.
//   Other targets, 1-bit codes and `:mean` keys: codes become float levels in registers (one
//     lane permute of the codebook's signed values) and meet the query or weights in FMAs.
#if defined(SLIMKV_KV_CODECS_TURBO_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_KV_CODECS_TURBO_INL_H_
#undef SLIMKV_KV_CODECS_TURBO_INL_H_
#else
#define SLIMKV_KV_CODECS_TURBO_INL_H_
#endif

#include <array>
#include <cmath>
#include <cstring>

#include "kv/codecs/kernels-inl.h"
#include "kv/codecs/turbo_codec.h"
#include "kv/codecs/vnni-inl.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::kv::HWY_NAMESPACE {
namespace turbo {

using VU = hn::Vec<DU>;

// ------------------------------------------------------------------ float paths
// Codes of N consecutive elements e (e % N == 0, N <= 16) of a code array packed as
// format.h describes, as u32 lanes in [0, 2^kBits).
template <int kBits>
HWY_INLINE VU LoadCodes(const uint8_t* p, size_t e) {
  const DU du;
  const hn::Rebind<uint8_t, DU> d8;
  constexpr size_t kN = hn::MaxLanes(DU());
  if constexpr (kBits == 3 && (kN == 8 || kN == 16)) {
    // Bit planes: 16 elements per 3 x 2 bytes; a plane's bits are the lanes' mask (kmov on AVX-512).
    const uint8_t* planes = p + (e / 16) * 6 + (e % 16) / 8;
    VU v = hn::IfThenElseZero(hn::LoadMaskBits(du, planes), hn::Set(du, 1u));
    v = hn::Or(v, hn::IfThenElseZero(hn::LoadMaskBits(du, planes + 2), hn::Set(du, 2u)));
    return hn::Or(v, hn::IfThenElseZero(hn::LoadMaskBits(du, planes + 4), hn::Set(du, 4u)));
  } else if constexpr (kBits == 3) {  // fewer lanes (EMU128): shift each plane per lane
    const uint8_t* planes = p + (e / 16) * 6;
    const size_t j0 = e % 16;
    const VU lane = hn::Iota(du, 0);
    VU v = hn::Zero(du);
    for (int k = 0; k < 3; ++k) {
      uint16_t plane;
      std::memcpy(&plane, planes + 2 * k, 2);
      const VU bit = hn::And(hn::Shr(hn::Set(du, static_cast<uint32_t>(plane) >> j0), lane), hn::Set(du, 1u));
      v = hn::Or(v, hn::ShiftLeftSame(bit, k));
    }
    return v;
  } else {
    constexpr size_t kPer = 8 / kBits;
    const size_t unit = e / (16 * kPer), r = e % (16 * kPer);
    const VU bytes = hn::PromoteTo(du, hn::LoadU(d8, p + unit * 16 + r % 16));
    return hn::And(hn::ShiftRightSame(bytes, static_cast<int>((r / 16) * kBits)),
                   hn::Set(du, (1u << kBits) - 1));
  }
}

// The signed values of every code of a codebook: val[code] = CodebookValue(code), so a
// lookup is one lane permute (vpermps) of the codes; zeros past 2^bits.
struct Table {
  HWY_ALIGN float val[16] = {};
};
inline const Table& CodeTable(int bits) {
  static const std::array<Table, kMaxTurboBits + 1> tables = [] {
    std::array<Table, kMaxTurboBits + 1> t;
    for (int b = 1; b <= kMaxTurboBits; ++b)
      for (uint32_t c = 0; c < (1u << b); ++c) t[b].val[c] = CodebookValue(LloydMaxGaussian(b), c);
    return t;
  }();
  return tables[bits];
}

// Codebook values of codes in [0, 2^kBits): a permute across lanes when the table fits one
// vector, a gather otherwise (4-bit codes on 8-lane targets, EMU128).
template <int kBits>
HWY_INLINE VF Lookup(const Table& t, VF tab, VU code) {
  const DF d;
  if constexpr (hn::MaxLanes(DF()) >= (1u << kBits)) {
    (void)t;
    return hn::TableLookupLanes(tab, hn::IndicesFromVec(d, hn::BitCast(DI(), code)));
  } else {
    (void)tab;
    return hn::GatherIndex(d, t.val, hn::BitCast(DI(), code));
  }
}

template <class Fn>
HWY_INLINE void WithBits(int bits, Fn&& fn) {
  switch (bits) {
    case 1:
      fn(std::integral_constant<int, 1>());
      break;
    case 2:
      fn(std::integral_constant<int, 2>());
      break;
    case 3:
      fn(std::integral_constant<int, 3>());
      break;
    default:
      fn(std::integral_constant<int, 4>());
      break;
  }
}

HWY_INLINE VF LoadNorms(const uint8_t* p, size_t i) {
  const DF d;
  const hn::Rebind<hwy::float16_t, DF> dh;
  return hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p) + i));
}

// ------------------------------------------------------------------ score
// acc[s][r] += sum over channels [0, n_ch) of q[r][q0 + c] * C[code[c][t0..t0+N)], the
// codes of a channel-major array of `bt` tokens per channel; two accumulator sets (even
// and odd channels) hide the FMA latency.
template <int kBits, int kRows>
HWY_INLINE void ScoreChannels(const Table& tab, const uint8_t* codes, int bt, int n_ch, const float* q,
                              int ldq, int q0, int t0, VF (&acc)[2][kRows]) {
  const DF d;
  const VF tv = hn::Load(d, tab.val);
  int c = 0;
  for (; c + 2 <= n_ch; c += 2) {
    for (int s = 0; s < 2; ++s) {
      const VF k = Lookup<kBits>(tab, tv, LoadCodes<kBits>(codes, static_cast<size_t>(c + s) * bt + t0));
      for (int r = 0; r < kRows; ++r)
        acc[s][r] = hn::MulAdd(hn::Set(d, q[r * ldq + q0 + c + s]), k, acc[s][r]);
    }
  }
  for (; c < n_ch; ++c) {
    const VF k = Lookup<kBits>(tab, tv, LoadCodes<kBits>(codes, static_cast<size_t>(c) * bt + t0));
    for (int r = 0; r < kRows; ++r) acc[0][r] = hn::MulAdd(hn::Set(d, q[r * ldq + q0 + c]), k, acc[0][r]);
  }
}

struct KeyTables {
  const Table& hi;
  const Table& lo;
};

template <int kRows>
HWY_INLINE void ScoreTurboRows(const TurboLayout& lay, const KeyTables& tabs, const uint8_t* kpart, int bt,
                               int hd, const float* q, int ldq, const float* qm, int n_tok, float* scores,
                               int lds) {
  const DF d;
  const int N = static_cast<int>(hn::Lanes(d));
  const int hi = lay.hi_channels;
  const VF inv_sqrt_d = hn::Set(d, 1.0f / std::sqrt(static_cast<float>(hd)));
  for (int t0 = 0; t0 < n_tok; t0 += N) {
    VF acc[2][kRows];
    for (int s = 0; s < 2; ++s)
      for (int r = 0; r < kRows; ++r) acc[s][r] = hn::Zero(d);
    if (hi > 0) {
      WithBits(lay.hi_bits, [&](auto b) {
        ScoreChannels<decltype(b)::value, kRows>(tabs.hi, kpart + lay.hi_offset, bt, hi, q, ldq, 0, t0, acc);
      });
    }
    WithBits(lay.lo_bits, [&](auto b) {
      ScoreChannels<decltype(b)::value, kRows>(tabs.lo, kpart + lay.lo_offset, bt, hd - hi, q, ldq, hi, t0,
                                               acc);
    });
    const VF norm = hn::Mul(LoadNorms(kpart + lay.norm_offset, t0), inv_sqrt_d);
    VF out[kRows];
    for (int r = 0; r < kRows; ++r) out[r] = hn::Mul(hn::Add(acc[0][r], acc[1][r]), norm);
    if (lay.mean)
      for (int r = 0; r < kRows; ++r) out[r] = hn::Add(out[r], hn::Set(d, qm[r]));
    for (int r = 0; r < kRows; ++r) hn::StoreU(out[r], d, scores + r * lds + t0);
  }
}

// scores[r][t] for tokens [0, n_tok) (a multiple of 16) of a tq K part, every row.
// q: [rows][ldq] queries rotated like the keys (softmax scale folded in).
HWY_NOINLINE void ScoreTurboBlock(const KvFormat& f, const uint8_t* kpart, int bt, int hd, const float* q,
                                  int ldq, int rows, int n_tok, float* scores, int lds) {
  const TurboLayout lay = MakeTurboLayout(f, bt, hd);
  const KeyTables tabs{CodeTable(lay.hi_channels > 0 ? lay.hi_bits : lay.lo_bits), CodeTable(lay.lo_bits)};
  // `:mean` keys: q . mean, added to every score of the block.
  float qm[kMaxAttnTaskRows];
  if (lay.mean) {
    const DF d;
    const int N = static_cast<int>(hn::Lanes(d));
    for (int r = 0; r < rows; ++r) {
      VF acc = hn::Zero(d);
      for (int j = 0; j < hd; j += N)
        acc = hn::MulAdd(hn::LoadU(d, q + r * ldq + j), LoadNorms(kpart + lay.mean_offset, j), acc);
      qm[r] = hn::GetLane(hn::SumOfLanes(d, acc));
    }
  }
  int r = 0;
  for (; r + 4 <= rows; r += 4)
    ScoreTurboRows<4>(lay, tabs, kpart, bt, hd, q + r * ldq, ldq, qm + r, n_tok, scores + r * lds, lds);
  const float* qr = q + r * ldq;
  switch (rows - r) {
    case 3:
      ScoreTurboRows<3>(lay, tabs, kpart, bt, hd, qr, ldq, qm + r, n_tok, scores + r * lds, lds);
      break;
    case 2:
      ScoreTurboRows<2>(lay, tabs, kpart, bt, hd, qr, ldq, qm + r, n_tok, scores + r * lds, lds);
      break;
    case 1:
      ScoreTurboRows<1>(lay, tabs, kpart, bt, hd, qr, ldq, qm + r, n_tok, scores + r * lds, lds);
      break;
    default:
      break;
  }
}

// ------------------------------------------------------------------ accumulate
// acc[r][c0 + j*N ...] += sum_t w[r][t] * C[code[t][c0 + j*N ...]] for kVecs vectors of
// channels of a token-major code array of `n_ch` channels per token.
template <int kBits, int kRows, int kVecs>
HWY_INLINE void AccumChannels(const Table& tab, const uint8_t* codes, int n_ch, int c0, const float* w,
                              int ldw, int n_tok, float* acc, int lda, int acc0) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF tv = hn::Load(d, tab.val);
  VF a[kRows][kVecs];
  for (int r = 0; r < kRows; ++r)
    for (int j = 0; j < kVecs; ++j) a[r][j] = hn::LoadU(d, acc + r * lda + acc0 + c0 + j * N);
  for (int t = 0; t < n_tok; ++t) {
    VF v[kVecs];
    for (int j = 0; j < kVecs; ++j)
      v[j] = Lookup<kBits>(tab, tv, LoadCodes<kBits>(codes, static_cast<size_t>(t) * n_ch + c0 + j * N));
    for (int r = 0; r < kRows; ++r) {
      const VF wb = hn::Set(d, w[r * ldw + t]);
      for (int j = 0; j < kVecs; ++j) a[r][j] = hn::MulAdd(wb, v[j], a[r][j]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int j = 0; j < kVecs; ++j) hn::StoreU(a[r][j], d, acc + r * lda + acc0 + c0 + j * N);
}

// Channels [0, n_ch) of one code array (acc columns [acc0, acc0 + n_ch)), every row.
template <int kBits, int kRows>
HWY_INLINE void AccumRange(const Table& tab, const uint8_t* codes, int n_ch, const float* w, int ldw,
                           int n_tok, float* acc, int lda, int acc0) {
  const int N = static_cast<int>(hn::Lanes(DF()));
  const int vecs = n_ch / N;
  int j = 0;
  for (; j + 4 <= vecs; j += 4)
    AccumChannels<kBits, kRows, 4>(tab, codes, n_ch, j * N, w, ldw, n_tok, acc, lda, acc0);
  switch (vecs - j) {
    case 3:
      AccumChannels<kBits, kRows, 3>(tab, codes, n_ch, j * N, w, ldw, n_tok, acc, lda, acc0);
      break;
    case 2:
      AccumChannels<kBits, kRows, 2>(tab, codes, n_ch, j * N, w, ldw, n_tok, acc, lda, acc0);
      break;
    case 1:
      AccumChannels<kBits, kRows, 1>(tab, codes, n_ch, j * N, w, ldw, n_tok, acc, lda, acc0);
      break;
    default:
      break;
  }
}

template <int kBits>
HWY_INLINE void AccumAllRows(const Table& tab, const uint8_t* codes, int n_ch, const float* w, int ldw,
                             int rows, int n_tok, float* acc, int lda, int acc0) {
  int r = 0;
  for (; r + 4 <= rows; r += 4)
    AccumRange<kBits, 4>(tab, codes, n_ch, w + r * ldw, ldw, n_tok, acc + r * lda, lda, acc0);
  switch (rows - r) {
    case 3:
      AccumRange<kBits, 3>(tab, codes, n_ch, w + r * ldw, ldw, n_tok, acc + r * lda, lda, acc0);
      break;
    case 2:
      AccumRange<kBits, 2>(tab, codes, n_ch, w + r * ldw, ldw, n_tok, acc + r * lda, lda, acc0);
      break;
    case 1:
      AccumRange<kBits, 1>(tab, codes, n_ch, w + r * ldw, ldw, n_tok, acc + r * lda, lda, acc0);
      break;
    default:
      break;
  }
}

// acc[r] += sum_{t < n_valid} p[r][t] v_t for a tq V part (rotated domain); p holds
// weights for tokens [0, n_tok) (a multiple of 16). w: scratch of [rows][kMaxAttnBlockTokens]
// for the weights with the norms folded in.
HWY_NOINLINE void AccumulateTurboBlock(const KvFormat& f, const uint8_t* vpart, int bt, int hd,
                                       const float* p, int ldp, int rows, int n_valid, int n_tok, float* acc,
                                       float* w) {
  const DF d;
  const int N = static_cast<int>(hn::Lanes(d));
  const TurboLayout lay = MakeTurboLayout(f, bt, hd);
  const VF inv_sqrt_d = hn::Set(d, 1.0f / std::sqrt(static_cast<float>(hd)));
  constexpr int ldw = kMaxAttnBlockTokens;
  for (int t0 = 0; t0 < n_tok; t0 += N) {
    const VF norm = hn::Mul(LoadNorms(vpart + lay.norm_offset, t0), inv_sqrt_d);
    for (int r = 0; r < rows; ++r)
      hn::StoreU(hn::Mul(hn::LoadU(d, p + r * ldp + t0), norm), d, w + r * ldw + t0);
  }
  const int hi = lay.hi_channels;
  if (hi > 0) {
    const Table& tab = CodeTable(lay.hi_bits);
    WithBits(lay.hi_bits, [&](auto b) {
      AccumAllRows<decltype(b)::value>(tab, vpart + lay.hi_offset, hi, w, ldw, rows, n_valid, acc, hd, 0);
    });
  }
  const Table& tab = CodeTable(lay.lo_bits);
  WithBits(lay.lo_bits, [&](auto b) {
    AccumAllRows<decltype(b)::value>(tab, vpart + lay.lo_offset, hd - hi, w, ldw, rows, n_valid, acc, hd, hi);
  });
}

// ------------------------------------------------------------------ chunk kernels
void ScoreKeys(const KernelArgs& a, const ChunkView& c, float* scores, int lds) {
  for (int i = 0; i < c.n_blocks; ++i) {
    const int n = BlockShare(i, a.bt, c.n_tok);
    if (n == 0) break;
    ScoreTurboBlock(a.kind->k, c.blocks[i], a.bt, a.hd, a.q, a.hd, a.rows, n, scores + i * a.bt, lds);
  }
}

struct FloatValueCall {
  alignas(64) float w[kMaxRows * kMaxBt];
};
void AccumulateValues(const KernelArgs& a, const ChunkView& c, const float* p, int ldp, const float*,
                      float* acc) {
  float* w = CallAs<FloatValueCall>(a.call).w;
  for (int i = 0; i < c.n_blocks; ++i) {
    const int n = BlockShare(i, a.bt, c.n_valid);
    if (n == 0) break;
    AccumulateTurboBlock(a.kind->v, c.blocks[i] + a.kind->v_offset, a.bt, a.hd, p + i * a.bt, ldp, a.rows, n,
                         (n + 15) / 16 * 16, acc, w);
  }
}

#if SLIMKV_KV_VNNI
// ------------------------------------------------------------------ tq on the integer paths
// TurboQuant levels are bytes on a grid (turbo_codec.h: level = grid value / kTurboGrid), so tq
// parts use the integer kernels above with a table lookup after the code extraction: codes
// become 128 + grid value (unsigned, as vpdpbusd wants), and the accumulators start at
// -128 times the sum of the other operand's bytes of each pass, so they end at exactly
// sum grid value * operand. Keys: the rotated query as 16-bit integers per task (one step
// per row: the levels need no per-channel scale), score = dot * step * norm[t]; values: the
// weights p * norm[t] as 16-bit integers per chunk, in the rotated domain like the float path.

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
  if (f.type != ElemType::kTurbo || f.tq_bits < 2) return false;
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

// Keys on the integer path: the query as 16-bit integers (per task), and the accumulators'
// start of each row's hi and lo byte passes.
struct KeyState {
  QueryBytes query;
  int32_t qoff_hi[kMaxRows], qoff_lo[kMaxRows];
};

// Per task: each row of the prepared queries (rotated, softmax scale folded in) as 16-bit
// integers with step max|q| / levels; query.step holds step / (kTurboGrid sqrt(hd)), so that
// step * dot * norm[t] is the score.
SLIMKV_KV_ATTR void PrepareKeysVnni(const KernelArgs& a) {
  const int hd = a.hd, rows = a.rows;
  KeyState& s = StateAs<KeyState>(a.key_state);
  QueryBytes& qb = s.query;
  const float unit = 1.0f / (kTurboGrid * std::sqrt(static_cast<float>(hd)));
  for (int r = 0; r < rows; ++r) {
    const float* q = a.q + r * hd;
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
    s.qoff_hi[r] = -128 * _mm512_reduce_add_epi32(hsum);
    s.qoff_lo[r] = -128 * _mm512_reduce_add_epi32(lsum);
    qb.step[r * (kMaxHd / 16)] = step * unit;
  }
}

template <int kLoBits, int kHiBits, int kRows>
SLIMKV_KV_ATTR HWY_INLINE void ScoreTurboVnniRows(const TurboLayout& lay, const uint8_t* kpart, int bt,
                                                  int slab, int hd, const KeyState& s, int row0,
                                                  float* scores, int lds) {
  const QueryBytes& q = s.query;
  KeyAcc<kRows> acc;
  acc.Start(s.qoff_hi, s.qoff_lo, row0);
  const int hi = lay.hi_channels;
  if constexpr (kHiBits > 0)
    KeyDotsAdd<kHiBits, kRows, true>(kpart + lay.hi_offset, bt, slab, 0, hi, 0,
                                     LoadIndex(TurboLevelBytes(kHiBits)), q, row0, acc);
  KeyDotsAdd<kLoBits, kRows, true>(kpart + lay.lo_offset, bt, slab, 0, hd - hi, hi,
                                   LoadIndex(TurboLevelBytes(kLoBits)), q, row0, acc);
  __m512 dots[kRows][2];
  acc.Finish(dots);
  for (int h = 0; h < 2; ++h) {
    const __m512 norm = _mm512_cvtph_ps(_mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(kpart + lay.norm_offset + 2 * (32 * slab + 16 * h))));
    for (int r = 0; r < kRows; ++r) {
      const __m512 step = _mm512_set1_ps(q.step[(row0 + r) * (kMaxHd / 16)]);
      _mm512_storeu_ps(scores + r * lds + 32 * slab + 16 * h,
                       _mm512_mul_ps(_mm512_mul_ps(dots[r][h], step), norm));
    }
  }
}

// scores[r][t] for tokens [0, 32 * n_slabs) of a tq K part (PrepareKeysVnni done).
// (Functions, not lambdas, below: clang compiles a lambda without its caller's target
// attribute, so it could not inline the VNNI kernels.)
template <int kLo, int kHi>
SLIMKV_KV_ATTR HWY_NOINLINE void ScoreTurboVnniBits(const TurboLayout& lay, const uint8_t* kpart, int bt,
                                                    int hd, int rows, int n_slabs, const KeyState& s,
                                                    float* scores, int lds) {
  for (int slab = 0; slab < n_slabs; ++slab) {
    int r = 0;
    if (rows % 3 != 0)
      for (; r + 4 <= rows; r += 4)
        ScoreTurboVnniRows<kLo, kHi, 4>(lay, kpart, bt, slab, hd, s, r, scores + r * lds, lds);
    for (; r + 3 <= rows; r += 3)
      ScoreTurboVnniRows<kLo, kHi, 3>(lay, kpart, bt, slab, hd, s, r, scores + r * lds, lds);
    if (rows - r == 2) ScoreTurboVnniRows<kLo, kHi, 2>(lay, kpart, bt, slab, hd, s, r, scores + r * lds, lds);
    if (rows - r == 1) ScoreTurboVnniRows<kLo, kHi, 1>(lay, kpart, bt, slab, hd, s, r, scores + r * lds, lds);
  }
}
template <int kLo, int kHi>
SLIMKV_KV_ATTR void ScoreKeysVnni(const KernelArgs& a, const ChunkView& c, float* scores, int lds) {
  const TurboLayout lay = MakeTurboLayout(a.kind->k, a.bt, a.hd);
  const KeyState& s = StateAs<KeyState>(a.key_state);
  for (int i = 0; i < c.n_blocks; ++i) {
    const int n = BlockShare(i, a.bt, c.n_tok);
    if (n == 0) break;
    ScoreTurboVnniBits<kLo, kHi>(lay, c.blocks[i], a.bt, a.hd, a.rows, (n + 31) / 32, s, scores + i * a.bt,
                                 lds);
  }
}
HWY_INLINE ScoreFn KeysVnniFor(const TurboLayout& lay) {
  switch (TurboBitsKey(lay)) {
    case 20:
      return ScoreKeysVnni<2, 0>;
    case 23:
      return ScoreKeysVnni<2, 3>;
    case 30:
      return ScoreKeysVnni<3, 0>;
    case 34:
      return ScoreKeysVnni<3, 4>;
    default:
      return ScoreKeysVnni<4, 0>;
  }
}

// One code array of a chunk's tq V parts (`width` channels of `bits`-bit codes at byte
// `codes` of each block) into acc columns [0, width).
SLIMKV_KV_ATTR inline void AccumArrayVnni(const ChunkView& c, size_t codes, int bt, int bits, int width,
                                          int rows, const ValueWeights& w, float* acc, int lda) {
  const TurboLut lut{&TurboLevelBytes(bits)};
  switch (bits) {
    case 2:
      AccumValueVnni<2>(c, codes, bt, width, width, rows, w, acc, lda, lut);
      break;
    case 3:
      AccumValueVnni<3>(c, codes, bt, width, width, rows, w, acc, lda, lut);
      break;
    default:
      AccumValueVnni<4>(c, codes, bt, width, width, rows, w, acc, lda, lut);
      break;
  }
}

// acc[r] += sum_t p[r][t] v_t for a chunk of tq V parts (rotated domain), tokens [0, n_valid):
// weights w = p * norm[t] as integers with step pmax[r] * max norm / levels (norms of slots
// past n_valid count as 0), w.step = step / (kTurboGrid sqrt(hd)).
struct ValueCall {
  ValueWeights w;
  alignas(64) float norm[kChunkTokens];
};
SLIMKV_KV_ATTR void AccumulateValuesVnni(const KernelArgs& a, const ChunkView& c, const float* p, int ldp,
                                         const float* pmax, float* acc) {
  const int hd = a.hd, bt = a.bt;
  const TurboLayout lay = MakeTurboLayout(a.kind->v, bt, hd);
  ValueCall& s = CallAs<ValueCall>(a.call);
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  __m512 nmax = _mm512_setzero_ps();
  for (int t0 = 0; t0 < c.n_tok; t0 += 16) {
    const uint8_t* vpart = c.blocks[t0 / bt] + a.kind->v_offset;
    const __mmask16 keep =
        _mm512_cmplt_epi32_mask(_mm512_add_epi32(lane, _mm512_set1_epi32(t0)), _mm512_set1_epi32(c.n_valid));
    const __m512 nv = _mm512_maskz_mov_ps(
        keep, _mm512_cvtph_ps(_mm256_loadu_si256(
                  reinterpret_cast<const __m256i*>(vpart + lay.norm_offset + 2 * (t0 % bt)))));
    _mm512_store_ps(s.norm + t0, nv);
    nmax = _mm512_max_ps(nmax, _mm512_abs_ps(nv));
  }
  const float norm_max = Max(nmax);
  const float unit = 1.0f / (kTurboGrid * std::sqrt(static_cast<float>(hd)));
  const int nv = c.n_tok / 16;
  for (int r = 0; r < a.rows; ++r) {
    const float step = pmax[r] * norm_max / kIntLevels;
    const __m512 inv = _mm512_set1_ps(step > 0 ? 1.0f / step : 0.0f);
    __m512i hsum = _mm512_setzero_si512(), lsum = _mm512_setzero_si512();
    int8_t* dst = s.w.bytes + r * ValueWeights::kRow;
    for (int v = 0; v < nv; v += 2) {
      __m512i wi[2];
      for (int h = 0; h < 2; ++h) {
        if (v + h >= nv) {
          wi[h] = _mm512_setzero_si512();
          continue;
        }
        const int t0 = 16 * (v + h);
        const __m512 w =
            _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(p + r * ldp + t0), inv), _mm512_load_ps(s.norm + t0));
        wi[h] = _mm512_cvtps_epi32(w);
        const __m512i hi = _mm512_srai_epi32(_mm512_add_epi32(wi[h], _mm512_set1_epi32(128)), 8);
        hsum = _mm512_add_epi32(hsum, hi);
        lsum = _mm512_add_epi32(lsum, _mm512_sub_epi32(wi[h], _mm512_slli_epi32(hi, 8)));
      }
      StoreSplit32(wi[0], wi[1], kSplitGroups[0], dst + 32 * v);
    }
    s.w.off[2 * r] = -128 * _mm512_reduce_add_epi32(hsum);
    s.w.off[2 * r + 1] = -128 * _mm512_reduce_add_epi32(lsum);
    s.w.step[r] = step * unit;
  }
  const int h = lay.hi_channels;
  if (h > 0) AccumArrayVnni(c, a.kind->v_offset + lay.hi_offset, bt, lay.hi_bits, h, a.rows, s.w, acc, hd);
  AccumArrayVnni(c, a.kind->v_offset + lay.lo_offset, bt, lay.lo_bits, hd - h, a.rows, s.w, acc + h, hd);
}

#endif  // SLIMKV_KV_VNNI

// The kernels of a tq format (k or v may be null).
inline bool Select(const KvFormat& f, int bt, int hd, KeyKernel* k, ValueKernel* v) {
  if (f.type != ElemType::kTurbo) return false;
  if (k) {
    *k = {nullptr, ScoreKeys, nullptr};
#if SLIMKV_KV_VNNI
    if (TurboKeyVnniOk(f, bt, hd)) *k = {PrepareKeysVnni, KeysVnniFor(MakeTurboLayout(f, bt, hd)), nullptr};
#endif
  }
  if (v) {
    *v = {AccumulateValues};
#if SLIMKV_KV_VNNI
    if (TurboValueVnniOk(f, bt, hd)) *v = {AccumulateValuesVnni};
#endif
  }
  return true;
}

}  // namespace turbo
}  // namespace slimkv::kv::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
