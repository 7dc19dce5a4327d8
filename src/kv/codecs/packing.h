// Packing of b-bit codes (b = 1, 2, 3, 4, 8), shared by the int and tq families: laid out for
// the integer dot product, so the attention kernels load codes and mask them, with no
// permutes.
//
// A code array holds `width` channels of `bt` tokens (K arrays are read by token, V arrays
// by channel). It is cut into tiles of 16 lanes x 4 (vpdpbusd's operand: 16 dwords of 4
// bytes):
//   K: a tile is 16 tokens (lanes) x 4 channels; tiles in [bt / 16][width / 4] order
//   V: a tile is 16 channels (lanes) x 4 tokens; tiles in [bt / 4][width / 16] order
// Element (lane l, depth k) of a tile sits at byte 4 l + k of a 64-byte unit, and a unit
// holds S = 8 / b consecutive tiles in its bit slices: tile i is unit i / S, slice i % S, at
// bits [slice * b, +b) (S = 1, 2, 4, 8 for b = 8, 4, 2, 1). 3-bit codes: a unit of 96 bytes
// holds 4 tiles: their low 2 bits as a 2-bit unit (64 bytes), then their high bits as 4
// planes of 64 bits (plane s, bit 4 l + k: tile s's element (l, k)).
// Invariants: bt % 16 == 0, width % 16 == 0; an array takes whole units, exactly
// bt * width * b / 8 bytes when its tile count bt * width / 64 is a multiple of S (always
// but for 1-bit arrays of fewer than 512 elements per 8 tiles).
#pragma once

#include <cstddef>
#include <cstdint>

namespace slimkv::kv {

struct CodeArray {
  int bits = 0;
  bool is_key = false;
  int bt = 0;     // tokens
  int width = 0;  // channels
  size_t bytes() const;
};

// Tiles per unit and bytes per unit of a code width.
inline constexpr int SlicesPerUnit(int bits) { return bits == 3 ? 4 : 8 / bits; }
inline constexpr int UnitBytes(int bits) { return bits == 3 ? 96 : 64; }
inline size_t CodeArray::bytes() const {
  const size_t tiles = static_cast<size_t>(bt) * width / 64, s = SlicesPerUnit(bits);
  return (tiles + s - 1) / s * UnitBytes(bits);
}
// Bits a slice shifts by (3-bit codes: the low 2 bits' slices).
inline constexpr int SliceBits(int bits) { return bits == 3 ? 2 : bits; }

// Tile of (token t, channel d), and the byte of the element within its unit's 64.
inline int TileIndex(const CodeArray& a, int t, int d) {
  return a.is_key ? (t / 16) * (a.width / 4) + d / 4 : (t / 4) * (a.width / 16) + d / 16;
}
inline int TileByte(const CodeArray& a, int t, int d) {
  return a.is_key ? (t % 16) * 4 + d % 4 : (d % 16) * 4 + t % 4;
}

uint32_t GetCode(const uint8_t* codes, const CodeArray& a, int t, int d);
void PutCode(uint8_t* codes, const CodeArray& a, int t, int d, uint32_t code);

}  // namespace slimkv::kv
