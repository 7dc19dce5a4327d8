// Per-target pieces every codec family's kernels share, and the interface between the
// attention driver (attention-inl.h) and the families' kernels (codecs/<family>-inl.h):
//
//   KeyKernel.prepare   once per task: the kind's key state from the prepared queries
//   KeyKernel.score     per chunk: scores[r][t] = q_r . k_t for the chunk's tokens
//   ValueKernel.accumulate  per chunk: acc[r][:] += sum_t p[r][t] v_t
//
// A chunk is a run of consecutive blocks of one kind (codecs/registry-inl.h chooses both
// kernels once per task and kind; the driver calls them once per chunk, and everything below
// a kernel is direct calls). Included once per Highway target.
#if defined(SLIMKV_KV_CODECS_KERNELS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_KV_CODECS_KERNELS_INL_H_
#undef SLIMKV_KV_CODECS_KERNELS_INL_H_
#else
#define SLIMKV_KV_CODECS_KERNELS_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/half.h"
#include "hwy/highway.h"
#include "kv/attention.h"
#include "kv/attention_scratch.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::kv::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// VNNI intrinsics need their target feature on every function that inlines them; Highway
// 1.0.3's AVX3_DL target string does not name avx512vnni, so the attention functions add it.
#undef SLIMKV_KV_VNNI
#undef SLIMKV_KV_ATTR
#if HWY_TARGET == HWY_AVX3_DL
#define SLIMKV_KV_VNNI 1
#define SLIMKV_KV_ATTR __attribute__((target(HWY_TARGET_STR ",avx512vnni")))
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

// ------------------------------------------------------------------ kernel interface
// A run of consecutive blocks of one kind; token i of the chunk is slot i % bt of block i / bt.
struct ChunkView {
  const uint8_t* const* blocks = nullptr;  // [n_blocks] block starts (K part; V part at kind->v_offset)
  int n_blocks = 0;
  int n_valid = 0;     // tokens [0, n_valid) hold keys and values; later slots of the last block do not
  int n_tok = 0;       // tokens to score: n_valid rounded up to 16 (the driver masks the rest)
  int first_slot = 0;  // stream slot of token 0 (the RoPE position of keys stored before RoPE)
};
// Tokens [0, n) of the chunk that fall in block i.
HWY_INLINE int BlockShare(int i, int bt, int n) { return std::max(0, std::min(bt, n - i * bt)); }

struct KernelArgs;
using PrepareFn = void (*)(const KernelArgs& a);
// scores[r][t] for the chunk's tokens [0, c.n_tok) (rows lds floats apart).
using ScoreFn = void (*)(const KernelArgs& a, const ChunkView& c, float* scores, int lds);
// acc[r][0, hd) += sum over tokens [0, c.n_valid) of p[r][t] v_t; p (rows ldp apart) is 0 for
// tokens a row does not see, pmax[r] >= every p[r][t] (0: the row sees none of the chunk).
using AccumFn = void (*)(const KernelArgs& a, const ChunkView& c, const float* p, int ldp, const float* pmax,
                         float* acc);
// The K part of one block as fp32 [hd][bt] (keys stored before RoPE are rotated in a tile).
using DecodeTileFn = void (*)(const KernelArgs& a, const uint8_t* kpart, float* tile);

struct KernelArgs {
  const BlockKind* kind = nullptr;
  int bt = 0, hd = 0, rows = 0;
  const float* q = nullptr;          // prepared queries [rows][hd]: softmax scale and log2(e)
                                     // folded in, rotated like the keys
  void* key_state = nullptr;         // the kind's key kernel state (kKeyStateBytes)
  uint8_t* call = nullptr;           // one kernel call's space (kCallBytes)
  const RopeTables* rope = nullptr;  // keys stored before RoPE
  DecodeTileFn decode_tile = nullptr;
};

struct KeyKernel {
  PrepareFn prepare = nullptr;  // may be null: nothing to prepare
  ScoreFn score = nullptr;
  DecodeTileFn decode_tile = nullptr;  // null: the family keeps no keys before RoPE
};
struct ValueKernel {
  AccumFn accumulate = nullptr;
};

// A family's per-task or per-call struct laid out in the scratch's raw space.
template <class T>
HWY_INLINE T& StateAs(void* p) {
  static_assert(sizeof(T) <= kKeyStateBytes, "key state too large for BlockScratch::key_state");
  return *static_cast<T*>(p);
}
template <class T>
HWY_INLINE T& CallAs(uint8_t* p) {
  static_assert(sizeof(T) <= kCallBytes, "call space too large for BlockScratch::call");
  return *reinterpret_cast<T*>(p);
}

// ------------------------------------------------------------------ element loaders
// Each loader returns N consecutive elements (e % N == 0) of a part's array as floats: element
// e of a plain array, which is token t, channel c (packed codes find it by those).

