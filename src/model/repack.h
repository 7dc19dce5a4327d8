// GGUF tensors -> slimkv's matmul layouts (ops/weights.h), losslessly: every repacked weight
// equals ggml's dequantized value (tested against gguf::Dequantize), and a matrix takes the
// file's own bits per weight:
//
//   F32 -> kF32, F16 -> kF16, Q4_0, Q4_1 and Q4_K -> kQ4, Q5_0, Q5_1 and Q5_K -> kQ5, Q6_K -> kQ6,
//       Q8_0 -> kQ8, in 16-row tiles with fp16 scales (the file's fp16 fields; Q4_0's, Q5_0's
//       and Q6_K's implied minimums as a code offset) or the K types' two-level scales
//       (int8 sub-scales, fp16 factors): the file's bits per weight (Q4_K and Q5_K +1/8 bit:
//       their 6-bit sub-scales take a byte), and the VNNI decode kernel; IQ4_NL and IQ4_XS ->
//       kIQ4 (IQ4_XS +1/16 bit); Q3_K -> kQ3 (+1/8 bit)
//   BF16, Q2_K
//       -> kGgml: the file's blocks as stored, decoded in registers by the matmul kernels
//          (docs/DECISIONS.md "Weights: tiles where they cost no bytes, the file's blocks
//          elsewhere").
#pragma once

#include <string>

#include "base/status.h"
#include "gguf/gguf_file.h"
#include "ops/weights.h"

namespace slimkv::model {

// What Repack makes of a tensor, without making it: the layout and the bytes it will take.
struct RepackPlan {
  ops::WeightFormat format = ops::WeightFormat::kF32;
  size_t bytes = 0;
};

// Unimplemented naming the tensor and its type, and listing the types slimkv reads, for a
// type without a matmul kernel; InvalidArgument if the tensor is not 1- or 2-D or its
// columns are not a whole number of the type's blocks (and of 16).
Result<RepackPlan> PlanRepack(const gguf::TensorInfo& t);

// Repacks a 2-D tensor [rows, cols] (ggml dims {cols, rows}); errors as PlanRepack.
Result<ops::WeightMatrix> Repack(const gguf::TensorInfo& t);

// "F32, F16, BF16, Q4_0, ...": the tensor types a matrix may have.
std::string SupportedMatrixTypes();

}  // namespace slimkv::model
