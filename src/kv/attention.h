// Attention over the blocks of one stream (one layer, one KV head), on the stored bytes.
//
// A task is a tile of query rows (query tokens x the query heads of one KV head's group)
// against a range of key slots. It keeps an online softmax (running max m, running sum l,
// unnormalised accumulator acc) per row, so a long key range can be split over threads and
// the parts merged by log-sum-exp (MergePartials).
//
// A stream's blocks come in two kinds: sealed blocks [0, n_sealed) in the configured
// formats, and staged blocks after them in the high-precision staging formats (the residual
// window and the open block). The kernels of each kind's codec families (codecs/) work on
// the bytes directly, a chunk of blocks at a time:
//   score:      s[r][t] = q_r . k_t          (scales folded into the query or the scores)
//   accumulate: acc[r] += sum_t p[r][t] v_t  (scales folded into the weights p)
#pragma once

#include <cstdint>
#include <memory>

#include "kv/format.h"
#include "kv/rotation.h"
#include "ops/elementwise.h"

namespace slimkv::kv {

// Limits of one task (the kernel keeps its tile on the stack).
inline constexpr int kMaxAttnTaskRows = 64;
inline constexpr int kMaxAttnBlockTokens = 256;
inline constexpr int kMaxAttnHeadDim = 512;

// The formats and layout of one kind of block.
struct BlockKind {
  KvFormat k, v;
  PartLayout k_layout, v_layout;
  size_t v_offset = 0;  // bytes from the block start to the V part (= k_layout.total())
};
BlockKind MakeBlockKind(const KvFormat& k, const KvFormat& v, int block_tokens, int head_dim);

// Keys stored before RoPE are rotated inside the score kernel with these tables
// ([rope_dim / 2][positions], position = slot).
struct RopeTables {
  const float* cos = nullptr;
  const float* sin = nullptr;
  int64_t stride = 0;  // floats between pairs (the table's position capacity)
  int rope_dim = 0;
  ops::RopeStyle style = ops::RopeStyle::kNormal;
};

struct AttnTask {
  // Stream
  const uint8_t* const* blocks = nullptr;  // [n_blocks] block data (K part, then V part)
  int n_sealed = 0;                        // blocks [0, n_sealed) are `sealed`, the rest `staged`
  const BlockKind* sealed = nullptr;
  const BlockKind* staged = nullptr;
  int block_tokens = 0;
  int head_dim = 0;
  const RopeTables* rope = nullptr;      // set when keys are stored before RoPE
  const Rotation* k_rotation = nullptr;  // set when keys are stored rotated: the query is rotated too
  // Queries: row r = token * group + head is q + token * ldq + head * head_dim (the group's
  // heads are contiguous within a token). Outputs of a rotated V side stay rotated; the
  // caller applies the inverse after merging.
  const float* q = nullptr;
  int64_t ldq = 0;     // floats between consecutive query tokens
  float scale = 1.0f;  // softmax scale, folded into the queries
  int n_q_tokens = 0;
  int group = 1;         // query heads per KV head (rows per query token)
  int first_q_slot = 0;  // slot of the first query token; token i sees keys <= first_q_slot + i
  int window = 0;        // > 0: token i sees only keys > slot_i - window
  // Keys [key_begin, key_end) of the stream.
  int key_begin = 0, key_end = 0;
  // Optional, for eviction policies: the masked score (natural-log units, -inf where not
  // visible) of every key in [key_begin, key_end) for query tokens [mass_first_token,
  // n_q_tokens): [(token - mass_first_token) * group + head][key - key_begin].
  float* scores_out = nullptr;
  int mass_first_token = 0;
};

// Per-row online-softmax state of a task: acc [rows][head_dim], m [rows], l [rows].
struct AttnPartial {
  float* acc;
  float* m;
  float* l;
};

struct BlockScratch;  // attention_scratch.h

// Working memory of the tasks one thread runs (about 1.3 MB, allocated when constructed,
// its pages touched only as the kernels use them). Whoever runs tasks owns one per thread
// (KvCache: one per thread of the pool that calls Attend) — never thread_local, so threads
// that never run attention (a server's HTTP threads) do not pay for it.
class AttnScratch {
 public:
  AttnScratch();
  ~AttnScratch();
  AttnScratch(AttnScratch&&) noexcept;
  AttnScratch& operator=(AttnScratch&&) noexcept;
  BlockScratch& get() { return *p_; }

 private:
  std::unique_ptr<BlockScratch> p_;
};

// Runs one task with the best SIMD target (one dispatch per task), in `scratch` (which no
// other task may use at the same time).
void RunAttnTask(const AttnTask& task, AttnPartial out, AttnScratch& scratch);

// Scalar reference of RunAttnTask: decodes every visible key and value with the reference
// codecs (codec.h) and runs a plain softmax in double.
void RunAttnTaskReference(const AttnTask& task, AttnPartial out);

// Merges `n_parts` partials of the same rows and writes the normalised output: row
// r = token * group + head goes to out + token * ldo + head * head_dim. Rows that saw no key
// (l == 0) get zeros.
// merged_m / merged_l, when given, receive each row's log-sum-exp parts (max, sum of
// exp(score - max)) for turning scores_out into attention weights.
void MergePartials(const AttnPartial* parts, int n_parts, int rows, int group, int head_dim, float* out,
                   int64_t ldo, float* merged_m = nullptr, float* merged_l = nullptr);

}  // namespace slimkv::kv
