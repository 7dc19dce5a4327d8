// SIMD bodies of the decode matmul kernels (a few tokens), included once per Highway target by matmul-inl.h.
//
// Weights are stored in 16-row tiles (ops/weights.h), so a vector lane stands
// for a row: a tile's 16 outputs accumulate in one AVX-512 vector (two AVX2
// vectors), x is broadcast, and a group's scale and minimum apply to 16 rows
// with one instruction. No horizontal sums.
//  * Integer kernel (AVX3_DL: AVX-512 VNNI), for the quantized formats: vpdpbusd multiplies 4
//  code bytes
//    of 16 rows with 4 int8 activations per instruction; x enters as three int8
//    parts (ops/matmul_x.h), so the result has fp32 accuracy. 3 instructions
//    per 64 weights and part, against 8 for decoding codes to fp32 first (the
//    old kernel on this target).
//  * Float kernel (other targets, and kF32/kF16 everywhere): codes are
//  converted to fp32 in
//    registers and multiplied with fp32 x.
#if defined(SLIMKV_OPS_GEMV_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_OPS_GEMV_INL_H_
#undef SLIMKV_OPS_GEMV_INL_H_
#else
#define SLIMKV_OPS_GEMV_INL_H_
#endif

#include <algorithm>
#include <array>
#include <cstring>

#include "gguf/dequant.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "ops/matmul_x.h"
#include "ops/weights.h"

#if HWY_TARGET == HWY_AVX3_DL
#include <immintrin.h>
#endif

HWY_BEFORE_NAMESPACE();
namespace slimkv::ops::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
using DI = hn::RebindToSigned<DF>;
using DU = hn::RebindToUnsigned<DF>;

// Vectors per 16-row tile (the targets built have fixed-size vectors of 1 to 16 floats).
inline constexpr size_t kLanes = hn::MaxLanes(DF());
inline constexpr int kTileVecs = static_cast<int>(kWeightTileRows / kLanes);
static_assert(kWeightTileRows % kLanes == 0, "a tile is a whole number of vectors");
// Tokens per pass of the decode kernels (registers: kGemvTokens x kXParts integer sums).
inline constexpr int kGemvTokens = 4;

#undef SLIMKV_OPS_VNNI
#undef SLIMKV_OPS_VNNI_ATTR
#if HWY_TARGET == HWY_AVX3_DL
#define SLIMKV_OPS_VNNI 1
// Highway 1.0.3's AVX3_DL target string does not name avx512vnni; functions that inline the intrinsic add it.
#define SLIMKV_OPS_VNNI_ATTR __attribute__((target(HWY_TARGET_STR ",avx512vnni")))
#else
#define SLIMKV_OPS_VNNI 0
#define SLIMKV_OPS_VNNI_ATTR
#endif
inline constexpr bool kIntegerGemv = SLIMKV_OPS_VNNI;
// How far ahead the decode kernels prefetch, in bytes of codes (the integer
// kernel here, the kGgml stream kernel of matmul_blocks-inl.h).
inline constexpr int64_t kPrefetchBytes = 4096;

// The scales and minimums of one tile (ops/weights.h), a group's for one vector of rows at a
// time. The form is chosen per group at run time (a branch that always goes the same way),
// not per kernel instantiation: three forms times every format, token count and target
// made matmul.cc take minutes to compile under the sanitizers.
struct TileScales {
  TileScales(const WeightMatrix& w, int64_t tile)
      : form(w.scale_form()),
        scales(w.tile_scales(tile)),
        mins(w.has_min ? w.tile_mins(tile) : nullptr),
        supers(w.super_group ? w.tile_supers(tile) : nullptr),
        super_mins(w.super_group && w.has_min ? w.tile_super_mins(tile) : nullptr),
        groups_per_super(w.super_group ? w.super_group / w.group : 1) {}
  // Group g's scales (minimums) of rows h * N .. h * N + N - 1.
  VF Scale(int64_t g, int h) const { return Load(scales, supers, g, h); }
  VF Min(int64_t g, int h) const { return Load(mins, super_mins, g, h); }

