#include "model/repack.h"

#include <cstring>
#include <optional>
#include <vector>

#include "base/check.h"
#include "base/half.h"
#include "gguf/dequant.h"

namespace slimkv::model {
namespace {

using gguf::TensorType;
using ops::WeightFormat;

struct Shape {
  int64_t rows, cols;
};

float H(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return HalfToFloat(h);
}

uint16_t Bits(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

// One row of a K type in kQ4/kQ5/kQ6's row form (WeightMatrix::SetRow) and its
// sub-scales (SetSubScales). Q4_K/Q5_K: w = d sc q - dmin m per 32 columns, as
// sub-scale sc with factor d and sub-minimum m with factor -dmin (the fp16 sign
// flipped, exact); Q6_K: w = d sc (q - 32) per 16 columns; IQ4_XS: w = d (ls - 32) level[q] per 32;
// Q3_K: w = d sc (q - 4) per 16, q the 2 low bits and the hmask bit as the third.
void RepackRowK(TensorType type, const uint8_t* src, int64_t cols, uint8_t* codes, int8_t* sub,
                int8_t* sub_min, uint16_t* super, uint16_t* super_min) {
  for (int64_t b = 0; b < cols / 256; ++b) {
    if (type == TensorType::kQ3_K) {  // hmask[32], qs[64], scales[12], d
      const uint8_t* x = src + b * 110;
      for (int g = 0; g < 16; ++g) {
        uint8_t* c = codes + (b * 16 + g) * 6;
        uint16_t high = 0;
        std::memset(c, 0, 4);
        for (int j = 0; j < 16; ++j) {
          const int e = 16 * g + j, half = e / 128, k = e % 128 / 32, l = e % 32;
          const int low = (x[32 + 32 * half + l] >> (2 * k)) & 3;
          c[j % 4] = static_cast<uint8_t>(c[j % 4] | low << (2 * (j / 4)));
          high = static_cast<uint16_t>(high | ((x[l] >> (e / 32)) & 1) << j);
        }
        std::memcpy(c + 4, &high, 2);
        sub[b * 16 + g] = static_cast<int8_t>(gguf::Q3KScale(x + 96, g));
      }
      super[b] = Bits(x + 108);
      continue;
    }
    if (type == TensorType::kIQ4_XS) {  // d, scales_h, scales_l[4], qs[128] (Q4_0's nibble order per 32)
      const uint8_t* x = src + b * 136;
      for (int g = 0; g < 8; ++g) sub[b * 8 + g] = static_cast<int8_t>(gguf::Iq4XsScale(x, g) - 32);
      std::memcpy(codes + b * 128, x + 8, 128);
      super[b] = Bits(x);
      continue;
    }
    if (type == TensorType::kQ6_K) {  // ql[128], qh[64], scales[16], d
      const uint8_t* x = src + b * 210;
      for (int g = 0; g < 16; ++g) {
        uint8_t q[16];
        for (int j = 0; j < 16; ++j) {
          const int e = 16 * g + j, half = e / 128, k = e % 128 / 32, l = e % 32;
          const uint8_t low_byte = x[64 * half + l + 32 * (k % 2)];
          const int low = k < 2 ? (low_byte & 15) : (low_byte >> 4);
          q[j] = static_cast<uint8_t>(low | ((x[128 + 32 * half + l] >> (2 * k)) & 3) << 4);
        }
        uint8_t* c = codes + (b * 16 + g) * 12;
        uint32_t high = 0;
        for (int j = 0; j < 8; ++j) c[j] = static_cast<uint8_t>((q[j] & 15) | (q[j + 8] & 15) << 4);
        for (int j = 0; j < 16; ++j) high |= static_cast<uint32_t>(q[j] >> 4) << (2 * j);
        std::memcpy(c + 8, &high, 4);
        sub[b * 16 + g] = static_cast<int8_t>(x[192 + g]);
      }
      super[b] = Bits(x + 208);
      continue;
    }
    const bool five = type == TensorType::kQ5_K;  // d, dmin, scales[12], (qh[32],) qs[128]
    const uint8_t* x = src + b * (five ? 176 : 144);
    const uint8_t* qs = x + (five ? 48 : 16);
    for (int g = 0; g < 8; ++g) {
      uint8_t sc, m;
      gguf::GetScaleMinK4(g, x + 4, &sc, &m);
      sub[b * 8 + g] = static_cast<int8_t>(sc);  // 6-bit fields: 0..63
      sub_min[b * 8 + g] = static_cast<int8_t>(m);
      uint8_t q[32];
      uint32_t high = 0;
      for (int l = 0; l < 32; ++l) {
        q[l] = (qs[32 * (g / 2) + l] >> (4 * (g % 2))) & 15;
        if (five) high |= static_cast<uint32_t>((x[16 + l] >> g) & 1) << l;
      }
      uint8_t* c = codes + (b * 8 + g) * (five ? 20 : 16);
      for (int j = 0; j < 16; ++j) c[j] = static_cast<uint8_t>(q[j] | q[j + 16] << 4);
      if (five) std::memcpy(c + 16, &high, 4);
    }
    super[b] = Bits(x);
    super_min[b] = Bits(x + 2) ^ 0x8000;  // -dmin
  }
}

// One row of `cols` elements starting at `src` (whole blocks) of a Tiled type
// in the row-major form that WeightMatrix::SetRow takes: codes [code bytes per row], scale and min [groups].
void RepackRow(TensorType type, const uint8_t* src, int64_t cols, uint8_t* codes, float* scale, float* min) {
  switch (type) {
    case TensorType::kF32:
      std::memcpy(codes, src, cols * 4);
      return;
    case TensorType::kF16:
      std::memcpy(codes, src, cols * 2);
      return;
    case TensorType::kQ4_0:   // d, qs[16]: x = d * (q - 8) (qs in kQ4's byte order already)
    case TensorType::kIQ4_NL:  // d, qs[16]: x = d * level[q]
      for (int64_t g = 0; g < cols / 32; ++g, src += 18) {
        std::memcpy(codes + g * 16, src + 2, 16);
        scale[g] = H(src);
      }
      return;
    case TensorType::kQ4_1:  // d, m, qs[16]: x = d * q + m
      for (int64_t g = 0; g < cols / 32; ++g, src += 20) {
        std::memcpy(codes + g * 16, src + 4, 16);
        scale[g] = H(src);
        min[g] = H(src + 2);
      }
      return;
    case TensorType::kQ5_0:  // d, qh[4], qs[16]: x = d * (q - 16); kQ5's row form is qs then qh
      for (int64_t g = 0; g < cols / 32; ++g, src += 22) {
        std::memcpy(codes + g * 20, src + 6, 16);
        std::memcpy(codes + g * 20 + 16, src + 2, 4);
        scale[g] = H(src);
      }
      return;
    case TensorType::kQ5_1:  // d, m, qh[4], qs[16]: x = d * q + m
      for (int64_t g = 0; g < cols / 32; ++g, src += 24) {
        std::memcpy(codes + g * 20, src + 8, 16);
        std::memcpy(codes + g * 20 + 16, src + 4, 4);
        scale[g] = H(src);
        min[g] = H(src + 2);
      }
      return;
    case TensorType::kQ8_0:  // d, qs[32] int8
      for (int64_t g = 0; g < cols / 32; ++g, src += 34) {
        std::memcpy(codes + g * 32, src + 2, 32);
        scale[g] = H(src);
      }
      return;
    default:
      CHECK(false, "RepackRow on type {}", gguf::TypeName(type));
  }
}

// The types that go into tiles (ops/weights.h, TileFormOf): those whose tiled form takes
// the file's bits per weight, or barely more. Q4_0's, Q5_0's and Q6_K's implied
// minimums are the matrix's code_offset, Q5_x's and Q6_K's high bits kQ5's and
// kQ6's bit planes; the K types keep their two-level scales (an int8
// sub-scale per group, an fp16 factor per 256 columns), whose 6-bit fields
// take a byte each: Q4_K 4.625 bits per weight against 4.5, Q5_K 5.625 against
// 5.5, Q6_K 6.5625 as the file. IQ4_NL and IQ4_XS are kIQ4 (their levels are
// a lookup in the kernel), IQ4_XS with two-level scales: 4.3125 bits against
// 4.25; Q3_K is kQ3 (2-bit codes and a bit plane), 3.5625 bits against 3.4375.
// Others stay the file's blocks (kGgml): BF16, Q2_K (its 4-bit sub-scales and
// sub-minimums would take a byte each: 3.125 bits against 2.625).
struct TileForm {
  WeightFormat format;
  int group;
  bool has_min;
  int code_offset = 0;
  int super_group = 0;
};

// Its tile form, nullopt for a type that stays blocks.
std::optional<TileForm> TileFormOf(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return TileForm{WeightFormat::kF32, 0, false};
    case TensorType::kF16:
      return TileForm{WeightFormat::kF16, 0, false};
    case TensorType::kQ4_0:
      return TileForm{WeightFormat::kQ4, 32, false, 8};
    case TensorType::kQ4_1:
      return TileForm{WeightFormat::kQ4, 32, true};
    case TensorType::kQ5_0:
      return TileForm{WeightFormat::kQ5, 32, false, 16};
    case TensorType::kQ5_1:
      return TileForm{WeightFormat::kQ5, 32, true};
    case TensorType::kQ4_K:
      return TileForm{WeightFormat::kQ4, 32, true, 0, 256};
    case TensorType::kQ5_K:
      return TileForm{WeightFormat::kQ5, 32, true, 0, 256};
    case TensorType::kQ6_K:
      return TileForm{WeightFormat::kQ6, 16, false, 32, 256};
    case TensorType::kIQ4_NL:
      return TileForm{WeightFormat::kIQ4, 32, false};
    case TensorType::kQ3_K:
      return TileForm{WeightFormat::kQ3, 16, false, 4, 256};
    case TensorType::kIQ4_XS:
      return TileForm{WeightFormat::kIQ4, 32, false, 0, 256};
    case TensorType::kQ8_0:
      return TileForm{WeightFormat::kQ8, 32, false};
    default:
      return std::nullopt;
  }
}

Result<Shape> MatrixShape(const gguf::TensorInfo& t) {
  if (t.dims.size() != 1 && t.dims.size() != 2) {
    return InvalidArgument("tensor '{}' has {} dimensions; a matrix has 2", t.name, t.dims.size());
  }
  const int64_t cols = static_cast<int64_t>(t.dims[0]);
  const int64_t rows = t.dims.size() == 2 ? static_cast<int64_t>(t.dims[1]) : 1;
  if (cols % 16 != 0) return InvalidArgument("tensor '{}': {} columns, not a multiple of 16", t.name, cols);
  return Shape{rows, cols};
}

}  // namespace

std::string SupportedMatrixTypes() {
  std::string s = "F32, F16";
  for (uint32_t id = 0; id < 64; ++id) {
    const auto type = static_cast<TensorType>(id);
    if (ops::IsGgmlMatMulType(type)) s += ", " + std::string(gguf::TypeName(type));
  }
  return s;
}

Result<RepackPlan> PlanRepack(const gguf::TensorInfo& t) {
  ASSIGN_OR_RETURN(const Shape shape, MatrixShape(t));
  RepackPlan p;
  if (t.type != TensorType::kF32 && t.type != TensorType::kF16 && !ops::IsGgmlMatMulType(t.type)) {
    return Unimplemented("tensor '{}' has type {}, which slimkv cannot use for a matrix; supported: {}",
                         t.name, gguf::TypeName(t.type), SupportedMatrixTypes());
  }
  if (const std::optional<TileForm> form = TileFormOf(t.type)) {
    const TileForm& f = *form;
    const int block = std::max(f.group, f.super_group);
    if (block && shape.cols % block != 0) {
      return InvalidArgument("tensor '{}': {} columns, not a multiple of its {}-element blocks", t.name,
                             shape.cols, block);
    }
    // Rows padded to whole tiles; scales (and minimums) fp16, as the file stores them, or the K
    // types' int8 sub-scales with fp16 factors.
    const size_t rows = (shape.rows + ops::kWeightTileRows - 1) / ops::kWeightTileRows * ops::kWeightTileRows;
    const size_t cols = shape.cols;
    p.format = f.format;
    switch (f.format) {
      case WeightFormat::kF32:
        p.bytes = rows * cols * 4;
        break;
      case WeightFormat::kF16:
        p.bytes = rows * cols * 2;
        break;
      default: {
        const size_t code_bytes = cols / f.group * ops::GroupCodeBytes(f.format, f.group);
        // fp16 scales (and minimums) per group, or int8 sub-scales per group and fp16 factors.
        const size_t scale_bytes =
            f.super_group ? cols / f.group + cols / f.super_group * 2 : cols / f.group * 2;
        p.bytes = rows * (code_bytes + scale_bytes * (f.has_min ? 2 : 1));
      }
    }
    return p;
  }
  const int64_t block = ops::GgmlMatMulColumns(t.type);
  if (shape.cols % block != 0) {
    return InvalidArgument("tensor '{}': {} columns, not a multiple of its {}-element blocks", t.name,
                           shape.cols, block);
  }
  p.format = WeightFormat::kGgml;
  p.bytes = t.n_bytes;
  return p;
}

namespace {

Result<ops::WeightMatrix> RepackGgml(const gguf::TensorInfo& t, const Shape& shape) {
  ops::WeightMatrix m = ops::WeightMatrix::AllocateGgml(t.type, shape.rows, shape.cols);
  if (m.codes.size() != t.n_bytes) {
    return DataLoss("tensor '{}' holds {} bytes; {} rows of {} {} need {}", t.name, t.n_bytes, shape.rows,
                    shape.cols, gguf::TypeName(t.type), m.codes.size());
  }
  std::memcpy(m.codes.data(), t.data, t.n_bytes);
  return m;
}

}  // namespace

Result<ops::WeightMatrix> Repack(const gguf::TensorInfo& t) {
  ASSIGN_OR_RETURN(const RepackPlan plan, PlanRepack(t));
  ASSIGN_OR_RETURN(const Shape shape, MatrixShape(t));
  if (plan.format == WeightFormat::kGgml) return RepackGgml(t, shape);
  const auto traits = gguf::GetTypeTraits(t.type);
  const uint64_t row_bytes = static_cast<uint64_t>(shape.cols) / traits->block_elems * traits->block_bytes;
  if (row_bytes * shape.rows != t.n_bytes) {
    return DataLoss("tensor '{}' holds {} bytes; {} rows of {} {} need {}", t.name, t.n_bytes, shape.rows,
                    shape.cols, gguf::TypeName(t.type), row_bytes * shape.rows);
  }
  const TileForm f = *TileFormOf(t.type);  // tiled: plan.format is not kGgml
  ops::WeightMatrix m =
      ops::WeightMatrix::Allocate(f.format, shape.rows, shape.cols, f.group, f.has_min, f.super_group);
  m.code_offset = f.code_offset;
  std::vector<uint8_t> codes(m.code_bytes_per_row());
  if (f.super_group) {  // the K types' two-level scales
    std::vector<int8_t> sub(m.groups_per_row()), sub_min(m.groups_per_row());
    std::vector<uint16_t> super(shape.cols / f.super_group), super_min(super.size());
    for (int64_t r = 0; r < shape.rows; ++r) {
      RepackRowK(t.type, t.data + r * row_bytes, shape.cols, codes.data(), sub.data(), sub_min.data(),
                 super.data(), super_min.data());
      m.SetRow(r, codes.data(), nullptr, nullptr);
      m.SetSubScales(r, sub.data(), sub_min.data(), super.data(), super_min.data());
    }
    return m;
  }
  std::vector<float> scale(m.groups_per_row()), min(m.groups_per_row());
  for (int64_t r = 0; r < shape.rows; ++r) {
    RepackRow(t.type, t.data + r * row_bytes, shape.cols, codes.data(), scale.data(), min.data());
    m.SetRow(r, codes.data(), scale.data(), min.data());
  }
  if (m.quantized()) {
    m.CompactScales();
    // A scale that is no fp16 value (a NaN payload) would leave fp32 scales and
    // more than the file's bits: such a matrix keeps the file's blocks.
    if (!m.half_scales) return RepackGgml(t, shape);
  }
  return m;
}

}  // namespace slimkv::model
