// Packing of b-bit codes (b = 2, 3, 4, 8), shared by the int and tq families.
//
// Codes are packed in units of 16 bytes that hold 16 consecutive elements per (8 / b)
// sub-vectors: element e of a flattened code array lives in unit e / (16 * 8/b), byte
// e % 16, bits [(e / 16) % (8/b) * b, +b), so one 16-byte load and a shift give 16 codes.
// 3-bit codes are bit planes instead: per 16 elements, 3 x 2 bytes (bit k of element j in
// byte 2k + j/8, bit j % 8). Dense: n elements take exactly n * b / 8 bytes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace slimkv::kv {

uint32_t GetCode(const uint8_t* codes, int bits, size_t e);
void PutCode(uint8_t* codes, int bits, size_t e, uint32_t code);

}  // namespace slimkv::kv
