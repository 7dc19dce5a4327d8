#include "kv/codecs/packing.h"

namespace slimkv::kv {
namespace {

struct Spot {
  uint8_t* lo;  // the byte holding the code (the low 2 bits for 3-bit codes)
  int shift;
  uint8_t* hi;  // 3-bit codes: the byte holding the high bit
  int hi_bit;
};

Spot Locate(uint8_t* codes, const CodeArray& a, int t, int d) {
  const int tile = TileIndex(a, t, d), byte = TileByte(a, t, d);
  const int s = SlicesPerUnit(a.bits);
  uint8_t* unit = codes + static_cast<size_t>(tile / s) * UnitBytes(a.bits);
  Spot p{unit + byte, (tile % s) * SliceBits(a.bits), nullptr, 0};
  if (a.bits == 3) {
    p.hi = unit + 64 + 8 * (tile % s) + byte / 8;
    p.hi_bit = byte % 8;
  }
  return p;
}

}  // namespace

uint32_t GetCode(const uint8_t* codes, const CodeArray& a, int t, int d) {
  const Spot p = Locate(const_cast<uint8_t*>(codes), a, t, d);
  if (a.bits == 8) return *p.lo;
  const uint32_t lo = (*p.lo >> p.shift) & ((1u << SliceBits(a.bits)) - 1);
  return a.bits == 3 ? lo | (((*p.hi >> p.hi_bit) & 1u) << 2) : lo;
}

void PutCode(uint8_t* codes, const CodeArray& a, int t, int d, uint32_t code) {
  const Spot p = Locate(codes, a, t, d);
  if (a.bits == 8) {
    *p.lo = static_cast<uint8_t>(code);
    return;
  }
  const uint32_t mask = ((1u << SliceBits(a.bits)) - 1) << p.shift;
  *p.lo = static_cast<uint8_t>((*p.lo & ~mask) | ((code << p.shift) & mask));
  if (a.bits == 3)
    *p.hi = static_cast<uint8_t>((*p.hi & ~(1u << p.hi_bit)) | (((code >> 2) & 1u) << p.hi_bit));
}

}  // namespace slimkv::kv
