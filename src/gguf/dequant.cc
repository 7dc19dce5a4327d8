#include "gguf/dequant.h"

#include <bit>
#include <cstring>

#include "base/check.h"
#include "base/half.h"

// The results must match ggml and gguf-py bit for bit, which evaluate `d*q + m` as two
// rounded operations; a fused multiply-add would round once and differ in the last bit.
// GCC does not contract in ISO C++ mode (-std=c++20); clang does by default.
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace slimkv::gguf {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the loads below assume a little-endian host, as GGUF v3 files are");

// Block sizes (types.h) as int, for loops over elements.
constexpr int kQK = static_cast<int>(gguf::kQK);
constexpr int kQK_K = static_cast<int>(gguf::kQK_K);

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
float LoadHalf(const uint8_t* p) { return HalfToFloat(LoadU16(p)); }
float LoadF32(const uint8_t* p) { return std::bit_cast<float>(LoadU32(p)); }
float F(int v) { return static_cast<float>(v); }

void DequantizeF32(const uint8_t* x, float* y, uint64_t n) { std::memcpy(y, x, n * 4); }

void DequantizeF16(const uint8_t* x, float* y, uint64_t n) {
  for (uint64_t i = 0; i < n; ++i) y[i] = HalfToFloat(LoadU16(x + 2 * i));
}

void DequantizeBF16(const uint8_t* x, float* y, uint64_t n) {
  for (uint64_t i = 0; i < n; ++i) y[i] = Bf16ToFloat(LoadU16(x + 2 * i));
}

// Q4_0 [d, qs[16]]: low nibbles are elements 0..15, high nibbles 16..31.
void DequantizeQ4_0(const uint8_t* x, float* y, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, x += 18, y += kQK) {
    const float d = LoadHalf(x);
    const uint8_t* qs = x + 2;
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = F((qs[j] & 15) - 8) * d;
      y[j + kQK / 2] = F((qs[j] >> 4) - 8) * d;
    }
  }
}

// Q4_1 [d, m, qs[16]].
void DequantizeQ4_1(const uint8_t* x, float* y, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, x += 20, y += kQK) {
    const float d = LoadHalf(x);
    const float m = LoadHalf(x + 2);
    const uint8_t* qs = x + 4;
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = F(qs[j] & 15) * d + m;
      y[j + kQK / 2] = F(qs[j] >> 4) * d + m;
    }
  }
}

// The fifth bit of element j of a Q5 block is bit j of the little-endian u32 qh.
int Q5Value(const uint8_t* qs, uint32_t qh, int j) {
  const int low = j < kQK / 2 ? (qs[j] & 15) : (qs[j - kQK / 2] >> 4);
  return low | static_cast<int>(((qh >> j) & 1) << 4);
}

// Q5_0 [d, qh[4], qs[16]].
void DequantizeQ5_0(const uint8_t* x, float* y, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, x += 22, y += kQK) {
    const float d = LoadHalf(x);
    const uint32_t qh = LoadU32(x + 2);
    for (int j = 0; j < kQK; ++j) y[j] = F(Q5Value(x + 6, qh, j) - 16) * d;
  }
}

// Q5_1 [d, m, qh[4], qs[16]].
void DequantizeQ5_1(const uint8_t* x, float* y, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, x += 24, y += kQK) {
    const float d = LoadHalf(x);
    const float m = LoadHalf(x + 2);
    const uint32_t qh = LoadU32(x + 4);
    for (int j = 0; j < kQK; ++j) y[j] = F(Q5Value(x + 8, qh, j)) * d + m;
  }
}

// Q8_0 [d, qs[32]] and Q8_1 [d, s, qs[32]]: `header_bytes` is 2 or 4.
void DequantizeQ8(const uint8_t* x, float* y, uint64_t blocks, int header_bytes) {
  const int block_bytes = header_bytes + kQK;
  for (uint64_t b = 0; b < blocks; ++b, x += block_bytes, y += kQK) {
    const float d = LoadHalf(x);
    const int8_t* qs = reinterpret_cast<const int8_t*>(x + header_bytes);
    for (int j = 0; j < kQK; ++j) y[j] = F(qs[j]) * d;
  }
}

