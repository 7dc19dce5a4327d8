// Reference (scalar) dequantizers of GGML tensor types to fp32.
//
// Block layouts (little-endian; d/m/dmin are fp16 unless stated):
//   Q4_0  32 elems, 18 B: d, qs[16]; x[j] = d*((qs[j]&15)-8), x[j+16] = d*((qs[j]>>4)-8)
//   Q4_1  32 elems, 20 B: d, m, qs[16]; x = d*q + m, same nibble order as Q4_0
//   Q5_0  32 elems, 22 B: d, qh[4] (u32, bit j = 5th bit of x[j]), qs[16]; x = d*(q-16)
//   Q5_1  32 elems, 24 B: d, m, qh[4], qs[16]; x = d*q + m
//   Q8_0  32 elems, 34 B: d, qs[32] int8; x = d*q
//   Q8_1  32 elems, 36 B: d, s (=d*sum q), qs[32] int8; x = d*q
//   Q4_K 256 elems,144 B: d, dmin, scales[12] (8 x 6-bit scale + 8 x 6-bit min), qs[128]
//   Q5_K 256 elems,176 B: d, dmin, scales[12], qh[32], qs[128]
//   Q6_K 256 elems,210 B: ql[128], qh[64], scales[16] int8, d; x = d*sc*(q-32), 16 per scale
//   Q8_K 256 elems,292 B: d (fp32), qs[256] int8, bsums[16] int16
//   F16 / BF16 / F32 plain.
#pragma once

#include <cstdint>

#include "base/status.h"
#include "gguf/types.h"

namespace slimkv::gguf {

// Dequantizes `n` elements (a whole number of blocks) from `src` into `dst`.
// Unimplemented for types without a dequantizer, InvalidArgument for a partial block.
Status Dequantize(TensorType type, const uint8_t* src, float* dst, uint64_t n);

// Q4_K/Q5_K 6-bit scale/min unpacking for sub-block j (0..7), as ggml's get_scale_min_k4.
void GetScaleMinK4(int j, const uint8_t* scales, uint8_t* scale, uint8_t* min);

}  // namespace slimkv::gguf
