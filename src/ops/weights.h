// Weight matrices in slimkv's matmul layouts.
//
// A matrix is [rows, cols] (rows = output features, cols = input features).
// Quantized GGUF types are repacked at load into a group format in tiles, or
// kept as the file's blocks (kGgml); either way they stay quantized in memory
// and are dequantized in registers by the matmul kernels (docs/DECISIONS.md
// "Weights: kept quantized, repacked losslessly" has the measurements behind
// these choices):
//
//   kQ3  per group of 16 columns, 4 bytes of 2-bit codes (byte j: columns j,
//        j+4, j+8, j+12 from its low bits up) and a third bit per column
//        (Q3_K): q in [0, 7].
//   kQ4  per group of `group` columns (32), 16 bytes of codes: byte j holds
//        column j in its low nibble and column j+16 in its high nibble
//        (ggml's order). q in [0, 15].
//   kQ5  kQ4's nibbles and a fifth bit per column (Q5_x): q in [0, 31].
//   kQ6  per group of 16 columns, 8 bytes of nibbles (byte j: columns j and
//        j+8) and two high bits per column (Q6_K): q in [0, 63].
//   kIQ4 kQ4's nibbles as indices into IQ4_NL's 16 non-linear levels
//        (gguf::kIq4nlValues, -127..113): q = level[nibble] (IQ4_NL, IQ4_XS).
//   kQ8  per group of `group` columns (32, or 16), one int8 code per column:
//        q in [-128, 127].
//   w = scale * (q - code_offset) + min. `code_offset` is an implied minimum
//   (Q3_K: 4, Q4_0: 8, Q5_0: 16, Q6_K: 32; 0 for kQ8) that costs no bytes.
//   kF16 IEEE half per weight.   kF32 float per weight.
//   kGgml the GGUF file's own blocks of `ggml_type` (layouts in
//        gguf/dequant.h), kept as stored so a matrix takes exactly the file's
//        bits per weight; the kernels decode them in registers
//        (ops/block_decode-inl.h). Types: IsGgmlMatMulType. Used for the types
//        whose tiled form would take more than the file's bits (model/repack.h).
//
// kGgml rows are row-major, [rows][ggml_row_bytes]. The other formats store
// rows in tiles of kWeightTileRows rows (the last one padded with zero rows),
// so a SIMD lane can stand for a row: a decode kernel computes 16 outputs per
// vector with no horizontal sums, and applies a group's scale to 16 rows with one instruction.
//   kF32/kF16  tile = [cols][16]: column c of the tile's 16 rows is contiguous.
//   quantized  tile = [groups][chunks][16][4 bytes]: a group's code bytes
//              (2-bit, nibbles or int8, in the order above) are cut in 4-byte pieces;
//              chunk k holds piece k of each of the 16 rows, row i at bytes
//              4i..4i+3 (64 bytes: one AVX-512 vector, whose 32-bit lane i is
//              row i).
//              kQ3, kQ5 and kQ6 follow a group's chunks with their high bits
//              as AVX-512 byte masks (1, 1 and 2 planes): for chunk k, plane p
//              and part s of a byte (P parts: 4 crumbs or 2 nibbles), 8 bytes
//              (bit 4i+b: row i, column s*group/P+4k+b) at byte 8 (P (k *
//              planes + p) + s) of the group's masks; the kernel adds
//              (4 or 16) << p under each mask, one instruction per 64 codes and plane.
//   scales, mins [tiles][groups][16]: a group's 16 scales are one vector. fp32,
//              or fp16 (`half_scales`) when every scale and minimum is exactly
//              an fp16 value, as the fp16 fields of Q4_x/Q5_x/Q8_0 are; or,
//              with `super_group` (the K types), int8 sub-scales times an fp16
//              factor per `super_group` columns: supers, super_mins
//              [tiles][cols / super_group][16] (Q4_K: w = d sc q - dmin m, as
//              sub-scale sc and factor d, sub-minimum m and factor -dmin). The
//              products are exact in fp32, so every form is lossless.
//
// Invariants: cols % 16 == 0; for the quantized formats group % 16 == 0 (kQ4/kQ5/kIQ4:
// 32, kQ3/kQ6: 16) and cols % group == 0 (and % super_group); padding rows have
// zero codes, scales and mins; `has_min` is false when every min is zero (then
// mins is empty); for kGgml, cols % GgmlMatMulColumns(ggml_type) == 0 and no
// scales/mins. Kernels split every format's rows in 16-row tiles (tiles()).
#pragma once

