// The tq family's integer paths (AVX3_DL: vnni-inl.h), included by turbo-inl.h once per
// Highway target.
#if defined(SLIMKV_KV_CODECS_TURBO_VNNI_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_KV_CODECS_TURBO_VNNI_INL_H_
#undef SLIMKV_KV_CODECS_TURBO_VNNI_INL_H_
#else
#define SLIMKV_KV_CODECS_TURBO_VNNI_INL_H_
#endif

#include <array>
#include <cmath>

#include "kv/codecs/kernels-inl.h"
#include "kv/codecs/turbo_codec.h"
#include "kv/codecs/vnni-inl.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::kv::HWY_NAMESPACE {
namespace turbo {

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

// Whether a tq part takes the integer path: 2-4 bit codes (1-bit parts are tiny and stay on
// the float path), no block mean, keys in slabs of 32 tokens, value rows of whole pairs of
// 16-channel tiles.
HWY_INLINE bool TurboKeyVnniOk(const KvFormat& f, int bt, int hd) {
  return f.type == ElemType::kTurbo && !f.tq_mean && bt % 32 == 0 && f.tq_bits >= 2;
}
HWY_INLINE bool TurboValueVnniOk(const KvFormat& f, int bt, int hd) {
  const int hi = f.tq_plus * hd / 4;
  return f.type == ElemType::kTurbo && f.tq_bits >= 2 && hi % 32 == 0 && (hd - hi) % 32 == 0;
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
    KeyDotsAdd<kHiBits, kRows, true>(kpart + lay.hi_offset, hi, slab, 0, hi, 0,
                                     LoadIndex(TurboLevelBytes(kHiBits)), q, row0, acc);
  KeyDotsAdd<kLoBits, kRows, true>(kpart + lay.lo_offset, hd - hi, slab, 0, hd - hi, hi,
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

}  // namespace turbo
}  // namespace slimkv::kv::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
