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
#include "kv/codecs/packing-inl.h"
#include "kv/codecs/turbo_codec.h"
#include "kv/codecs/turbo_vnni-inl.h"
#include "kv/codecs/vnni-inl.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::kv::HWY_NAMESPACE {
namespace turbo {

using VU = hn::Vec<DU>;

// ------------------------------------------------------------------ float paths
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
// codes of a K array of `n_ch` channels (packing.h); two accumulator sets (even
// and odd channels) hide the FMA latency.
template <int kBits, int kRows>
HWY_INLINE void ScoreChannels(const Table& tab, const uint8_t* codes, int bt, int n_ch, const float* q,
                              int ldq, int q0, int t0, VF (&acc)[2][kRows]) {
  const DF d;
  const VF tv = hn::Load(d, tab.val);
  int c = 0;
  for (; c + 2 <= n_ch; c += 2) {
    for (int s = 0; s < 2; ++s) {
      const VF k = Lookup<kBits>(tab, tv, TileCodes<kBits>(codes, n_ch, true, t0, c + s));
      for (int r = 0; r < kRows; ++r)
        acc[s][r] = hn::MulAdd(hn::Set(d, q[r * ldq + q0 + c + s]), k, acc[s][r]);
    }
  }
  for (; c < n_ch; ++c) {
    const VF k = Lookup<kBits>(tab, tv, TileCodes<kBits>(codes, n_ch, true, t0, c));
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
// channels of a V code array of `n_ch` channels (packing.h).
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
      v[j] = Lookup<kBits>(tab, tv, TileCodes<kBits>(codes, n_ch, false, t, c0 + j * N));
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
