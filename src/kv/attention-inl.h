// SIMD bodies of attention over stored blocks (included once per Highway target by
// attention.cc). The codec kernels read the block bytes directly:
//   score:      scores[r][t] = q_r . k_t   (K codes are channel-major: one vector holds one
//                                           channel of 16 tokens, multiplied by a broadcast
//                                           query element)
//   accumulate: acc[r][:] += sum_t p[r][t] v_t   (V codes are token-major)
// Per-channel scales are folded into the query once per block, per-token scales applied per
// token group after a partial dot of the raw codes (keys) or folded into the attention
// weights (values); zero points become one constant per row and block (keys) or group
// (values). The driver runs the online softmax over the blocks of a key range.
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
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "kv/attention.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::kv::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
using DU = hn::RebindToUnsigned<DF>;
using DI = hn::RebindToSigned<DF>;

// Keys are scored in chunks of this many tokens (block_tokens is a multiple of it).
inline constexpr int kChunk = 16;
inline constexpr int kMaxRows = kMaxAttnTaskRows;
inline constexpr int kMaxBt = kMaxAttnBlockTokens;
inline constexpr int kMaxHd = kMaxAttnHeadDim;
inline constexpr size_t kMaxVec = kChunk / hn::MaxLanes(DF());  // vectors per chunk

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
// fp8 through fp16 bit patterns: e5m2 is the top byte of a half; e4m3 becomes a half with
// its exponent 8 too small (the caller folds the factor 256 into the block scale).
template <bool kE4M3>
struct Fp8Loader {
  HWY_INLINE VF operator()(DF d, const uint8_t* p, size_t e) const {
    const hn::Rebind<uint8_t, DF> d8;
    const hn::Rebind<uint16_t, DF> d16;
    const hn::Rebind<hwy::float16_t, DF> dh;
    const auto b = hn::PromoteTo(d16, hn::LoadU(d8, p + e));
    hn::Vec<decltype(d16)> h;
    if constexpr (kE4M3) {
      h = hn::Or(hn::ShiftLeft<8>(hn::And(b, hn::Set(d16, 0x80))), hn::ShiftLeft<7>(hn::And(b, hn::Set(d16, 0x7F))));
    } else {
      h = hn::ShiftLeft<8>(b);
    }
    return hn::PromoteTo(d, hn::BitCast(dh, h));
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
HWY_INLINE VF LoadHalves(DF d, const uint8_t* p, size_t i) {
  return F16Loader()(d, p, i);
}

// ------------------------------------------------------------------ score
// scores[r * lds + t] = sum_d q[r][d] * k[d][t] for rows [0, kRows), tokens of n_chunks.
template <class Loader, int kRows>
HWY_INLINE void ScoreRows(const Loader& load, const uint8_t* codes, int bt, int hd, const float* q,
                          int ldq, int n_chunks, float* scores, int lds) {
  const DF d;
  const size_t N = hn::Lanes(d);
  for (int c = 0; c < n_chunks; ++c) {
    VF acc[kRows][kMaxVec];
    for (int r = 0; r < kRows; ++r)
      for (size_t v = 0; v < kMaxVec; ++v) acc[r][v] = hn::Zero(d);
    for (int dim = 0; dim < hd; ++dim) {
      VF kv[kMaxVec];
      for (size_t v = 0; v < kMaxVec; ++v) kv[v] = load(d, codes, static_cast<size_t>(dim) * bt + c * kChunk + v * N);
      for (int r = 0; r < kRows; ++r) {
        const VF qb = hn::Set(d, q[r * ldq + dim]);
        for (size_t v = 0; v < kMaxVec; ++v) acc[r][v] = hn::MulAdd(qb, kv[v], acc[r][v]);
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (size_t v = 0; v < kMaxVec; ++v) hn::StoreU(acc[r][v], d, scores + r * lds + c * kChunk + v * N);
  }
}

template <class Loader>
HWY_NOINLINE void ScoreChannelMajor(const Loader& load, const uint8_t* codes, int bt, int hd, const float* q,
                                    int ldq, int rows, int n_chunks, float* scores, int lds) {
  int r = 0;
  for (; r + 8 <= rows; r += 8) ScoreRows<Loader, 8>(load, codes, bt, hd, q + r * ldq, ldq, n_chunks, scores + r * lds, lds);
  const float* qr = q + r * ldq;
  float* sr = scores + r * lds;
  switch (rows - r) {
    case 7: ScoreRows<Loader, 7>(load, codes, bt, hd, qr, ldq, n_chunks, sr, lds); break;
    case 6: ScoreRows<Loader, 6>(load, codes, bt, hd, qr, ldq, n_chunks, sr, lds); break;
    case 5: ScoreRows<Loader, 5>(load, codes, bt, hd, qr, ldq, n_chunks, sr, lds); break;
    case 4: ScoreRows<Loader, 4>(load, codes, bt, hd, qr, ldq, n_chunks, sr, lds); break;
    case 3: ScoreRows<Loader, 3>(load, codes, bt, hd, qr, ldq, n_chunks, sr, lds); break;
    case 2: ScoreRows<Loader, 2>(load, codes, bt, hd, qr, ldq, n_chunks, sr, lds); break;
    case 1: ScoreRows<Loader, 1>(load, codes, bt, hd, qr, ldq, n_chunks, sr, lds); break;
    default: break;
  }
}

// Per-token quantized keys (channel groups of g): for each group, a partial dot of the raw
// codes, then score += scale[g][t] * (partial - offset * qsum[g]) + zero[g][t] * qsum[g].
template <int kBits, int kRows>
HWY_INLINE void ScoreTokenGroupRows(const uint8_t* codes, const uint8_t* meta, size_t n_scales, bool symmetric,
                                    int bt, int hd, int g, const float* q, int ldq, const float* qsum,
                                    int n_chunks, float* scores, int lds) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const CodeLoader<kBits> load;
  const int groups = hd / g;
  const float offset = symmetric ? static_cast<float>(1 << (kBits - 1)) : 0.0f;
  for (int c = 0; c < n_chunks; ++c) {
    VF acc[kRows][kMaxVec];
    for (int r = 0; r < kRows; ++r)
      for (size_t v = 0; v < kMaxVec; ++v) acc[r][v] = hn::Zero(d);
    for (int gi = 0; gi < groups; ++gi) {
      VF part[kRows][kMaxVec];
      for (int r = 0; r < kRows; ++r)
        for (size_t v = 0; v < kMaxVec; ++v) part[r][v] = hn::Zero(d);
      for (int dim = gi * g; dim < (gi + 1) * g; ++dim) {
        VF kv[kMaxVec];
        for (size_t v = 0; v < kMaxVec; ++v) kv[v] = load(d, codes, static_cast<size_t>(dim) * bt + c * kChunk + v * N);
        for (int r = 0; r < kRows; ++r) {
          const VF qb = hn::Set(d, q[r * ldq + dim]);
          for (size_t v = 0; v < kMaxVec; ++v) part[r][v] = hn::MulAdd(qb, kv[v], part[r][v]);
        }
      }
      for (size_t v = 0; v < kMaxVec; ++v) {
        const size_t t0 = static_cast<size_t>(gi) * bt + c * kChunk + v * N;
        const VF sc = LoadHalves(d, meta, t0);
        const VF zr = symmetric ? hn::Zero(d) : LoadHalves(d, meta, n_scales + t0);
        for (int r = 0; r < kRows; ++r) {
          const float qs = qsum[r * groups + gi];
          const VF centered = hn::Sub(part[r][v], hn::Set(d, offset * qs));
          acc[r][v] = hn::MulAdd(sc, centered, hn::MulAdd(zr, hn::Set(d, qs), acc[r][v]));
        }
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (size_t v = 0; v < kMaxVec; ++v) hn::StoreU(acc[r][v], d, scores + r * lds + c * kChunk + v * N);
  }
}

template <int kBits>
HWY_NOINLINE void ScoreTokenGroups(const uint8_t* codes, const uint8_t* meta, size_t n_scales, bool symmetric,
                                   int bt, int hd, int g, const float* q, int ldq, const float* qsum, int rows,
                                   int n_chunks, float* scores, int lds) {
  const int groups = hd / g;
  int r = 0;
  for (; r + 4 <= rows; r += 4)
    ScoreTokenGroupRows<kBits, 4>(codes, meta, n_scales, symmetric, bt, hd, g, q + r * ldq, ldq, qsum + r * groups,
                                  n_chunks, scores + r * lds, lds);
  for (; r < rows; ++r)
    ScoreTokenGroupRows<kBits, 1>(codes, meta, n_scales, symmetric, bt, hd, g, q + r * ldq, ldq, qsum + r * groups,
                                  n_chunks, scores + r * lds, lds);
}

// ------------------------------------------------------------------ accumulate
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

// ------------------------------------------------------------------ per block dispatch
// Scratch of one task for the per-block query/weight transforms.
struct BlockScratch {
  HWY_ALIGN float q2[kMaxRows * kMaxHd];   // queries with per-block scales folded in
  HWY_ALIGN float p2[kMaxRows * kMaxBt];   // weights with per-token scales folded in
  HWY_ALIGN float part[kMaxRows * kMaxHd]; // per-channel V partial sums
  HWY_ALIGN float tile[kMaxHd * kMaxBt];   // pre-RoPE keys decoded and rotated
  float channel_scale[kMaxHd], channel_zero[kMaxHd];
  float cst[kMaxRows];
};

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

// Factor by which a part's stored scale must be multiplied (fp8 e4m3 loads as value/256).
HWY_INLINE float Fp8Scale(const KvFormat& f, const uint8_t* meta) {
  return Half(meta, 0) * (f.type == ElemType::kFp8E4M3 ? 256.0f : 1.0f);
}

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
    const float offset = f.symmetric ? static_cast<float>(1 << (f.bits() - 1)) : 0.0f;
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

// scores[r][t] for the first n_chunks * 16 tokens of a block. qp: [rows][hd] prepared
// queries; qsum: [rows][groups] sums of qp over each channel group (per-token int keys).
inline void ScoreBlock(const BlockKind& kind, const uint8_t* kpart, int bt, int hd, const float* qp,
                       const float* qsum, int rows, int n_chunks, const RopeTables* rope, int first_pos,
                       float* scores, int lds, BlockScratch& s) {
  const KvFormat& f = kind.k;
  const uint8_t* meta = kpart + kind.k_layout.meta_offset;
  if (rope) {
    DecodeRopeTile(kind, kpart, bt, hd, first_pos, *rope, s.tile);
    ScoreChannelMajor(F32Loader(), reinterpret_cast<const uint8_t*>(s.tile), bt, hd, qp, hd, rows, n_chunks, scores, lds);
    return;
  }
  if (f.is_float()) {
    WithFloatLoader(f.type, [&](auto load) { ScoreChannelMajor(load, kpart, bt, hd, qp, hd, rows, n_chunks, scores, lds); });
    return;
  }
  if (f.granularity == Granularity::kBlock) {  // fp8: fold the part's scale into the query
    const float sc = Fp8Scale(f, meta);
    for (int i = 0; i < rows * hd; ++i) s.q2[i] = qp[i] * sc;
    WithFloatLoader(f.type, [&](auto load) { ScoreChannelMajor(load, kpart, bt, hd, s.q2, hd, rows, n_chunks, scores, lds); });
    return;
  }
  if (f.granularity == Granularity::kChannel) {
    // q2[r][d] = q[r][d] * scale[d]; constant per row: sum_d q[r][d] * (zero[d] - offset * scale[d]).
    const float offset = f.symmetric ? static_cast<float>(1 << (f.bits() - 1)) : 0.0f;
    for (int dim = 0; dim < hd; ++dim) {
      s.channel_scale[dim] = Half(meta, dim);
      s.channel_zero[dim] = (f.symmetric ? 0.0f : Half(meta, hd + dim)) - offset * s.channel_scale[dim];
    }
    for (int r = 0; r < rows; ++r) {
      float c = 0;
      for (int dim = 0; dim < hd; ++dim) {
        s.q2[r * hd + dim] = qp[r * hd + dim] * s.channel_scale[dim];
        c += qp[r * hd + dim] * s.channel_zero[dim];
      }
      s.cst[r] = c;
    }
    WithIntBits(f.bits(), [&](auto bits) {
      ScoreChannelMajor(CodeLoader<decltype(bits)::value>(), kpart, bt, hd, s.q2, hd, rows, n_chunks, scores, lds);
    });
    for (int r = 0; r < rows; ++r)
      for (int t = 0; t < n_chunks * kChunk; ++t) scores[r * lds + t] += s.cst[r];
    return;
  }
  const int g = f.group_size(hd);
  const size_t n_scales = static_cast<size_t>(bt) * (hd / g);
  WithIntBits(f.bits(), [&](auto bits) {
    ScoreTokenGroups<decltype(bits)::value>(kpart, meta, n_scales, f.symmetric, bt, hd, g, qp, hd, qsum, rows,
                                            n_chunks, scores, lds);
  });
}

// acc[r] += sum_{t < n_tok} p[r][t] v_t for one block's V part.
inline void AccumulateBlock(const BlockKind& kind, const uint8_t* vpart, int bt, int hd, const float* p, int ldp,
                            int rows, int n_tok, float* acc, BlockScratch& s) {
  const KvFormat& f = kind.v;
  const uint8_t* meta = vpart + kind.v_layout.meta_offset;
  if (f.is_float()) {
    WithFloatLoader(f.type, [&](auto load) { AccumTokenMajor(load, vpart, hd, 0, hd, p, ldp, rows, n_tok, acc, hd); });
    return;
  }
  if (f.granularity == Granularity::kBlock) {  // fp8: fold the part's scale into the weights
    const float sc = Fp8Scale(f, meta);
    for (int r = 0; r < rows; ++r)
      for (int t = 0; t < n_tok; ++t) s.p2[r * kMaxBt + t] = p[r * ldp + t] * sc;
    WithFloatLoader(f.type, [&](auto load) { AccumTokenMajor(load, vpart, hd, 0, hd, s.p2, kMaxBt, rows, n_tok, acc, hd); });
    return;
  }
  const float offset = f.symmetric ? static_cast<float>(1 << (f.bits() - 1)) : 0.0f;
  if (f.granularity == Granularity::kChannel) {
    // acc[r][d] += scale[d] * sum_t p[r][t] code[t][d] + (zero[d] - offset * scale[d]) * sum_t p[r][t]
    std::fill(s.part, s.part + rows * hd, 0.0f);
    WithIntBits(f.bits(), [&](auto bits) {
      AccumTokenMajor(CodeLoader<decltype(bits)::value>(), vpart, hd, 0, hd, p, ldp, rows, n_tok, s.part, hd);
    });
    for (int r = 0; r < rows; ++r) {
      float psum = 0;
      for (int t = 0; t < n_tok; ++t) psum += p[r * ldp + t];
      for (int dim = 0; dim < hd; ++dim) {
        const float sc = Half(meta, dim), z = (f.symmetric ? 0.0f : Half(meta, hd + dim)) - offset * sc;
        acc[r * hd + dim] += sc * s.part[r * hd + dim] + z * psum;
      }
    }
    return;
  }
  // Per-token groups: p2[r][t] = p[r][t] * scale[t][g]; acc[r][group] += sum_t p2 code + const.
  const int g = f.group_size(hd), groups = hd / g;
  const size_t n_scales = static_cast<size_t>(bt) * groups;
  for (int gi = 0; gi < groups; ++gi) {
    for (int r = 0; r < rows; ++r) {
      float c = 0;
      for (int t = 0; t < n_tok; ++t) {
        const float sc = Half(meta, static_cast<size_t>(t) * groups + gi);
        const float z = (f.symmetric ? 0.0f : Half(meta, n_scales + static_cast<size_t>(t) * groups + gi)) - offset * sc;
        s.p2[r * kMaxBt + t] = p[r * ldp + t] * sc;
        c += p[r * ldp + t] * z;
      }
      s.cst[r] = c;
    }
    WithIntBits(f.bits(), [&](auto bits) {
      AccumTokenMajor(CodeLoader<decltype(bits)::value>(), vpart, hd, gi * g, (gi + 1) * g, s.p2, kMaxBt, rows,
                      n_tok, acc, hd);
    });
    for (int r = 0; r < rows; ++r)
      for (int dim = gi * g; dim < (gi + 1) * g; ++dim) acc[r * hd + dim] += s.cst[r];
  }
}

// ------------------------------------------------------------------ driver
// Online softmax of one task over the blocks of its key range.
inline void AttnTaskImpl(const AttnTask& t, AttnPartial out) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const DI di;
  const int rows = t.n_q_tokens * t.group;
  const int bt = t.block_tokens;
  const int hd = t.head_dim;
  static thread_local BlockScratch scratch;  // 0.7 MB per thread: too large for the stack
  HWY_ALIGN float scores[kMaxRows * kMaxBt];
  const int lds = bt;
  const float kNegInf = -std::numeric_limits<float>::infinity();
  // Prepare the queries once: contiguous rows, softmax scale folded in, rotated with the keys.
  HWY_ALIGN float qp[kMaxRows * kMaxHd];
  for (int r = 0; r < rows; ++r) {
    const float* src = t.q + (r / t.group) * t.ldq + (r % t.group) * hd;
    for (int j = 0; j < hd; ++j) qp[r * hd + j] = src[j] * t.scale;
    if (t.k_rotation) t.k_rotation->Apply(qp + r * hd);
  }
  // Sums of the query over each channel group, for per-token integer keys.
  float qsum[kMaxRows * (kMaxHd / 16)];
  const KvFormat& kf = t.sealed->k;
  if (!t.rope && kf.granularity == Granularity::kToken) {
    const int g = kf.group_size(hd), groups = hd / g;
    for (int r = 0; r < rows; ++r)
      for (int gi = 0; gi < groups; ++gi) {
        float s = 0;
        for (int j = gi * g; j < (gi + 1) * g; ++j) s += qp[r * hd + j];
        qsum[r * groups + gi] = s;
      }
  }
  for (int r = 0; r < rows; ++r) {
    out.m[r] = kNegInf;
    out.l[r] = 0.0f;
    std::fill(out.acc + r * hd, out.acc + (r + 1) * hd, 0.0f);
  }
  if (t.key_end <= t.key_begin) return;
  // Visible key range of query token i: [lo(i), hi(i)).
  auto lo_of = [&](int i) {
    const int s = t.first_q_slot + i;
    return std::max(t.key_begin, t.window > 0 ? s - t.window + 1 : 0);
  };
  auto hi_of = [&](int i) { return std::min(t.key_end, t.first_q_slot + i + 1); };
  const int first_block = t.key_begin / bt, last_block = (t.key_end - 1) / bt;
  for (int b = first_block; b <= last_block; ++b) {
    const int b0 = b * bt;
    // Tokens are sorted by slot, so the union of visible ranges in this block is
    // [lo(0), hi(last)) clipped to the block.
    const int tok_lo = std::max(lo_of(0), b0) - b0;
    const int tok_hi = std::min(hi_of(t.n_q_tokens - 1), b0 + bt) - b0;
    if (tok_hi <= tok_lo) continue;
    const int n_chunks = (tok_hi + kChunk - 1) / kChunk;
    const uint8_t* block = t.blocks[b];
    const BlockKind& kind = b < t.n_sealed ? *t.sealed : *t.staged;
    ScoreBlock(kind, block, bt, hd, qp, qsum, rows, n_chunks, t.rope, b0, scores, lds, scratch);
    // Mask, then update the running softmax of each row; scores become probabilities.
    for (int r = 0; r < rows; ++r) {
      const int i = r / t.group;
      const int lo = std::max(lo_of(i), b0) - b0, hi = std::min(hi_of(i), b0 + bt) - b0;
      float* s = scores + r * lds;
      if (hi <= lo) {
        std::fill(s, s + n_chunks * kChunk, 0.0f);
        continue;
      }
      VF vmax = hn::Set(d, kNegInf);
      for (int c = 0; c < n_chunks * kChunk; c += N) {
        const auto idx = hn::Iota(di, c);
        const auto keep = hn::RebindMask(d, hn::And(hn::Gt(idx, hn::Set(di, lo - 1)), hn::Lt(idx, hn::Set(di, hi))));
        const VF v = hn::IfThenElse(keep, hn::LoadU(d, s + c), hn::Set(d, kNegInf));
        hn::StoreU(v, d, s + c);
        vmax = hn::Max(vmax, v);
      }
      const float bmax = hn::GetLane(hn::MaxOfLanes(d, vmax));
      const float m_new = std::max(out.m[r], bmax);
      const float corr = std::exp(out.m[r] - m_new);  // 0 when m was -inf
      VF vsum = hn::Zero(d);
      const VF vm = hn::Set(d, m_new);
      for (int c = 0; c < n_chunks * kChunk; c += N) {
        const VF p = hn::Exp(d, hn::Sub(hn::LoadU(d, s + c), vm));  // exp(-inf) = 0
        hn::StoreU(p, d, s + c);
        vsum = hn::Add(vsum, p);
      }
      out.l[r] = out.l[r] * corr + hn::GetLane(hn::SumOfLanes(d, vsum));
      out.m[r] = m_new;
      if (corr != 1.0f) {
        float* a = out.acc + r * hd;
        for (int j = 0; j < hd; ++j) a[j] *= corr;
      }
    }
    AccumulateBlock(kind, block + kind.v_offset, bt, hd, scores, lds, rows, tok_hi, out.acc, scratch);
  }
}

}  // namespace slimkv::kv::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
