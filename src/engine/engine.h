// The engine: a model, its tokenizer, a KV cache and the threads. Generation runs on one path, the
// scheduler's (scheduler.h): Generate is a client of it, as `serve` is.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "engine/sampler.h"
#include "engine/step_model.h"
#include "kv/kv_cache.h"
#include "kv/tiers/tier_stack.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace slimkv::engine {

struct EngineOptions {
  std::string model_path;
  kv::KvConfig kv;             // formats and block size
  kv::PolicySpec policy;       // eviction policy (none by default)
  int n_ctx = 4096;            // tokens per sequence (prompt + generated)
  int n_seq = 1;               // sequences the KV budget must hold when kv_budget_bytes is 0
  size_t kv_budget_bytes = 0;  // 0: exactly n_seq sequences of n_ctx tokens
  int threads = 2;
  int prefill_chunk = 512;     // prompt tokens per forward call
  // Cross-layer KV sharing (model/kv_share.h): "" none, "L=S,..." a map,
  // "kvsharer:N[:T]" KVSharer's search for N layers on kv_share_text
  // (engine/kv_sharer.h).
  std::string kv_share;
  std::string kv_share_text;
  // Lower tiers of the prefix cache (docs/SERVING.md, "KV tiers"); both off when empty.
  std::string kv_disk_dir;     // --kv-disk: a directory that keeps prefix blocks across restarts
  uint64_t kv_disk_bytes = 0;  // --kv-disk-mem: its budget in bytes
  std::string kv_redis;        // --kv-redis HOST:PORT: blocks shared by every instance using it
};

struct GenerateOptions {
  int max_tokens = 128;  // new tokens at most
  SamplingParams sampling;
  bool stop_at_end_of_generation = true;
  bool json_object = false;  // constrained to one JSON object (RequestParams::json_object)
};

struct GenerationStats {
  int prompt_tokens = 0;
  int generated_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  std::string stop_reason;  // "eog", "json" (the object closed), "length", "context", "cancelled"
  kv::KvUsage kv_usage;     // of the sequence at the end
  // The same, per kind of layer ("global", "window"), for models that have both.
  std::vector<std::pair<std::string, kv::KvUsage>> kv_usage_by_kind;
};

// Called with each new token and the text it completes (may be empty mid-character);
// returning false stops generation.
using TokenCallback = std::function<bool(TokenId token, const std::string& text)>;

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> Create(const EngineOptions& options);

  model::Model& model() { return *model_; }
  const tokenizer::Tokenizer& tokenizer() const { return *tokenizer_; }
  kv::KvCache& kv() { return *kv_; }
  ThreadPool& pool() { return pool_; }
  const EngineOptions& options() const { return options_; }
  kv::tiers::TierStack* tiers() { return tiers_.get(); }  // nullptr without --kv-disk / --kv-redis

  // The model behind the scheduler's step interface.
  StepModel& step_model() { return *step_model_; }

  // Generates from `prompt` on a fresh sequence through a scheduler of its own (one request: the path `serve`
  // takes, Compress at the end of the prompt included); the sequence is freed at the end. OutOfRange if the
  // prompt does not fit in n_ctx (naming both lengths), unless the eviction policy re-indexes (window, sinks:
  // no context limit).
  Result<GenerationStats> Generate(const std::vector<TokenId>& prompt, const GenerateOptions& options,
                                   const TokenCallback& on_token);

  // Tools below the generation path (benchmarks, KV inspection, tests). Step reserves the batch's KV slots
  // and runs one forward pass (the reservation is given back if the pass fails); ResourceExhausted when the
  // pool cannot hold it, nothing changed.
  Status Step(kv::KvCache& kv, std::span<const model::BatchEntry> batch, std::vector<float>* logits);
  // Runs `tokens` through a sequence in chunks of prefill_chunk. Appends to *logits the rows of tokens
  // [logits_from, size) ([n_rows, n_vocab]); logits_from = -1: last token.
  Status Prefill(kv::SeqId seq, std::span<const TokenId> tokens, int64_t logits_from,
                 std::vector<float>* logits) {
    return Prefill(*kv_, seq, tokens, logits_from, logits, options_.prefill_chunk);
  }
  // The same on another KV cache of this model, in steps of `step` tokens.
  Status Prefill(kv::KvCache& kv, kv::SeqId seq, std::span<const TokenId> tokens, int64_t logits_from,
                 std::vector<float>* logits, int step);

 private:
  Engine(const EngineOptions& o, int threads) : options_(o), pool_(threads) {}
  EngineOptions options_;
  ThreadPool pool_;
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<StepModel> step_model_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  std::unique_ptr<kv::tiers::TierStack> tiers_;  // before kv_: the cache points to it
  std::unique_ptr<kv::KvCache> kv_;
};

}  // namespace slimkv::engine