  VF Load(const uint8_t* p, const uint8_t* factors, int64_t g, int h) const {
    const DF d;
    const hn::Rebind<hwy::float16_t, DF> dh;
    const size_t i = g * kWeightTileRows + h * kLanes;
    if (form == ScaleForm::kF16) {
      return hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p) + i));
    } else if (form == ScaleForm::kF32) {
      return hn::LoadU(d, reinterpret_cast<const float*>(p) + i);
    } else {  // int8 sub-scale times its fp16 factor: exact in fp32 (8 x 11 bits)
      const hn::Rebind<int8_t, DF> d8;
      const VF sub = hn::ConvertTo(d, hn::PromoteTo(DI(), hn::LoadU(d8, reinterpret_cast<const int8_t*>(p) + i)));
      const size_t f = (g / groups_per_super) * kWeightTileRows + h * kLanes;
      return hn::Mul(sub, hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(factors) + f)));
    }
  }

  ScaleForm form;
  const uint8_t *scales, *mins, *supers, *super_mins;
  int64_t groups_per_super;
};

// Codes per byte (kQ8 1, nibbles 2, kQ3's 2-bit crumbs 4) and their bits, code chunks (64
// bytes: 4 bytes of 16 rows) per group, high-bit planes (ops/weights.h), and bytes per group
// of a tile (chunks, then a 64-bit mask per chunk, plane and part of a byte).
template <WeightFormat kFormat>
inline constexpr int kParts = CodeParts(kFormat);
template <WeightFormat kFormat>
inline constexpr int kPartBits = 8 / kParts<kFormat>;
template <WeightFormat kFormat, int kGroup>
inline constexpr int kGroupChunks = kGroup / kParts<kFormat> / 4;
template <WeightFormat kFormat>
inline constexpr int kPlanes = CodePlanes(kFormat);
template <WeightFormat kFormat, int kGroup>
inline constexpr int64_t kGroupTileBytes = kWeightTileRows * GroupCodeBytes(kFormat, kGroup);

// kIQ4's levels (gguf::kIq4nlValues) as int32, for the float kernels' gathers, and + 128 as
// bytes, the integer kernel's unsigned operand.
alignas(64) inline constexpr std::array<int32_t, 16> kIq4Levels = [] {
  std::array<int32_t, 16> a{};
  for (int i = 0; i < 16; ++i) a[i] = gguf::kIq4nlValues[i];
  return a;
}();
alignas(16) inline constexpr std::array<uint8_t, 16> kIq4Unsigned = [] {
  std::array<uint8_t, 16> a{};
  for (int i = 0; i < 16; ++i) a[i] = static_cast<uint8_t>(gguf::kIq4nlValues[i] + 128);
  return a;
}();

// ---------------------------------------------------------------- x
// preparation Fills q.sum (always) and, for the integer kernel, q.parts,
// q.scale and q.part_sum, for n_tokens rows of x ([n_tokens, ldx]).
inline void QuantizeX(const float* x, int64_t ldx, int64_t n_tokens, const QuantizedX& q) {
  const DF d;
  const DI di;
  const hn::Rebind<int8_t, DI> d8;
  const size_t N = hn::Lanes(d);
  const int G = q.group;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t g = 0; g < q.groups; ++g) {
      const float* xg = x + t * ldx + g * G;
      VF vmax = hn::Zero(d), vsum = hn::Zero(d);
      for (int j = 0; j < G; j += static_cast<int>(N)) {
        const VF v = hn::LoadU(d, xg + j);
        vmax = hn::Max(vmax, hn::Abs(v));
        vsum = hn::Add(vsum, v);
      }
      q.sum[t * q.groups + g] = hn::GetLane(hn::SumOfLanes(d, vsum));
      if constexpr (!kIntegerGemv) continue;
      const float mx = hn::GetLane(hn::MaxOfLanes(d, vmax));
      // Tiny groups (and zero ones) contribute nothing at fp32 precision: parts 0.
      const bool live = mx > 1e-30f;
      const VF inv = hn::Set(d, live ? 127.0f / mx : 0.0f), base = hn::Set(d, kXPartBase);
      q.scale[t * q.groups + g] = live ? mx / 127.0f : 0.0f;
      hn::Vec<DI> sums[kXParts] = {hn::Zero(di), hn::Zero(di), hn::Zero(di)};
      int8_t* out = q.parts + t * kXParts * q.cols + g * G;
      for (int j = 0; j < G; j += static_cast<int>(N)) {
        VF r = hn::Mul(hn::LoadU(d, xg + j), inv);  // in [-127, 127]
        for (int p = 0; p < kXParts; ++p) {
          const auto k = hn::NearestInt(r);  // |k| <= 127: |r| <= 127, then |r| <= 0.5 * 254
          hn::StoreU(hn::DemoteTo(d8, k), d8, out + p * q.cols + j);
          sums[p] = hn::Add(sums[p], k);
          r = hn::Mul(hn::Sub(r, hn::ConvertTo(d, k)), base);
        }
      }
      for (int p = 0; p < kXParts; ++p) {
        q.part_sum[(t * q.groups + g) * kXParts + p] = hn::GetLane(hn::SumOfLanes(di, sums[p]));
      }
    }
  }
}