#include <cstdint>
#include <string_view>

#include "base/aligned_buffer.h"
#include "gguf/types.h"

namespace slimkv::ops {

// (The first five keep the values bench_matmul's documented `fmt:` filters name.)
enum class WeightFormat { kF32, kF16, kQ4, kQ8, kGgml, kQ3, kQ5, kQ6, kIQ4 };
// A quantized format's codes per byte (kQ8 1, nibbles 2, kQ3's 2-bit codes 4: part s of a
// group's byte j holds column s * group / parts + j) and high-bit planes (kQ3, kQ5 1; kQ6 2).
constexpr int CodeParts(WeightFormat f) { return f == WeightFormat::kQ8 ? 1 : f == WeightFormat::kQ3 ? 4 : 2; }
constexpr int CodePlanes(WeightFormat f) {
  return f == WeightFormat::kQ5 || f == WeightFormat::kQ3 ? 1 : f == WeightFormat::kQ6 ? 2 : 0;
}
// Bytes of codes of one row's group of `group` columns in quantized format f (masks included).
constexpr size_t GroupCodeBytes(WeightFormat f, int group) {
  return static_cast<size_t>(group / CodeParts(f) + CodePlanes(f) * group / 8);
}
// How a quantized matrix stores its scales (above).
enum class ScaleForm { kF32, kF16, kSub };
std::string_view WeightFormatName(WeightFormat f);

inline constexpr int64_t kWeightTileRows = 16;

// The GGUF block types the matmul kernels read as stored (WeightFormat::kGgml).
bool IsGgmlMatMulType(gguf::TensorType t);
// A kGgml matrix's columns are a multiple of this: the type's block (BF16: 32, read as blocks of 32 values).
int64_t GgmlMatMulColumns(gguf::TensorType t);

struct WeightMatrix {
  WeightFormat format = WeightFormat::kF32;
  int64_t rows = 0, cols = 0;
  int group = 0;        // columns per scale group (kQ4/kQ5/kQ6/kQ8)
  int code_offset = 0;  // the implied minimum, in codes (above)
  int super_group = 0;  // columns per fp16 factor of int8 sub-scales (ScaleForm::kSub), or 0
  bool has_min = false;
  bool half_scales = false;
  gguf::TensorType ggml_type = gguf::TensorType::kF32;  // kGgml: the block type of codes
  size_t ggml_row_bytes = 0;                            // kGgml: bytes of one row of blocks
  AlignedBuffer<uint8_t> codes;   // [tiles] tiles, as above; kGgml [rows][ggml_row_bytes]
  AlignedBuffer<uint8_t> scales;  // [tiles][groups][16] fp32, or fp16 if half_scales
  AlignedBuffer<uint8_t> mins;    // the same, if has_min
  AlignedBuffer<uint8_t> supers, super_mins;  // kSub: [tiles][cols / super_group][16] fp16

