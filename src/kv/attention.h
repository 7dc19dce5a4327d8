// Attention over the blocks of one stream (one layer, one KV head), on the stored bytes.
//
// A task is a tile of query rows (query tokens x the query heads of one KV head's group)
// against a range of key slots. It keeps an online softmax (running max m, running sum l,
// unnormalised accumulator acc) per row, so a long key range can be split over threads and
// the parts merged by log-sum-exp (MergePartials).
#pragma once

#include <cstdint>

#include "kv/format.h"

namespace slimkv::kv {

// Limits of one task (the kernel keeps its tile on the stack).
inline constexpr int kMaxAttnTaskRows = 64;
inline constexpr int kMaxAttnBlockTokens = 256;
inline constexpr int kMaxAttnHeadDim = 512;

struct AttnTask {
  // Stream
  const uint8_t* const* blocks = nullptr;  // [n_blocks] block data (K part, then V part)
  int block_tokens = 0;
  int head_dim = 0;
  size_t v_offset = 0;  // bytes from the block start to its V part
  ElemType k_type = ElemType::kF16, v_type = ElemType::kF16;
  // Queries: row r = token * group + head is q + token * ldq + head * head_dim (the group's
  // heads are contiguous within a token).
  const float* q = nullptr;
  int64_t ldq = 0;       // floats between consecutive query tokens
  float scale = 1.0f;    // softmax scale, folded into the queries
  int n_q_tokens = 0;
  int group = 1;         // query heads per KV head (rows per query token)
  int first_q_slot = 0;  // slot of the first query token; token i sees keys <= first_q_slot + i
  int window = 0;        // > 0: token i sees only keys > slot_i - window
  // Keys [key_begin, key_end) of the stream.
  int key_begin = 0, key_end = 0;
};

// Per-row online-softmax state of a task: acc [rows][head_dim], m [rows], l [rows].
struct AttnPartial {
  float* acc;
  float* m;
  float* l;
};

// Runs one task with the best SIMD target (one dispatch per task).
void RunAttnTask(const AttnTask& task, AttnPartial out);

// Scalar reference of RunAttnTask (decodes every needed element with the codec reference).
void RunAttnTaskReference(const AttnTask& task, AttnPartial out);

// Merges `n_parts` partials of the same rows and writes the normalised output: row
// r = token * group + head goes to out + token * ldo + head * head_dim. Rows that saw no key
// (l == 0) get zeros.
void MergePartials(const AttnPartial* parts, int n_parts, int rows, int group, int head_dim,
                   float* out, int64_t ldo);

}  // namespace slimkv::kv