// ---------------------------------------------------------------- integer kernel
#if SLIMKV_OPS_VNNI
HWY_INLINE __m512i Broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// out[t][16] = the tile's 16 outputs for tokens t0..t0+kT-1.
template <WeightFormat kFormat, int kGroup, int kT>
SLIMKV_OPS_VNNI_ATTR HWY_INLINE void IntegerTile(const WeightMatrix& w, int64_t tile, const QuantizedX& q,
                                                 int64_t t0, float* HWY_RESTRICT out) {
  constexpr int kChunks = kGroupChunks<kFormat, kGroup>;
  constexpr int64_t kBytes = kGroupTileBytes<kFormat, kGroup>;
  const int64_t ng = q.groups;
  constexpr int kPl = kPlanes<kFormat>, kP = kParts<kFormat>, kSpan = kGroup / kP;
  const uint8_t* codes = w.tile_codes(tile);
  const TileScales ts(w, tile);
  const uint8_t* scales = ts.scales;
  const uint8_t* mins = ts.mins;
  // Bytes of scales per group, and how far ahead to prefetch them (as far as the codes).
  const int64_t scale_bytes = kWeightTileRows * static_cast<int64_t>(w.scale_bytes());
  const int64_t prefetch_scales = kPrefetchBytes * scale_bytes / kBytes;
  const __m512i part_mask = _mm512_set1_epi8(static_cast<char>((1 << kPartBits<kFormat>) - 1));
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  // Codes enter as q + offset (an implied minimum's code_offset; kQ8's q + 128 and kIQ4's level + 128,
  // the unsigned operand), and a group's sum starts at -offset * the part's sum (matmul_x.h).
  const int32_t neg_offset =
      -(kFormat == WeightFormat::kQ8 || kFormat == WeightFormat::kIQ4 ? 128 : w.code_offset);
  // kIQ4: a nibble's level + 128 (vpdpbusd's unsigned operand), looked up with one vpshufb.
  const __m512i levels = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(kIq4Unsigned.data())));
  const __m512 inv_base = _mm512_set1_ps(1.0f / kXPartBase);
  __m512 acc[kT];
  for (int t = 0; t < kT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t g = 0; g < ng; ++g) {
    __m512i sum[kT][kXParts];
    for (int t = 0; t < kT; ++t) {
      for (int p = 0; p < kXParts; ++p) {
        sum[t][p] = _mm512_set1_epi32(q.part_sum[((t0 + t) * ng + g) * kXParts + p] * neg_offset);
      }
    }
    const uint8_t* cg = codes + g * kBytes;
    // Decode streams each matrix from memory once; ask for the codes, scales
    // and minimums a few KiB ahead (the next tiles follow in memory).
    for (int64_t k = 0; k < kBytes; k += 64) hwy::Prefetch(cg + kPrefetchBytes + k);
    hwy::Prefetch(scales + g * scale_bytes + prefetch_scales);
    if (mins) hwy::Prefetch(mins + g * scale_bytes + prefetch_scales);
    const int8_t* xg = q.parts + t0 * kXParts * q.cols + g * kGroup;
    // 4 int8 activations from column `col` of token t's part p (of this group), in every lane.
    auto x4 = [&](int t, int p, int col) { return Broadcast4(xg + (t * kXParts + p) * q.cols + col); };
    for (int k = 0; k < kChunks; ++k) {
      const __m512i v = _mm512_loadu_si512(cg + k * 64);
      if constexpr (kFormat != WeightFormat::kQ8) {
        // Part s of each byte (a nibble or a crumb): columns s * kSpan + 4k .. +3 of each row.
        __m512i c[kP];
        for (int s = 0; s < kP; ++s) {
          c[s] = _mm512_and_si512(s == 0 ? v : _mm512_srli_epi16(v, s * kPartBits<kFormat>), part_mask);
          if constexpr (kFormat == WeightFormat::kIQ4) c[s] = _mm512_shuffle_epi8(levels, c[s]);
        }
        for (int pl = 0; pl < kPl; ++pl) {  // + (1 << part bits) << pl where the plane's bit is set
          uint64_t m[kP];
          std::memcpy(m, cg + kChunks * 64 + 8 * kP * (k * kPl + pl), 8 * kP);
          const __m512i high = _mm512_set1_epi8(static_cast<char>((1 << kPartBits<kFormat>) << pl));
          for (int s = 0; s < kP; ++s) c[s] = _mm512_mask_add_epi8(c[s], _cvtu64_mask64(m[s]), c[s], high);
        }
        for (int t = 0; t < kT; ++t) {
          for (int p = 0; p < kXParts; ++p) {
            for (int s = 0; s < kP; ++s) sum[t][p] = _mm512_dpbusd_epi32(sum[t][p], c[s], x4(t, p, s * kSpan + 4 * k));
          }
        }
      } else {
        const __m512i u = _mm512_xor_si512(v, flip);  // q + 128: vpdpbusd's unsigned operand
        for (int t = 0; t < kT; ++t) {
          for (int p = 0; p < kXParts; ++p) sum[t][p] = _mm512_dpbusd_epi32(sum[t][p], u, x4(t, p, 4 * k));
        }
      }
    }
    const __m512 s = ts.Scale(g, 0).raw;
    for (int t = 0; t < kT; ++t) {
      // a + b / 254 + c / 254^2, then times the weights' scale and x's.
      __m512 f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[t][2]), inv_base, _mm512_cvtepi32_ps(sum[t][1]));
      f = _mm512_fmadd_ps(f, inv_base, _mm512_cvtepi32_ps(sum[t][0]));
      acc[t] = _mm512_fmadd_ps(f, _mm512_mul_ps(s, _mm512_set1_ps(q.scale[(t0 + t) * ng + g])), acc[t]);
      if (mins) {
        acc[t] = _mm512_fmadd_ps(ts.Min(g, 0).raw, _mm512_set1_ps(q.sum[(t0 + t) * ng + g]), acc[t]);
      }
    }
  }
  for (int t = 0; t < kT; ++t) _mm512_storeu_ps(out + t * kWeightTileRows, acc[t]);
}
#endif  // SLIMKV_OPS_VNNI

