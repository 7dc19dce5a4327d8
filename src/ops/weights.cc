#include "ops/weights.h"

#include <algorithm>

#include "base/check.h"
#include "base/half.h"
#include "gguf/dequant.h"

namespace slimkv::ops {

std::string_view WeightFormatName(WeightFormat f) {
  switch (f) {
    case WeightFormat::kF32: return "f32";
    case WeightFormat::kF16: return "f16";
    case WeightFormat::kQ4: return "q4";
    case WeightFormat::kQ8: return "q8";
    case WeightFormat::kGgml:
      return "ggml";
  }
  return "?";
}

bool IsGgmlMatMulType(gguf::TensorType t) {
  using T = gguf::TensorType;
  switch (t) {
    case T::kBF16:
    case T::kQ4_0:
    case T::kQ4_1:
    case T::kQ5_0:
    case T::kQ5_1:
    case T::kQ8_0:
    case T::kQ2_K:
    case T::kQ3_K:
    case T::kQ4_K:
    case T::kQ5_K:
    case T::kQ6_K:
    case T::kIQ4_NL:
    case T::kIQ4_XS:
      return true;
    default:
      return false;
  }
}

int64_t GgmlMatMulColumns(gguf::TensorType t) {
  const auto traits = gguf::GetTypeTraits(t);
  return traits ? std::max<int64_t>(32, traits->block_elems) : 32;
}

size_t WeightMatrix::code_bytes_per_row() const {
  switch (format) {
    case WeightFormat::kF32: return cols * 4;
    case WeightFormat::kF16: return cols * 2;
    case WeightFormat::kQ4: return cols / 2;
    case WeightFormat::kQ8: return cols;
    case WeightFormat::kGgml:
      return ggml_row_bytes;
  }
  return 0;
}

size_t WeightMatrix::bytes() const {
  return codes.size() + (scales.size() + mins.size()) * sizeof(float);
}

WeightMatrix WeightMatrix::Allocate(WeightFormat format, int64_t rows, int64_t cols, int group,
                                    bool has_min) {
  WeightMatrix m;
  m.format = format;
  m.rows = rows;
  m.cols = cols;
  const bool quant = format == WeightFormat::kQ4 || format == WeightFormat::kQ8;
  CHECK(rows > 0 && cols > 0, "rows {} cols {}", rows, cols);
  m.group = quant ? group : 0;
  m.has_min = quant && has_min;
  if (quant) CHECK(group % 16 == 0 && cols % group == 0, "cols {} group {}", cols, group);
  m.codes.Resize(m.code_bytes_per_row() * rows);
  if (quant) {
    m.scales.Resize(rows * (cols / group));
    if (m.has_min) m.mins.Resize(rows * (cols / group));
  }
  return m;
}

WeightMatrix WeightMatrix::AllocateGgml(gguf::TensorType type, int64_t rows, int64_t cols) {
  CHECK(IsGgmlMatMulType(type), "type {} has no matmul kernel", gguf::TypeName(type));
  CHECK(rows > 0 && cols > 0 && cols % GgmlMatMulColumns(type) == 0, "rows {} cols {}", rows, cols);
  WeightMatrix m;
  m.format = WeightFormat::kGgml;
  m.ggml_type = type;
  m.rows = rows;
  m.cols = cols;
  const auto traits = gguf::GetTypeTraits(type);
  m.ggml_row_bytes = cols / traits->block_elems * traits->block_bytes;
  m.codes.Resize(m.code_bytes_per_row() * rows);
  return m;
}

void WeightMatrix::DequantizeRow(int64_t r, float* out) const {
  CHECK(r >= 0 && r < rows);
  const uint8_t* row = codes.data() + r * code_bytes_per_row();
  switch (format) {
    case WeightFormat::kGgml: {
      // gguf's scalar dequantizer: the reference (bit-exact with gguf-py) the kernels are
      // tested against.
      const Status st = gguf::Dequantize(ggml_type, row, out, cols);
      CHECK(st.ok(), "{}", st.ToString());
      return;
    }
    case WeightFormat::kF32:
      for (int64_t c = 0; c < cols; ++c) out[c] = reinterpret_cast<const float*>(row)[c];
      return;
    case WeightFormat::kF16:
      for (int64_t c = 0; c < cols; ++c) out[c] = HalfToFloat(reinterpret_cast<const uint16_t*>(row)[c]);
      return;
    case WeightFormat::kQ4:
    case WeightFormat::kQ8:
      break;
  }
  const int64_t ng = groups_per_row();
  for (int64_t g = 0; g < ng; ++g) {
    const float s = scales[r * ng + g];
    const float m = has_min ? mins[r * ng + g] : 0.0f;
    for (int j = 0; j < group; ++j) {
      const int64_t c = g * group + j;
      int q;
      if (format == WeightFormat::kQ4) {
        const uint8_t b = row[g * 16 + (j % 16)];
        q = j < 16 ? (b & 15) : (b >> 4);
      } else {
        q = static_cast<int8_t>(row[c]);
      }
      out[c] = static_cast<float>(q) * s + m;
    }
  }
}

}  // namespace slimkv::ops
