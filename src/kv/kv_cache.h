// The KV cache: the front the model and the engine talk to.
//
// The model sees only this: before a step, whoever runs it reserves room for
// every chunk of new tokens (BeginStep, the scheduler's allocate-slots); per
// layer the model Appends the step's K/V rows (keys before RoPE: the cache
// applies RoPE, or stores them raw when the format keeps keys pre-RoPE) and
// Attends with the step's queries (after RoPE); EndStep commits the new tokens.
// Blocks, scales and codes stay inside.
//
// Behind the front: the blocks live in a BlockStore (block_store.h: a staging
// and a sealed pool on one budget); each sequence holds one BlockTable per
// stream (block_table.h: layer x KV head); the prefix cache (prefix_cache.h)
// shares full blocks between sequences; an eviction policy (policies/) keeps
// per-stream token statistics and chooses what leaves; the footprint rule
// (footprint.h) says what a sequence without a policy holds.
//
// Sealing. Quantized formats first write tokens to staging blocks (f16); a
// block is sealed — quantized into its final format once, its staging block
// freed — when it is full and older than the residual window, so per-channel
// key scales see all tokens of their block.
//
// Eviction. A policy applies to the streams of global-attention layers (a
// sliding-window layer keeps its window). While a sequence reads its prompt
// nothing of it is sealed and the policy chooses tokens, which move between
// staging blocks losslessly, whenever a stream holds twice its budget (SnapKV:
// never before the prompt ends). Compress marks the end of the prompt: the
// policy cuts every stream to its budget, then blocks seal. From then on the
// policy chooses whole blocks (or shortens the sinks' block) once a stream
// holds its budget plus a block: evicted blocks are dropped by reference, so a
// sealed token is quantized once. Re-indexing policies (window, sinks) keep
// every key as stored and rotate the query instead: the sinks are attended as
// if they sat right before the window.
#pragma once

#include <climits>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kv/attention.h"
#include "kv/block_store.h"
#include "kv/block_table.h"
#include "kv/footprint.h"
#include "kv/format.h"
#include "kv/policies/eviction_policy.h"
#include "kv/policies/select.h"
#include "kv/policies/token_stats.h"
#include "kv/policy.h"
#include "kv/prefix_cache.h"
#include "kv/rotation.h"
#include "kv/spec.h"

namespace slimkv::kv {

using SeqId = int32_t;

// New tokens of one sequence in a step: rows [row, row + n_tokens) of the
// step's matrices.
struct StepChunk {
  SeqId seq = 0;
  int n_tokens = 0;
  int64_t row = 0;
};

// What the policy has done to the cache's streams (tests and benchmarks read
// these).
struct EvictionStats {
  int64_t compactions = 0;       // token-level rewrites of a stream's own tokens (prompt)
  int64_t tokens_moved = 0;      // staging tokens those rewrites copied (losslessly)
  int64_t block_passes = 0;      // block-level evictions of a stream (after the prompt)
  int64_t blocks_dropped = 0;    // blocks those dropped by reference
  int64_t blocks_shortened = 0;  // blocks those shortened (the sinks' block)
  int64_t tokens_evicted = 0;
  int64_t merged = 0;            // evicted tokens whose value was merged into a kept one
  int64_t sealed_reencoded = 0;  // sealed tokens whose bytes were written again (merging into a
                                 // value format that cannot encode a single token)
  // Recall (`:recall`): blocks moved between the pool and host memory, in their final format.
  int64_t offloaded = 0;      // evicted blocks kept in host memory
  int64_t offload_lost = 0;   // evicted prompt tokens left short of a block when the prompt ended
  int64_t fetched = 0;        // host blocks fetched back, predicted from the step before
  int64_t fetch_used = 0;     // fetched blocks the next step's queries ranked among the blocks to hold
  int64_t fetch_missed = 0;   // blocks a step's queries ranked among those to hold while in host memory
  int64_t host_dropped = 0;   // host blocks dropped for good to keep a stream within `host=N`
  // With a local tier (--kv-disk), host blocks past `host=N` are spilled there instead of dropped.
  int64_t spilled = 0;     // host blocks written to the local tier
  int64_t spill_read = 0;  // spilled blocks read back into host memory (asynchronously, a step later)
  int64_t spill_lost = 0;  // spilled blocks wanted back whose record was gone (evicted from the tier,
                           // failed its checks, never written): dropped for good
  int64_t host_bytes = 0;     // host memory the offloaded blocks of live sequences take now
  // Share of the blocks a step wanted and did not already hold that were fetched ahead for it.
  double fetch_hit_rate() const {
    return fetch_used + fetch_missed > 0 ? static_cast<double>(fetch_used) / (fetch_used + fetch_missed) : 0.0;
  }
  // The counters since `before` (host_bytes: now).
  EvictionStats Since(const EvictionStats& before) const;
};
// One line on recall's traffic and hit rate (kv_recall.cc).
std::string RecallSummary(const EvictionStats& s);

class KvCache {
 public:
  static Result<std::unique_ptr<KvCache>> Create(const KvSpec& spec, const KvConfig& config,
                                                 size_t budget_bytes);
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // Budget that holds `sequences` sequences of `tokens` tokens each when steps
  // add at most `step_tokens` tokens: sequences x PeakSequenceBytes
  // (footprint.h).
  static size_t BudgetFor(const KvSpec& spec, const KvConfig& config, int64_t tokens, int sequences,
                          int step_tokens);

