// Scalar reference codecs: encode token vectors into a block's K or V part and decode them,
// for every format of format.h.
//
// The cache uses these to write the staging formats token by token (Encode*Token) and to
// seal a full block into its final format (Encode*Part); tests and the reference attention
// decode with them. The attention kernels (attention-inl.h) read the same bytes directly and
// are tested against attention over these decoded values.
//
// Quantizers (x is one scale group: a channel over the block's tokens, or a token's group of
// channels; non-finite values are left out of the min/max, so one NaN token cannot poison
// the scales of the others, and are encoded as 0, or clamped for +-Inf):
//   asymmetric: scale = (max - min) / (2^b - 1), zero = min, code = round((x - zero) / scale)
//   symmetric:  scale = amax / (2^(b-1) - 1), code = round(x / scale) + 2^(b-1)
//   q8_0 / q4_0: llama.cpp's rules (ggml-quants.c quantize_row_q8_0_ref / q4_0_ref)
//   fp8:        scale = amax / max_finite(fp8) per part, round to nearest even, saturating
//   tq:         per vector: fp16 norm, Lloyd-Max codes of the rotated coordinates (turbo.h)
// Scales and zero points are rounded to fp16 before the codes are computed, so decoding with
// the stored values reproduces what the encoder intended.
#pragma once

#include <cstdint>

#include "kv/format.h"

namespace slimkv::kv {

// Packed code e of a part (bits <= 8), see format.h for the packing.
uint32_t GetCode(const uint8_t* codes, int bits, size_t e);
void PutCode(uint8_t* codes, int bits, size_t e, uint32_t code);

// fp8 conversions (OCP e4m3fn: no infinities, max 448; e5m2: IEEE-like, max 57344).
uint8_t FloatToFp8E4M3(float x);
float Fp8E4M3ToFloat(uint8_t b);
uint8_t FloatToFp8E5M2(float x);
float Fp8E5M2ToFloat(uint8_t b);

// Formats whose tokens can be encoded one at a time: floats, per-token integer groups, tq.
bool CanEncodeByToken(const KvFormat& f);
// One token into a part of such a format (the staging formats, and per-token formats that
// are written directly when no residual window is asked for).
void EncodeKToken(const KvFormat& f, int block_tokens, int head_dim, int slot, const float* x,
                  uint8_t* k_part);
void EncodeVToken(const KvFormat& f, int block_tokens, int head_dim, int slot, const float* x,
                  uint8_t* v_part);

// A whole part: x is [n_tokens][head_dim] token-major (n_tokens <= block_tokens; slots past
// n_tokens are left zero).
void EncodeKPart(const KvFormat& f, int block_tokens, int head_dim, const float* x, int n_tokens,
                 uint8_t* k_part);
void EncodeVPart(const KvFormat& f, int block_tokens, int head_dim, const float* x, int n_tokens,
                 uint8_t* v_part);

// Decodes token `slot` of a part (any format) into out[head_dim].
void DecodeK(const KvFormat& f, int block_tokens, int head_dim, int slot, const uint8_t* k_part,
             float* out);
void DecodeV(const KvFormat& f, int block_tokens, int head_dim, int slot, const uint8_t* v_part,
             float* out);

// The largest error a format may make on one element of a group whose finite values span
// [lo, hi] (used by tests to derive tolerances from the format's step size).
float MaxAbsError(const KvFormat& f, float lo, float hi);

}  // namespace slimkv::kv
