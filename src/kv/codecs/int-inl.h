// Attention kernels of the int family (int_codec.h: int8/4/3/2 per channel or per token
// group, q8_0, q4_0), included once per Highway target through codecs/registry-inl.h.
//
// Per-channel scales fold into the query once per block; per-token scales are applied per
// token group after a partial dot of the raw codes (keys) or folded into the attention
// weights (values); zero points become one constant per row and block (keys) or group
// (values).
//   AVX3_DL (vnni-inl.h), blocks of 32 or 64 tokens for keys: the query, scales folded in,
//     is rounded to 16-bit integers per block (per channel) or per task (per token group);
//     the weights p * scale of a chunk to 16-bit integers per row; vpdpbusd multiplies them
//     with the codes.
//   Other targets and per-channel values: the codes become floats (CodeLoader) and meet the
//     query or the weights in FMAs.
#if defined(SLIMKV_KV_CODECS_INT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_KV_CODECS_INT_INL_H_
#undef SLIMKV_KV_CODECS_INT_INL_H_
#else
#define SLIMKV_KV_CODECS_INT_INL_H_
#endif

#include "kv/codecs/int_codec.h"
#include "kv/codecs/int_vnni-inl.h"
#include "kv/codecs/kernels-inl.h"
#include "kv/codecs/packing-inl.h"
#include "kv/codecs/vnni-inl.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::kv::HWY_NAMESPACE {
namespace int_codec {

// Integer codes (unsigned) packed as packing.h describes, as floats: the loader of the
// float-FMA paths (every target but AVX3_DL, and the formats the integer paths do not take).
template <int kBits>
struct CodeLoader {
  int width;  // channels of the array
  bool is_key;
  HWY_INLINE VF operator()(DF d, const uint8_t* p, size_t, int t, int c) const {
    return hn::ConvertTo(d, hn::BitCast(DI(), TileCodes<kBits>(p, width, is_key, t, c)));
  }
};

template <class Fn>
HWY_INLINE void WithIntBits(int bits, Fn&& fn) {
  switch (bits) {
    case 8:
      fn(std::integral_constant<int, 8>());
      break;
    case 4:
      fn(std::integral_constant<int, 4>());
      break;
    case 3:
      fn(std::integral_constant<int, 3>());
      break;
    default:
      fn(std::integral_constant<int, 2>());
      break;
  }
}

// ------------------------------------------------------------------ float paths
// Per-token quantized keys (channel groups of g): for each group, a partial dot of the raw
// codes, then score += scale[g][t] * (partial - offset * qsum[g]) + zero[g][t] * qsum[g].
template <int kBits, int kRows>
HWY_INLINE void ScoreTokenGroupRows(const uint8_t* codes, const uint8_t* meta, size_t n_scales,
                                    bool symmetric, int bt, int hd, int g, const float* q, int ldq,
                                    const float* qsum, int n_tok, float* scores, int lds) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const CodeLoader<kBits> load{hd, true};
  const int groups = hd / g;
  const float offset = symmetric ? static_cast<float>(1 << (kBits - 1)) : 0.0f;
  for (int t0 = 0; t0 < n_tok; t0 += static_cast<int>(N)) {
    VF acc[kRows];
    for (int r = 0; r < kRows; ++r) acc[r] = hn::Zero(d);
    for (int gi = 0; gi < groups; ++gi) {
      VF part[kRows];
      for (int r = 0; r < kRows; ++r) part[r] = hn::Zero(d);
      for (int dim = gi * g; dim < (gi + 1) * g; ++dim) {
        const VF kv = load(d, codes, 0, t0, dim);
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
                                   int bt, int hd, int g, const float* q, int ldq, const float* qsum,
                                   int rows, int n_tok, float* scores, int lds) {
  const int groups = hd / g;
  int r = 0;
  for (; r + 4 <= rows; r += 4)
    ScoreTokenGroupRows<kBits, 4>(codes, meta, n_scales, symmetric, bt, hd, g, q + r * ldq, ldq,
                                  qsum + r * groups, n_tok, scores + r * lds, lds);
  for (; r < rows; ++r)
    ScoreTokenGroupRows<kBits, 1>(codes, meta, n_scales, symmetric, bt, hd, g, q + r * ldq, ldq,
                                  qsum + r * groups, n_tok, scores + r * lds, lds);
}

// Per-channel keys: q2[r][d] = q[r][d] * scale[d] per block, and the constant sum_d q[r][d] *
// (zero[d] - offset * scale[d]) added to every score of the row.
template <int kBits>
void ScoreChannelKeys(const KernelArgs& a, const ChunkView& c, float* scores, int lds) {
  const DF d;
  const int N = static_cast<int>(hn::Lanes(d));
  const KvFormat& f = a.kind->k;
  const float offset = IntCodeOffset(f, kBits);
  ChannelKeyCall& s = CallAs<ChannelKeyCall>(a.call);
  const int hd = a.hd;
  for (int i = 0; i < c.n_blocks; ++i) {
    const int n = BlockShare(i, a.bt, c.n_tok);
    if (n == 0) break;
    const uint8_t* meta = KeyMeta(a, c.blocks[i]);
    for (int j = 0; j < hd; j += N) {
      const VF sc = LoadHalves(d, meta, j);
      VF zo = hn::Mul(sc, hn::Set(d, -offset));
      if (!f.symmetric) zo = hn::Add(zo, LoadHalves(d, meta, hd + j));
      hn::Store(sc, d, s.channel_scale + j);
      hn::Store(zo, d, s.channel_zero + j);
    }
    for (int r = 0; r < a.rows; ++r) {
      VF cz = hn::Zero(d);
      for (int j = 0; j < hd; j += N) {
        const VF q = hn::Load(d, a.q + r * hd + j);
        hn::Store(hn::Mul(q, hn::Load(d, s.channel_scale + j)), d, s.q2 + r * hd + j);
        cz = hn::MulAdd(q, hn::Load(d, s.channel_zero + j), cz);
      }
      s.cst[r] = ReduceSum(d, cz);
    }
    float* sc = scores + i * a.bt;
    ScoreChannelMajor(CodeLoader<kBits>{hd, true}, c.blocks[i], a.bt, hd, s.q2, hd, a.rows, n, sc, lds);
    for (int r = 0; r < a.rows; ++r) {
      const VF cz = hn::Set(d, s.cst[r]);
      for (int t = 0; t < n; t += N)
        hn::StoreU(hn::Add(hn::LoadU(d, sc + r * lds + t), cz), d, sc + r * lds + t);
    }
  }
}

void PrepareTokenKeys(const KernelArgs& a) { PrepareQuerySums(a, StateAs<TokenKeyState>(a.key_state)); }

template <int kBits>
void ScoreTokenKeys(const KernelArgs& a, const ChunkView& c, float* scores, int lds) {
  const KvFormat& f = a.kind->k;
  const int g = f.group_size(a.hd);
  const size_t n_scales = static_cast<size_t>(a.bt) * (a.hd / g);
  const TokenKeyState& st = StateAs<TokenKeyState>(a.key_state);
  for (int i = 0; i < c.n_blocks; ++i) {
    const int n = BlockShare(i, a.bt, c.n_tok);
    if (n == 0) break;
    ScoreTokenGroups<kBits>(c.blocks[i], KeyMeta(a, c.blocks[i]), n_scales, f.symmetric, a.bt, a.hd, g, a.q,
                            a.hd, st.qsum, a.rows, n, scores + i * a.bt, lds);
  }
}

// Per-channel values: acc[r][d] += scale[d] * sum_t p[r][t] code[t][d] + (zero[d] - offset *
// scale[d]) * sum_t p[r][t].
template <int kBits>
void AccumulateChannelValues(const KernelArgs& a, const ChunkView& c, const float* p, int ldp, const float*,
                             float* acc) {
  const DF d;
  const int N = static_cast<int>(hn::Lanes(d));
  const KvFormat& f = a.kind->v;
  const float offset = IntCodeOffset(f, kBits);
  const int hd = a.hd;
  FloatValueCall& s = CallAs<FloatValueCall>(a.call);
  for (int i = 0; i < c.n_blocks; ++i) {
    const int n = BlockShare(i, a.bt, c.n_valid);
    if (n == 0) break;
    const float* pi = p + i * a.bt;
    const uint8_t* meta = ValueMeta(a, c.blocks[i]);
    std::fill(s.part, s.part + a.rows * hd, 0.0f);
    AccumTokenMajor(CodeLoader<kBits>{hd, false}, c.blocks[i] + a.kind->v_offset, hd, 0, hd, pi, ldp, a.rows,
                    n, s.part, hd);
    for (int r = 0; r < a.rows; ++r) {
      VF ps = hn::Zero(d);
      for (int t = 0; t < (n + N - 1) / N * N; t += N) ps = hn::Add(ps, hn::LoadU(d, pi + r * ldp + t));
      const VF psum = hn::Set(d, ReduceSum(d, ps));
      for (int j = 0; j < hd; j += N) {
        const VF sc = LoadHalves(d, meta, j);
        VF zo = hn::Mul(sc, hn::Set(d, -offset));
        if (!f.symmetric) zo = hn::Add(zo, LoadHalves(d, meta, hd + j));
        const VF x = hn::MulAdd(sc, hn::Load(d, s.part + r * hd + j), hn::LoadU(d, acc + r * hd + j));
        hn::StoreU(hn::MulAdd(zo, psum, x), d, acc + r * hd + j);
      }
    }
  }
}

// Per-token-group values: p2[r][t] = p[r][t] * scale[t][g]; acc[r][group] += sum_t p2 code +
// sum_t p[r][t] (zero[t][g] - offset * scale[t][g]).
template <int kBits>
void AccumulateTokenValues(const KernelArgs& a, const ChunkView& c, const float* p, int ldp, const float*,
                           float* acc) {
  const DF d;
  const int N = static_cast<int>(hn::Lanes(d));
  const KvFormat& f = a.kind->v;
  const float offset = IntCodeOffset(f, kBits);
  const int hd = a.hd, g = f.group_size(hd), groups = hd / g;
  const size_t n_scales = static_cast<size_t>(a.bt) * groups;
  FloatValueCall& s = CallAs<FloatValueCall>(a.call);
  for (int i = 0; i < c.n_blocks; ++i) {
    const int n = BlockShare(i, a.bt, c.n_valid);
    if (n == 0) break;
    const float* pi = p + i * a.bt;
    const uint8_t* meta = ValueMeta(a, c.blocks[i]);
    for (int gi = 0; gi < groups; ++gi) {
      for (int r = 0; r < a.rows; ++r) {
        float cz = 0;
        for (int t = 0; t < n; ++t) {
          const float sc = Half(meta, static_cast<size_t>(t) * groups + gi);
          const float z = (f.symmetric ? 0.0f : Half(meta, n_scales + static_cast<size_t>(t) * groups + gi)) -
                          offset * sc;
          s.p2[r * kMaxBt + t] = pi[r * ldp + t] * sc;
          cz += pi[r * ldp + t] * z;
        }
        s.cst[r] = cz;
      }
      AccumTokenMajor(CodeLoader<kBits>{hd, false}, c.blocks[i] + a.kind->v_offset, hd, gi * g, (gi + 1) * g,
                      s.p2, kMaxBt, a.rows, n, acc, hd);
      for (int r = 0; r < a.rows; ++r) {
        const VF cz = hn::Set(d, s.cst[r]);
        for (int j = gi * g; j < (gi + 1) * g; j += N)
          hn::StoreU(hn::Add(hn::LoadU(d, acc + r * hd + j), cz), d, acc + r * hd + j);
      }
    }
  }
}

// The K part of a block as fp32 [hd][bt] (keys stored before RoPE).
template <int kBits>
void DecodeTile(const KernelArgs& a, const uint8_t* kpart, float* tile) {
  const DF d;
  const int N = static_cast<int>(hn::Lanes(d));
  const KvFormat& f = a.kind->k;
  const int bt = a.bt, hd = a.hd;
  const uint8_t* meta = kpart + a.kind->k_layout.meta_offset;
  const bool per_channel = f.granularity == Granularity::kChannel;
  const size_t n_scales = IntScaleCount(f, bt, hd);
  const float offset = IntCodeOffset(f, kBits);
  const CodeLoader<kBits> load{hd, true};
  for (int dim = 0; dim < hd; ++dim) {
    for (int t = 0; t < bt; t += N) {
      const size_t e = static_cast<size_t>(dim) * bt + t;
      VF sc, z;
      if (per_channel) {
        sc = hn::Set(d, Half(meta, dim));
        z = hn::Set(d, f.symmetric ? 0.0f : Half(meta, n_scales + dim));
      } else {
        const size_t si = static_cast<size_t>(dim / f.group_size(hd)) * bt + t;
        sc = LoadHalves(d, meta, si);
        z = f.symmetric ? hn::Zero(d) : LoadHalves(d, meta, n_scales + si);
      }
      hn::StoreU(hn::MulAdd(hn::Sub(load(d, kpart, e, t, dim), hn::Set(d, offset)), sc, z), d, tile + e);
    }
  }
}

// ------------------------------------------------------------------ selection
template <int kBits>
HWY_INLINE void SelectBits(const KvFormat& f, int bt, int hd, KeyKernel* k, ValueKernel* v) {
  const bool per_channel = f.granularity == Granularity::kChannel;
  if (k) {
    *k = per_channel ? KeyKernel{nullptr, ScoreChannelKeys<kBits>, DecodeTile<kBits>}
                     : KeyKernel{PrepareTokenKeys, ScoreTokenKeys<kBits>, DecodeTile<kBits>};
#if SLIMKV_KV_VNNI
    if (KeyVnniOk(f, kBits, bt, hd)) {
      k->prepare = per_channel ? PrepareChannelKeysVnni : PrepareTokenKeysVnni<kBits>;
      k->score = per_channel ? ScoreChannelKeysVnni<kBits> : ScoreTokenKeysVnni<kBits>;
    }
#endif
  }
  if (v) {
    *v = {per_channel ? AccumulateChannelValues<kBits> : AccumulateTokenValues<kBits>};
#if SLIMKV_KV_VNNI
    if (!per_channel && ValueVnniOk(f, kBits, bt, hd)) v->accumulate = AccumulateTokenValuesVnni<kBits>;
#endif
  }
}

// The kernels of an int format (k or v may be null).
inline bool Select(const KvFormat& f, int bt, int hd, KeyKernel* k, ValueKernel* v) {
  if (!kIntFamily.owns(f.type)) return false;
  WithIntBits(f.bits(), [&](auto bits) { SelectBits<decltype(bits)::value>(f, bt, hd, k, v); });
  return true;
}

}  // namespace int_codec
}  // namespace slimkv::kv::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
