// Weight matrices in slimkv's matmul layouts.
//
// A matrix is [rows, cols] (rows = output features, cols = input features, contiguous).
// Quantized GGUF types are repacked at load into one of two group formats, kept quantized in
// memory and dequantized in registers by the matmul kernels (docs/DECISIONS.md has the
// measurement behind this choice):
//
//   kQ4  codes [rows, cols/2] bytes; per group of 32 columns, 16 bytes: byte j holds column j
//        in its low nibble and column j+16 in its high nibble (ggml's order).
//        w = scale[r][g] * q + min[r][g], q in [0, 15].
//   kQ8  codes [rows, cols] int8; w = scale[r][g] * q + min[r][g], q in [-128, 127];
//        group is 32 columns, or 16 for Q6_K (whose scales change every 16 columns).
//   kF16 codes [rows, cols] IEEE half.   kF32 codes [rows, cols] float.
//   kGgml codes [rows, cols / block_elems * block_bytes]: the GGUF file's own blocks of
//        `ggml_type` (layouts in gguf/dequant.h), kept as stored so a matrix takes exactly
//        the file's bits per weight; the kernels decode them in registers
//        (ops/block_decode-inl.h). Types: IsGgmlMatMulType.
//
// Invariants: cols % group == 0; group % 16 == 0; scales/mins are [rows, cols/group] fp32
// (empty for kF16/kF32/kGgml); `has_min` is false when every min is zero (then mins is
// empty); for kGgml, cols % block_elems == 0.
#pragma once

#include <cstdint>
#include <string_view>

#include "base/aligned_buffer.h"
#include "gguf/types.h"

namespace slimkv::ops {

enum class WeightFormat { kF32, kF16, kQ4, kQ8, kGgml };
std::string_view WeightFormatName(WeightFormat f);

// The GGUF block types the matmul kernels read as stored (WeightFormat::kGgml).
bool IsGgmlMatMulType(gguf::TensorType t);
// A kGgml matrix's columns are a multiple of this: the type's block (BF16: 32, read as
// blocks of 32 values).
int64_t GgmlMatMulColumns(gguf::TensorType t);

struct WeightMatrix {
  WeightFormat format = WeightFormat::kF32;
  int64_t rows = 0, cols = 0;
  int group = 0;  // columns per scale group (kQ4/kQ8)
  bool has_min = false;
  gguf::TensorType ggml_type = gguf::TensorType::kF32;  // kGgml: the block type of codes
  size_t ggml_row_bytes = 0;                            // kGgml: bytes of one row of blocks
  AlignedBuffer<uint8_t> codes;
  AlignedBuffer<float> scales;  // [rows, cols/group]
  AlignedBuffer<float> mins;    // [rows, cols/group] if has_min

  int64_t groups_per_row() const { return group ? cols / group : 0; }
  size_t code_bytes_per_row() const;
  // Bytes the matmul reads for the whole matrix: codes + scales + mins.
  size_t bytes() const;

  static WeightMatrix Allocate(WeightFormat format, int64_t rows, int64_t cols, int group,
                               bool has_min);
  // A kGgml matrix of `type` (IsGgmlMatMulType; cols a multiple of GgmlMatMulColumns),
  // codes zeroed.
  static WeightMatrix AllocateGgml(gguf::TensorType type, int64_t rows, int64_t cols);
  // Row r dequantized to fp32 (reference and tests).
  void DequantizeRow(int64_t r, float* out) const;
};

}  // namespace slimkv::ops
