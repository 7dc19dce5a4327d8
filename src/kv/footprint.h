// The footprint rule: which blocks, and how many bytes, a sequence holds.
//
// One rule in one place. The cache follows it (KvCache::EndStep:
// DropOutOfWindow, Seal) and checks it (KvCache::CheckInvariants); its byte
// accounting (LayerUsage), the scheduler's admission, the capacity planner,
// `slimkv info` and the benchmarks call these functions instead of restating
// it. For one stream (layer, KV head) holding `slots` token slots in blocks of
// bt, the last `in_flight` of them appended in a step that has not ended:
//   n_blocks   = ceil(slots / bt)
//   first_live = max(0, c - window + 1) / bt on a window layer, else 0, c =
//   slots - in_flight
//                (the next token sees keys > c - window; earlier blocks are
//                freed)
//   n_sealed   = max(first_live, max(0, c - residual) / bt) when the formats
//   need staging
//                (blocks whose every slot is older than the residual window),
//                else 0
// Blocks [first_live, n_sealed) are sealed (final format), [n_sealed, n_blocks) staged (the staging format,
// or the final one when nothing is staged). Tokens in flight are neither sealed nor dropped until their step
// ends. A sequence with an attached prefix may hold other blocks (a prefix arrives already sealed); a block
// stays staged while the pool has no room to seal it. The streams an eviction policy manages follow the
// policy's bounds instead (PolicyPeakSequenceBytes).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kv/format.h"
#include "kv/policy.h"
#include "kv/spec.h"

namespace slimkv::kv {

// Byte accounting. data + meta + residual + waste == allocated.
struct KvUsage {
  int64_t tokens = 0;          // token slots held
  size_t bytes_data = 0;       // codes of the tokens in their final format
  size_t bytes_meta = 0;       // scales and zero points of those tokens
  size_t bytes_residual = 0;   // tokens still in high-precision staging blocks
  size_t bytes_waste = 0;      // allocated but holding no token (open blocks, padding)
  size_t bytes_allocated = 0;  // blocks x block bytes
  int64_t blocks = 0;

  // The bytes of the tokens held, what an attention step reads: data, metadata and staging.
  size_t bytes_held() const { return bytes_data + bytes_meta + bytes_residual; }
  KvUsage& operator+=(const KvUsage& o);  // tokens: the larger; the rest add up
};

// The blocks of one stream.
struct StreamBlocks {
  int64_t first_live = 0;  // blocks before it are freed
  int64_t n_sealed = 0;    // blocks [first_live, n_sealed) are sealed
  int64_t n_blocks = 0;    // the table's length
};

// The rule above for a stream of a layer with sliding window `window` (0:
// global).
StreamBlocks RuleBlocks(const KvConfig& config, int window, int64_t slots, int64_t in_flight = 0);

// Bytes of a block in the final (sealed) and the staging format: whole blocks
// as the pools allocate them (equal when nothing is staged).
size_t SealedBlockBytes(const KvConfig& config, int head_dim);
size_t StagedBlockBytes(const KvConfig& config, int head_dim);

// What a stream holds, in any shape (a policy's streams may hold shortened
// blocks, a pinned staged prefix before sealed blocks): blocks and tokens of
// each pool.
struct HeldBlocks {
  int64_t sealed_blocks = 0, staged_blocks = 0;
  int64_t sealed_tokens = 0, staged_tokens = 0;
};
// Its bytes: data and metadata of the sealed tokens (of every token when
// nothing is staged), the staging bytes of the staged ones, waste = allocated -
// the others.
KvUsage HeldUsage(const KvConfig& config, int head_dim, const HeldBlocks& held);

// The bytes of one stream holding `slots` slots in blocks `b` (the rule's, or
// what a stream of the cache actually holds): data and metadata of the sealed
// tokens (of every token when nothing is staged), the staging bytes of the
// rest, waste = allocated - the others.
KvUsage StreamUsage(const KvConfig& config, int head_dim, const StreamBlocks& b, int64_t slots);

// Everything one sequence of `tokens` tokens holds by the rule, summed over its
// streams
// (`in_flight` of the tokens appended in a step that has not ended).
KvUsage SequenceFootprint(const KvSpec& spec, const KvConfig& config, int64_t tokens, int64_t in_flight = 0);

// At least the most one sequence holds at any moment while it grows to `tokens`
// tokens in steps of at most `step_tokens` (a whole step in flight): per
// stream, the most blocks it can hold, each as large as a sealed block, plus
// the most staged blocks it can hold, each at the staging format's extra bytes.
size_t PeakSequenceBytes(const KvSpec& spec, const KvConfig& config, int64_t tokens, int step_tokens);

// At least the most one sequence with eviction policy `policy` holds while it
// grows to `tokens` tokens in steps of at most `step_tokens`. On the policy's
// layers (global attention), per layer of H streams: while the prompt is read,
// nothing is sealed and the streams hold at most H x (twice the layer budget +
// a step) tokens (SnapKV: the whole prompt), all staged; after it, at most H x
// (budget + a block) tokens in blocks that are full but for an open and a
// shortened one per stream, the residual window and open block staged. Window
// layers follow the rule. Blocks of a prefix shared from the prefix cache are
// not counted.
size_t PolicyPeakSequenceBytes(const KvSpec& spec, const KvConfig& config, const PolicySpec& policy,
                               int64_t tokens, int step_tokens);

// Bytes per token of the final format, summed over all layers and KV heads,
// before whole blocks and padding: codes, and scales / zero points / norms.
double DataBytesPerToken(const KvSpec& spec, const KvConfig& config);
double MetaBytesPerToken(const KvSpec& spec, const KvConfig& config);

}  // namespace slimkv::kv
