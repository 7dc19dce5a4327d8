// SIMD decoders of GGUF's quantized blocks (WeightFormat::kGgml), one trait per block type,
// included once per Highway target by the files that use them (matmul.cc, block_decode.cc).
//
// Every type is described the same way (layouts: gguf/dequant.h):
//   kElems, kBytes   elements and bytes of one block (32 or 256; BF16 is read 32 at a time)
//   kSub             elements per scale: a block is kElems / kSub sub-blocks
//   kMin             whether a sub-block has an offset m (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K)
//   kOffset          what ggml subtracts from the raw code before scaling (Q4_0: 8, ...)
//   kHalfScales      the block starts with its fp16 scale d (and, with kMin, its fp16 min):
//                    the scales of many blocks are then converted in one vector (Scales32)
//   Scales(b, s, m)  the float scale s[j] and offset m[j] of each sub-block j, computed from
//                    the block's fields exactly as ggml does (d*sc in float, then ...)
//   Raw(d, b, j, e)  the raw codes of elements [e, e + N) of sub-block j as float lanes
//                    (e a multiple of the vector length N; N divides 16 on every target)
// The weight is s[j] * (raw - kOffset) - m[j] in ggml's order and roundings, so Dequant
// below is bit-exact with gguf::Dequantize (tests/ops/block_decode_test.cc, every target).
// The matmul's stream kernel instead folds the offset into the min (StreamScales): s * raw -
// (m + kOffset * s), one rounding away from ggml's value and one operation less per vector.
// Codes are read lane by lane from runs of consecutive bytes: every ggml layout puts element
// l of a run in byte l, at a fixed shift, which is what makes them vectorisable.
#if defined(SLIMKV_OPS_BLOCK_DECODE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_OPS_BLOCK_DECODE_INL_H_
#undef SLIMKV_OPS_BLOCK_DECODE_INL_H_
#else
#define SLIMKV_OPS_BLOCK_DECODE_INL_H_
#endif

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "gguf/dequant.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::ops::HWY_NAMESPACE {
namespace blocks {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
using DU = hn::Rebind<uint32_t, DF>;
using DI = hn::Rebind<int32_t, DF>;
using VU = hn::Vec<DU>;
using VI = hn::Vec<DI>;

// fp16 field at p (any alignment) to float.
HWY_INLINE float Half(const uint8_t* p) {
  const hn::CappedTag<float, 1> d1;
  const hn::Rebind<hwy::float16_t, decltype(d1)> dh;
  return hn::GetLane(hn::PromoteTo(d1, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p))));
}
HWY_INLINE uint32_t U32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
HWY_INLINE float F(int v) { return static_cast<float>(v); }

// N bytes at p as unsigned / signed 32-bit lanes.
HWY_INLINE VU Bytes(const uint8_t* p) { return hn::PromoteTo(DU(), hn::LoadU(hn::Rebind<uint8_t, DF>(), p)); }
HWY_INLINE VI SignedBytes(const uint8_t* p) {
  return hn::PromoteTo(DI(), hn::LoadU(hn::Rebind<int8_t, DF>(), reinterpret_cast<const int8_t*>(p)));
}
HWY_INLINE VF ToFloat(VU v) { return hn::ConvertTo(DF(), hn::BitCast(DI(), v)); }
HWY_INLINE VF ToFloat(VI v) { return hn::ConvertTo(DF(), v); }
// Bits [shift, shift + width) of each lane.
template <uint32_t kMask>
HWY_INLINE VU Field(VU v, int shift) {
  return hn::And(hn::ShiftRightSame(v, shift), hn::Set(DU(), kMask));
}
// Element e of a 32-element Q4_0-style run is in byte e % 16, low nibble below 16, high above.
HWY_INLINE VU Nibble32(const uint8_t* qs, size_t e) { return Field<15>(Bytes(qs + e % 16), e < 16 ? 0 : 4); }
// out[k] = scale * float(bytes[k]) for k < n (a multiple of 8), in vectors of at most 8
// lanes: the per-sub-block scales of the K-quants, computed as ggml computes them (one
// rounded product each). T is uint8_t or int8_t.
template <typename T>
HWY_INLINE void ScaleBytes(const T* bytes, int n, float scale, float* out) {
  const hn::CappedTag<float, 8> d8;
  const hn::Rebind<int32_t, decltype(d8)> di8;
  const hn::Rebind<T, decltype(d8)> dt;
  for (int k = 0; k < n; k += static_cast<int>(hn::Lanes(d8))) {
    hn::Vec<decltype(di8)> v;
    if constexpr (hwy::IsSigned<T>()) {
      v = hn::PromoteTo(di8, hn::LoadU(dt, bytes + k));
    } else {
      v = hn::BitCast(di8, hn::PromoteTo(hn::Rebind<uint32_t, decltype(d8)>(), hn::LoadU(dt, bytes + k)));
    }
    hn::StoreU(hn::Mul(hn::Set(d8, scale), hn::ConvertTo(d8, v)), d8, out + k);
  }
}

