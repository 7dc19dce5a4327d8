// Working memory of attention tasks (attention-inl.h), one per thread that runs them.
//
// It is owned by whoever runs the tasks (KvCache keeps one per thread of the pool that calls Attend) and
// never thread_local: static TLS is allocated and cleared in every thread of the process, and a server has
// hundreds of HTTP threads that never run attention (issue 12).
#pragma once

#include <cstdint>

#include "kv/attention.h"

namespace slimkv::kv {

// Integer (VNNI) paths, blocks of 32 or 64 tokens: queries (keys side) and weights (values side) become
// 16-bit integers x stored as two signed bytes x = 256 * hi + lo, multiplied in two vpdpbusd passes; |x| <=
// kIntLevels keeps hi = (x + 128) >> 8 a byte.
inline constexpr float kIntLevels = 32639.0f;
inline constexpr int kIntBt = 64;     // the largest block the integer paths handle
inline constexpr int kMaxGroups = 8;  // channel groups per head on the integer value path

// Per row, per 32 channels: 32 lo bytes, then 32 hi bytes (QueryLo/QueryHi).
struct QueryBytes {
  alignas(64) int8_t bytes[kMaxAttnTaskRows * 2 * kMaxAttnHeadDim];
  float step[kMaxAttnTaskRows * (kMaxAttnHeadDim / 16)];  // per row (and group): value of one unit
  float bias[kMaxAttnTaskRows * (kMaxAttnHeadDim / 16)];  // per row (and group): added to step * dot
};

// Scratch of one task (~1.3 MB; pages are touched only by the paths that use them).
struct BlockScratch {
  static constexpr int kMaxRows = kMaxAttnTaskRows, kMaxHd = kMaxAttnHeadDim, kMaxBt = kMaxAttnBlockTokens;
  alignas(64) float qp[kMaxRows * kMaxHd];      // prepared queries [rows][hd]
  alignas(64) float scores[kMaxRows * kMaxBt];  // scores, then weights, of one
                                                // block [rows][bt]
  alignas(64) float lsum[kMaxRows * 16];        // per-row softmax sums, one vector per row
  alignas(64) float q2[kMaxRows * kMaxHd];      // queries with per-block scales folded in
  alignas(64) float qn[kMaxRows * kMaxHd];      // queries * kIntLevels / max|q[r]|
                                                // (integer keys)
  alignas(64) float p2[kMaxRows * kMaxBt];      // weights with per-token scales folded in
  alignas(64) float part[kMaxRows * kMaxHd];    // per-channel V partial sums
  alignas(64) float tile[kMaxHd * kMaxBt];      // pre-RoPE keys decoded and rotated
  alignas(64) float channel_scale[kMaxHd], channel_zero[kMaxHd];
  float cst[kMaxRows];
  float qsum[kMaxRows * (kMaxHd / 16)];
  // Integer paths.
  alignas(64) float vscale[kIntBt * kMaxGroups],
      vzero[kIntBt * kMaxGroups];  // [token][group]
  // Integer weights per row: per 32 (token, group) entries, 32 lo bytes then 32 hi bytes, in [group][token]
  // order within the 32 (ValueWeightLo).
  alignas(64) int8_t wbytes[kMaxRows * 2 * kIntBt * kMaxGroups];
  alignas(64) float dm[kMaxRows + 16];    // per row: block maximum - running maximum (base 2)
  alignas(64) float pmax[kMaxRows + 16];  // per row: the block's largest weight
  float qmax[kMaxRows];                   // per row: max |q|
  float vstep[kMaxRows];
  float vconst[kMaxRows * kMaxGroups];      // per row and group, added to the accumulators
  float vconst_sum[kMaxRows * kMaxGroups];  // the same, summed over blocks (rescaled)
  // tq on the integer paths: per row, the accumulators' start of the hi and lo byte passes.
  int32_t tq_qoff_hi[kMaxRows], tq_qoff_lo[kMaxRows];  // keys, per task
  int32_t tq_woff[2 * kMaxRows];                       // values, per block
  QueryBytes block_query;                              // per block: keys quantized per channel
  QueryBytes task_query;                               // per task: keys quantized per token group
};

}  // namespace slimkv::kv