// ---------------------------------------------------------------- float
// kernels Code byte kB of each 32-bit lane (one row's 4 code bytes): unsigned
// for the 2- and 4-bit formats (4 or 2 codes), signed int8 for kQ8.
template <int kB>
HWY_INLINE hn::Vec<DU> ByteOf(hn::Vec<DU> v) {
  const DU du;
  if constexpr (kB == 3) return hn::ShiftRight<24>(v);
  return hn::And(hn::ShiftRight<8 * kB>(v), hn::Set(du, 0xFFu));
}
template <int kB>
HWY_INLINE VF SignedByteOf(hn::Vec<DU> v) {
  const DI di;
  return hn::ConvertTo(DF(), hn::ShiftRight<24>(hn::ShiftLeft<24 - 8 * kB>(hn::BitCast(di, v))));
}

// One high-bit plane of one chunk for the rows of vector h of a tile (lane j:
// row h * N + j), from the chunk's 8-byte mask word (ops/weights.h): a nibble
// per lane whose bit b is the plane's bit of the chunk's column b.
HWY_INLINE hn::Vec<DU> PlaneNibbles(const uint8_t* word, int h) {
  const DU du;
  uint32_t w[2];
  std::memcpy(w, word, 8);
  const auto r = hn::Iota(du, static_cast<uint32_t>(h * kLanes));
  const auto words = hn::IfThenElse(hn::Lt(r, hn::Set(du, 8u)), hn::Set(du, w[0]), hn::Set(du, w[1]));
  return hn::And(hn::Shr(words, hn::ShiftLeft<2>(hn::And(r, hn::Set(du, 7u)))), hn::Set(du, 15u));
}

// A chunk's high-bit planes for vector h of a tile: [plane][part of a byte]
// (PlaneNibbles; zero for formats without planes).
template <WeightFormat kFormat>
struct ChunkPlanes {
  static constexpr int kP = kParts<kFormat>;
  ChunkPlanes(const uint8_t* masks /* the chunk's first mask word */, int h) {
    for (int p = 0; p < 2; ++p) {
      for (int s = 0; s < 4; ++s) {
        bits[p][s] = p < kPlanes<kFormat> && s < kP ? PlaneNibbles(masks + 8 * (kP * p + s), h) : hn::Zero(DU());
      }
    }
  }
  hn::Vec<DU> bits[2][4];
};

