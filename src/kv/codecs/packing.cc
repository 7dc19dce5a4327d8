#include "kv/codecs/packing.h"

namespace slimkv::kv {

uint32_t GetCode(const uint8_t* codes, int bits, size_t e) {
  if (bits == 8) return codes[e];
  if (bits == 3) {
    const uint8_t* planes = codes + (e / 16) * 6;
    const size_t j = e % 16;
    uint32_t v = 0;
    for (int k = 0; k < 3; ++k) v |= ((planes[2 * k + j / 8] >> (j % 8)) & 1u) << k;
    return v;
  }
  const size_t per_byte = 8 / bits;
  const size_t unit = e / (16 * per_byte), r = e % (16 * per_byte);
  const size_t byte = unit * 16 + r % 16, shift = (r / 16) * bits;
  return (codes[byte] >> shift) & ((1u << bits) - 1);
}

void PutCode(uint8_t* codes, int bits, size_t e, uint32_t code) {
  if (bits == 8) {
    codes[e] = static_cast<uint8_t>(code);
    return;
  }
  if (bits == 3) {
    uint8_t* planes = codes + (e / 16) * 6;
    const size_t j = e % 16;
    for (int k = 0; k < 3; ++k) {
      uint8_t& b = planes[2 * k + j / 8];
      b = static_cast<uint8_t>((b & ~(1u << (j % 8))) | (((code >> k) & 1u) << (j % 8)));
    }
    return;
  }
  const size_t per_byte = 8 / bits;
  const size_t unit = e / (16 * per_byte), r = e % (16 * per_byte);
  const size_t byte = unit * 16 + r % 16, shift = (r / 16) * bits;
  const uint32_t mask = ((1u << bits) - 1) << shift;
  codes[byte] = static_cast<uint8_t>((codes[byte] & ~mask) | ((code << shift) & mask));
}

}  // namespace slimkv::kv