  // The eviction policy (policy.h); set while no sequence exists.
  // InvalidArgument when the policy cannot work with the formats (keys stored
  // before RoPE take their slot as position, so only window and sinks, which
  // re-index positions, may keep keys before RoPE).
  Status SetPolicy(const PolicySpec& policy);
  const PolicySpec& policy() const { return policy_; }
  // Whether the policy applies to a layer's streams (global-attention layers).
  bool PolicyLayer(int layer) const { return policy_.active() && spec_.window(layer) == 0; }

  SeqId AddSequence();
  void RemoveSequence(SeqId seq);  // frees every block the sequence holds alone
  bool HasSequence(SeqId seq) const;
  int Length(SeqId seq) const;  // tokens committed over the sequence's life
  // RoPE position of the sequence's next token (its index in the sequence;
  // re-indexing policies adjust positions inside Attend).
  int64_t NextPosition(SeqId seq) const { return Length(seq); }
  int Slots(SeqId seq, int layer,
            int head) const;  // tokens the stream holds now
  // The sequence's prompt has ended: the policy cuts each stream to its budget
  // (SnapKV decides here, from the attention of the prompt's last tokens) and
  // blocks seal. Without a policy, nothing happens.
  void Compress(SeqId seq);

  // Reserves blocks for every chunk in every stream, all or nothing:
  // ResourceExhausted naming the shortfall if the budget is too small (after
  // evicting prefix-cache entries).
  Status BeginStep(std::span<const StepChunk> chunks);
  // Gives back what BeginStep reserved (the step will not run).
  void CancelStep(std::span<const StepChunk> chunks);
  // Whether BeginStep reserved exactly these chunks.
  bool StepReserved(std::span<const StepChunk> chunks) const;
  // k, v: [rows, n_kv_heads * head_dim] with row strides ldk, ldv; keys before
  // RoPE.
  void Append(int layer, std::span<const StepChunk> chunks, const float* k, int64_t ldk, const float* v,
              int64_t ldv);
  // q, out: [rows, n_q_heads * head_dim]; queries after RoPE at NextPosition.
  // Each new token sees the tokens the sequence holds and the step's tokens up
  // to itself.
  void Attend(ThreadPool& pool, int layer, std::span<const StepChunk> chunks, const float* q, int64_t ldq,
              float* out, int64_t ldo, float scale);
  // Commits the step's tokens, applies the policy, seals blocks that left the
  // residual window and frees blocks that left every window. `pool`: the step's
  // threads, on which `:recall` ranks the streams' blocks (nullptr: inline).
  void EndStep(std::span<const StepChunk> chunks, ThreadPool* pool = nullptr);

