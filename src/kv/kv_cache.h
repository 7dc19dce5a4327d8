// The KV cache: sequences, their block tables, and the model's interface to them.
//
// The model sees only this: before a step, BeginStep reserves room for every chunk of new
// tokens; per layer it Appends the step's K/V rows (keys before RoPE: the cache applies
// RoPE, or stores them raw when the format keeps keys pre-RoPE) and Attends with the step's
// queries (after RoPE); EndStep commits the new tokens. Blocks, scales and codes stay inside.
//
// A sequence holds one block table per stream (layer x KV head): slot s of a stream lives in
// block table[s / block_tokens] at offset s % block_tokens. For quantized formats, tokens are
// first written to staging blocks (f16); a block is sealed — quantized into its final format
// and its staging block freed — once it is full and older than the residual window, so
// per-channel key scales see all tokens of their block. Blocks [first_live, n_sealed) of a
// stream are sealed, the later ones staged.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kv/attention.h"
#include "kv/block_pool.h"
#include "kv/footprint.h"
#include "kv/format.h"
#include "kv/policy.h"
#include "kv/prefix_index.h"
#include "kv/rotation.h"
#include "kv/spec.h"

namespace slimkv::kv {
namespace tiers {
class TierStack;
struct Fingerprint;
}  // namespace tiers

using SeqId = int32_t;

// New tokens of one sequence in a step: rows [row, row + n_tokens) of the step's matrices.
struct StepChunk {
  SeqId seq = 0;
  int n_tokens = 0;
  int64_t row = 0;
};

// Prefix cache counters.
struct PrefixStats {
  int64_t lookups = 0;        // AttachPrefix calls
  int64_t hits = 0;           // calls that reused at least one block
  int64_t lookup_tokens = 0;  // tokens offered to AttachPrefix
  int64_t hit_tokens = 0;     // tokens reused
  int64_t cached_blocks = 0;  // index entries (one per block position, all streams)
  int64_t shared_blocks = 0;  // pool blocks with more than one owner (sequences or the index)
  int64_t evicted = 0;        // entries evicted to make room
  int64_t tier_blocks = 0;    // entries fetched from a lower tier (disk, Redis)
};

class KvCache {
 public:
  static Result<std::unique_ptr<KvCache>> Create(const KvSpec& spec, const KvConfig& config,
                                                 size_t budget_bytes);
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // Budget that holds `sequences` sequences of `tokens` tokens each when steps add at most
  // `step_tokens` tokens: sequences x PeakSequenceBytes (footprint.h).
  static size_t BudgetFor(const KvSpec& spec, const KvConfig& config, int64_t tokens,
                          int sequences, int step_tokens);

  // The eviction policy (policy.h); set before any sequence exists. InvalidArgument when the
  // policy cannot work with the formats (positions of pre-RoPE keys are their slots, so
  // only window and sinks, which re-index positions, may keep keys before RoPE).
  Status SetPolicy(const PolicySpec& policy);
  const PolicySpec& policy() const { return policy_; }

  SeqId AddSequence();
  void RemoveSequence(SeqId seq);  // frees every block of the sequence
  bool HasSequence(SeqId seq) const;
  int Length(SeqId seq) const;  // tokens committed over the sequence's life
  // RoPE position of the sequence's next token: its length, or with a re-indexing policy
  // (window, sinks) its place in the cache.
  int64_t NextPosition(SeqId seq) const;
  int Slots(SeqId seq, int layer, int head) const;  // tokens the stream holds now
  // Applies the policy to a sequence now (the engine calls it at the end of a prompt, so
  // SnapKV-style policies see the whole prompt); steps apply it on their own when a stream
  // outgrows its budget.
  void Compress(SeqId seq);

