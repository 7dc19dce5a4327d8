// Matrix multiplication of activations by weight matrices: y[n, r] = sum_c x[n, c] * W[r, c].
//
// One call computes several outputs that share the same input (Q, K and V; gate and up) in one parallel
// region, because on a small model per-region synchronisation, not arithmetic, is the cost to fight. Small
// batches (one decode step of a few sequences) use the weights straight from their codes, 4 tokens per pass,
// with an integer kernel on AVX-512 VNNI (x split into three int8 parts, fp32-accurate: ops/matmul_x.h);
// larger ones (prefill, a decode step of many sequences) dequantize a 16-row tile to fp32 once per block of
// 64 tokens and run a register-tiled fp32 kernel (ops/matmul-inl.h).
#pragma once

#include <cstdint>
#include <span>

#include "base/thread_pool.h"
#include "ops/weights.h"

namespace slimkv::ops {

struct MatMulOutput {
  const WeightMatrix* w;  // [rows, cols]
  float* y;               // [n_tokens, ldy], columns [0, w->rows) written
  int64_t ldy;
};

// x: [n_tokens, ldx] fp32 with at least w->cols valid columns; every w in `outs` has the same cols. Splits
// the rows of all outputs over the pool's threads.
void MatMul(ThreadPool& pool, const float* x, int64_t ldx, int64_t n_tokens,
            std::span<const MatMulOutput> outs);

// Scalar reference with the same contract (single-threaded, obviously right).
void MatMulReference(const float* x, int64_t ldx, int64_t n_tokens, std::span<const MatMulOutput> outs);

// Batches of up to this many tokens use the weights straight from their codes (gemv-inl.h);
// larger ones dequantize tiles for a register-tiled fp32 kernel. The integer kernel for
// quantized weights on AVX-512 VNNI is as fast per token as the fp32 one up to 64 tokens and
// faster below; the float kernels hand over at 8 (bench/bench_matmul.cc, docs/DECISIONS.md
// "Matmul kernels").
inline constexpr int64_t kMatMulIntegerMaxTokens = 64;
inline constexpr int64_t kMatMulStreamMaxTokens = 8;

}  // namespace slimkv::ops