  bool quantized() const {
    return format == WeightFormat::kQ3 || format == WeightFormat::kQ4 || format == WeightFormat::kQ5 ||
           format == WeightFormat::kQ6 || format == WeightFormat::kQ8 || format == WeightFormat::kIQ4;
  }
  ScaleForm scale_form() const {
    return super_group ? ScaleForm::kSub : half_scales ? ScaleForm::kF16 : ScaleForm::kF32;
  }
  size_t scale_bytes() const { return super_group ? 1 : half_scales ? 2 : 4; }
  int64_t groups_per_row() const { return group ? cols / group : 0; }
  int64_t tiles() const { return (rows + kWeightTileRows - 1) / kWeightTileRows; }
  // Bytes of codes of one row (of one group for kQ4/kQ5/kQ8: group_code_bytes()).
  size_t code_bytes_per_row() const;
  size_t group_code_bytes() const;
  size_t tile_code_bytes() const { return code_bytes_per_row() * kWeightTileRows; }
  const uint8_t* tile_codes(int64_t tile) const { return codes.data() + tile * tile_code_bytes(); }
  // A tile's [groups][16] scales and minimums (fp32 or fp16 elements).
  const uint8_t* tile_scales(int64_t tile) const { return scales.data() + tile * tile_scale_bytes(); }
  const uint8_t* tile_mins(int64_t tile) const { return mins.data() + tile * tile_scale_bytes(); }
  size_t tile_scale_bytes() const { return groups_per_row() * kWeightTileRows * scale_bytes(); }
  // kSub: a tile's [cols / super_group][16] fp16 factors of the scales and minimums.
  const uint8_t* tile_supers(int64_t tile) const { return supers.data() + tile * tile_super_bytes(); }
  const uint8_t* tile_super_mins(int64_t tile) const { return super_mins.data() + tile * tile_super_bytes(); }
  size_t tile_super_bytes() const { return super_group ? cols / super_group * kWeightTileRows * 2 : 0; }
  // Scale and minimum of group g of row r (0 without minimums).
  float scale(int64_t r, int64_t g) const { return ScaleAt(scales, supers, r, g); }
  float min(int64_t r, int64_t g) const { return has_min ? ScaleAt(mins, super_mins, r, g) : 0.0f; }
  // Bytes the matmul reads for the whole matrix: codes, scales, mins and their factors (padding included).
  size_t bytes() const;

  // `super_group`: 0, or the columns per fp16 factor of int8 sub-scales (SetSubScales).
  static WeightMatrix Allocate(WeightFormat format, int64_t rows, int64_t cols, int group, bool has_min,
                               int super_group = 0);
  // A kGgml matrix of `type` (IsGgmlMatMulType; cols a multiple of
  // GgmlMatMulColumns), codes zeroed.
  static WeightMatrix AllocateGgml(gguf::TensorType type, int64_t rows, int64_t cols);
  // Writes row r from its row-major form: `row_codes` [code_bytes_per_row()] in
  // the group order above (for kF32/kF16 the values; for kQ5 each group's 16
  // nibble bytes then its fifth bits as a little-endian 32-bit word, bit j for
  // column j, as ggml's qh; for kQ6 each group's 8 nibble bytes then a 32-bit
  // word with column j's two high bits at bits 2j, 2j+1; for kQ3 each group's 4
  // bytes of 2-bit codes then a 16-bit word, bit j for column j), `row_scales` and
  // `row_mins` [groups_per_row()] (null for float formats; `row_mins` ignored
  // without has_min; both ignored with super_group: SetSubScales).
  void SetRow(int64_t r, const uint8_t* row_codes, const float* row_scales, const float* row_mins);
  // With super_group: row r's int8 sub-scales and sub-minimums [groups_per_row()] and their fp16
  // factors [cols / super_group] (as stored bits; sub_min and super_min ignored without has_min).
  void SetSubScales(int64_t r, const int8_t* sub, const int8_t* sub_min, const uint16_t* super,
                    const uint16_t* super_min);
  // Stores scales and minimums as fp16 if every one of them is exactly an fp16 value.
  void CompactScales();
  // Row r dequantized to fp32 [cols] (embedding lookups, references and tests).
  void DequantizeRow(int64_t r, float* out) const;

 private:
  // Element (r, g) of scales or mins `b`; with super_group, times its factor in `factors`.
  float ScaleAt(const AlignedBuffer<uint8_t>& b, const AlignedBuffer<uint8_t>& factors, int64_t r,
                int64_t g) const;
};

}  // namespace slimkv::ops
