// Float formats: f32, f16, bf16 (plain arrays, no metadata) and fp8 e4m3 / e5m2 (one fp16
// scale per part, amax / 448 or amax / 57344).
//
// Layout of a part of `bt` tokens, `hd` channels, `w` bytes per element (4, 2 or 1):
//   K part: codes [hd][bt] (channel-major), then (fp8) scale
//   V part: codes [bt][hd] (token-major), then (fp8) scale
//   each part padded to a multiple of 64 bytes.
// Invariants: bt % 16 == 0, hd % 16 == 0; data_bytes == bt * hd * w; meta_bytes == 2 (fp8)
// or 0.
//
// The attention kernels (float-inl.h) load 16 tokens of one channel (keys) or 16 channels
// of one token (values) as one vector and multiply by a broadcast query element or weight;
// fp8 is widened through fp32 bit patterns and its part scale multiplies the block's scores
// (keys) or weights (values).
#pragma once

#include <cstdint>

#include "kv/codecs/codec_family.h"

namespace slimkv::kv {

extern const CodecFamily kFloatFamily;

// fp8 conversions (OCP e4m3fn: no infinities, max 448; e5m2: IEEE-like, max 57344); round
// to nearest even, saturating; NaN -> 0.
uint8_t FloatToFp8E4M3(float x);
float Fp8E4M3ToFloat(uint8_t b);
uint8_t FloatToFp8E5M2(float x);
float Fp8E5M2ToFloat(uint8_t b);

}  // namespace slimkv::kv