  // Reserves blocks for every chunk in every stream, all or nothing: ResourceExhausted
  // naming the shortfall if the budget is too small.
  Status BeginStep(std::span<const StepChunk> chunks);
  // k, v: [rows, n_kv_heads * head_dim] with row strides ldk, ldv; keys before RoPE.
  void Append(int layer, std::span<const StepChunk> chunks, const float* k, int64_t ldk,
              const float* v, int64_t ldv);
  // q, out: [rows, n_q_heads * head_dim]; queries after RoPE. Each new token sees the
  // committed tokens and the step's tokens up to itself.
  void Attend(ThreadPool& pool, int layer, std::span<const StepChunk> chunks, const float* q,
              int64_t ldq, float* out, int64_t ldo, float scale);
  // Commits the step's tokens, seals blocks that left the residual window and frees blocks
  // that left every window.
  void EndStep(std::span<const StepChunk> chunks);

  // Prefix sharing. AttachPrefix gives an empty sequence the longest run of cached full
  // blocks whose tokens, and every token before them, equal a prefix of `tokens` (under the
  // tenant `salt`); it returns the tokens now in the sequence (a multiple of the block size,
  // less than tokens.size()): the caller prefills only the rest. PublishPrefix indexes the
  // full blocks of a sequence's committed tokens so later sequences can attach them; the
  // index keeps its own reference, so blocks outlive their sequence until evicted (least
  // recently used first) when the pool needs room.
  int AttachPrefix(SeqId seq, uint64_t salt, std::span<const int32_t> tokens);
  void PublishPrefix(SeqId seq, uint64_t salt, std::span<const int32_t> tokens);
  PrefixStats prefix_stats() const;
  // Drops every index entry (and the blocks only it held).
  void ClearPrefixCache();
  // Lower tiers under the prefix index (kv_tiers.cc; not owned, outlives the cache; nullptr:
  // none): PublishPrefix also spills each new entry to them, AttachPrefix first fetches the
  // blocks of the prompt the index lacks from them.
  void SetTiers(tiers::TierStack* tiers);

  // Decodes tokens [first, first + n) of one stream as stored (keys after RoPE unless the
  // format keeps them before, in the rotated domain if the side is rotated) into
  // k[n][head_dim], v[n][head_dim]. For analysis and tests; OutOfRange for freed or
  // missing slots.
  Status ReadTokens(SeqId seq, int layer, int head, int first, int n, float* k, float* v) const;

  KvUsage SequenceUsage(SeqId seq) const;
  KvUsage LayerUsage(SeqId seq, int layer) const;
  KvUsage TotalUsage() const;
  // Bytes of K and V per token over all layers and heads in the final format (footprint.h,
  // rounded down).
  size_t DataBytesPerToken() const;
  size_t MetaBytesPerToken() const;

  const KvSpec& spec() const { return spec_; }
  const KvConfig& config() const { return config_; }
  size_t budget_bytes() const { return budget_.limit; }
  size_t bytes_in_use() const { return budget_.used; }
  // Bytes of a block in the final format (the only kind when nothing is staged).
  size_t sealed_block_bytes() const { return staged_only() ? staged_pool_.block_bytes() : sealed_pool_.block_bytes(); }
  size_t staged_block_bytes() const { return staged_pool_.block_bytes(); }
  int blocks_in_use() const { return staged_pool_.num_used() + sealed_pool_.num_used(); }
  // Pools, block tables and reference counts agree; a sequence without a policy holds the
  // blocks the footprint rule (footprint.h) names.
  void CheckInvariants() const;

