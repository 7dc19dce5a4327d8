#include "ops/weights.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "base/check.h"
#include "base/half.h"
#include "gguf/dequant.h"

namespace slimkv::ops {

std::string_view WeightFormatName(WeightFormat f) {
  switch (f) {
    case WeightFormat::kF32:
      return "f32";
    case WeightFormat::kF16:
      return "f16";
    case WeightFormat::kQ4:
      return "q4";
    case WeightFormat::kQ5:
      return "q5";
    case WeightFormat::kQ6:
      return "q6";
    case WeightFormat::kQ3:
      return "q3";
    case WeightFormat::kIQ4:
      return "iq4";
    case WeightFormat::kQ8:
      return "q8";
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
    case WeightFormat::kF32:
      return cols * 4;
    case WeightFormat::kF16:
      return cols * 2;
    case WeightFormat::kQ3:
    case WeightFormat::kQ4:
    case WeightFormat::kQ5:
    case WeightFormat::kQ6:
    case WeightFormat::kQ8:
    case WeightFormat::kIQ4:
      return groups_per_row() * group_code_bytes();
    case WeightFormat::kGgml:
      return ggml_row_bytes;
  }
  return 0;
}

size_t WeightMatrix::group_code_bytes() const { return GroupCodeBytes(format, group); }

namespace {
// The 8-byte mask word of a group's masks that holds plane p of column j (0..group-1) of a row, and
// the bit of row i there.
size_t PlaneWord(int group, int parts, int planes, int p, int j) {
  const int span = group / parts;
  return static_cast<size_t>(((j % span) / 4 * planes + p) * parts + j / span);
}
int PlaneBit(int64_t i, int j) { return static_cast<int>(4 * i + j % 4); }
}  // namespace

size_t WeightMatrix::bytes() const {
  return codes.size() + scales.size() + mins.size() + supers.size() + super_mins.size();
}

float WeightMatrix::ScaleAt(const AlignedBuffer<uint8_t>& b, const AlignedBuffer<uint8_t>& factors, int64_t r,
                             int64_t g) const {
  const size_t i = ((r / kWeightTileRows) * groups_per_row() + g) * kWeightTileRows + r % kWeightTileRows;
  if (super_group) {
    const size_t j =
        ((r / kWeightTileRows) * (cols / super_group) + g * group / super_group) * kWeightTileRows +
        r % kWeightTileRows;
    uint16_t h;
    std::memcpy(&h, factors.data() + 2 * j, 2);
    return static_cast<float>(static_cast<int8_t>(b[i])) * HalfToFloat(h);  // exact: 8 x 11 bits
  }
  if (half_scales) {
    uint16_t h;
    std::memcpy(&h, b.data() + 2 * i, 2);
    return HalfToFloat(h);
  }
  float f;
  std::memcpy(&f, b.data() + 4 * i, 4);
  return f;
}

void WeightMatrix::CompactScales() {
  if (!quantized() || half_scales || super_group) return;
  const size_t n = scales.size() / 4;
  auto exact = [n](const AlignedBuffer<uint8_t>& b) {
    const float* f = reinterpret_cast<const float*>(b.data());
    for (size_t i = 0; i < n; ++i) {
      if (std::bit_cast<uint32_t>(HalfToFloat(FloatToHalf(f[i]))) != std::bit_cast<uint32_t>(f[i]))
        return false;
    }
    return true;
  };
  if (!exact(scales) || (has_min && !exact(mins))) return;
  auto to_half = [n](AlignedBuffer<uint8_t>& b) {
    AlignedBuffer<uint8_t> h(2 * n);
    const float* f = reinterpret_cast<const float*>(b.data());
    for (size_t i = 0; i < n; ++i) {
      const uint16_t v = FloatToHalf(f[i]);
      std::memcpy(h.data() + 2 * i, &v, 2);
    }
    b = std::move(h);
  };
  to_half(scales);
  if (has_min) to_half(mins);
  half_scales = true;
}

WeightMatrix WeightMatrix::Allocate(WeightFormat format, int64_t rows, int64_t cols, int group,
                                    bool has_min, int super_group) {
  WeightMatrix m;
  m.format = format;
  m.rows = rows;
  m.cols = cols;
  const bool quant = m.quantized();
  CHECK(rows > 0 && cols > 0, "rows {} cols {}", rows, cols);
  m.group = quant ? group : 0;
  m.has_min = quant && has_min;
  if (quant) CHECK(group % 16 == 0 && cols % group == 0, "cols {} group {}", cols, group);
  if (format == WeightFormat::kQ4 || format == WeightFormat::kQ5 || format == WeightFormat::kIQ4) {
    CHECK(group == 32, "group {}", group);
  }
  if (format == WeightFormat::kQ6 || format == WeightFormat::kQ3) CHECK(group == 16, "group {}", group);
  if (quant && super_group) {
    CHECK(format != WeightFormat::kQ8, "kQ8 has no sub-scales");
    CHECK(super_group % group == 0 && cols % super_group == 0, "cols {} super group {}", cols, super_group);
    m.super_group = super_group;
  }
  m.codes.Resize(m.tile_code_bytes() * m.tiles());
  if (quant) {
    m.scales.Resize(m.tiles() * m.tile_scale_bytes());
    if (m.has_min) m.mins.Resize(m.tiles() * m.tile_scale_bytes());
    m.supers.Resize(m.tiles() * m.tile_super_bytes());
    if (m.has_min) m.super_mins.Resize(m.tiles() * m.tile_super_bytes());
  }
  return m;
}

void WeightMatrix::SetRow(int64_t r, const uint8_t* row_codes, const float* row_scales,
                          const float* row_mins) {
  CHECK(r >= 0 && r < rows);
  CHECK(!half_scales, "SetRow after CompactScales");
  CHECK(format != WeightFormat::kGgml, "SetRow on a kGgml matrix (its codes are the file's rows)");
  const int64_t tile = r / kWeightTileRows, i = r % kWeightTileRows;
  uint8_t* t = codes.data() + tile * tile_code_bytes();
  if (!quantized()) {
    const size_t e = format == WeightFormat::kF32 ? 4 : 2;  // bytes per weight
    for (int64_t c = 0; c < cols; ++c) std::memcpy(t + (c * kWeightTileRows + i) * e, row_codes + c * e, e);
    return;
  }
  const int64_t ng = groups_per_row();
  const size_t gb = group_code_bytes();
  const int parts = CodeParts(format), planes = CodePlanes(format);
  const size_t chunks = group / parts / 4;
  for (int64_t g = 0; g < ng; ++g) {
    uint8_t* tg = t + g * gb * kWeightTileRows;
    for (size_t k = 0; k < chunks; ++k) {
      std::memcpy(tg + k * 4 * kWeightTileRows + i * 4, row_codes + g * gb + k * 4, 4);
    }
    if (planes) {
      uint32_t high = 0;  // kQ5, kQ3: bit j; kQ6: bits 2j, 2j+1
      std::memcpy(&high, row_codes + g * gb + group / parts, planes * group / 8);
      uint8_t* masks = tg + chunks * 4 * kWeightTileRows;
      for (int j = 0; j < group; ++j) {
        for (int p = 0; p < planes; ++p) {
          const size_t at = 8 * PlaneWord(group, parts, planes, p, j);
          uint64_t word;
          std::memcpy(&word, masks + at, 8);
          const uint64_t bit = uint64_t{1} << PlaneBit(i, j);
          word = (high >> (planes * j + p) & 1) ? word | bit : word & ~bit;
          std::memcpy(masks + at, &word, 8);
        }
      }
    }
    if (super_group) continue;  // SetSubScales
    const size_t s = ((tile * ng + g) * kWeightTileRows + i) * sizeof(float);
    std::memcpy(scales.data() + s, &row_scales[g], sizeof(float));
    if (has_min) std::memcpy(mins.data() + s, &row_mins[g], sizeof(float));
  }
}

void WeightMatrix::SetSubScales(int64_t r, const int8_t* sub, const int8_t* sub_min, const uint16_t* super,
                                const uint16_t* super_min) {
  CHECK(r >= 0 && r < rows && super_group, "row {} super group {}", r, super_group);
  const int64_t tile = r / kWeightTileRows, i = r % kWeightTileRows;
  const int64_t ng = groups_per_row(), ns = cols / super_group;
  for (int64_t g = 0; g < ng; ++g) {
    const size_t at = (tile * ng + g) * kWeightTileRows + i;
    scales[at] = static_cast<uint8_t>(sub[g]);
    if (has_min) mins[at] = static_cast<uint8_t>(sub_min[g]);
  }
  for (int64_t s = 0; s < ns; ++s) {
    const size_t at = 2 * ((tile * ns + s) * kWeightTileRows + i);
    std::memcpy(supers.data() + at, &super[s], 2);
    if (has_min) std::memcpy(super_mins.data() + at, &super_min[s], 2);
  }
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
  const int64_t tile = r / kWeightTileRows, i = r % kWeightTileRows;
  const uint8_t* t = tile_codes(tile);
  switch (format) {
    case WeightFormat::kGgml: {
      // gguf's scalar dequantizer: the reference (bit-exact with gguf-py) the kernels are tested against.
      const Status st = gguf::Dequantize(ggml_type, codes.data() + r * ggml_row_bytes, out, cols);
      CHECK(st.ok(), "{}", st.ToString());
      return;
    }
    case WeightFormat::kF32:
      for (int64_t c = 0; c < cols; ++c) std::memcpy(&out[c], t + (c * kWeightTileRows + i) * 4, 4);
      return;
    case WeightFormat::kF16:
      for (int64_t c = 0; c < cols; ++c) {
        uint16_t h;
        std::memcpy(&h, t + (c * kWeightTileRows + i) * 2, 2);
        out[c] = HalfToFloat(h);
      }
      return;
    case WeightFormat::kQ4:
    case WeightFormat::kQ5:
    case WeightFormat::kQ6:
    case WeightFormat::kQ3:
    case WeightFormat::kQ8:
    case WeightFormat::kIQ4:
      break;
  }
  const int parts = CodeParts(format), planes = CodePlanes(format);
  const int bits = 8 / parts, span = group / parts;
  const int64_t ng = groups_per_row();
  const size_t gb = group_code_bytes();
  for (int64_t g = 0; g < ng; ++g) {
    const float s = scale(r, g), m = min(r, g);
    const uint8_t* tg = t + g * gb * kWeightTileRows;
    // Byte j of the row's group codes.
    auto byte = [&](int j) { return tg[(j / 4) * 4 * kWeightTileRows + i * 4 + j % 4]; };
    for (int j = 0; j < group; ++j) {
      int q;
      if (format == WeightFormat::kQ8) {
        q = static_cast<int8_t>(byte(j));
      } else {
        q = (byte(j % span) >> (bits * (j / span))) & ((1 << bits) - 1);
        if (format == WeightFormat::kIQ4) q = gguf::kIq4nlValues[q];
        for (int p = 0; p < planes; ++p) {
          uint64_t word;
          std::memcpy(&word, tg + span * kWeightTileRows + 8 * PlaneWord(group, parts, planes, p, j), 8);
          q |= static_cast<int>(word >> PlaneBit(i, j) & 1) << (bits + p);
        }
        q -= code_offset;
      }
      out[g * group + j] = static_cast<float>(q) * s + m;
    }
  }
}

}  // namespace slimkv::ops
