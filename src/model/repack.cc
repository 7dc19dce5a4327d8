#include "model/repack.h"

#include <cstring>
#include <vector>

#include "base/half.h"
#include "gguf/dequant.h"

namespace slimkv::model {
namespace {

using gguf::TensorType;
using ops::WeightFormat;
using ops::WeightMatrix;

float H(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return HalfToFloat(h);
}

// Writes 32 nibble values n[0..31] into a kQ4 group (byte j = n[j] | n[j+16] << 4).
void PutQ4Group(const uint8_t* n, uint8_t* out) {
  for (int j = 0; j < 16; ++j) out[j] = static_cast<uint8_t>(n[j] | (n[j + 16] << 4));
}

// One row of `cols` elements starting at `src` (whole blocks) in the row-major form that
// WeightMatrix::SetRow takes: codes [code bytes per row], scale and min [groups].
void RepackRow(TensorType type, const uint8_t* src, int64_t cols, uint8_t* codes, float* scale, float* min) {
  switch (type) {
    case TensorType::kF32:
      std::memcpy(codes, src, cols * 4);
      return;
    case TensorType::kF16:
      std::memcpy(codes, src, cols * 2);
      return;
    case TensorType::kBF16:
      for (int64_t c = 0; c < cols; ++c) {
        uint16_t b;
        std::memcpy(&b, src + 2 * c, 2);
        reinterpret_cast<float*>(codes)[c] = Bf16ToFloat(b);
      }
      return;
    case TensorType::kQ4_0:  // d, qs[16]: x = d * (q - 8)
      for (int64_t g = 0; g < cols / 32; ++g, src += 18) {
        const float d = H(src);
        std::memcpy(codes + g * 16, src + 2, 16);
        scale[g] = d;
        min[g] = -8.0f * d;
      }
      return;
    case TensorType::kQ4_1:  // d, m, qs[16]: x = d * q + m
      for (int64_t g = 0; g < cols / 32; ++g, src += 20) {
        std::memcpy(codes + g * 16, src + 4, 16);
        scale[g] = H(src);
        min[g] = H(src + 2);
      }
      return;
    case TensorType::kQ5_0:
    case TensorType::kQ5_1: {  // d, [m], qh (u32), qs[16]
      const bool has_m = type == TensorType::kQ5_1;
      const int bytes = has_m ? 24 : 22;
      for (int64_t g = 0; g < cols / 32; ++g, src += bytes) {
        const float d = H(src);
        uint32_t qh;
        std::memcpy(&qh, src + (has_m ? 4 : 2), 4);
        const uint8_t* qs = src + (has_m ? 8 : 6);
        for (int j = 0; j < 16; ++j) {
          codes[g * 32 + j] = static_cast<uint8_t>((qs[j] & 15) | (((qh >> j) & 1) << 4));
          codes[g * 32 + j + 16] = static_cast<uint8_t>((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
        }
        scale[g] = d;
        min[g] = has_m ? H(src + 2) : -16.0f * d;
      }
      return;
    }
    case TensorType::kQ8_0:  // d, qs[32] int8
      for (int64_t g = 0; g < cols / 32; ++g, src += 34) {
        std::memcpy(codes + g * 32, src + 2, 32);
        scale[g] = H(src);
      }
      return;
    case TensorType::kQ4_K:  // d, dmin, scales[12], qs[128]; 8 sub-blocks of 32
      for (int64_t blk = 0; blk < cols / 256; ++blk, src += 144) {
        const float d = H(src), dmin = H(src + 2);
        const uint8_t* sc = src + 4;
        const uint8_t* qs = src + 16;
        for (int j = 0; j < 4; ++j) {  // 64 elements: low nibbles, then high nibbles
          uint8_t lo[32], hi[32];
          for (int l = 0; l < 32; ++l) {
            lo[l] = qs[j * 32 + l] & 15;
            hi[l] = qs[j * 32 + l] >> 4;
          }
          for (int half = 0; half < 2; ++half) {
            const int64_t g = blk * 8 + 2 * j + half;
            uint8_t s, mn;
            gguf::GetScaleMinK4(2 * j + half, sc, &s, &mn);
            PutQ4Group(half ? hi : lo, codes + g * 16);
            scale[g] = d * s;
            min[g] = -(dmin * mn);
          }
        }
      }
      return;
    case TensorType::kQ5_K:  // d, dmin, scales[12], qh[32], qs[128]
      for (int64_t blk = 0; blk < cols / 256; ++blk, src += 176) {
        const float d = H(src), dmin = H(src + 2);
        const uint8_t* sc = src + 4;
        const uint8_t* qh = src + 16;
        const uint8_t* qs = src + 48;
        for (int j = 0; j < 4; ++j) {
          for (int half = 0; half < 2; ++half) {
            const int64_t g = blk * 8 + 2 * j + half;
            const int bit = 2 * j + half;
            for (int l = 0; l < 32; ++l) {
              const int n = half ? (qs[j * 32 + l] >> 4) : (qs[j * 32 + l] & 15);
              codes[g * 32 + l] = static_cast<uint8_t>(n + (((qh[l] >> bit) & 1) << 4));
            }
            uint8_t s, mn;
            gguf::GetScaleMinK4(bit, sc, &s, &mn);
            scale[g] = d * s;
            min[g] = -(dmin * mn);
          }
        }
      }
      return;
    case TensorType::kQ6_K:  // ql[128], qh[64], scales[16] int8, d; 16 groups of 16
      for (int64_t blk = 0; blk < cols / 256; ++blk, src += 210) {
        const uint8_t* ql = src;
        const uint8_t* qh = src + 128;
        const int8_t* sc = reinterpret_cast<const int8_t*>(src + 192);
        const float d = H(src + 208);
        int8_t* out = reinterpret_cast<int8_t*>(codes) + blk * 256;
        for (int n = 0; n < 2; ++n) {  // two halves of 128
          for (int l = 0; l < 32; ++l) {
            const uint8_t h = qh[n * 32 + l];
            out[n * 128 + l] = static_cast<int8_t>(((ql[n * 64 + l] & 15) | ((h & 3) << 4)) - 32);
            out[n * 128 + l + 32] = static_cast<int8_t>(((ql[n * 64 + l + 32] & 15) | (((h >> 2) & 3) << 4)) - 32);
            out[n * 128 + l + 64] = static_cast<int8_t>(((ql[n * 64 + l] >> 4) | (((h >> 4) & 3) << 4)) - 32);
            out[n * 128 + l + 96] = static_cast<int8_t>(((ql[n * 64 + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32);
          }
        }
        for (int k = 0; k < 16; ++k) scale[blk * 16 + k] = d * sc[k];
      }
      return;
    default:
      break;
  }
}

}  // namespace

Result<WeightMatrix> Repack(const gguf::TensorInfo& t) {
  if (t.dims.size() != 2 && !(t.dims.size() == 1)) {
    return InvalidArgument("tensor '{}' has {} dimensions; a matrix has 2", t.name, t.dims.size());
  }
  const int64_t cols = static_cast<int64_t>(t.dims[0]);
  const int64_t rows = t.dims.size() == 2 ? static_cast<int64_t>(t.dims[1]) : 1;
  if (cols % 16 != 0) {
    return InvalidArgument("tensor '{}': {} columns, not a multiple of 16", t.name, cols);
  }
  WeightFormat fmt;
  int group = 0;
  bool has_min = false;
  int block = 1;
  switch (t.type) {
    case TensorType::kF32: fmt = WeightFormat::kF32; break;
    case TensorType::kBF16: fmt = WeightFormat::kF32; break;
    case TensorType::kF16: fmt = WeightFormat::kF16; break;
    case TensorType::kQ4_0: case TensorType::kQ4_1:
      fmt = WeightFormat::kQ4; group = 32; has_min = true; block = 32; break;
    case TensorType::kQ4_K:
      fmt = WeightFormat::kQ4; group = 32; has_min = true; block = 256; break;
    case TensorType::kQ5_0: case TensorType::kQ5_1:
      fmt = WeightFormat::kQ8; group = 32; has_min = true; block = 32; break;
    case TensorType::kQ5_K:
      fmt = WeightFormat::kQ8; group = 32; has_min = true; block = 256; break;
    case TensorType::kQ8_0:
      fmt = WeightFormat::kQ8; group = 32; block = 32; break;
    case TensorType::kQ6_K:
      fmt = WeightFormat::kQ8; group = 16; block = 256; break;
    default:
      return Unimplemented("tensor '{}' has type {}, which slimkv cannot use for a matrix yet",
                           t.name, gguf::TypeName(t.type));
  }
  if (cols % block != 0) {
    return InvalidArgument("tensor '{}': {} columns, not a multiple of its {}-element blocks", t.name,
                           cols, block);
  }
  WeightMatrix m = WeightMatrix::Allocate(fmt, rows, cols, group, has_min);
  const uint64_t row_bytes = t.n_bytes / rows;
  std::vector<uint8_t> codes(m.code_bytes_per_row());
  std::vector<float> scale(m.groups_per_row()), min(m.groups_per_row());
  for (int64_t r = 0; r < rows; ++r) {
    RepackRow(t.type, t.data + r * row_bytes, cols, codes.data(), scale.data(), min.data());
    m.SetRow(r, codes.data(), scale.data(), min.data());
  }
  m.CompactScales();  // fp16 where the type's scales are fp16 values (Q4_0, Q4_1, Q5_x, Q8_0)
  return m;
}

}  // namespace slimkv::model