struct F32Loader {
  HWY_INLINE VF operator()(DF d, const uint8_t* p, size_t e, int = 0, int = 0) const {
    return hn::LoadU(d, reinterpret_cast<const float*>(p) + e);
  }
};
struct F16Loader {
  HWY_INLINE VF operator()(DF d, const uint8_t* p, size_t e, int = 0, int = 0) const {
    const hn::Rebind<hwy::float16_t, DF> dh;
    return hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p) + e));
  }
};
struct BF16Loader {
  HWY_INLINE VF operator()(DF d, const uint8_t* p, size_t e, int = 0, int = 0) const {
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
  HWY_INLINE VF operator()(DF d, const uint8_t* p, size_t e, int = 0, int = 0) const {
    const hn::Rebind<uint8_t, DF> d8;
    const auto b = hn::PromoteTo(DU(), hn::LoadU(d8, p + e));
    const auto sign = hn::ShiftLeft<24>(hn::And(b, hn::Set(DU(), 0x80u)));
    const auto mag = hn::ShiftLeft < kE4M3 ? 20 : 21 > (hn::And(b, hn::Set(DU(), 0x7Fu)));
    return hn::Mul(hn::BitCast(d, hn::Or(sign, mag)), hn::Set(d, kE4M3 ? 0x1p120f : 0x1p112f));
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
      for (int v = 0; v < kVecs; ++v)
        kv[v] = load(d, codes, static_cast<size_t>(dim + s) * bt + t0 + v * N, t0 + v * N, dim + s);
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

// Tokens [0, n_tok) (a multiple of 16) of a K array (loaded by channel, 16 tokens a vector), every row.
template <class Loader>
HWY_NOINLINE void ScoreChannelMajor(const Loader& load, const uint8_t* codes, int bt, int hd, const float* q,
                                    int ldq, int rows, int n_tok, float* scores, int lds) {
  int r = 0;
  for (; r + 4 <= rows; r += 4)
    ScoreRows<Loader, 4>(load, codes, bt, hd, q + r * ldq, ldq, n_tok, scores + r * lds, lds);
  const float* qr = q + r * ldq;
  float* sr = scores + r * lds;
  switch (rows - r) {
    case 3:
      ScoreRows<Loader, 3>(load, codes, bt, hd, qr, ldq, n_tok, sr, lds);
      break;
    case 2:
      ScoreRows<Loader, 2>(load, codes, bt, hd, qr, ldq, n_tok, sr, lds);
      break;
    case 1:
      ScoreRows<Loader, 1>(load, codes, bt, hd, qr, ldq, n_tok, sr, lds);
      break;
    default:
      break;
  }
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
    for (int j = 0; j < kVecs; ++j)
      vv[j] = load(d, codes, static_cast<size_t>(t) * hd + dim0 + j * N, t, dim0 + j * N);
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
HWY_INLINE void AccumRowsDims(const Loader& load, const uint8_t* codes, int hd, int dim0, int dim1,
                              const float* p, int ldp, int n_tok, float* acc, int lda) {
  const int N = static_cast<int>(hn::Lanes(DF()));
  const int vecs = (dim1 - dim0) / N;
  int j = 0;
  for (; j + 4 <= vecs; j += 4)
    AccumRows<Loader, kRows, 4>(load, codes, hd, dim0 + j * N, p, ldp, n_tok, acc, lda);
  switch (vecs - j) {
    case 3:
      AccumRows<Loader, kRows, 3>(load, codes, hd, dim0 + j * N, p, ldp, n_tok, acc, lda);
      break;
    case 2:
      AccumRows<Loader, kRows, 2>(load, codes, hd, dim0 + j * N, p, ldp, n_tok, acc, lda);
      break;
    case 1:
      AccumRows<Loader, kRows, 1>(load, codes, hd, dim0 + j * N, p, ldp, n_tok, acc, lda);
      break;
    default:
      break;
  }
}

template <class Loader>
HWY_NOINLINE void AccumTokenMajor(const Loader& load, const uint8_t* codes, int hd, int dim0, int dim1,
                                  const float* p, int ldp, int rows, int n_tok, float* acc, int lda) {
  int r = 0;
  for (; r + 4 <= rows; r += 4)
    AccumRowsDims<Loader, 4>(load, codes, hd, dim0, dim1, p + r * ldp, ldp, n_tok, acc + r * lda, lda);
  switch (rows - r) {
    case 3:
      AccumRowsDims<Loader, 3>(load, codes, hd, dim0, dim1, p + r * ldp, ldp, n_tok, acc + r * lda, lda);
      break;
    case 2:
      AccumRowsDims<Loader, 2>(load, codes, hd, dim0, dim1, p + r * ldp, ldp, n_tok, acc + r * lda, lda);
      break;
    case 1:
      AccumRowsDims<Loader, 1>(load, codes, hd, dim0, dim1, p + r * ldp, ldp, n_tok, acc + r * lda, lda);
      break;
    default:
      break;
  }
}

}  // namespace slimkv::kv::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
