// GGUF tensors -> slimkv's matmul layouts (ops/weights.h), losslessly: every repacked
// weight equals ggml's dequantized value (tested against gguf::Dequantize).
//
//   Q4_0, Q4_1, Q4_K          -> kQ4 (group 32; Q4_K's sub-blocks of 32 give scale d*sc and
//                                 min -dmin*m per group)
//   Q5_0, Q5_1, Q5_K, Q8_0    -> kQ8 (group 32, codes 0..31 or -128..127)
//   Q6_K                      -> kQ8 (group 16: its scales change every 16 columns)
//   F16 -> kF16, F32 -> kF32, BF16 -> kF32
#pragma once

#include "base/status.h"
#include "gguf/gguf_file.h"
#include "ops/weights.h"

namespace slimkv::model {

// Repacks a 2-D tensor [rows, cols] (ggml dims {cols, rows}). Unimplemented naming the
// tensor and type for types without a repacker; InvalidArgument if cols is not a multiple
// of 16 or of the type's block.
Result<ops::WeightMatrix> Repack(const gguf::TensorInfo& t);

}  // namespace slimkv::model
