#include "model/repack.h"

#include <cstring>
#include <vector>

#include "base/check.h"
#include "base/half.h"

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

// The types that go into tiles (ops/weights.h): those whose tiled form takes
// the file's bits per weight, fp16 scales included (Q4_0's and Q5_0's implied
// minimums are the matrix's code_offset, Q5_x's fifth bits kQ5's bit plane).
// Others stay the file's blocks (kGgml): the K types' products d*sc are not
// fp16 values, so their tiled form would need fp32 scales.
bool Tiled(TensorType type) {
  switch (type) {
    case TensorType::kF32:
    case TensorType::kF16:
    case TensorType::kQ4_0:
    case TensorType::kQ4_1:
    case TensorType::kQ5_0:
    case TensorType::kQ5_1:
    case TensorType::kQ8_0:
      return true;
    default:
      return false;
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
    case TensorType::kQ4_0:  // d, qs[16]: x = d * (q - 8) (qs in kQ4's byte order already)
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

struct TileForm {
  WeightFormat format;
  int group;
  bool has_min;
  int code_offset = 0;
};

TileForm TileFormOf(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return {WeightFormat::kF32, 0, false};
    case TensorType::kF16:
      return {WeightFormat::kF16, 0, false};
    case TensorType::kQ4_0:
      return {WeightFormat::kQ4, 32, false, 8};
    case TensorType::kQ4_1:
      return {WeightFormat::kQ4, 32, true};
    case TensorType::kQ5_0:
      return {WeightFormat::kQ5, 32, false, 16};
    case TensorType::kQ5_1:
      return {WeightFormat::kQ5, 32, true};
    default:
      return {WeightFormat::kQ8, 32, false};  // Q8_0
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
  if (Tiled(t.type)) {
    const TileForm f = TileFormOf(t.type);
    if (f.group && shape.cols % f.group != 0) {
      return InvalidArgument("tensor '{}': {} columns, not a multiple of its {}-element blocks", t.name,
                             shape.cols, f.group);
    }
    // Rows padded to whole tiles; scales (and minimums) fp16, as the file stores them.
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
        const size_t code_bytes = f.format == WeightFormat::kQ8   ? cols
                                  : f.format == WeightFormat::kQ5 ? cols / 2 + cols / 8
                                                                  : cols / 2;
        p.bytes = rows * (code_bytes + cols / f.group * 2 * (f.has_min ? 2 : 1));
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
  const TileForm f = TileFormOf(t.type);
  ops::WeightMatrix m = ops::WeightMatrix::Allocate(f.format, shape.rows, shape.cols, f.group, f.has_min);
  m.code_offset = f.code_offset;
  std::vector<uint8_t> codes(m.code_bytes_per_row());
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