// Q2_K [scales[16], qs[64], d, dmin]. Two halves of 128 elements, each from 32 bytes of qs;
// within a half, bits 2k..2k+1 of byte l give element 32k + l. One scale byte per 16.
void DequantizeQ2_K(const uint8_t* x, float* y, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, x += 84) {
    const uint8_t* scales = x;
    const float d = LoadHalf(x + 80);
    const float dmin = LoadHalf(x + 82);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q = x + 16 + 32 * half;
      for (int k = 0; k < 4; ++k) {
        for (int sixteen = 0; sixteen < 2; ++sixteen) {
          const uint8_t sc = *scales++;
          const float dl = d * F(sc & 15);
          const float ml = dmin * F(sc >> 4);
          for (int l = 16 * sixteen; l < 16 * sixteen + 16; ++l) {
            *y++ = dl * F((q[l] >> (2 * k)) & 3) - ml;
          }
        }
      }
    }
  }
}

// Q3_K [hmask[32], qs[64], scales[12], d]. The 2 low bits are ordered as in Q2_K; element e's
// high bit is bit e/32 of hmask[e%32], and a *clear* high bit subtracts 4.
void DequantizeQ3_K(const uint8_t* x, float* y, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, x += 110, y += kQK_K) {
    const uint8_t* hmask = x;
    const uint8_t* scales = x + 96;
    const float d = LoadHalf(x + 108);
    for (int e = 0; e < kQK_K; ++e) {
      const int half = e / 128, k = (e % 128) / 32, l = e % 32;
      const int low = (x[32 + 32 * half + l] >> (2 * k)) & 3;
      const int q = low - ((hmask[l] >> (e / 32)) & 1 ? 0 : 4);
      const float dl = d * F(Q3KScale(scales, e / 16));
      y[e] = dl * F(q);
    }
  }
}

// Q4_K [d, dmin, scales[12], qs[128]] and Q5_K [d, dmin, scales[12], qh[32], qs[128]]:
// 4 runs of 64 elements, each from 32 bytes of qs (low nibbles first, then high nibbles),
// 8 groups of 32 with their own 6-bit scale and min. Q5_K's fifth bit of element 32g + l is
// bit g of qh[l].
void DequantizeQ45_K(const uint8_t* x, float* y, uint64_t blocks, bool five_bit) {
  const int block_bytes = five_bit ? 176 : 144;
  for (uint64_t b = 0; b < blocks; ++b, x += block_bytes) {
    const float d = LoadHalf(x);
    const float dmin = LoadHalf(x + 2);
    const uint8_t* scales = x + 4;
    const uint8_t* qh = x + 16;
    const uint8_t* qs = x + (five_bit ? 48 : 16);
    for (int g = 0; g < 8; ++g) {
      uint8_t sc, m;
      GetScaleMinK4(g, scales, &sc, &m);
      const float dl = d * F(sc);
      const float ml = dmin * F(m);
      const uint8_t* q = qs + 32 * (g / 2);
      const int shift = 4 * (g % 2);
      for (int l = 0; l < 32; ++l) {
        int v = (q[l] >> shift) & 15;
        if (five_bit) v |= ((qh[l] >> g) & 1) << 4;
        *y++ = dl * F(v) - ml;
      }
    }
  }
}

// Q6_K [ql[128], qh[64], scales[16], d]: two halves of 128 elements; in half h, element
// 32k + l (k 0..3, l 0..31) takes its low nibble from ql[64h + l + 32*(k%2)] (low nibble for
// k < 2, high for k >= 2) and its top 2 bits from bits 2k..2k+1 of qh[32h + l].
void DequantizeQ6_K(const uint8_t* x, float* y, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, x += 210) {
    const uint8_t* ql = x;
    const uint8_t* qh = x + 128;
    const int8_t* scales = reinterpret_cast<const int8_t*>(x + 192);
    const float d = LoadHalf(x + 208);
    for (int half = 0; half < 2; ++half) {
      for (int k = 0; k < 4; ++k) {
        for (int l = 0; l < 32; ++l) {
          const uint8_t low_byte = ql[64 * half + l + 32 * (k % 2)];
          const int low = k < 2 ? (low_byte & 15) : (low_byte >> 4);
          const int high = (qh[32 * half + l] >> (2 * k)) & 3;
          const int q = (low | (high << 4)) - 32;
          const float dl = d * F(scales[8 * half + 2 * k + l / 16]);
          *y++ = dl * F(q);
        }
      }
    }
  }
}