  // Prefix sharing (prefix_cache.h). AttachPrefix gives an empty sequence the
  // longest run of cached full blocks matching a prefix of `tokens` under the
  // tenant `salt`, at most `max_tokens` tokens; it returns the tokens now in
  // the sequence (a multiple of the block size, less than tokens.size()): the
  // caller prefills only the rest. PublishPrefix indexes the full blocks of the
  // sequence's committed tokens that still sit unmodified at their slots (with
  // a policy: those before its first eviction).
  int AttachPrefix(SeqId seq, uint64_t salt, std::span<const int32_t> tokens, int max_tokens = INT_MAX);
  void PublishPrefix(SeqId seq, uint64_t salt, std::span<const int32_t> tokens);
  PrefixStats prefix_stats() const { return prefix_.stats(); }
  void ClearPrefixCache() { prefix_.Clear(); }
  // Tokens of a sequence attached from the prefix cache.
  int AttachedTokens(SeqId seq) const;
  // Lower tiers under the prefix index (prefix_cache.h, prefix_tiers.cc; not
  // owned, outlive the cache; nullptr: none): PublishPrefix also spills each
  // new entry to them, AttachPrefix first fetches the blocks of the prompt the
  // index lacks from them.
  void SetTiers(tiers::TierStack* tiers) { prefix_.SetTiers(tiers); }
  tiers::TierStack* tiers() const { return prefix_.tiers(); }
  // Reads ahead what a later AttachPrefix(seq, salt, tokens, max_tokens) would fetch from the
  // tiers (PrefixCache::StartPrefetch); 0 when nothing; end a nonzero id with EndPrefetch.
  tiers::PrefetchId StartPrefetch(uint64_t salt, std::span<const int32_t> tokens, int max_tokens = INT_MAX) {
    return prefix_.StartPrefetch(salt, tokens, max_tokens);
  }
  // Whether the read-ahead `id` is still reading after waiting at most `seconds` for it.
  bool PrefetchPending(tiers::PrefetchId id, double seconds = 0) const {
    return id != 0 && tiers() && !tiers()->WaitPrefetch(id, seconds);
  }
  void EndPrefetch(tiers::PrefetchId id) {
    if (id != 0 && tiers()) tiers()->EndPrefetch(id);
  }
  // Swap or recompute for the blocks the index lacks (swap_cost.h).
  SwapCost& swap_cost() { return prefix_.swap_cost(); }
  const SwapCost& swap_cost() const { return prefix_.swap_cost(); }

  // Decodes held tokens [first, first + n) of one stream, in slot order (0 is
  // the oldest token the stream holds), as stored: keys after RoPE unless the
  // format keeps them before, in the rotated domain if the side is rotated, or
  // rotated back with `unrotate`; k[n][head_dim], v[n][head_dim]. For analysis
  // and tests; OutOfRange past the held tokens.
  Status ReadTokens(SeqId seq, int layer, int head, int first, int n, float* k, float* v,
                    bool unrotate = false) const;
  // The original positions of the held tokens (as ReadTokens orders them).
  std::vector<int32_t> HeldPositions(SeqId seq, int layer, int head) const;
  // What the policy remembered of each held token at append (TokenStats::score:
  // knorm -|k|, expected |v|), as ReadTokens orders them; empty without a policy.
  std::vector<float> HeldScores(SeqId seq, int layer, int head) const;

  KvUsage SequenceUsage(SeqId seq) const;
  KvUsage LayerUsage(SeqId seq, int layer) const;
  KvUsage TotalUsage() const;
  // Bytes of K and V per token over all layers and heads in the final format
  // (footprint.h, rounded down).
  size_t DataBytesPerToken() const;
  size_t MetaBytesPerToken() const;
  EvictionStats eviction_stats() const { return evict_stats_; }

  const KvSpec& spec() const { return spec_; }
  const KvConfig& config() const { return config_; }
  size_t budget_bytes() const { return store_.limit(); }
  size_t bytes_in_use() const { return store_.used(); }
  // Bytes of a block in the final format (the only kind when nothing is
  // staged).
  size_t sealed_block_bytes() const { return store_.pool(true).block_bytes(); }
  size_t staged_block_bytes() const { return store_.pool(false).block_bytes(); }
  int blocks_in_use() const { return store_.blocks_in_use(); }
  // Pools, block tables and reference counts agree; a stream without a policy
  // holds the blocks the footprint rule names; a stream with one holds its
  // pinned prefix unchanged, sealed blocks that are full or shortened, and
  // within the policy's bounds.
  void CheckInvariants() const;