// Q4_K/Q5_K's twelve scale bytes as 8 six-bit scales then 8 six-bit mins, one byte each
// (ggml's kmask unpacking of get_scale_min_k4, four at a time).
HWY_INLINE void UnpackScalesK4(const uint8_t* scales, uint8_t* out /* [16] */) {
  constexpr uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
  uint32_t u[4];
  std::memcpy(u, scales, 12);
  u[3] = ((u[2] >> 4) & kLow4) | (((u[1] >> 6) & kLow2) << 4);  // mins 4..7
  const uint32_t mins_low = u[1] & kLow6;                       // mins 0..3
  u[1] = (u[2] & kLow4) | (((u[0] >> 6) & kLow2) << 4);         // scales 4..7
  u[2] = mins_low;
  u[0] &= kLow6;  // scales 0..3
  std::memcpy(out, u, 16);
}

// Q3_K's twelve scale bytes as 16 six-bit scales, one byte each, still biased by 32
// (ggml's unpacking in dequantize_row_q3_K, four at a time).
HWY_INLINE void UnpackScalesK3(const uint8_t* scales, uint8_t* out /* [16] */) {
  constexpr uint32_t kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
  uint32_t a[3], u[4];
  std::memcpy(a, scales, 12);
  u[0] = (a[0] & kLow4) | (((a[2] >> 0) & kLow2) << 4);
  u[1] = (a[1] & kLow4) | (((a[2] >> 2) & kLow2) << 4);
  u[2] = ((a[0] >> 4) & kLow4) | (((a[2] >> 4) & kLow2) << 4);
  u[3] = ((a[1] >> 4) & kLow4) | (((a[2] >> 6) & kLow2) << 4);
  std::memcpy(out, u, 16);
}

// IQ4_NL's levels, looked up by nibble.
HWY_INLINE VF Iq4Level(VU nibble) {
  alignas(64) static constexpr float kLevels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                    1,    13,   25,  38,  53,  69,  89,  113};
  return hn::GatherIndex(DF(), kLevels, hn::BitCast(DI(), nibble));
}

// fp16 bit patterns in the low 16 bits of u32 lanes, as floats.
HWY_INLINE VF HalvesToFloat(VU halves) {
  const hn::Rebind<uint16_t, DF> d16;
  const hn::Rebind<hwy::float16_t, DF> dh;
  return hn::PromoteTo(DF(), hn::BitCast(dh, hn::DemoteTo(d16, hn::BitCast(DI(), halves))));
}

