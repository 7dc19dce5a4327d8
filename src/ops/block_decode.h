// GGUF's quantized blocks (WeightFormat::kGgml) decoded with SIMD, one dispatch per call:
// the same decoders the matmul kernels run (ops/block_decode-inl.h), bit-exact with the
// scalar gguf::Dequantize (tests/ops/block_decode_test.cc, every target).
#pragma once

#include <cstdint>

#include "ops/weights.h"

namespace slimkv::ops {

// Row r of a kGgml matrix into out[w.cols].
void DequantizeGgmlRow(const WeightMatrix& w, int64_t r, float* out);

}  // namespace slimkv::ops
