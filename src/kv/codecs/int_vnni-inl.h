// The int family's integer paths (AVX3_DL: vnni-inl.h), and the state both paths share;
// included by int-inl.h once per Highway target.
//   keys per channel: the query, the block's scales folded in, as 16-bit integers per block;
//   keys per token group: the query as 16-bit integers per group, once per task, each
//     group's dot scaled per token after;
//   values per token group: a chunk's weights p * scale as 16-bit integers per row.
#if defined(SLIMKV_KV_CODECS_INT_VNNI_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_KV_CODECS_INT_VNNI_INL_H_
#undef SLIMKV_KV_CODECS_INT_VNNI_INL_H_
#else
#define SLIMKV_KV_CODECS_INT_VNNI_INL_H_
#endif

#include "kv/codecs/int_codec.h"
#include "kv/codecs/kernels-inl.h"
#include "kv/codecs/vnni-inl.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::kv::HWY_NAMESPACE {
namespace int_codec {

// ------------------------------------------------------------------ state and call space
// Per-channel keys: the query normalised to kIntLevels / max |q| per row (integer path).
struct ChannelKeyState {
  alignas(64) float qn[kMaxRows * kMaxHd];  // [rows][hd]
  float qmax[kMaxRows];                     // per row: max |q|
};
// Per-token keys: each row's sum over each channel group (both paths), and (integer path)
// the query as integers per group.
struct TokenKeyState {
  float qsum[kMaxRows * (kMaxHd / 16)];  // [rows][groups]
  QueryBytes query;
};
// Per-channel keys, one block: the query with the block's scales folded in.
struct ChannelKeyCall {
  QueryBytes query;  // integer path
  alignas(64) float channel_scale[kMaxHd], channel_zero[kMaxHd];
  alignas(64) float q2[kMaxRows * kMaxHd];  // float path: q * scale [rows][hd]
  float cst[kMaxRows];                      // float path: sum_d q * (zero - offset scale)
};
// Values, one block (float path).
struct FloatValueCall {
  alignas(64) float p2[kMaxRows * kMaxBt];    // weights with per-token scales folded in [rows][bt]
  alignas(64) float part[kMaxRows * kMaxHd];  // per-channel partial sums [rows][hd]
  float cst[kMaxRows];
};

HWY_INLINE const uint8_t* KeyMeta(const KernelArgs& a, const uint8_t* block) {
  return block + a.kind->k_layout.meta_offset;
}
HWY_INLINE const uint8_t* ValueMeta(const KernelArgs& a, const uint8_t* block) {
  return block + a.kind->v_offset + a.kind->v_layout.meta_offset;
}

// Per-token keys: each row's sum over each channel group.
inline void PrepareQuerySums(const KernelArgs& a, TokenKeyState& st) {
  const DF d;
  const int N = static_cast<int>(hn::Lanes(d));
  const int g = a.kind->k.group_size(a.hd), groups = a.hd / g;
  for (int r = 0; r < a.rows; ++r) {
    for (int gi = 0; gi < groups; ++gi) {
      VF sum = hn::Zero(d);
      for (int j = gi * g; j < (gi + 1) * g; j += N) sum = hn::Add(sum, hn::Load(d, a.q + r * a.hd + j));
      st.qsum[r * groups + gi] = ReduceSum(d, sum);
    }
  }
}

#if SLIMKV_KV_VNNI
// ------------------------------------------------------------------ integer paths (AVX3_DL)
// Values, one chunk.
struct ValueCall {
  ValueWeights w;
  alignas(64) float vscale[kChunkTokens * kMaxGroups], vzero[kChunkTokens * kMaxGroups];  // [token][group]
  alignas(64) float vconst[kMaxRows * kMaxGroups + 16];  // per row and group: added to the accumulators
};

// Per-channel keys: scores[r][t] = step[r] * dot + bias[r], tokens [0, 32 * n_slabs).
template <int kBits, int kRows>
SLIMKV_KV_ATTR HWY_INLINE void ScoreChannelVnniRows(const uint8_t* codes, int bt, int n_slabs, int hd,
                                                    const QueryBytes& q, int row0, float* scores, int lds) {
  for (int slab = 0; slab < n_slabs; ++slab) {
    __m512 dots[kRows][2];
    KeyDots<kBits, kRows>(codes, hd, slab, 0, hd, q, row0, dots);
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
    for (; r + 4 <= rows; r += 4)
      ScoreChannelVnniRows<kBits, 4>(codes, bt, n_slabs, hd, q, r, scores + r * lds, lds);
  for (; r + 3 <= rows; r += 3)
    ScoreChannelVnniRows<kBits, 3>(codes, bt, n_slabs, hd, q, r, scores + r * lds, lds);
  if (rows - r == 2) ScoreChannelVnniRows<kBits, 2>(codes, bt, n_slabs, hd, q, r, scores + r * lds, lds);
  if (rows - r == 1) ScoreChannelVnniRows<kBits, 1>(codes, bt, n_slabs, hd, q, r, scores + r * lds, lds);
}

// Per-token groups: score += scale[g][t] * (step[r][g] * dot + bias[r][g]) + zero[g][t] * qsum[r][g]
// (bias: minus the offset of the codes times the query's sum, and the rounding compensation).
template <int kBits, int kRows>
SLIMKV_KV_ATTR HWY_INLINE void ScoreTokenVnniRows(const uint8_t* codes, const uint8_t* meta, int bt, int slab,
                                                  size_t n_scales, bool has_zero, int hd, int g,
                                                  const QueryBytes& q, const float* qsum, int row0,
                                                  float* scores, int lds) {
  const DF d;
  const int groups = hd / g;
  VF acc[kRows][2];
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = hn::Zero(d);
  for (int gi = 0; gi < groups; ++gi) {
    __m512 dots[kRows][2];
    KeyDots<kBits, kRows>(codes, hd, slab, gi * g, (gi + 1) * g, q, row0, dots);
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
SLIMKV_KV_ATTR HWY_NOINLINE void ScoreTokenVnni(const uint8_t* codes, const uint8_t* meta, int bt,
                                                int n_slabs, size_t n_scales, bool has_zero, int hd, int g,
                                                const QueryBytes& q, const float* qsum, int rows,
                                                float* scores, int lds) {
  for (int slab = 0; slab < n_slabs; ++slab) {
    int r = 0;
    if (rows % 3 != 0)
      for (; r + 4 <= rows; r += 4)
        ScoreTokenVnniRows<kBits, 4>(codes, meta, bt, slab, n_scales, has_zero, hd, g, q, qsum, r,
                                     scores + r * lds, lds);
    for (; r + 3 <= rows; r += 3)
      ScoreTokenVnniRows<kBits, 3>(codes, meta, bt, slab, n_scales, has_zero, hd, g, q, qsum, r,
                                   scores + r * lds, lds);
    if (rows - r == 2)
      ScoreTokenVnniRows<kBits, 2>(codes, meta, bt, slab, n_scales, has_zero, hd, g, q, qsum, r,
                                   scores + r * lds, lds);
    if (rows - r == 1)
      ScoreTokenVnniRows<kBits, 1>(codes, meta, bt, slab, n_scales, has_zero, hd, g, q, qsum, r,
                                   scores + r * lds, lds);
  }
}

// Per-channel keys, per block: q[r][d] * scale[d] as integers with step[r] = max|q[r]| *
// max|scale| / kIntLevels (a bound: no pass over the products is needed; it costs the bits
// by which the largest product falls short of it), and bias[r] = sum_d q[r][d] * (zero[d] -
// offset * scale[d]) less the rounding compensation. s.qn holds q * kIntLevels / max|q|.
template <int kBits>
SLIMKV_KV_ATTR inline void PrepareChannelQuery(const KvFormat& f, const uint8_t* meta, int hd, int rows,
                                               const float* qp, const ChannelKeyState& st,
                                               ChannelKeyCall& s) {
  constexpr float mean = MeanCode(kBits);
  const float offset = IntCodeOffset(f, kBits);
  __m512 vmax = _mm512_setzero_ps();
  for (int j = 0; j < hd; j += 16) {
    const __m512 sc = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(meta + 2 * j)));
    __m512 zo = _mm512_mul_ps(sc, _mm512_set1_ps(mean - offset));
    if (!f.symmetric)
      zo = _mm512_add_ps(
          zo, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(meta + 2 * (hd + j)))));
    _mm512_store_ps(s.channel_scale + j, sc);
    _mm512_store_ps(s.channel_zero + j, zo);
    vmax = _mm512_max_ps(vmax, _mm512_abs_ps(sc));
  }
  const float smax = Max(vmax);
  const __m512 inv_smax = _mm512_set1_ps(smax > 0 ? 1.0f / smax : 0.0f);
  for (int j = 0; j < hd; j += 16)
    _mm512_store_ps(s.channel_scale + j, _mm512_mul_ps(_mm512_load_ps(s.channel_scale + j), inv_smax));
  QueryBytes& qb = s.query;
  for (int r = 0; r < rows; ++r) {
    const float* q = qp + r * hd;
    const float* qn = st.qn + r * hd;
    const float step = st.qmax[r] * smax / kIntLevels;
    __m512 vb = _mm512_setzero_ps();
    __m512i vsum = _mm512_setzero_si512();
    for (int j = 0; j < hd; j += 32) {
      __m512i qi[2];
      for (int h = 0; h < 2; ++h) {
        const int jj = j + 16 * h;
        qi[h] =
            _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_load_ps(qn + jj), _mm512_load_ps(s.channel_scale + jj)));
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
SLIMKV_KV_ATTR inline void PrepareTokenQuery(const KvFormat& f, int hd, int rows, const float* qp,
                                             QueryBytes& qb) {
  const int g = f.group_size(hd), groups = hd / g;
  const float offset = IntCodeOffset(f, kBits);
  constexpr float mean = MeanCode(kBits);
  for (int r = 0; r < rows; ++r) {
    for (int gi = 0; gi < groups; ++gi) {
      const float* q = qp + r * hd + gi * g;
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

// Whether the integer key kernels read a K part of this block size and group.
HWY_INLINE bool KeyVnniOk(const KvFormat& f, int bits, int bt, int hd) {
  return bt % 32 == 0 && hd % 32 == 0 && f.group_size(hd) % 32 == 0;
}
// Whether the integer value kernel handles a per-token-group V format.
inline bool ValueVnniOk(const KvFormat& f, int bits, int bt, int hd) {
  const int groups = hd / f.group_size(hd);
  return hd % 32 == 0 && f.group_size(hd) % 16 == 0 && (groups & (groups - 1)) == 0 && groups <= kMaxGroups;
}

// Per-channel keys: the query normalised per row once per task, then per block.
void PrepareChannelKeysVnni(const KernelArgs& a) {
  const DF d;
  const int N = static_cast<int>(hn::Lanes(d));
  ChannelKeyState& st = StateAs<ChannelKeyState>(a.key_state);
  for (int r = 0; r < a.rows; ++r) {
    VF amax = hn::Zero(d);
    for (int j = 0; j < a.hd; j += N) amax = hn::Max(amax, hn::Abs(hn::Load(d, a.q + r * a.hd + j)));
    st.qmax[r] = ReduceMax(d, amax);
    const VF norm = hn::Set(d, st.qmax[r] > 0 ? kIntLevels / st.qmax[r] : 0.0f);
    for (int j = 0; j < a.hd; j += N)
      hn::Store(hn::Mul(hn::Load(d, a.q + r * a.hd + j), norm), d, st.qn + r * a.hd + j);
  }
}

template <int kBits>
SLIMKV_KV_ATTR void ScoreChannelKeysVnni(const KernelArgs& a, const ChunkView& c, float* scores, int lds) {
  const ChannelKeyState& st = StateAs<ChannelKeyState>(a.key_state);
  ChannelKeyCall& s = CallAs<ChannelKeyCall>(a.call);
  for (int i = 0; i < c.n_blocks; ++i) {
    const int n = BlockShare(i, a.bt, c.n_tok);
    if (n == 0) break;
    PrepareChannelQuery<kBits>(a.kind->k, KeyMeta(a, c.blocks[i]), a.hd, a.rows, a.q, st, s);
    ScoreChannelVnni<kBits>(c.blocks[i], a.bt, (n + 31) / 32, a.hd, s.query, a.rows, scores + i * a.bt, lds);
  }
}

template <int kBits>
SLIMKV_KV_ATTR void PrepareTokenKeysVnni(const KernelArgs& a) {
  TokenKeyState& st = StateAs<TokenKeyState>(a.key_state);
  PrepareQuerySums(a, st);
  PrepareTokenQuery<kBits>(a.kind->k, a.hd, a.rows, a.q, st.query);
}

template <int kBits>
SLIMKV_KV_ATTR void ScoreTokenKeysVnni(const KernelArgs& a, const ChunkView& c, float* scores, int lds) {
  const KvFormat& f = a.kind->k;
  const int g = f.group_size(a.hd);
  const size_t n_scales = static_cast<size_t>(a.bt) * (a.hd / g);
  const TokenKeyState& st = StateAs<TokenKeyState>(a.key_state);
  for (int i = 0; i < c.n_blocks; ++i) {
    const int n = BlockShare(i, a.bt, c.n_tok);
    if (n == 0) break;
    ScoreTokenVnni<kBits>(c.blocks[i], KeyMeta(a, c.blocks[i]), a.bt, (n + 31) / 32, n_scales, !f.symmetric,
                          a.hd, g, st.query, st.qsum, a.rows, scores + i * a.bt, lds);
  }
}

// Weights of a chunk for the integer value kernel, tokens [0, c.n_valid) of c.n_tok (slots
// past n_valid weigh 0 whatever their metadata holds):
//   w[r][t][g] = p[r][t] * scale[t][g] as integers with step[r] = pmax[r] * max|scale| /
//   levels (max over the chunk), stored as bytes in [32 entries][group][token] order;
//   vconst[r][g] = sum_t p[r][t] * (zero[t][g] - offset * scale[t][g]) less the rounding
//   compensation, added to the accumulators after the chunk.
template <int kBits>
SLIMKV_KV_ATTR inline void PrepareValueWeights(const KernelArgs& a, const ChunkView& c, const float* p,
                                               int ldp, const float* pmax, ValueCall& s) {
  const KvFormat& f = a.kind->v;
  const int hd = a.hd, bt = a.bt;
  const int g = f.group_size(hd), groups = hd / g;
  const int log_groups = __builtin_ctz(groups);
  const size_t n_scales = static_cast<size_t>(bt) * groups;
  const float offset = IntCodeOffset(f, kBits);
  constexpr float mean = MeanCode(kBits);
  const int nv = c.n_tok * groups / 16;  // vectors of 16 (token, group) entries
  const __m512i lane_token =
      _mm512_srli_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), log_groups);
  __m512 smax = _mm512_setzero_ps();
  for (int b = 0, v = 0; b < c.n_blocks; ++b) {
    const uint8_t* meta = ValueMeta(a, c.blocks[b]);
    const int nb = BlockShare(b, bt, c.n_tok) * groups / 16;
    for (int vb = 0; vb < nb; ++vb, ++v) {
      const int t0 = (v * 16) >> log_groups;  // chunk token of the vector's first entry
      const __m512 sc = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(meta + 32 * vb)));
      __m512 zo = _mm512_mul_ps(sc, _mm512_set1_ps(mean - offset));
      if (!f.symmetric)
        zo = _mm512_add_ps(zo, _mm512_cvtph_ps(_mm256_loadu_si256(
                                   reinterpret_cast<const __m256i*>(meta + 2 * n_scales + 32 * vb))));
      __mmask16 keep = 0xFFFF;
      if (t0 + (16 >> log_groups) > c.n_valid)
        keep = _mm512_cmplt_epi32_mask(_mm512_add_epi32(lane_token, _mm512_set1_epi32(t0)),
                                       _mm512_set1_epi32(c.n_valid));
      _mm512_store_ps(s.vscale + v * 16, _mm512_maskz_mov_ps(keep, sc));
      _mm512_store_ps(s.vzero + v * 16, _mm512_maskz_mov_ps(keep, zo));
      smax = _mm512_mask_max_ps(smax, keep, smax, _mm512_abs_ps(sc));
    }
  }
  const float scale_max = Max(smax);
  const ByteIndex& split = kSplitGroups[log_groups];
  for (int r = 0; r < a.rows; ++r) {
    const float* pr = p + r * ldp;
    const float step = pmax[r] * scale_max / kIntLevels;
    s.w.step[r] = step;
    const __m512 inv = _mm512_set1_ps(step > 0 ? 1.0f / step : 0.0f);
    __m512 vc = _mm512_setzero_ps();
    __m512i vsum = _mm512_setzero_si512();
    int8_t* dst = s.w.bytes + r * ValueWeights::kRow;
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
          _mm512_add_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                           _mm512_set1_epi32(half)),
          _mm512_set1_epi32(15));
      vc = _mm512_add_ps(vc, _mm512_permutexvar_ps(rot, vc));
    }
    _mm512_storeu_ps(s.vconst + r * kMaxGroups, vc);
  }
}

template <int kBits>
SLIMKV_KV_ATTR void AccumulateTokenValuesVnni(const KernelArgs& a, const ChunkView& c, const float* p,
                                              int ldp, const float* pmax, float* acc) {
  const KvFormat& f = a.kind->v;
  const int hd = a.hd, g = f.group_size(hd);
  ValueCall& s = CallAs<ValueCall>(a.call);
  PrepareValueWeights<kBits>(a, c, p, ldp, pmax, s);
  AccumValueVnni<kBits>(c, a.kind->v_offset, a.bt, hd, g, a.rows, s.w, acc, hd);
  for (int r = 0; r < a.rows; ++r)
    for (int j = 0; j < hd; j += 16) {
      float* x = acc + r * hd + j;
      _mm512_storeu_ps(x,
                       _mm512_add_ps(_mm512_loadu_ps(x), _mm512_set1_ps(s.vconst[r * kMaxGroups + j / g])));
    }
}
#endif  // SLIMKV_KV_VNNI

}  // namespace int_codec
}  // namespace slimkv::kv::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
