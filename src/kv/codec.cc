#include "kv/codec.h"

#include "base/half.h"

namespace slimkv::kv {
namespace {

// Element i of a part whose elements are stored as `type`.
void Put(ElemType type, uint8_t* part, size_t i, float x) {
  if (type == ElemType::kF32) {
    reinterpret_cast<float*>(part)[i] = x;
  } else {
    reinterpret_cast<uint16_t*>(part)[i] = FloatToHalf(x);
  }
}
float Get(ElemType type, const uint8_t* part, size_t i) {
  if (type == ElemType::kF32) return reinterpret_cast<const float*>(part)[i];
  return HalfToFloat(reinterpret_cast<const uint16_t*>(part)[i]);
}

}  // namespace

void EncodeK(const KvFormat& f, int block_tokens, int head_dim, int slot, const float* x,
             uint8_t* k_part) {
  for (int d = 0; d < head_dim; ++d) Put(f.type, k_part, static_cast<size_t>(d) * block_tokens + slot, x[d]);
}
void EncodeV(const KvFormat& f, int block_tokens, int head_dim, int slot, const float* x,
             uint8_t* v_part) {
  for (int d = 0; d < head_dim; ++d) Put(f.type, v_part, static_cast<size_t>(slot) * head_dim + d, x[d]);
}
void DecodeK(const KvFormat& f, int block_tokens, int head_dim, int slot, const uint8_t* k_part,
             float* out) {
  for (int d = 0; d < head_dim; ++d) out[d] = Get(f.type, k_part, static_cast<size_t>(d) * block_tokens + slot);
}
void DecodeV(const KvFormat& f, int block_tokens, int head_dim, int slot, const uint8_t* v_part,
             float* out) {
  for (int d = 0; d < head_dim; ++d) out[d] = Get(f.type, v_part, static_cast<size_t>(slot) * head_dim + d);
}

}  // namespace slimkv::kv
