// Scalar integer formats: int8, int4, int3, int2 with scales per channel or per token
// group, symmetric or asymmetric, and llama.cpp's q8_0 / q4_0 (per token, groups of 32
// channels, one scale, llama.cpp's rounding rules).
//
// Dequantization: x = scale * (code - offset) + zero, offset = 2^(b-1) for symmetric codes
// (stored unsigned), 0 for asymmetric; symmetric formats store no zero.
//
// Layout of a part of `bt` tokens, `hd` channels, b-bit codes, groups of g channels
// (G = hd / g):
//   codes: one K or V array of hd channels, tiled for the integer dot product (packing.h:
//          K tiles 16 tokens x 4 channels, V tiles 16 channels x 4 tokens, 8 / b tiles per
//          64-byte unit in bit slices; 3-bit units of 96 bytes carry their high bits apart)
//   then the fp16 metadata:
//     per channel (K, `:channel`):  scale [hd], zero [hd]  (over the block's tokens)
//     per token group, K:           scale [G][bt], zero [G][bt]
//     per token group, V:           scale [bt][G], zero [bt][G]
//   each part padded to a multiple of 64 bytes.
// Invariants: bt % 16 == 0, hd % 16 == 0, g % 16 == 0, g divides hd; data_bytes ==
// bt * hd * b / 8; meta_bytes == 2 * (1 or 2) * (scales).
//
// Quantizers (min/max over finite values only, so one NaN token cannot poison the scales
// of the others; NaN stored as 0, +-Inf clamped):
//   asymmetric: scale = (max - min) / (2^b - 1), zero = min, code = round((x - zero) / scale)
//   symmetric:  scale = amax / (2^(b-1) - 1), code = round(x / scale) + 2^(b-1)
//   q8_0 / q4_0: llama.cpp's rules (ggml-quants.c quantize_row_q8_0_ref / q4_0_ref)
// Scales and zeros are rounded to fp16 before the codes are chosen, so decoding with the
// stored values reproduces what the encoder intended.
//
// Kernels: int-inl.h (AVX-512 VNNI integer dot products, float FMAs on other targets).
#pragma once

#include "kv/codecs/codec_family.h"

namespace slimkv::kv {

extern const CodecFamily kIntFamily;

// Offset of symmetric codes (2^(b-1)), 0 for asymmetric ones.
inline float IntCodeOffset(const KvFormat& f, int bits) {
  return f.symmetric ? static_cast<float>(1 << (bits - 1)) : 0.0f;
}
// Where the zeros of a part start, in fp16 values after the scales (== the scale count).
size_t IntScaleCount(const KvFormat& f, int bt, int hd);

}  // namespace slimkv::kv