// The codes in byte kB of each lane of `v` (part s: a nibble or crumb, column
// s * group / kParts of the chunk's), with the high bits of `planes` and less
// the implied minimum (kIQ4: its levels), as fp32.
template <WeightFormat kFormat, int kB>
HWY_INLINE void PartCodes(hn::Vec<DU> v, const ChunkPlanes<kFormat>& planes, hn::Vec<DI> offset,
                          VF* codes /* [kParts] */) {
  const DF d;
  const DU du;
  constexpr int kBits = kPartBits<kFormat>;
  const auto b = ByteOf<kB>(v);
  for (int s = 0; s < kParts<kFormat>; ++s) {
    auto c = hn::And(hn::Shr(b, hn::Set(du, static_cast<uint32_t>(s * kBits))), hn::Set(du, (1u << kBits) - 1));
    for (int p = 0; p < kPlanes<kFormat>; ++p) {
      const auto bit = hn::And(hn::ShiftRight<kB>(planes.bits[p][s]), hn::Set(du, 1u));
      c = hn::Or(c, hn::Shl(bit, hn::Set(du, static_cast<uint32_t>(kBits + p))));
    }
    if constexpr (kFormat == WeightFormat::kIQ4) {
      codes[s] = hn::ConvertTo(d, hn::GatherIndex(DI(), kIq4Levels.data(), hn::BitCast(DI(), c)));
    } else {
      codes[s] = hn::ConvertTo(d, hn::Sub(hn::BitCast(DI(), c), offset));
    }
  }
}

// Adds code byte kB of chunk `v` (rows in lanes) times x to part[t] for each token.
template <WeightFormat kFormat, int kGroup, int kT, int kB>
HWY_INLINE void FloatChunkByte(hn::Vec<DU> v, const ChunkPlanes<kFormat>& planes, hn::Vec<DI> offset,
                               const float* x, int64_t ldx, int col, VF* part) {
  const DF d;
  if constexpr (kFormat != WeightFormat::kQ8) {
    VF codes[kParts<kFormat>];
    PartCodes<kFormat, kB>(v, planes, offset, codes);
    for (int t = 0; t < kT; ++t) {
      for (int s = 0; s < kParts<kFormat>; ++s) {
        part[t] = hn::MulAdd(codes[s], hn::Set(d, x[t * ldx + col + s * (kGroup / kParts<kFormat>) + kB]), part[t]);
      }
    }
  } else {
    const VF q = SignedByteOf<kB>(v);
    for (int t = 0; t < kT; ++t) part[t] = hn::MulAdd(q, hn::Set(d, x[t * ldx + col + kB]), part[t]);
  }
}