 private:
  // Recall (`:recall`, kv_recall.cc). An evicted block in host memory: its bytes in the final
  // format (never quantized again), the digest of its keys and its tokens' statistics.
  struct ColdBlock {
    std::vector<uint8_t> bytes;
    std::vector<float> digest;  // [2 * head_dim] (policies/recall.h)
    std::vector<int32_t> pos;   // [block_tokens] ... as TokenStats holds them
    std::vector<float> mass, last_mass, score;
    // Spilled (`host=N` with a local tier): the bytes are on that tier under this key (`bytes`
    // is empty); `read`, when not 0, is the tier read that is bringing them back.
    uint64_t spill = 0;
    tiers::PrefetchId read = 0;
    size_t HostBytes() const {
      return bytes.size() + (digest.size() + mass.size() * 3) * sizeof(float) + pos.size() * sizeof(int32_t);
    }
  };
  struct RecallStream {
    std::vector<ColdBlock> cold;  // unordered (a fetched block's place takes the last one)
    int spilled = 0;              // of them on the local tier (`host=N` bounds the others)
    int reading = 0;              // of those, being read back (`read` set): TakeSpilled looks no further
    // Tokens a prompt's token-level pass evicted short of a whole block, decoded as stored
    // (k, v: [n][head_dim]) with their statistics: the next pass completes a block with them;
    // what is left when the prompt ends is lost (offload_lost).
    struct Carry {
      std::vector<float> k, v;
      std::vector<int32_t> pos;
      std::vector<float> mass, last, score;
      void Push(const float* tk, const float* tv, int hd, int32_t p, float m, float l, float s) {
        k.insert(k.end(), tk, tk + hd), v.insert(v.end(), tv, tv + hd);
        pos.push_back(p), mass.push_back(m), last.push_back(l), score.push_back(s);
      }
    } carry;
    // The digest of every kColdGroup consecutive host blocks (the union of their ranges): one
    // bound per group rules out the whole group when no member can outrank a held block.
    std::vector<float> group_digest;  // [group][2 * head_dim]
    std::vector<uint8_t> group_valid;  // [group]
    std::vector<float> digest;    // [table block][2 * head_dim]: digests of the resident blocks
    std::vector<uint8_t> state;   // [table block] kNoDigest, kDigest or kFetched (fetched last step)
    std::vector<float> query;     // [group][head_dim] the newest query of the last step (after RoPE)
    // A policy that scores from keys (`expected`) values the held blocks once per block_tokens
    // steps (by each block's first position), not at every step's plan: decoding a stream's
    // keys per step cost 9x in decode speed.
    std::unordered_map<int32_t, float> value_at;
    int value_age = std::numeric_limits<int>::max();
  };
  static constexpr uint8_t kNoDigest = 0, kDigest = 1, kFetched = 2;
  static constexpr int kColdGroup = 8;
  struct Sequence {
    bool live = false;
    int length = 0;                  // tokens committed over the sequence's life
    int pending = 0;                 // tokens BeginStep reserved blocks for, until EndStep
    int attached = 0;                // tokens attached from the prefix cache
    int plain = 0;                   // tokens [0, plain) sit unmodified in slots [0, plain) of
                                     // every stream
    bool prompt_open = true;         // a policy sequence before Compress: no sealing,
                                     // token-level eviction
    int deferred = 0;                // evictions skipped for want of room to move tokens (then
                                     // over bounds)
    std::vector<BlockTable> tables;  // [stream]
    std::vector<TokenStats> stats;   // [stream] of policy layers (others empty)
    std::vector<RecallStream> recall;  // [stream] with `:recall` (kv_recall.cc)
  };
  KvCache(const KvSpec& spec, const KvConfig& config);
  int streams() const { return spec_.n_layers * spec_.n_kv_heads; }
  bool staged_only() const { return store_.staged_only(); }
  bool PolicyStream(int st) const { return PolicyLayer(st / spec_.n_kv_heads); }
  const Sequence& Seq(SeqId id) const;
  Sequence& Seq(SeqId id);
  const uint8_t* BlockData(const BlockTable& t, int b) const { return store_.Data(t.sealed[b], t.ids[b]); }
  // Allocates n blocks of a pool, evicting prefix-cache entries if the budget
  // needs it.
  Status AllocateEvicting(bool sealed, int n, std::vector<BlockId>* out);
  void Seal(Sequence& s);             // seals blocks that left the residual window
  // A staging block's first n tokens, decoded (k, v: [n][head_dim]); n tokens encoded into a
  // block of the final format (the sealed pool's kind).
  void DecodeStaged(const uint8_t* block, int n, float* k, float* v) const;
  void EncodeFinal(const float* k, const float* v, int n, uint8_t* block) const;
  void DropOutOfWindow(Sequence& s);  // frees the blocks of window layers no token can see
  Status ReadHeld(const BlockTable& t, int first, int n, float* k, float* v) const;