// The fp16 fields at offsets 0 and 2 of N consecutive blocks `stride` bytes apart, as
// floats, the second negated (lo[i], -hi[i] of block i): one gather and two conversions.
HWY_INLINE void HalvesOfBlocks(const uint8_t* p, int stride, float* lo, float* neg_hi) {
  const DF d;
  const DI di;
  const VI offsets = hn::Mul(hn::Iota(di, 0), hn::Set(di, stride));
  const VU words = hn::BitCast(DU(), hn::GatherOffset(di, reinterpret_cast<const int32_t*>(p), offsets));
  hn::StoreU(HalvesToFloat(hn::And(words, hn::Set(DU(), 0xFFFF))), d, lo);
  if (neg_hi) hn::StoreU(hn::Neg(HalvesToFloat(hn::ShiftRight<16>(words))), d, neg_hi);
}

struct Q4_0 {  // d, qs[16]: d * (q - 8)
  static constexpr int kElems = 32, kBytes = 18, kSub = 32, kOffset = 8;
  static constexpr bool kMin = false, kHalfScales = true;
  static HWY_INLINE void Scales(const uint8_t* b, float* s, float* m) { s[0] = Half(b); }
  static HWY_INLINE VF Raw(DF, const uint8_t* b, int, size_t e) { return ToFloat(Nibble32(b + 2, e)); }
};

struct Q4_1 {  // d, m, qs[16]: d * q + m
  static constexpr int kElems = 32, kBytes = 20, kSub = 32, kOffset = 0;
  static constexpr bool kMin = true, kHalfScales = true;
  static HWY_INLINE void Scales(const uint8_t* b, float* s, float* m) {
    s[0] = Half(b);
    m[0] = -Half(b + 2);
  }
  static HWY_INLINE VF Raw(DF, const uint8_t* b, int, size_t e) { return ToFloat(Nibble32(b + 4, e)); }
};

// Q5 codes: the nibble plus bit e of the u32 qh as the fifth bit.
HWY_INLINE VU Q5Code(const uint8_t* qs, uint32_t qh, size_t e) {
  const VU bit = hn::And(hn::Set(DU(), qh) >> hn::Iota(DU(), static_cast<uint32_t>(e)), hn::Set(DU(), 1));
  return hn::Or(Nibble32(qs, e), hn::ShiftLeft<4>(bit));
}

struct Q5_0 {  // d, qh, qs[16]: d * (q - 16)
  static constexpr int kElems = 32, kBytes = 22, kSub = 32, kOffset = 16;
  static constexpr bool kMin = false, kHalfScales = true;
  static HWY_INLINE void Scales(const uint8_t* b, float* s, float* m) { s[0] = Half(b); }
  static HWY_INLINE VF Raw(DF, const uint8_t* b, int, size_t e) {
    return ToFloat(Q5Code(b + 6, U32(b + 2), e));
  }
};

struct Q5_1 {  // d, m, qh, qs[16]: d * q + m
  static constexpr int kElems = 32, kBytes = 24, kSub = 32, kOffset = 0;
  static constexpr bool kMin = true, kHalfScales = true;
  static HWY_INLINE void Scales(const uint8_t* b, float* s, float* m) {
    s[0] = Half(b);
    m[0] = -Half(b + 2);
  }
  static HWY_INLINE VF Raw(DF, const uint8_t* b, int, size_t e) {
    return ToFloat(Q5Code(b + 8, U32(b + 4), e));
  }
};

struct Q8_0 {  // d, qs[32] int8: d * q
  static constexpr int kElems = 32, kBytes = 34, kSub = 32, kOffset = 0;
  static constexpr bool kMin = false, kHalfScales = true;
  static HWY_INLINE void Scales(const uint8_t* b, float* s, float* m) { s[0] = Half(b); }
  static HWY_INLINE VF Raw(DF, const uint8_t* b, int, size_t e) { return ToFloat(SignedBytes(b + 2 + e)); }
};

struct IQ4_NL {  // d, qs[16]: d * level[q]
  static constexpr int kElems = 32, kBytes = 18, kSub = 32, kOffset = 0;
  static constexpr bool kMin = false, kHalfScales = true;
  static HWY_INLINE void Scales(const uint8_t* b, float* s, float* m) { s[0] = Half(b); }
  static HWY_INLINE VF Raw(DF, const uint8_t* b, int, size_t e) { return Iq4Level(Nibble32(b + 2, e)); }
};

