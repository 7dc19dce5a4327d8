#include "model/repack.h"

#include <cstring>

namespace slimkv::model {
namespace {

using gguf::TensorType;
using ops::WeightFormat;

struct Shape {
  int64_t rows, cols;
};

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
  if (t.type == TensorType::kF32 || t.type == TensorType::kF16) {
    p.format = t.type == TensorType::kF32 ? WeightFormat::kF32 : WeightFormat::kF16;
    p.bytes = static_cast<size_t>(shape.rows * shape.cols) * (t.type == TensorType::kF32 ? 4 : 2);
    return p;
  }
  if (!ops::IsGgmlMatMulType(t.type)) {
    return Unimplemented("tensor '{}' has type {}, which slimkv cannot use for a matrix; supported: {}",
                         t.name, gguf::TypeName(t.type), SupportedMatrixTypes());
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

Result<ops::WeightMatrix> Repack(const gguf::TensorInfo& t) {
  ASSIGN_OR_RETURN(const RepackPlan plan, PlanRepack(t));
  ASSIGN_OR_RETURN(const Shape shape, MatrixShape(t));
  ops::WeightMatrix m = plan.format == WeightFormat::kGgml
                            ? ops::WeightMatrix::AllocateGgml(t.type, shape.rows, shape.cols)
                            : ops::WeightMatrix::Allocate(plan.format, shape.rows, shape.cols, 0, false);
  if (m.codes.size() != t.n_bytes) {
    return DataLoss("tensor '{}' holds {} bytes; {} rows of {} {} need {}", t.name, t.n_bytes, shape.rows,
                    shape.cols, gguf::TypeName(t.type), m.codes.size());
  }
  std::memcpy(m.codes.data(), t.data, t.n_bytes);
  return m;
}

}  // namespace slimkv::model