  // Eviction (kv_evict.cc). A stream's own (unpinned) held tokens as the policy sees them.
  struct ViewData {
    std::vector<int> slots;         // [token] slot of each view token
    std::vector<int> block_of;      // [view block] the table's block index
    std::vector<ViewBlock> blocks;  // [view block]
    std::vector<int32_t> pos;
    std::vector<float> mass, last_mass, score, keys;
    StreamView view;
  };
  // Applies the policy to every policy stream of a sequence holding more than
  // its bound.
  void Evict(Sequence& s, bool at_prompt_end);
  void MakeView(const Sequence& s, int st, bool with_keys, ViewData* d) const;
  // Token level (staging blocks): stream sts[i] keeps the view tokens keeps[i].
  void CompactTokens(Sequence& s, std::span<const int> sts, std::span<ViewData> views,
                     const std::vector<std::vector<int>>& keeps);
  // Block level: drops or shortens the cut blocks (BlockCut::view indexes sts).
  void CutBlocks(Sequence& s, std::span<const int> sts, std::span<ViewData> views,
                 const std::vector<BlockCut>& cuts);
  // Keys of held slots as attention sees them: after RoPE, unrotated
  // ([n][head_dim]).
  void AttentionKeys(const BlockTable& t, int st, std::span<const int> slots, float* keys) const;
  void DecodeSlot(const BlockTable& t, int slot, float* k, float* v) const;
  // After merging: the policy's score of the view tokens first + r (r in `rows`) whose
  // values changed, from their keys as attention sees them (d.keys) and their values as
  // stored (values[r]: [rows of the region][head_dim]).
  void RescoreMerged(int st, const ViewData& d, int first, std::span<const int> rows,
                     std::span<const float> values, TokenStats& ts) const;
  // Recall (kv_recall.cc). Offloads the evicted tokens of a staging region (k, v: decoded as
  // stored; whole blocks of them, in order, after the stream's carry from earlier passes; the
  // rest becomes its carry) and a table block about to be dropped (a full one).
  void OffloadTokens(Sequence& s, int st, std::span<const int> rows, const float* k, const float* v,
                     std::span<const int32_t> pos, std::span<const float> mass, std::span<const float> last,
                     std::span<const float> score);
  void OffloadBlock(Sequence& s, int st, int b);
  void DropCarry(Sequence& s);  // the prompt ended: the carried tokens are lost
  // After a step: ranks held and offloaded blocks by the step's queries (the streams in
  // parallel on `pool` when given) and swaps.
  void Recall(Sequence& s, ThreadPool* pool);
  // One stream's part of a recall: the swappable held blocks, the host blocks to fetch (best
  // first), the held blocks to let go (one per fetched block) and the fetched blocks held
  // again (hits). Touches only the stream's own recall state.
  struct RecallPlan {
    std::vector<int> held, wanted, victims;
    int64_t used = 0;
  };
  void PlanRecall(Sequence& s, int st, RecallPlan* plan);
  // A block the policy evicted goes to host memory; past `host=N` blocks the stream's lowest-bounded
  // host block is dropped.
  void AddCold(Sequence& s, int st, ColdBlock&& c);
  // Past `host=N` host blocks in memory, the lowest-bounded is spilled to the local tier, or
  // dropped when there is none (or it does not take it).
  void BoundHost(RecallStream& r);
  bool SpillCold(ColdBlock& c);  // writes a host block's bytes to the local tier and frees them
  // Takes the spilled blocks the tier has read back into host memory; drops those it could not.
  void TakeSpilled(Sequence& s);
  // The blocks of a recall plan (wanted[i] replacing victims[i]) that are spilled: asks the
  // tier for their bytes and takes them out of this step's swaps (they come at a later one).
  void ReadSpilled(Sequence& s, std::span<const int> sts, std::span<RecallPlan> plans);
  // Erases a sequence's spilled records and stops their reads.
  void ForgetSpilled(Sequence& s);
  const tiers::Fingerprint& SpillFingerprint();
  void PushCold(RecallStream& r, ColdBlock&& c);  // appends a host block (its group changes)
  // The digest of table block b (from its keys as attention sees them), computed once.
  const float* HeldDigest(Sequence& s, int st, int b);
  // The host-block groups: host block j changed (added, replaced or removed); host block j leaves
  // (the last takes its place); group g's digest, made again if a member changed.
  void ColdChanged(RecallStream& r, int j);
  void RemoveCold(RecallStream& r, int j);
  const float* GroupDigest(RecallStream& r, int g);
  // Inserts a host block at its place by position; false when it belongs after a staging block.
  bool InsertCold(Sequence& s, int st, ColdBlock& c);
  void EraseBlock(Sequence& s, int st, int b);  // drops table block b (already released)
  // Makes block b of a stream the sequence's alone (copy on write) before its
  // bytes change.
  bool MakePrivate(BlockTable& t, int b);