// In the 2-bit K-quant layouts, sub-block j (16 elements) of a 256 block takes bits 2k..2k+1
// (k = (j % 8) / 2) of bytes 32 * (j / 8) + 16 * (j % 2) + l.
HWY_INLINE size_t TwoBitByte(int j, size_t e) { return 32 * (j / 8) + 16 * (j % 2) + e; }
HWY_INLINE int TwoBitShift(int j) { return 2 * ((j % 8) / 2); }

struct Q2_K {  // scales[16], qs[64], d, dmin: d*(sc&15) * q - dmin*(sc>>4)
  static constexpr int kElems = 256, kBytes = 84, kSub = 16, kOffset = 0;
  static constexpr bool kMin = true, kHalfScales = false;
  static HWY_INLINE void Scales(const uint8_t* b, float* s, float* m) {
    uint8_t sc[16], mn[16];
    for (int j = 0; j < 16; ++j) {
      sc[j] = b[j] & 15;
      mn[j] = b[j] >> 4;
    }
    ScaleBytes(sc, 16, Half(b + 80), s);
    ScaleBytes(mn, 16, Half(b + 82), m);
  }
  static HWY_INLINE VF Raw(DF, const uint8_t* b, int j, size_t e) {
    return ToFloat(Field<3>(Bytes(b + 16 + TwoBitByte(j, e)), TwoBitShift(j)));
  }
};

struct Q3_K {  // hmask[32], qs[64], scales[12], d: d*sc * ((low | hbit << 2) - 4)
  static constexpr int kElems = 256, kBytes = 110, kSub = 16, kOffset = 4;
  static constexpr bool kMin = false, kHalfScales = false;
  static HWY_INLINE void Scales(const uint8_t* b, float* s, float* m) {
    uint8_t u[16];
    int8_t sc[16];
    UnpackScalesK3(b + 96, u);
    for (int j = 0; j < 16; ++j) sc[j] = static_cast<int8_t>(u[j] - 32);
    ScaleBytes(sc, 16, Half(b + 108), s);
  }
  static HWY_INLINE VF Raw(DF, const uint8_t* b, int j, size_t e) {
    const VU low = Field<3>(Bytes(b + 32 + TwoBitByte(j, e)), TwoBitShift(j));
    const VU high = Field<1>(Bytes(b + 16 * (j % 2) + e), j / 2);
    return ToFloat(hn::Or(low, hn::ShiftLeft<2>(high)));
  }
};

// Q4_K/Q5_K sub-block j (32 elements) is nibble j % 2 of bytes 32 * (j / 2) + l of qs.
HWY_INLINE void ScalesK4(const uint8_t* b, float* s, float* m) {
  uint8_t u[16];
  UnpackScalesK4(b + 4, u);
  ScaleBytes(u, 8, Half(b), s);
  ScaleBytes(u + 8, 8, Half(b + 2), m);
}

struct Q4_K {  // d, dmin, scales[12], qs[128]: d*sc * q - dmin*m
  static constexpr int kElems = 256, kBytes = 144, kSub = 32, kOffset = 0;
  static constexpr bool kMin = true, kHalfScales = false;
  static HWY_INLINE void Scales(const uint8_t* b, float* s, float* m) { ScalesK4(b, s, m); }
  static HWY_INLINE VF Raw(DF, const uint8_t* b, int j, size_t e) {
    return ToFloat(Field<15>(Bytes(b + 16 + 32 * (j / 2) + e), 4 * (j % 2)));
  }
};

struct Q5_K {  // d, dmin, scales[12], qh[32], qs[128]: as Q4_K, bit j of qh[l] is the fifth
  static constexpr int kElems = 256, kBytes = 176, kSub = 32, kOffset = 0;
  static constexpr bool kMin = true, kHalfScales = false;
  static HWY_INLINE void Scales(const uint8_t* b, float* s, float* m) { ScalesK4(b, s, m); }
  static HWY_INLINE VF Raw(DF, const uint8_t* b, int j, size_t e) {
    const VU low = Field<15>(Bytes(b + 48 + 32 * (j / 2) + e), 4 * (j % 2));
    return ToFloat(hn::Or(low, hn::ShiftLeft<4>(Field<1>(Bytes(b + 16 + e), j))));
  }
};

