// Reference codecs: encode token vectors into a block's K or V part and decode them, for
// every format (each format's family does the work: codecs/codec_family.h).
//
// The cache uses these to write the staging formats token by token (Encode*Token) and to
// seal a full block into its final format (Encode*Part); tests and the reference attention
// decode with them. The attention kernels (codecs/*-inl.h) read the same bytes directly and
// are tested against attention over these decoded values. The quantizers are described in
// each family's header.
#pragma once

#include <cstdint>

#include "kv/format.h"

namespace slimkv::kv {

// Formats whose tokens can be encoded one at a time: floats, per-token integer groups, tq
// without `:mean`.
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
void DecodeK(const KvFormat& f, int block_tokens, int head_dim, int slot, const uint8_t* k_part, float* out);
void DecodeV(const KvFormat& f, int block_tokens, int head_dim, int slot, const uint8_t* v_part, float* out);

// The largest error a format may make on one element of a group whose finite values span
// [lo, hi] (used by tests to derive tolerances from the format's step size; INFINITY for
// vector quantization, which bounds vectors, not elements).
float MaxAbsError(const KvFormat& f, float lo, float hi);

}  // namespace slimkv::kv