// Q8_K [d (fp32), qs[256], bsums[16]].
void DequantizeQ8_K(const uint8_t* x, float* y, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, x += 292, y += kQK_K) {
    const float d = LoadF32(x);
    const int8_t* qs = reinterpret_cast<const int8_t*>(x + 4);
    for (int j = 0; j < kQK_K; ++j) y[j] = d * F(qs[j]);
  }
}

// IQ4_NL [d, qs[16]]: nibbles as Q4_0, each an index into kIq4nlValues.
void DequantizeIq4Nl(const uint8_t* x, float* y, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, x += 18, y += kQK) {
    const float d = LoadHalf(x);
    const uint8_t* qs = x + 2;
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = d * F(kIq4nlValues[qs[j] & 15]);
      y[j + kQK / 2] = d * F(kIq4nlValues[qs[j] >> 4]);
    }
  }
}

// IQ4_XS [d, scales_h, scales_l[4], qs[128]]: 8 groups of 32, IQ4_NL nibbles per group.
void DequantizeIq4Xs(const uint8_t* x, float* y, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, x += 136) {
    const float d = LoadHalf(x);
    for (int ib = 0; ib < 8; ++ib, y += 32) {
      const float dl = d * F(Iq4XsScale(x, ib) - 32);
      const uint8_t* qs = x + 8 + 16 * ib;
      for (int j = 0; j < 16; ++j) {
        y[j] = dl * F(kIq4nlValues[qs[j] & 15]);
        y[j + 16] = dl * F(kIq4nlValues[qs[j] >> 4]);
      }
    }
  }
}

}  // namespace

Status Dequantize(TensorType type, const uint8_t* src, float* dst, uint64_t n) {
  const auto traits = GetTypeTraits(type);
  if (!traits) {
    return InvalidArgument("cannot dequantize unknown tensor type id {}",
                           static_cast<uint32_t>(type));
  }
  if (!traits->can_dequantize) {
    return Unimplemented("slimkv has no dequantizer for tensor type {}", traits->name);
  }
  if (n % traits->block_elems != 0) {
    return InvalidArgument(
        "cannot dequantize {} elements of {}: not a whole number of blocks of {}", n, traits->name,
        traits->block_elems);
  }
  const uint64_t blocks = n / traits->block_elems;
  switch (type) {
    case TensorType::kF32: DequantizeF32(src, dst, n); break;
    case TensorType::kF16: DequantizeF16(src, dst, n); break;
    case TensorType::kBF16: DequantizeBF16(src, dst, n); break;
    case TensorType::kQ4_0: DequantizeQ4_0(src, dst, blocks); break;
    case TensorType::kQ4_1: DequantizeQ4_1(src, dst, blocks); break;
    case TensorType::kQ5_0: DequantizeQ5_0(src, dst, blocks); break;
    case TensorType::kQ5_1: DequantizeQ5_1(src, dst, blocks); break;
    case TensorType::kQ8_0: DequantizeQ8(src, dst, blocks, 2); break;
    case TensorType::kQ8_1: DequantizeQ8(src, dst, blocks, 4); break;
    case TensorType::kQ2_K: DequantizeQ2_K(src, dst, blocks); break;
    case TensorType::kQ3_K: DequantizeQ3_K(src, dst, blocks); break;
    case TensorType::kQ4_K: DequantizeQ45_K(src, dst, blocks, false); break;
    case TensorType::kQ5_K: DequantizeQ45_K(src, dst, blocks, true); break;
    case TensorType::kQ6_K: DequantizeQ6_K(src, dst, blocks); break;
    case TensorType::kQ8_K: DequantizeQ8_K(src, dst, blocks); break;
    case TensorType::kIQ4_NL:
      DequantizeIq4Nl(src, dst, blocks);
      break;
    case TensorType::kIQ4_XS:
      DequantizeIq4Xs(src, dst, blocks);
      break;
    default: CHECK(false, "type {} is marked dequantizable but has no dequantizer", traits->name);
  }
  return Status::Ok();
}

}  // namespace slimkv::gguf
