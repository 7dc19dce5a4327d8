// The KV cache: sequences, their block tables, and the model's interface to them.
//
// The model sees only this: before a step, BeginStep reserves room for every chunk of new
// tokens; per layer it Appends the step's K/V rows and Attends with the step's queries;
// EndStep commits the new tokens. Blocks, scales and codes stay inside.
//
// A sequence holds one block table per stream (layer x KV head): slot s of a stream lives in
// block table[s / block_tokens] at offset s % block_tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kv/attention.h"
#include "kv/block_pool.h"
#include "kv/format.h"
#include "kv/spec.h"

namespace slimkv::kv {

using SeqId = int32_t;

// New tokens of one sequence in a step: rows [row, row + n_tokens) of the step's matrices.
struct StepChunk {
  SeqId seq = 0;
  int n_tokens = 0;
  int64_t row = 0;
};

// Byte accounting. data + meta + waste == allocated.
struct KvUsage {
  int64_t tokens = 0;          // token slots held
  size_t bytes_data = 0;       // K/V values of those tokens
  size_t bytes_meta = 0;       // scales, zero points, norms of those tokens
  size_t bytes_waste = 0;      // allocated but holding no token (open blocks, padding)
  size_t bytes_allocated = 0;  // blocks x block bytes
  int64_t blocks = 0;
};

class KvCache {
 public:
  static Result<std::unique_ptr<KvCache>> Create(const KvSpec& spec, const KvConfig& config,
                                                 size_t budget_bytes);

  // Budget that holds `sequences` sequences of `tokens` tokens each (whole blocks), when
  // steps add at most `step_tokens` tokens (a window layer holds window + step tokens).
  static size_t BudgetFor(const KvSpec& spec, const KvConfig& config, int64_t tokens,
                          int sequences, int step_tokens);

  SeqId AddSequence();
  void RemoveSequence(SeqId seq);  // frees every block of the sequence
  bool HasSequence(SeqId seq) const;
  int Length(SeqId seq) const;  // committed tokens

  // Reserves blocks for every chunk in every stream, all or nothing: ResourceExhausted
  // naming the sequence and the shortfall if the pool is too small.
  Status BeginStep(std::span<const StepChunk> chunks);
  // k, v: [rows, n_kv_heads * head_dim] with row strides ldk, ldv.
  void Append(int layer, std::span<const StepChunk> chunks, const float* k, int64_t ldk,
              const float* v, int64_t ldv);
  // q, out: [rows, n_q_heads * head_dim]. Each new token sees the committed tokens and the
  // step's tokens up to itself.
  void Attend(ThreadPool& pool, int layer, std::span<const StepChunk> chunks, const float* q,
              int64_t ldq, float* out, int64_t ldo, float scale);
  void EndStep(std::span<const StepChunk> chunks);

  KvUsage SequenceUsage(SeqId seq) const;
  KvUsage LayerUsage(SeqId seq, int layer) const;
  KvUsage TotalUsage() const;
  // Bytes of K and V values (data, meta) per token over all layers and heads.
  size_t DataBytesPerToken() const;
  size_t MetaBytesPerToken() const;

  const KvSpec& spec() const { return spec_; }
  const KvConfig& config() const { return config_; }
  const BlockPool& pool() const { return pool_; }
  void CheckInvariants() const;

 private:
  struct Sequence {
    bool live = false;
    int length = 0;                              // committed tokens
    std::vector<std::vector<BlockId>> tables;    // [stream][block]; kNoBlock once freed
    std::vector<int> first_live;                 // [stream] first block not freed
  };
  static constexpr BlockId kNoBlock = -1;
  Sequence NewSequence() const;
  // Frees the blocks of window layers that no future token can see.
  void DropOutOfWindow(Sequence& s);
  KvCache(const KvSpec& spec, const KvConfig& config, BlockPool pool);
  int streams() const { return spec_.n_layers * spec_.n_kv_heads; }
  const Sequence& Seq(SeqId id) const;
  Sequence& Seq(SeqId id);

  KvSpec spec_;
  KvConfig config_;
  PartLayout k_layout_, v_layout_;
  BlockPool pool_;
  std::vector<Sequence> seqs_;  // indexed by SeqId; removed ones are reused
  // Attend scratch, reused across calls: block pointers, tasks, partial states.
  std::vector<const uint8_t*> scratch_blocks_;
  std::vector<AttnTask> scratch_tasks_;
  std::vector<float> scratch_partials_;
};

}  // namespace slimkv::kv
