// Attention kernels of the float family (float_codec.h: f32, f16, bf16, fp8), included once
// per Highway target through codecs/registry-inl.h.
//   keys:   K codes [hd][bt]: 16 tokens of one channel are one vector, multiplied by a
//           broadcast query element (ScoreChannelMajor); fp8 scales the block's scores.
//   values: V codes [bt][hd]: acc[r] += p[r][t] v_t row by row (AccumTokenMajor); fp8 folds
//           the part's scale into the weights.
#if defined(SLIMKV_KV_CODECS_FLOAT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_KV_CODECS_FLOAT_INL_H_
#undef SLIMKV_KV_CODECS_FLOAT_INL_H_
#else
#define SLIMKV_KV_CODECS_FLOAT_INL_H_
#endif

#include "kv/codecs/kernels-inl.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::kv::HWY_NAMESPACE {
namespace float_codec {

// The scale of an fp8 part (its only metadata, after the codes).
HWY_INLINE float PartScale(const uint8_t* part, size_t data_bytes) { return Half(part + data_bytes, 0); }

template <class Loader, bool kScaled>
void ScoreKeys(const KernelArgs& a, const ChunkView& c, float* scores, int lds) {
  const DF d;
  const size_t N = hn::Lanes(d);
  for (int i = 0; i < c.n_blocks; ++i) {
    const int n = BlockShare(i, a.bt, c.n_tok);
    if (n == 0) break;
    float* s = scores + i * a.bt;
    ScoreChannelMajor(Loader(), c.blocks[i], a.bt, a.hd, a.q, a.hd, a.rows, n, s, lds);
    if constexpr (kScaled) {
      const VF sc = hn::Set(d, PartScale(c.blocks[i], a.kind->k_layout.data_bytes));
      for (int r = 0; r < a.rows; ++r)
        for (int t = 0; t < n; t += static_cast<int>(N))
          hn::StoreU(hn::Mul(hn::LoadU(d, s + r * lds + t), sc), d, s + r * lds + t);
    }
  }
}

// Weights of one block times an fp8 part's scale: [rows][bt] in the call space.
struct Fp8Call {
  alignas(64) float p2[kMaxRows * kMaxBt];
};

template <class Loader, bool kScaled>
void AccumulateValues(const KernelArgs& a, const ChunkView& c, const float* p, int ldp, const float*,
                      float* acc) {
  const DF d;
  const size_t N = hn::Lanes(d);
  for (int i = 0; i < c.n_blocks; ++i) {
    const int n = BlockShare(i, a.bt, c.n_valid);
    if (n == 0) break;
    const uint8_t* vpart = c.blocks[i] + a.kind->v_offset;
    const float* pi = p + i * a.bt;
    int ld = ldp;
    if constexpr (kScaled) {
      float* p2 = CallAs<Fp8Call>(a.call).p2;
      const VF sc = hn::Set(d, PartScale(vpart, a.kind->v_layout.data_bytes));
      for (int r = 0; r < a.rows; ++r)
        for (int t = 0; t < n; t += static_cast<int>(N))
          hn::StoreU(hn::Mul(hn::LoadU(d, pi + r * ldp + t), sc), d, p2 + r * kMaxBt + t);
      pi = p2;
      ld = kMaxBt;
    }
    AccumTokenMajor(Loader(), vpart, a.hd, 0, a.hd, pi, ld, a.rows, n, acc, a.hd);
  }
}

template <class Loader, bool kScaled>
void DecodeTile(const KernelArgs& a, const uint8_t* kpart, float* tile) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF s = hn::Set(d, kScaled ? PartScale(kpart, a.kind->k_layout.data_bytes) : 1.0f);
  for (size_t e = 0; e < static_cast<size_t>(a.hd) * a.bt; e += N)
    hn::StoreU(hn::Mul(Loader()(d, kpart, e), s), d, tile + e);
}

template <class Loader, bool kScaled>
HWY_INLINE void Set(KeyKernel* k, ValueKernel* v) {
  if (k) *k = {nullptr, ScoreKeys<Loader, kScaled>, DecodeTile<Loader, kScaled>};
  if (v) *v = {AccumulateValues<Loader, kScaled>};
}

// The kernels of a float format (k or v may be null).
inline bool Select(const KvFormat& f, KeyKernel* k, ValueKernel* v) {
  switch (f.type) {
    case ElemType::kF32:
      Set<F32Loader, false>(k, v);
      return true;
    case ElemType::kF16:
      Set<F16Loader, false>(k, v);
      return true;
    case ElemType::kBF16:
      Set<BF16Loader, false>(k, v);
      return true;
    case ElemType::kFp8E4M3:
      Set<Fp8Loader<true>, true>(k, v);
      return true;
    case ElemType::kFp8E5M2:
      Set<Fp8Loader<false>, true>(k, v);
      return true;
    default:
      return false;
  }
}

}  // namespace float_codec
}  // namespace slimkv::kv::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