// out[t][16] = the tile's 16 outputs for tokens x[0..kT) (x: [kT, ldx]).
template <WeightFormat kFormat, int kGroup, int kT>
HWY_INLINE void FloatTile(const WeightMatrix& w, int64_t tile, const float* x, int64_t ldx,
                          const QuantizedX& q, int64_t t0, float* HWY_RESTRICT out) {
  const DF d;
  const DU du;
  constexpr size_t N = kLanes;
  VF acc[kT][kTileVecs];
  for (int t = 0; t < kT; ++t)
    for (int h = 0; h < kTileVecs; ++h) acc[t][h] = hn::Zero(d);
  const uint8_t* codes = w.tile_codes(tile);
  if constexpr (kFormat == WeightFormat::kF32 || kFormat == WeightFormat::kF16) {
    for (int64_t c = 0; c < w.cols; ++c) {
      for (int h = 0; h < kTileVecs; ++h) {
        VF wv;
        if constexpr (kFormat == WeightFormat::kF32) {
          wv = hn::LoadU(d, reinterpret_cast<const float*>(codes) + c * kWeightTileRows + h * N);
        } else {
          const hn::Rebind<hwy::float16_t, DF> dh;
          wv = hn::PromoteTo(
              d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(codes) + c * kWeightTileRows + h * N));
        }
        for (int t = 0; t < kT; ++t) acc[t][h] = hn::MulAdd(wv, hn::Set(d, x[t * ldx + c]), acc[t][h]);
      }
    }
  } else {
    constexpr int kChunks = kGroupChunks<kFormat, kGroup>;
    const int64_t ng = q.groups;
    const TileScales ts(w, tile);
    const auto offset = hn::Set(DI(), w.code_offset);
    for (int64_t g = 0; g < ng; ++g) {
      const uint8_t* cg = codes + g * kGroupTileBytes<kFormat, kGroup>;
      for (int h = 0; h < kTileVecs; ++h) {
        VF part[kT];
        for (int t = 0; t < kT; ++t) part[t] = hn::Zero(d);
        for (int k = 0; k < kChunks; ++k) {
          const auto v = hn::LoadU(du, reinterpret_cast<const uint32_t*>(cg + k * 64) + h * N);
          const ChunkPlanes<kFormat> planes(cg + kChunks * 64 + 8 * kParts<kFormat> * k * kPlanes<kFormat>, h);
          const int col = static_cast<int>(g * kGroup + 4 * k);
          FloatChunkByte<kFormat, kGroup, kT, 0>(v, planes, offset, x, ldx, col, part);
          FloatChunkByte<kFormat, kGroup, kT, 1>(v, planes, offset, x, ldx, col, part);
          FloatChunkByte<kFormat, kGroup, kT, 2>(v, planes, offset, x, ldx, col, part);
          FloatChunkByte<kFormat, kGroup, kT, 3>(v, planes, offset, x, ldx, col, part);
        }
        const VF s = ts.Scale(g, h);
        for (int t = 0; t < kT; ++t) {
          acc[t][h] = hn::MulAdd(part[t], s, acc[t][h]);
          if (ts.mins) acc[t][h] = hn::MulAdd(ts.Min(g, h), hn::Set(d, q.sum[(t0 + t) * ng + g]), acc[t][h]);
        }
      }
    }
  }
  for (int t = 0; t < kT; ++t)
    for (int h = 0; h < kTileVecs; ++h) hn::StoreU(acc[t][h], d, out + t * kWeightTileRows + h * N);
}

// One tile for tokens [t0, t0 + kT): y[t][the tile's rows] (ldy apart).
template <WeightFormat kFormat, int kGroup, int kT>
HWY_NOINLINE SLIMKV_OPS_VNNI_ATTR void GemvTile(const WeightMatrix& w, int64_t tile, const float* x,
                                                int64_t ldx, const QuantizedX& q, int64_t t0, float* y,
                                                int64_t ldy) {
  HWY_ALIGN float out[kT * kWeightTileRows];
  if constexpr (kIntegerGemv && kFormat != WeightFormat::kF32 && kFormat != WeightFormat::kF16) {
#if SLIMKV_OPS_VNNI
    IntegerTile<kFormat, kGroup, kT>(w, tile, q, t0, out);
#endif
  } else {
    FloatTile<kFormat, kGroup, kT>(w, tile, x + t0 * ldx, ldx, q, t0, out);
  }
  const int64_t r0 = tile * kWeightTileRows;
  const size_t n = static_cast<size_t>(std::min(kWeightTileRows, w.rows - r0));
  for (int t = 0; t < kT; ++t)
    std::memcpy(y + (t0 + t) * ldy + r0, out + t * kWeightTileRows, n * sizeof(float));
}

// Decode: tiles [tile_begin, tile_end) of w times n_tokens rows of x,
// kGemvTokens at a time (a tile's weights are read from memory once and from L1 for the next tokens).
template <WeightFormat kFormat, int kGroup>
void GemvAll(const WeightMatrix& w, int64_t tile_begin, int64_t tile_end, const float* x, int64_t ldx,
             const QuantizedX& q, int64_t n_tokens, float* y, int64_t ldy) {
  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kGemvTokens) {
      switch (std::min<int64_t>(kGemvTokens, n_tokens - t0)) {
        case 4:
          GemvTile<kFormat, kGroup, 4>(w, tile, x, ldx, q, t0, y, ldy);
          break;
        case 3:
          GemvTile<kFormat, kGroup, 3>(w, tile, x, ldx, q, t0, y, ldy);
          break;
        case 2:
          GemvTile<kFormat, kGroup, 2>(w, tile, x, ldx, q, t0, y, ldy);
          break;
        default:
          GemvTile<kFormat, kGroup, 1>(w, tile, x, ldx, q, t0, y, ldy);
          break;
      }
    }
  }
}

}  // namespace slimkv::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