 private:
  struct Sequence {
    bool live = false;
    int length = 0;                            // tokens committed over the sequence's life
    int64_t next_pos = 0;                      // RoPE position of the next token
    std::vector<std::vector<BlockId>> tables;  // [stream][block]; kNoBlock once freed
    std::vector<int> first_live;               // [stream] first block not freed
    std::vector<int> n_sealed;                 // [stream] blocks before this are sealed
    std::vector<int> slots;                    // [stream] token slots in use
    int pending = 0;                           // tokens BeginStep reserved blocks for, until EndStep
    bool attached = false;                     // holds a prefix's blocks (AttachPrefix): they may be sealed
                                               // sooner than the footprint rule would seal them
    // Eviction metadata, [stream][slot], kept only while a policy is active.
    std::vector<std::vector<int32_t>> pos;     // RoPE position the key was stored with
    std::vector<std::vector<float>> mass;      // accumulated attention mass
    std::vector<std::vector<float>> last_mass; // attention mass of the latest step
    std::vector<std::vector<float>> score;     // -|k| (knorm)
    std::vector<std::vector<float>> q_mean, q_sq;  // [stream][channel] recent query moments (expected)
    int64_t q_count = 0;
  };
  static constexpr BlockId kNoBlock = -1;
  KvCache(const KvSpec& spec, const KvConfig& config, size_t budget);
  int streams() const { return spec_.n_layers * spec_.n_kv_heads; }
  bool staged_only() const { return !config_.needs_staging(); }
  const Sequence& Seq(SeqId id) const;
  Sequence& Seq(SeqId id);
  Sequence NewSequence() const;
  const uint8_t* BlockData(const Sequence& s, int stream, int b) const;
  void Seal(Sequence& s);             // seals blocks that left the residual window
  // Allocates n blocks from `pool`, evicting prefix-cache entries if the budget needs it.
  Status AllocateEvicting(BlockPool& pool, int n, std::vector<BlockId>* out);
  bool EvictOnePrefix();               // false when nothing can be evicted
  void ReleaseEntry(const PrefixEntry& e);
  void SpillEntry(const PrefixEntry& e);
  // Replaces an entry's staged blocks (block b of a sequence) by the sequence's sealed ones.
  bool UpgradeEntry(const PrefixEntry& e, const Sequence& s, int b);
  // Extends the index along tokens' full blocks from the tiers, as far as records check.
  void FetchFromTiers(uint64_t salt, std::span<const int32_t> tokens);
  // One record into the pools and the index; false (nothing changed) if any check fails.
  bool LoadEntry(std::span<const uint8_t> bytes, const tiers::Fingerprint& fp, uint64_t key, uint64_t parent,
                 uint64_t salt, std::span<const int32_t> block);
  void DropOutOfWindow(Sequence& s);  // frees the blocks of window layers no token can see
  // Applies the policy to every stream over budget (+ slack) of a sequence.
  void Evict(Sequence& s, int slack);
  // Rewrites a stream with only the slots in `keep` (sorted), merging or re-indexing as the
  // policy says; frees what it no longer needs.
  void Compact(Sequence& s, int stream, const std::vector<int>& keep);
  void UpdateQueryStats(Sequence& s, int layer, const float* q, int64_t ldq, int n_tokens);
  Status ReadTokensOf(const Sequence& s, int stream, int first, int n, float* k, float* v) const;
  void EnsureRopeTables(int64_t positions);
  const RopeTables* LayerRope(int layer) const;

  KvSpec spec_;
  KvConfig config_;
  BlockKind staged_, sealed_;
  ByteBudget budget_;
  BlockPool staged_pool_, sealed_pool_;
  std::vector<Sequence> seqs_;  // indexed by SeqId; removed ones are reused
  PolicySpec policy_;
  PrefixIndex prefix_;
  PrefixStats prefix_stats_;
  tiers::TierStack* tiers_ = nullptr;
  std::vector<Rotation> k_rot_, v_rot_;  // [stream] when the side is rotated
  // RoPE angle tables [pair][position] per distinct frequency set; layer -> table.
  std::vector<std::vector<float>> rope_cos_, rope_sin_;
  std::vector<int> layer_table_;
  std::vector<RopeTables> rope_views_;
  int64_t rope_capacity_ = 0;
  // Attend scratch, reused across calls: block pointers, tasks, partial states.
  std::vector<const uint8_t*> scratch_blocks_;
  std::vector<AttnTask> scratch_tasks_;
  std::vector<float> scratch_partials_;
  std::vector<float> scratch_scores_;      // masked scores for the policy's attention mass
  std::vector<size_t> scratch_score_off_;  // [task] offset into scratch_scores_, or SIZE_MAX
  std::vector<float> scratch_ml_;          // [unit] merged max and sum of each row
  std::vector<float> scratch_vec_;
  // Attention working memory, one per pool thread (indexed by ThreadPool::Run's thread),
  // made on the first task that thread runs: only threads that attend pay for it.
  std::vector<std::unique_ptr<AttnScratch>> attn_scratch_;
};

}  // namespace slimkv::kv