struct Q6_K {  // ql[128], qh[64], scales[16] int8, d: d*sc * (q - 32)
  static constexpr int kElems = 256, kBytes = 210, kSub = 16, kOffset = 32;
  static constexpr bool kMin = false, kHalfScales = false;
  static HWY_INLINE void Scales(const uint8_t* b, float* s, float* m) {
    ScaleBytes(reinterpret_cast<const int8_t*>(b + 192), 16, Half(b + 208), s);
  }
  // Sub-block j: half h = j / 8, k = (j % 8) / 2, l = 16 * (j % 2) + e: the low nibble is
  // nibble k / 2 of ql[64h + 32 * (k % 2) + l], the top two bits 2k.. of qh[32h + l].
  static HWY_INLINE VF Raw(DF, const uint8_t* b, int j, size_t e) {
    const int h = j / 8, k = (j % 8) / 2;
    const size_t l = 16 * (j % 2) + e;
    const VU low = Field<15>(Bytes(b + 64 * h + 32 * (k % 2) + l), 4 * (k / 2));
    const VU high = Field<3>(Bytes(b + 128 + 32 * h + l), 2 * k);
    return ToFloat(hn::Or(low, hn::ShiftLeft<4>(high)));
  }
};

struct IQ4_XS {  // d, scales_h, scales_l[4], qs[128]: d*(ls - 32) * level[q]
  static constexpr int kElems = 256, kBytes = 136, kSub = 32, kOffset = 0;
  static constexpr bool kMin = false, kHalfScales = false;
  static HWY_INLINE void Scales(const uint8_t* b, float* s, float* m) {
    int8_t sc[8];
    for (int j = 0; j < 8; ++j) sc[j] = static_cast<int8_t>(gguf::Iq4XsScale(b, j) - 32);
    ScaleBytes(sc, 8, Half(b), s);
  }
  static HWY_INLINE VF Raw(DF, const uint8_t* b, int j, size_t e) {
    return Iq4Level(Nibble32(b + 8 + 16 * j, e));
  }
};

struct BF16 {  // the upper half of a float; "blocks" of 32 values, scale 1
  static constexpr int kElems = 32, kBytes = 64, kSub = 32, kOffset = 0;
  static constexpr bool kMin = false, kHalfScales = false;
  static constexpr bool kPlain = true;  // no scale: Raw is the weight
  static HWY_INLINE void Scales(const uint8_t*, float*, float*) {}
  static HWY_INLINE VF Raw(DF d, const uint8_t* b, int, size_t e) {
    const hn::Rebind<uint16_t, DF> d16;
    const VU bits = hn::PromoteTo(DU(), hn::LoadU(d16, reinterpret_cast<const uint16_t*>(b) + e));
    return hn::BitCast(d, hn::ShiftLeft<16>(bits));
  }
};

template <class B, class = void>
struct IsPlain : std::false_type {};
template <class B>
struct IsPlain<B, decltype(void(B::kPlain))> : std::true_type {};

// Weights of elements [e, e + N) of sub-block j: s * (raw - kOffset) - m, rounded as ggml
// rounds (raw - kOffset is a small integer: exact in float).
template <class B>
HWY_INLINE VF Dequant(DF d, const uint8_t* block, int j, size_t e, VF s, VF m) {
  VF code = B::Raw(d, block, j, e);
  if constexpr (IsPlain<B>::value) return code;
  if constexpr (B::kOffset != 0) code = hn::Sub(code, hn::Set(d, static_cast<float>(B::kOffset)));
  if constexpr (B::kMin) return hn::Sub(hn::Mul(code, s), m);
  return hn::Mul(code, s);
}