  // Attention helpers (kv_attend.cc).
  struct Run {
    int key_begin, key_end;  // slots
    int first_block, n_sealed_blocks;
    int64_t q_shift;  // the query is rotated back by this many positions for
                      // this run
  };
  void StreamRuns(const Sequence& s, int st, int extra_tokens, std::vector<Run>* runs) const;
  void EnsureRopeTables(int64_t positions);
  const RopeTables* LayerRope(int layer) const;

  KvSpec spec_;
  KvConfig config_;
  BlockStore store_;
  std::vector<Sequence> seqs_;  // indexed by SeqId; removed ones are reused
  PolicySpec policy_;
  std::unique_ptr<EvictionPolicy> evictor_;
  PrefixCache prefix_;
  EvictionStats evict_stats_;
  std::vector<Rotation> k_rot_, v_rot_;  // [stream] when the side is rotated
  // RoPE angle tables [pair][position] per distinct frequency set (keys stored
  // before RoPE are rotated by slot inside the score kernel); layer -> table.
  std::vector<std::vector<float>> rope_cos_, rope_sin_;
  std::vector<int> layer_table_;
  std::vector<RopeTables> rope_views_;
  int64_t rope_capacity_ = 0;
  // Append's RoPE angles of the step's rows: [distinct set][row][rope_dim / 2].
  std::vector<float> step_cos_, step_sin_;
  int64_t step_rows_ = 0;
  // Attend scratch, reused across calls.
  std::vector<const uint8_t*> scratch_blocks_;
  std::vector<AttnTask> scratch_tasks_;
  std::vector<float> scratch_partials_;
  std::vector<float> scratch_scores_;      // masked scores for the policy's attention mass
  std::vector<size_t> scratch_score_off_;  // [task] offset into scratch_scores_, or SIZE_MAX
  std::vector<float> scratch_ml_;          // [unit] merged max and sum of each row
  std::vector<float> scratch_q_;           // queries rotated for runs with a position shift
  std::vector<float> scratch_vec_;
  // Attention working memory, one per pool thread (indexed by ThreadPool::Run's
  // thread), made on the first task that thread runs: only threads that attend
  // pay for it.
  std::vector<std::unique_ptr<AttnScratch>> attn_scratch_;
  // Recall's spilled blocks: their fingerprint (this cache's, under a salt no tenant uses) and
  // keys (a random start, then counting), so no two processes' records meet in one directory.
  std::optional<tiers::Fingerprint> spill_fp_;
  uint64_t spill_key_ = 0;
};

}  // namespace slimkv::kv
