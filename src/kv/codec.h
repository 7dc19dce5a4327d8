// Scalar encode/decode of token vectors into a block's K or V part, for every format.
//
// These are the reference codecs: the cache encodes with them (one token vector per stream
// per step, not a hot loop) and tests decode with them; the attention kernels read the same
// bytes directly (attention-inl.h) and are tested against attention over decoded values.
#pragma once

#include <cstdint>

#include "kv/format.h"

namespace slimkv::kv {

// Writes x[head_dim] into slot `slot` of a K part / V part laid out as format.h describes.
void EncodeK(const KvFormat& f, int block_tokens, int head_dim, int slot, const float* x,
             uint8_t* k_part);
void EncodeV(const KvFormat& f, int block_tokens, int head_dim, int slot, const float* x,
             uint8_t* v_part);
void DecodeK(const KvFormat& f, int block_tokens, int head_dim, int slot, const uint8_t* k_part,
             float* out);
void DecodeV(const KvFormat& f, int block_tokens, int head_dim, int slot, const uint8_t* v_part,
             float* out);

}  // namespace slimkv::kv