// Whether the stream kernel subtracts a min: the type's own, or its folded offset.
template <class B>
inline constexpr bool kStreamMin = B::kMin || B::kOffset != 0;

// Scales and mins of n consecutive blocks for the stream kernel, which multiplies the raw
// codes: s[i * kSubs + j] * raw - m[i * kSubs + j] (m = the type's min + kOffset * s).
template <class B>
HWY_INLINE void StreamScales(const uint8_t* blocks, size_t n, float* s, float* m) {
  constexpr int kSubs = B::kElems / B::kSub;
  const DF d;
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  if constexpr (B::kHalfScales) {
    static_assert(kSubs == 1);
    for (; i + N <= n; i += N)
      HalvesOfBlocks(blocks + i * B::kBytes, B::kBytes, s + i, B::kMin ? m + i : nullptr);
  }
  for (; i < n; ++i) B::Scales(blocks + i * B::kBytes, s + i * kSubs, m + i * kSubs);
  if constexpr (B::kOffset != 0) {
    const VF offset = hn::Set(d, static_cast<float>(B::kOffset));
    size_t q = 0;
    for (; q + N <= n * kSubs; q += N) {
      const VF folded = hn::Mul(offset, hn::LoadU(d, s + q));
      hn::StoreU(B::kMin ? hn::Add(hn::LoadU(d, m + q), folded) : folded, d, m + q);
    }
    for (; q < n * kSubs; ++q) m[q] = (B::kMin ? m[q] : 0.0f) + B::kOffset * s[q];
  }
}

// Row r of a kGgml matrix of block type B dequantized into out[cols].
template <class B>
HWY_INLINE void DequantRow(const uint8_t* row, int64_t cols, float* out) {
  const DF d;
  const size_t N = hn::Lanes(d);
  float s[B::kElems / B::kSub], m[B::kElems / B::kSub];
  for (int64_t c0 = 0; c0 < cols; c0 += B::kElems, row += B::kBytes) {
    B::Scales(row, s, m);
    for (int j = 0; j < B::kElems / B::kSub; ++j) {
      const VF vs = hn::Set(d, s[j]), vm = hn::Set(d, B::kMin ? m[j] : 0.0f);
      for (size_t e = 0; e < static_cast<size_t>(B::kSub); e += N)
        hn::StoreU(Dequant<B>(d, row, j, e, vs, vm), d, out + c0 + j * B::kSub + e);
    }
  }
}

// Op<B>::Run(args...) with the trait B of `type` (one of IsGgmlMatMulType). A class template,
// not a generic lambda: clang compiles lambdas without the target's attributes, and the
// decoders are always-inline SIMD code.
template <template <class> class Op, typename... Args>
HWY_INLINE void ForBlockType(gguf::TensorType type, Args&&... args) {
  using T = gguf::TensorType;
  switch (type) {
    case T::kQ4_0:
      return Op<Q4_0>::Run(args...);
    case T::kQ4_1:
      return Op<Q4_1>::Run(args...);
    case T::kQ5_0:
      return Op<Q5_0>::Run(args...);
    case T::kQ5_1:
      return Op<Q5_1>::Run(args...);
    case T::kQ8_0:
      return Op<Q8_0>::Run(args...);
    case T::kIQ4_NL:
      return Op<IQ4_NL>::Run(args...);
    case T::kQ2_K:
      return Op<Q2_K>::Run(args...);
    case T::kQ3_K:
      return Op<Q3_K>::Run(args...);
    case T::kQ4_K:
      return Op<Q4_K>::Run(args...);
    case T::kQ5_K:
      return Op<Q5_K>::Run(args...);
    case T::kQ6_K:
      return Op<Q6_K>::Run(args...);
    case T::kIQ4_XS:
      return Op<IQ4_XS>::Run(args...);
    case T::kBF16:
      return Op<BF16>::Run(args...);
    default:
      return;
  }
}

}  // namespace blocks
}  // namespace slimkv::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
