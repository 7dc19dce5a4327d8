// Working memory of attention tasks (attention-inl.h), one per thread that runs them.
//
// It is owned by whoever runs the tasks (KvCache keeps one per thread of the pool that calls
// Attend) and never thread_local: static TLS is allocated and cleared in every thread of the
// process, and a server has hundreds of HTTP threads that never run attention (issue 12).
//
// The driver's buffers are named; the codecs get two kinds of raw space, each family laying
// out its own struct in it (and static_asserting that it fits): the state a key kernel keeps
// over a task (its prepared query), one per kind of block of the task (sealed, staged), and
// the space of one kernel call (per-block queries, integer weights, a decoded tile).
#pragma once

#include <cstdint>

#include "kv/attention.h"

namespace slimkv::kv {

// The most tokens of one chunk: the driver scores a chunk of consecutive blocks of one kind,
// runs the softmax over it, then accumulates its values; chunks of small blocks are shorter
// (attention-inl.h, kChunkBytes). A multiple of 32, at least kMaxAttnBlockTokens.
inline constexpr int kChunkTokens = 256;

// Integer (VNNI) paths: queries (keys side) and weights (values side) become 16-bit integers
// x stored as two signed bytes x = 256 * hi + lo, multiplied in two vpdpbusd passes;
// |x| <= kIntLevels keeps hi = (x + 128) >> 8 a byte.
inline constexpr float kIntLevels = 32639.0f;
inline constexpr int kMaxGroups = 8;  // channel groups per head on the integer value path

// Integer queries: per row, per 32 channels: 32 lo bytes, then 32 hi bytes.
struct QueryBytes {
  alignas(64) int8_t bytes[kMaxAttnTaskRows * 2 * kMaxAttnHeadDim];
  float step[kMaxAttnTaskRows * (kMaxAttnHeadDim / 16)];  // per row (and group): value of one unit
  float bias[kMaxAttnTaskRows * (kMaxAttnHeadDim / 16)];  // per row (and group): added to step * dot
};

inline constexpr size_t kKeyStateBytes = 136 << 10;  // largest: prepared int query per channel
inline constexpr size_t kCallBytes = 640 << 10;      // largest: a pre-RoPE tile [512][256] fp32

// Scratch of one task (~1.3 MB; pages are touched only by the paths that use them).
struct BlockScratch {
  static constexpr int kMaxRows = kMaxAttnTaskRows, kMaxHd = kMaxAttnHeadDim;
  alignas(64) float qp[kMaxRows * kMaxHd];            // prepared queries [rows][hd]
  alignas(64) float scores[kMaxRows * kChunkTokens];  // scores, then weights, of one chunk [rows][chunk]
  alignas(64) float lsum[kMaxRows * 16];              // per-row softmax sums, one vector per row
  alignas(64) float pmax[kMaxRows + 16];              // per row: the chunk's largest weight
  alignas(64) uint8_t key_state[2][kKeyStateBytes];   // [kind]: a key kernel's state over the task
  alignas(64) uint8_t call[kCallBytes];               // one kernel call's space
};

}  // namespace slimkv::kv
