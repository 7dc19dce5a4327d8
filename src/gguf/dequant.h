// Reference (scalar) dequantizers of GGML tensor types to fp32, bit-exact with ggml's
// dequantize_row_* and gguf-py's numpy dequantization (tests/gguf/dequant_golden_test.cc).
//
// Block layouts (little-endian, in byte order; d/m/dmin are fp16 unless stated):
//   Q4_0  32 elems, 18 B: d, qs[16]; x[j] = d*((qs[j]&15)-8), x[j+16] = d*((qs[j]>>4)-8)
//   Q4_1  32 elems, 20 B: d, m, qs[16]; x = d*q + m, same nibble order as Q4_0
//   Q5_0  32 elems, 22 B: d, qh[4] (u32, bit j = 5th bit of x[j]), qs[16]; x = d*(q-16)
//   Q5_1  32 elems, 24 B: d, m, qh[4], qs[16]; x = d*q + m
//   Q8_0  32 elems, 34 B: d, qs[32] int8; x = d*q
//   Q8_1  32 elems, 36 B: d, s (=d*sum q, unused here), qs[32] int8; x = d*q
//   Q2_K 256 elems, 84 B: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin;
//        16 groups of 16: x = d*(sc&15)*q - dmin*(sc>>4), q 2-bit
//   Q3_K 256 elems,110 B: hmask[32], qs[64], scales[12] (16 x 6-bit, biased by 32), d;
//        16 groups of 16: x = d*(sc-32)*(q - (hmask bit set ? 0 : 4)), q 2-bit
//   Q4_K 256 elems,144 B: d, dmin, scales[12] (8 x 6-bit scale + 8 x 6-bit min), qs[128];
//        8 groups of 32: x = d*sc*q - dmin*m
//   Q5_K 256 elems,176 B: d, dmin, scales[12], qh[32], qs[128]; as Q4_K with a 5th bit
//   Q6_K 256 elems,210 B: ql[128], qh[64], scales[16] int8, d; x = d*sc*(q-32), 16 per scale
//   Q8_K 256 elems,292 B: d (fp32), qs[256] int8, bsums[16] int16 (unused here); x = d*q
//   IQ4_NL 32 elems, 18 B: d, qs[16]; x = d*kIq4nlValues[nibble], nibbles ordered as Q4_0
//   IQ4_XS 256 elems,136 B: d, scales_h (u16), scales_l[4], qs[128]; 8 groups of 32, each
//        with a 6-bit scale (low 4 bits in scales_l, high 2 in scales_h) biased by 32 and 16
//        bytes of IQ4_NL nibbles: x = d*(ls-32)*kIq4nlValues[nibble]
//   F16 / BF16 / F32 plain.
// Within the 2-bit and 4-bit K-quants, quants are interleaved: byte l of a 32-byte run holds
// element l in its low bits and element l+32 (4-bit) or l+32k (2-bit, shift 2k) above; the
// functions in dequant.cc spell out each order.
#pragma once

#include <cstdint>

#include "base/status.h"
#include "gguf/types.h"

namespace slimkv::gguf {

// Dequantizes `n` elements (a whole number of blocks) from `src` into `dst`. `src` needs no
// particular alignment. Unimplemented for types without a dequantizer (can_dequantize false),
// InvalidArgument for an unknown type or a partial block.
Status Dequantize(TensorType type, const uint8_t* src, float* dst, uint64_t n);

// The 16 non-linear levels of IQ4_NL and IQ4_XS (ggml's kvalues_iq4nl).
inline constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

// The scale unpackers below are inline: the matmul kernels (ops/block_decode-inl.h) call
// them once per sub-block of every row. Indices are in range by construction (callers loop
// over a block's groups), so they are not checked.

// Q3_K scale of group i (0..15), bias removed (-32..31); `scales` is the block's 12-byte
// field. Low 4 bits from the nibbles of bytes 0..7 (scales 0..7 in the low nibbles, 8..15 in
// the high ones), high 2 bits from bytes 8..11 (bits 2*(i/4) of byte 8+i%4).
inline int Q3KScale(const uint8_t* scales, int i) {
  const int low = i < 8 ? (scales[i] & 15) : (scales[i - 8] >> 4);
  const int high = (scales[8 + i % 4] >> (2 * (i / 4))) & 3;
  return (low | (high << 4)) - 32;
}

// IQ4_XS scale of group ib (0..7) of the block at `block`, before the bias of 32 is removed:
// low 4 bits from nibble ib % 2 of scales_l[ib / 2], high 2 bits from bits 2*ib of scales_h.
inline int Iq4XsScale(const uint8_t* block, int ib) {
  const int low = (block[4 + ib / 2] >> (4 * (ib % 2))) & 15;
  const int high = ((block[2] | (block[3] << 8)) >> (2 * ib)) & 3;
  return low | (high << 4);
}

// Q4_K/Q5_K 6-bit scale/min unpacking for sub-block j (0..7), as ggml's get_scale_min_k4.
// `scales` is the 12-byte scales field of the block. Bytes 0..3: scales 0..3 in bits 0..5;
// bytes 4..7: mins 0..3 in bits 0..5. The top two bits of those bytes are the high bits of
// scales/mins 4..7, whose low nibbles are in bytes 8..11 (scale low nibble, min high).
inline void GetScaleMinK4(int j, const uint8_t* scales, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = scales[j] & 63;
    *min = scales[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((scales[j + 4] & 15) | ((scales[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

}  // namespace slimkv::gguf
