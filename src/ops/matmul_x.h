// The activations of a decode matmul, prepared once per call for the quantized kernels.
//
// The integer kernel (AVX-512 VNNI) multiplies 4-bit/8-bit weight codes with int8
// activations. To keep fp32 accuracy, x is not rounded to one int8 value (llama.cpp's q8,
// which docs/DECISIONS.md "Weights" rejects) but split into three: per token and group of
// `group` columns, with d = max|x| / 127,
//   x = d * (a + b / 254 + c / 254^2) + e,   a, b, c int8 in [-127, 127],
//   |e| <= kXPartError * max|x| of the group (about 0.9e-7),
// the size of fp32's own rounding of the group's largest values. The products q * a, q * b
// and q * c are summed exactly in int32 and combined in fp32 once per group.
#pragma once

#include <cstdint>

namespace slimkv::ops {

inline constexpr int kXParts = 3;
inline constexpr float kXPartBase = 254.0f;
// Bound on |x - d * (a + b / 254 + c / 254^2)| / max|x| over the group: what the parts leave, 0.5 / 254^2 of
// d = max / 127, plus x / d rounded to fp32 below 128 (2^-18 of d).
inline constexpr double kXPartError = (0.5 / (254.0 * 254.0) + 0x1p-18) / 127.0;

struct QuantizedX {
  int group = 0;            // columns per group (the weights' scale group)
  int64_t cols = 0;         // columns per token
  int64_t groups = 0;       // cols / group
  int8_t* parts = nullptr;  // [n_tokens][kXParts][cols]: a, b, c (integer kernel only)
  float* scale = nullptr;   // [n_tokens][groups]: d (integer kernel only)
  float* sum = nullptr;     // [n_tokens][groups]: sum of x over the group, fp32
                            // (for the mins)
  // [n_tokens][groups][kXParts]: the sum of the part over the group. Codes enter vpdpbusd's unsigned
  // operand as q + offset (kQ8's q + 128, Q4_0's nibble = q + 8, ...); starting a group's sum at
  // -offset * part_sum removes the offset exactly.
  int32_t* part_sum = nullptr;
};

}  // namespace slimkv::ops
